"""Hugging Face models in the two flavours the paper compares, behind one small wrapper.

* headless: the HF *base* model (BertModel, GPTNeoXModel, ...). There is no vocabulary head at all —
  no parameters, no FLOPs; the loss scores the last hidden states against the input embeddings.
* vanilla:  the HF *ForMaskedLM / *ForCausalLM model.  Its head is applied only at the positions that
  get a loss (HF would project every position), so the comparison is fair to the baseline.

`LanguageModel.forward` returns the loss (summed over the micro-batch's loss positions) rather than
hidden states: computing the loss inside the wrapped module's forward is what lets DDP and FSDP2 see
the embedding matrix unsharded and reduce its gradient like any other.
"""

from __future__ import annotations

import dataclasses
import pickle

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from headless.architectures import ARCHITECTURES, by_model_type, is_causal
from headless.attention import kernel_context
from headless.config import ModelConfig, ObjectiveConfig
from headless.errors import HeadlessError, load_error
# the bounds under which `auto` is captured: with the loss table, where their measurements are cited
from headless.loss_kinds import CAPTURE_MAX_LOGITS, CAPTURE_MAX_ROWS, loss_kind as lookup_loss  # noqa: F401
from headless.one_lookup import lookup_inputs_and_targets, takes_one_lookup


# ------------------------------------------------------------------------------------------------
# building HF configs and models


def model_dir_config(model_dir):
    """The config of a Hugging Face model directory, or a one-line error saying why not."""
    from pathlib import Path

    from transformers import AutoConfig

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise HeadlessError(f"{path} is not a Hugging Face model directory (no config.json there)")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    except (ValueError, OSError, KeyError) as err:
        raise HeadlessError(f"cannot read the config of {path}: {load_error(err)}") from None


def round_up(value: int, multiple: int) -> int:
    return ((value + multiple - 1) // multiple) * multiple if multiple > 1 else value


def build_hf_config(cfg: ModelConfig, vocab_size: int, pad_token_id: Optional[int] = None,
                    eos_token_id: Optional[int] = None):
    """An HF config of the requested architecture and shape (its builder in `headless.architectures`)."""
    arch = ARCHITECTURES[cfg.architecture]
    inter = cfg.intermediate_size or 4 * cfg.hidden_size
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, **cfg.extra)
    if arch.causal:  # generation needs them; HF's defaults point outside small vocabularies
        common.setdefault("bos_token_id", eos_token_id)
        common.setdefault("eos_token_id", eos_token_id)
    return arch.hf_config(cfg, inter, common)


def check_size(cfg: ModelConfig, vocab_size: int, head: bool) -> None:
    """Refuse a shape whose fp32 weights alone exceed this machine's memory, before allocating: an
    allocator error (or minutes of swapping) is no way to learn that `vocab_size=4000000000` is absurd."""
    from headless.runtime import host_memory_bytes

    d, inter = cfg.hidden_size, cfg.intermediate_size or 4 * cfg.hidden_size
    params = (vocab_size * (2 if head else 1) + cfg.max_position_embeddings) * d \
        + cfg.num_layers * (4 * d * d + 2 * d * inter)
    memory = host_memory_bytes()
    if 4 * params > memory:
        raise HeadlessError(f"model too large: model.* (vocab {vocab_size}, hidden_size {d}, num_layers "
                            f"{cfg.num_layers}, intermediate_size {inter}, max_position_embeddings "
                            f"{cfg.max_position_embeddings}) gives about {params:.3g} parameters, "
                            f"{4 * params / 2**30:,.0f} GiB in fp32, more than this machine's "
                            f"{memory / 2**30:,.0f} GiB of memory")


def check_attention(name: str) -> None:
    """model.attn_implementation must name a backend transformers knows (or a hub kernel, org/repo)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = ["eager", "sdpa", "headless_sdpa", *ALL_ATTENTION_FUNCTIONS.keys()]
    if name and name not in known and "/" not in name:
        raise HeadlessError(f"unknown model.attn_implementation={name!r}; choose one of "
                            f"{', '.join(dict.fromkeys(known))}")


def _instantiate(hf_config, *, head: bool, is_encoder: bool, attn: str, init_from: Optional[str]):
    import transformers as tf

    if head:
        auto = tf.AutoModelForMaskedLM if is_encoder else tf.AutoModelForCausalLM
    else:
        auto = tf.AutoModel
    if attn == "sdpa":  # the same kernels, without the mask torch.compile would force (attention.py)
        from headless.attention import register

        attn = register()
    kwargs = {"attn_implementation": attn} if attn else {}
    if init_from:
        try:
            return auto.from_pretrained(init_from, trust_remote_code=False, **kwargs)
        except (OSError, ValueError, pickle.UnpicklingError) as err:
            raise HeadlessError(f"cannot load model from {init_from}: {load_error(err)}") from None
    try:
        entry = by_model_type(getattr(hf_config, "model_type", ""))
        base_kwargs = dict(entry.base_model_kwargs) if entry is not None and not head else {}  # BERT: no pooler
        return auto.from_config(hf_config, **base_kwargs, **kwargs)
    except (ValueError, ImportError):
        if attn:  # an architecture without SDPA support: fall back to eager attention
            return _instantiate(hf_config, head=head, is_encoder=is_encoder, attn="", init_from=None)
        raise


# ------------------------------------------------------------------------------------------------
# the vanilla head, split into (transform, final projection) so the fused losses can take the latter


@dataclass
class HeadParts:
    transform: Callable[[torch.Tensor], torch.Tensor]
    projection: nn.Linear


def head_parts(model: nn.Module) -> HeadParts:
    """Split an HF *ForMaskedLM / *ForCausalLM head into its hidden transform and the V×D projection."""
    projection = model.get_output_embeddings()
    if projection is None:
        raise HeadlessError(f"{type(model).__name__} has no output embeddings (vocabulary head)")
    entry = by_model_type(model.config.model_type)
    transform = entry.head_transform(model) if entry is not None else nn.Identity()
    return HeadParts(transform=transform, projection=projection)


def base_model(model: nn.Module) -> nn.Module:
    """The backbone of an HF model with or without head (itself when it has none)."""
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix, model) if prefix and hasattr(model, prefix) else model


def attach_lm_head(model: nn.Module) -> nn.Module:
    """Headless decoder -> *ForCausalLM with a NEW untied head initialised from the input embeddings.

    This is the starting point of HLM+FT (paper §3.3): the head is a copy, not a tie, so fine-tuning
    can move it away from the embeddings.
    """
    import transformers as tf

    config = model.config
    config.tie_word_embeddings = False
    lm = tf.AutoModelForCausalLM.from_config(config)
    missing, unexpected = lm.base_model.load_state_dict(base_model(model).state_dict(), strict=False)
    if unexpected or [m for m in missing if "rotary" not in m and "inv_freq" not in m]:
        raise HeadlessError(f"cannot attach a head: backbone mismatch (missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        emb = lm.get_input_embeddings().weight
        out = lm.get_output_embeddings()
        out.weight = nn.Parameter(emb.detach().clone())
        if getattr(out, "bias", None) is not None:
            out.bias.zero_()
    return lm


# ------------------------------------------------------------------------------------------------
# the training wrapper

def output_transform(dim: int, std: float) -> nn.Module:
    """Linear D x D, GELU, LayerNorm: BERT's MLM-head transform, which the paper's headless twin drops
    with the head.  Scoring its output instead of the raw last layer kept the headless DistilBERT-shape
    twin from collapsing at lr 1e-3 (docs/guide/training.md, 'The MLM plateau')."""
    layer = nn.Linear(dim, dim)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return nn.Sequential(layer, nn.GELU(), nn.LayerNorm(dim))


class LanguageModel(nn.Module):
    """An HF model plus the loss that the objective scores its outputs with.

    forward(input_ids, labels) -> LossOutput with reduction="sum"; the trainer divides by the number
    of loss positions of the whole optimizer step (MLM's count varies per micro-batch).  The loss is
    the entry of `headless.loss_kinds.LOSSES`: its function, implementations and extra parameters.
    """

    def __init__(self, hf_model: nn.Module, loss_kind: str, objective: ObjectiveConfig, attention_kernel: str = "auto"):
        super().__init__()
        self.hf = hf_model
        self.attention_kernel = attention_kernel  # model.attention_kernel: the SDPA kernel the forward runs
        self.loss_kind = loss_kind
        self.kind = lookup_loss(loss_kind)
        self.objective = objective
        self.loss_group = None  # a torch.distributed group for `negatives: global`, set by the trainer
        # top-1 accuracy costs an extra pass with the fused GPU kernels: the trainer asks for it
        # only on the steps it logs
        self.with_accuracy = True
        self.causal = is_causal(hf_model.config)  # a decoder, CLM: nearly every position is scored
        self.compiled_region = None  # "model" or "backbone" once compile_model ran
        # resolved once: the loss must not import anything inside a compiled graph
        self.loss_function = self.kind.loss_function()
        self.forward_function = self.kind.forward_function(objective.loss_implementation)
        emb = self.backbone.get_input_embeddings().weight
        for name in self.kind.extra_parameters:  # e.g. NCE's untied target matrix
            matrix = nn.Embedding(emb.shape[0], emb.shape[1])
            nn.init.normal_(matrix.weight, std=getattr(hf_model.config, "initializer_range", 0.02))
            setattr(self, name, matrix)
        if objective.projector == "transform":  # what CWT scores: see `project`
            self.projector = output_transform(emb.shape[1], getattr(hf_model.config, "initializer_range", 0.02))

    def project(self, outputs: torch.Tensor) -> torch.Tensor:
        """The outputs a contrastive loss scores: raw (the paper) or through `objective.projector`."""
        projector = getattr(self, "projector", None)
        return outputs if projector is None else projector(outputs)

    @property
    def config(self):
        return self.hf.config

    @property
    def backbone(self) -> nn.Module:
        """The HF base model (a property, not a submodule: registering it twice would duplicate
        every weight name in state dicts)."""
        return base_model(self.hf)

    @property
    def has_head(self) -> bool:
        return self.backbone is not self.hf

    @property
    def static_shapes(self) -> bool:
        """Whether the loss positions come in shapes that the batch's size alone fixes: CLM (every
        position scored, the few ignored ones zeroed) or MLM with `masking: static` (a constant
        count per row, gathered with static shapes)."""
        return self.causal or self.objective.masking == "static"

    @property
    def sync_free(self) -> bool:
        """Whether backbone AND loss are one graph with static shapes and no host read, so that
        torch.compile takes them whole (and CUDA graphs capture the whole forward and backward).

        Needs static shapes and a loss written in plain tensor ops with no data-dependent size (the
        table's `capturable` implementations): CWT "reference" (the paper's K×K pairs, no
        `torch.unique`) or "bounded" (de-duplicated into a static room), CE "reference" or
        "chunked".  The other de-duplicating CWT paths need `torch.unique`, the Triton kernels
        stay outside the graph, and global negatives or `max_negatives` gather or sample on the host."""
        return self._sync_free_with(self.objective.loss_implementation)

    def _sync_free_with(self, implementation: str) -> bool:
        """`sync_free` if the loss ran with `implementation`."""
        obj = self.objective
        if not self.static_shapes or self.loss_group is not None or obj.max_negatives:
            return False
        return self.kind.implementation(implementation).capturable

    def scored_rows(self, batch_size: int, seq_len: int) -> int:
        """Rows the loss scores per micro-batch with static shapes: every CLM position, or the
        static MLM count per row."""
        from headless.objectives import static_mask_count

        per_row = seq_len if self.causal else static_mask_count(seq_len, self.objective.mask_prob)
        return batch_size * per_row

    def captures_by_default(self, batch_size: int, seq_len: int) -> bool:
        """Whether `loss_implementation: auto` becomes a one-graph path under compile
        (`captured_implementation`)."""
        return self.captured_implementation(batch_size, seq_len) is not None

    def captured_implementation(self, batch_size: int, seq_len: int) -> Optional[str]:
        """What `loss_implementation: auto` becomes under compile, so that backbone and loss are one
        graph, or None: needs static shapes (CLM, or MLM with static masking) and a loss whose
        table entry says so (`captured_as`): CWT "reference" with at most `CAPTURE_MAX_ROWS` scored
        rows per micro-batch, above that "bounded" when `objective.unique_bound` is set and its
        room is smaller than the rows; CE "reference" with at most `CAPTURE_MAX_LOGITS` logits.

        The bounds are the largest shapes at which one graph measured faster than the eager loss,
        for both twins (docs/reference/performance.md has the shapes, numbers and commands).  Above
        them the Triton losses stay, eager."""
        captured_as = self.kind.captured_as
        if captured_as is None or not self._sync_free_with("reference"):
            return None
        return captured_as(self.scored_rows(batch_size, seq_len), self.input_embedding_weight().shape[0],
                           self.unique_bound)

    @property
    def unique_bound(self) -> Optional[int]:
        """`objective.unique_bound` as a number; "auto" not yet sized from data (`size_unique_bound`)
        is no bound: min(vocab, rows), always exact."""
        bound = self.objective.unique_bound
        return None if bound == "auto" else bound

    def size_unique_bound(self, most_unique: int) -> int:
        """Turn `objective.unique_bound: auto` into a number from the most unique targets sampled."""
        from headless.loss_kinds import auto_room

        self.objective = dataclasses.replace(self.objective, unique_bound=auto_room(most_unique))
        return self.objective.unique_bound

    def compile_model(self, mode: str, batch_size: int, seq_len: int) -> bool:
        """torch.compile what can be one graph: backbone and loss together when `sync_free`
        (`fullgraph`, so a break fails loudly), else the backbone alone, the loss staying eager.
        `compiled_region` says which; `loss_implementation: auto` turns into a one-graph path first
        where that is faster (`captured_implementation`, for micro-batches of this shape).

        Returns whether CUDA graphs are captured ("reduce-overhead", "max-autotune" on CUDA): the
        caller must then mark each new step with `torch.compiler.cudagraph_mark_step_begin()`."""
        captured = self.captured_implementation(batch_size, seq_len)
        if self.objective.loss_implementation == "auto" and captured:
            self.objective = dataclasses.replace(self.objective, loss_implementation=captured)
        if self.sync_free:
            self.compile(mode=mode, fullgraph=True)
            self.compiled_region = "model"
        else:
            self.backbone.compile(mode=mode)
            self.compiled_region = "backbone"
        return mode in ("reduce-overhead", "max-autotune") and self.input_embedding_weight().is_cuda

    def input_embedding_weight(self) -> torch.Tensor:
        return self.backbone.get_input_embeddings().weight

    def check_attention_kernel(self, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        """Refuse (one line) a `model.attention_kernel` that cannot run on `device` (else where the
        weights are) at the compute dtype (`dtype`, else the weights'): before the run, not in its first step."""
        from headless.attention import check_kernel

        config, weight = self.config, self.input_embedding_weight()
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dropout = next((getattr(config, name) for name in ("attention_dropout", "attention_probs_dropout_prob",
                                                            "attn_pdrop") if getattr(config, name, None)), 0.0)
        check_kernel(self.attention_kernel, device or weight.device, dtype or weight.dtype, head_dim, self.causal,
                     float(dropout))

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        with kernel_context(self.attention_kernel):
            return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: Optional[torch.Tensor] = None):
        if self.forward_function is not None:  # an implementation that is not a loss of hidden states
            with kernel_context(self.attention_kernel):  # HF's own head and loss: the backbone inside
                return self.forward_function(self, input_ids, labels, attention_mask)
        if self.one_lookup:
            return self._one_lookup_forward(input_ids, labels, attention_mask)
        return self.loss(self.hidden_states(input_ids, attention_mask), labels)

    @property
    def one_lookup(self) -> bool:
        """Whether `forward` looks the inputs and the CWT targets up in ONE embedding call
        (`headless.one_lookup`): the CWT loss with static shapes (the scored targets are known
        before the forward), no loss group, and a backbone that takes it (`takes_one_lookup`: a
        plain `nn.Embedding`, an exact `inputs_embeds` path). Bernoulli MLM keeps two lookups: its
        scored rows are selected by a count the host reads, and looking up every position would
        cost B·L·D."""
        return (self.loss_function is cwt_of and self.static_shapes and self.loss_group is None
                and takes_one_lookup(self.backbone))

    def _one_lookup_forward(self, input_ids: torch.Tensor, labels: torch.Tensor,
                            attention_mask: Optional[torch.Tensor]):
        """CWT of the scored positions with inputs and targets looked up in ONE `F.embedding`: the
        backbone gets the first rows as `inputs_embeds`, the loss the others as `target_vectors`.
        Same value and gradients as the two lookups, one dense V×D weight gradient instead of two
        plus their sum (`headless.one_lookup`)."""
        flat, targets = self.scored_selection(labels)  # the rows `scored_positions` gathers
        inputs, target_vectors = lookup_inputs_and_targets(self.backbone.get_input_embeddings(), input_ids, targets)
        with kernel_context(self.attention_kernel):
            hidden = self.backbone(inputs_embeds=inputs, attention_mask=attention_mask).last_hidden_state
        if flat is not None:
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)
        return self.loss_function(self, hidden, targets, target_vectors=target_vectors)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor):
        """The configured loss of hidden [B, L, D] at the positions whose label is not -100: the loss
        kind's function of the scored positions (`scored_positions`)."""
        return self.loss_function(self, *self.scored_positions(hidden, labels))

    def scored_positions(self, hidden: torch.Tensor, labels: torch.Tensor):
        """With `objective.masking: static` (MLM) each row has at most static_mask_count(L) loss
        positions, which are gathered with static shapes and scored with `static_rows` (the few
        empty slots of short rows masked out): no selection whose size the host must read. CLM
        scores every position the same way, its last and cross-document ones zeroed. Otherwise
        hidden and labels as they are: the loss selects the labelled positions itself."""
        flat, targets = self.scored_selection(labels)
        if flat is None:
            return hidden, labels
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat), targets

    def scored_selection(self, labels: torch.Tensor):
        """(flat indices into [B·L] of the rows `scored_positions` gathers, their targets), from the
        labels alone, so known before the forward; (None, labels) when nothing is gathered."""
        from headless.objectives import static_mask_count, static_positions

        if self.causal or not self.static_shapes:
            return None, labels
        return static_positions(labels, static_mask_count(labels.shape[1], self.objective.mask_prob))


# ------------------------------------------------------------------------------------------------
# the functions that the loss table (headless.loss_kinds) names: (model, outputs, targets) -> LossOutput
# summed over the scored positions; outputs/targets as `LanguageModel.scored_positions` gives them


def _contrastive_options(model: LanguageModel) -> dict:
    # the trainer checked the token ids against the vocabulary once (no per-step host check)
    obj = model.objective
    return dict(temperature=obj.temperature, max_negatives=obj.max_negatives, group=model.loss_group,
                allow_empty=True, with_accuracy=model.with_accuracy, check_ids=False,
                static_rows=model.static_shapes, unique_bound=model.unique_bound)


def _head_inputs(model: LanguageModel, outputs: torch.Tensor, targets: torch.Tensor):
    """The labelled rows (selected unless static) and the vanilla head split for the fused losses."""
    from headless.objectives import select_loss_positions

    if not model.static_shapes:
        outputs, targets = select_loss_positions(outputs, targets)
    return outputs, targets, head_parts(model.hf)


def cwt_of(model: LanguageModel, outputs: torch.Tensor, targets: torch.Tensor,
           target_vectors: Optional[torch.Tensor] = None):
    """CWT: outputs against the input embeddings of the targets (the loss selects the rows itself);
    `target_vectors`: those embeddings already looked up (`LanguageModel.one_lookup`)."""
    from headless.losses import cwt_loss

    return cwt_loss(model.project(outputs), targets, model.input_embedding_weight(), reduction="sum",
                    implementation=model.objective.loss_implementation, target_vectors=target_vectors,
                    **_contrastive_options(model))


def nce_of(model: LanguageModel, outputs: torch.Tensor, targets: torch.Tensor):
    """CWT's computation against the separate target matrix (the entry's extra parameter)."""
    from headless.losses import nce_untied_loss

    return nce_untied_loss(model.project(outputs), targets, model.target_embedding.weight, reduction="sum",
                           implementation=model.objective.loss_implementation, **_contrastive_options(model))


def ce_of(model: LanguageModel, outputs: torch.Tensor, targets: torch.Tensor):
    """Cross-entropy through the vanilla head, applied only at the scored positions."""
    from headless.losses import vanilla_ce_loss

    outputs, targets, parts = _head_inputs(model, outputs, targets)
    return vanilla_ce_loss(parts.transform(outputs), targets, parts.projection.weight,
                           getattr(parts.projection, "bias", None), reduction="sum",
                           implementation=model.objective.loss_implementation, allow_empty=True,
                           with_accuracy=model.with_accuracy, check_ids=False, static_rows=model.static_shapes)


def ce_plus_cwt_of(model: LanguageModel, outputs: torch.Tensor, targets: torch.Tensor):
    """CE through the head (the configured implementation) plus CWT of the same hidden states."""
    from headless.losses import ce_plus_cwt_loss

    outputs, targets, parts = _head_inputs(model, outputs, targets)
    return ce_plus_cwt_loss(parts.transform(outputs), targets, parts.projection.weight, outputs, targets,
                            model.input_embedding_weight(), head_bias=getattr(parts.projection, "bias", None),
                            reduction="sum", ce_implementation=model.objective.loss_implementation,
                            **_contrastive_options(model))


# implementations that replace the forward: (model, input_ids, labels, attention_mask) -> LossOutput


def hf_own_loss(model: LanguageModel, input_ids: torch.Tensor, labels: torch.Tensor,
                attention_mask: Optional[torch.Tensor]):
    """The HF model's own head and loss, as users run the baseline: logits at EVERY position
    (not only the loss positions), upcast to float32, then cross-entropy (`loss_implementation:
    hf`; `headless bench`'s ce-hf-full)."""
    from headless.losses import LossOutput
    from headless.objectives import IGNORE_INDEX

    causal = type(model.hf).__name__.endswith("ForCausalLM")
    hf_labels = labels
    if causal:  # HF shifts its labels itself: it scores position t against labels[t + 1]
        hf_labels = torch.cat([labels.new_full((labels.shape[0], 1), IGNORE_INDEX), labels[:, :-1]], dim=1)
    out = model.hf(input_ids=input_ids, attention_mask=attention_mask, labels=hf_labels)
    count = (labels != IGNORE_INDEX).sum()
    accuracy = None
    if model.with_accuracy:
        with torch.no_grad():
            logits = out.logits[:, :-1] if causal else out.logits
            keep = (labels[:, :-1] if causal else labels) != IGNORE_INDEX
            gold = (labels[:, :-1] if causal else labels)[keep]
            accuracy = (logits[keep].argmax(-1) == gold).float().mean()
    return LossOutput(loss=out.loss.float() * count, num_targets=count, accuracy=accuracy, num_unique=None)


def backbone_only(model: LanguageModel, input_ids: torch.Tensor, labels: torch.Tensor,
                  attention_mask: Optional[torch.Tensor]):
    """`loss_implementation: none`, for `headless bench`: the backbone's cost with no loss at all
    (the mean of the hidden states), the floor the losses are compared against."""
    from headless.losses import LossOutput
    from headless.losses.cwt import device_scalar

    hidden = model.hidden_states(input_ids, attention_mask)
    count = (labels != -100).sum()
    return LossOutput(loss=hidden.float().mean() * count, num_targets=count, accuracy=None,
                      num_unique=device_scalar(0, hidden.device))


def build_model(cfg: ModelConfig, objective: ObjectiveConfig, loss_kind: str, vocab_size: int,
                pad_token_id: Optional[int] = None, eos_token_id: Optional[int] = None) -> LanguageModel:
    """The model of a run: headless (base model) unless the loss needs a vocabulary head."""
    needs_head = lookup_loss(loss_kind).needs_head
    model_vocab = cfg.vocab_size or round_up(vocab_size, cfg.pad_vocab_multiple)
    if cfg.init_from:
        hf = _instantiate(None, head=needs_head, is_encoder=cfg.is_encoder, attn=cfg.attn_implementation,
                          init_from=cfg.init_from)
        model_vocab = hf.get_input_embeddings().weight.shape[0]
    else:
        if model_vocab < vocab_size:
            raise HeadlessError(f"model.vocab_size={model_vocab} is smaller than the tokenizer's {vocab_size} tokens")
        check_size(cfg, model_vocab, needs_head)
        check_attention(cfg.attn_implementation)
        try:
            hf_config = build_hf_config(cfg, model_vocab, pad_token_id, eos_token_id)
            hf = _instantiate(hf_config, head=needs_head, is_encoder=cfg.is_encoder,
                              attn=cfg.attn_implementation, init_from=None)
        except KeyError as err:  # HF looks names up in tables: ACT2FN[hidden_act], rope types...
            raise HeadlessError(f"cannot build the {cfg.architecture} model: unknown name {err.args[0]!r} "
                                f"(model.extra {cfg.extra})") from None
        except (TypeError, ValueError) as err:
            raise HeadlessError(f"cannot build the {cfg.architecture} model from model.*: "
                                f"{str(err).splitlines()[0]}") from None
    if model_vocab < vocab_size:
        raise HeadlessError(f"tokenizer has {vocab_size} tokens but the model's embedding has only {model_vocab} rows")
    return LanguageModel(hf, loss_kind, objective, attention_kernel=cfg.attention_kernel)


def model_shape(model: nn.Module) -> tuple[int, int]:
    """(layers, hidden size) of the built model, from its Hugging Face config: the FLOPs estimate's
    shape.  `model.*` holds it only for a model built from the config; one loaded with
    `model.init_from` (HLM+FT, continued pretraining) keeps the config's defaults there."""
    hf = getattr(model, "hf", model)
    return int(hf.config.num_hidden_layers), int(hf.config.hidden_size)


def count_parameters(model: nn.Module) -> dict:
    """Total and non-embedding parameter counts (the latter drives the FLOPs estimate).

    Embedding = every nn.Embedding (tokens, positions, NCE's target matrix) plus an untied vocabulary
    projection (`get_output_embeddings`): a vanilla twin's V x D head is vocabulary, not backbone (its
    FLOPs are counted with the output scoring), so a decoder's twins report the same non-embedding
    count; an MLM head's D x D transform stays non-embedding."""
    total = sum(p.numel() for p in model.parameters())
    emb = 0
    seen = set()
    vocab_weights = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    for module in model.modules():
        get_out = getattr(module, "get_output_embeddings", None)
        out = get_out() if callable(get_out) else None
        if isinstance(out, nn.Module) and isinstance(getattr(out, "weight", None), torch.Tensor):
            vocab_weights.append(out.weight)
    for weight in vocab_weights:
        if id(weight) not in seen:
            seen.add(id(weight))
            emb += weight.numel()
    return {"total": total, "embedding": emb, "non_embedding": total - emb}
