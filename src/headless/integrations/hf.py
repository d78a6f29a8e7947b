"""CWT inside the Hugging Face `Trainer` (and so `accelerate`, which the Trainer runs on).

    from transformers import AutoModel, DataCollatorForLanguageModeling, TrainingArguments
    from headless.integrations.hf import CWTTrainer

    model = AutoModel.from_config(config)       # a base model: headless means no vocabulary head
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True)   # or mlm=False for CLM
    trainer = CWTTrainer(model=model, args=TrainingArguments(...), train_dataset=ds, data_collator=collator)
    trainer.train()
    trainer.save_model("exports/my-model")      # the model *and* its tokenizer, on the main process only

`compute_cwt_loss(model, batch)` is the same loss for a hand-written loop (plain torch or
`accelerate.Accelerator`).  Label conventions are HF's, converted here:

* MLM: `labels` holds the original token at masked positions and -100 elsewhere (the MLM collator's
  output); each masked position's output retrieves its token's input embedding.
* CLM: `labels` is *unshifted* (HF's causal-LM convention: `labels == input_ids`, padding -100);
  it is shifted here, so that the output at t retrieves the token at t + 1 (headless's own
  `clm_labels` builds the shifted form directly).  With `eos_token_id`, positions whose next token
  starts another packed document are ignored (`document_ids_from_eos`), as `headless pretrain` does.

Under `accelerate`/DDP the wrapped model is called (so gradient hooks fire) and the embedding is read
from the unwrapped one; negatives are this process's batch (`headless pretrain` can also gather them).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from headless.architectures import is_causal
from headless.errors import HeadlessError
from headless.losses import LossOutput, cwt_loss
from headless.objectives import IGNORE_INDEX, document_ids_from_eos
from headless.one_lookup import lookup_inputs_and_targets, takes_one_lookup


def _wrappers(model: nn.Module):
    """The model and each module it wraps (DDP, accelerate, FSDP wrappers keep theirs in `.module`)."""
    yield model
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
        yield model


def _unwrap(model: nn.Module) -> nn.Module:
    *_, base = _wrappers(model)
    return base


def _fsdp_wrapped(model: nn.Module) -> bool:
    """FSDP (1 or 2) shards the weight outside the model's forward, where the one lookup reads it."""
    return any("FullyShard" in type(m).__name__ or "FSDP" in type(m).__name__ for m in _wrappers(model))


def _is_causal(model: nn.Module) -> bool:
    return is_causal(getattr(model, "config", None))


def shift_clm_labels(labels: torch.Tensor, input_ids: Optional[torch.Tensor] = None,
                     eos_token_id: Optional[int] = None) -> torch.Tensor:
    """HF's unshifted causal labels -> headless's `labels[:, t] = target of position t` (= token t+1)."""
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    if eos_token_id is not None and input_ids is not None:
        docs = document_ids_from_eos(input_ids, eos_token_id)
        shifted[:, :-1] = shifted[:, :-1].masked_fill(docs[:, :-1] != docs[:, 1:], IGNORE_INDEX)
    return shifted


def compute_cwt_loss(model: nn.Module, inputs: dict[str, Any], *, causal: Optional[bool] = None,
                     eos_token_id: Optional[int] = None, temperature: float = 1.0,
                     num_items_in_batch: Optional[int | torch.Tensor] = None, one_lookup: bool = True,
                     **loss_kwargs) -> LossOutput:
    """The CWT loss of one HF-style batch (`input_ids`, `labels`, optional `attention_mask`).

    `causal` defaults to the model's type (decoders: CLM).  With `num_items_in_batch` (the Trainer's
    count of label tokens over a whole gradient-accumulation step) the loss is summed and divided by it,
    so accumulated steps equal one large step; otherwise it is the mean over this batch's targets.
    Where the model takes it (`headless.one_lookup.takes_one_lookup`; not under FSDP, not with a
    `group`), the inputs and the scored targets are looked up in one embedding call, the model fed
    `inputs_embeds`: the same loss and gradients with one V×D weight gradient instead of two
    (`one_lookup=False`: the two lookups)."""
    base = _unwrap(model)
    causal = _is_causal(base) if causal is None else causal
    input_ids, labels = inputs["input_ids"], inputs["labels"]
    if causal:
        labels = shift_clm_labels(labels, input_ids, eos_token_id)
    kwargs = {}
    if inputs.get("attention_mask") is not None:
        kwargs["attention_mask"] = inputs["attention_mask"]
    # the one lookup scores the selected rows only: not for per-position losses ("none") or a group
    one = (one_lookup and "group" not in loss_kwargs and loss_kwargs.get("reduction", "mean") != "none"
           and labels.device == input_ids.device and takes_one_lookup(base) and not _fsdp_wrapped(model))
    if one:  # inputs and the scored targets in one embedding call (headless.one_lookup)
        rows = labels != loss_kwargs.get("ignore_index", IGNORE_INDEX)
        labels = labels[rows]  # the scored targets (a count the host reads, as cwt_loss's selection does)
        emb = base.get_input_embeddings()
        if loss_kwargs.get("check_ids", True) and labels.numel() and \
                not 0 <= int(labels.min()) <= int(labels.max()) < emb.num_embeddings:
            raise HeadlessError(f"compute_cwt_loss: label ids must lie in [0, {emb.num_embeddings}) (or be the "
                                f"ignore index), got {int(labels.min())}..{int(labels.max())}")
        kwargs["inputs_embeds"], target_vectors = lookup_inputs_and_targets(emb, input_ids, labels)
    else:
        kwargs["input_ids"] = input_ids
    has_head = callable(getattr(base, "get_output_embeddings", None)) and base.get_output_embeddings() is not None
    out = model(**kwargs, output_hidden_states=has_head)
    hidden = out.hidden_states[-1] if has_head else out.last_hidden_state
    weight = base.get_input_embeddings().weight
    if one:
        hidden, loss_kwargs = hidden[rows], {**loss_kwargs, "target_vectors": target_vectors}
    if num_items_in_batch is None:
        return cwt_loss(hidden, labels, weight, temperature=temperature, **loss_kwargs)
    result = cwt_loss(hidden, labels, weight, temperature=temperature, reduction="sum", **loss_kwargs)
    count = num_items_in_batch.to(result.loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
    return LossOutput(loss=result.loss / count, num_targets=result.num_targets, accuracy=result.accuracy,
                      num_unique=result.num_unique)


def _trainer_class():
    from transformers import Trainer

    class CWTTrainer(Trainer):
        """`transformers.Trainer` whose loss is CWT (`compute_cwt_loss`); everything else is the Trainer's.

        Extra keyword arguments: `causal` (default: from the model type), `eos_token_id` (CLM: respect
        packed document boundaries), `temperature`, `cwt_kwargs` (passed to `headless.cwt_loss`)."""

        def __init__(self, *args, causal: Optional[bool] = None, eos_token_id: Optional[int] = None,
                     temperature: float = 1.0, cwt_kwargs: Optional[dict] = None, **kwargs):
            super().__init__(*args, **kwargs)
            if self._tokenizer() is None:  # a saved model without its tokenizer cannot be evaluated
                raise HeadlessError("CWTTrainer needs the tokenizer: pass processing_class=tokenizer (or a "
                                    "collator that holds it) so that save_model writes it with the model")
            self.cwt_options = dict(causal=causal, eos_token_id=eos_token_id, temperature=temperature,
                                    **(cwt_kwargs or {}))
            # a base model's forward takes no `labels`: keep the column and treat it as the label
            self.label_names = ["labels"]
            self.can_return_loss = True
            # top-1 in-batch retrieval accuracy, summed on the device between logs (no host sync per
            # step), per mode: "train" feeds `cwt_accuracy`, "eval" feeds `eval_cwt_accuracy`
            self._cwt_hits: dict[str, list] = {}

        def _tokenizer(self):
            if self.processing_class is not None:
                return self.processing_class
            return getattr(self.data_collator, "tokenizer", None)

        def _save(self, output_dir: Optional[str] = None, state_dict=None):
            """The Trainer's save, then the tokenizer again in the form every supported transformers
            loads, with `model_max_length` from the model (`save_model_tokenizer`)."""
            super()._save(output_dir, state_dict=state_dict)
            if self.args.should_save:
                from headless.data.tokenizers import save_model_tokenizer

                save_model_tokenizer(self._tokenizer(), output_dir or self.args.output_dir, _unwrap(self.model).config)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = compute_cwt_loss(model, inputs, num_items_in_batch=num_items_in_batch, **self.cwt_options)
            if out.accuracy is not None:
                hits = self._cwt_hits.setdefault("train" if model.training else "eval", [0, 0])
                hits[0] = hits[0] + out.accuracy.detach() * out.num_targets
                hits[1] = hits[1] + out.num_targets
            outputs = {"loss": out.loss}
            return (out.loss, outputs) if return_outputs else out.loss

        def log(self, logs: dict, *args, **kwargs):
            """Add CWT's accuracy since the last log to the Trainer's logs (and so to every `report_to`);
            with several processes each reports its own share's accuracy, as the Trainer's loss does not."""
            for mode, key, when in (("train", "cwt_accuracy", "loss"), ("eval", "eval_cwt_accuracy", "eval_loss")):
                hits = self._cwt_hits.pop(mode, None) if when in logs else None
                if hits is not None and float(hits[1]) > 0:
                    logs[key] = round(float(hits[0]) / float(hits[1]), 4)
            return super().log(logs, *args, **kwargs)

    return CWTTrainer


def __getattr__(name: str):  # transformers' Trainer (and accelerate) load only when CWTTrainer is used
    if name == "CWTTrainer":
        cls = _trainer_class()
        globals()["CWTTrainer"] = cls
        return cls
    raise AttributeError(name)
