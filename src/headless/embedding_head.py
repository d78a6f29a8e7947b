"""Fill masks with a headless encoder the way CWT trained it: vocabulary scores are the last hidden
state against the input embeddings, `logits = hidden @ E^T` (what `headless demo` scores).

No standard transformers class holds that head exactly: every `*ForMaskedLM` applies a transform
(dense, activation, LayerNorm) before its projection, which cannot be the identity, so an exported
`AutoModelForMaskedLM` would not compute these scores.  Hence this helper, on a plain `AutoModel`:

    from headless.embedding_head import fill_mask
    fill_mask("exports/my-encoder", "Paris is the [MASK] of France.")   # [(token, score), ...] per mask

CWT's in-batch softmax makes these scores relative to how frequent a token is (the contrast is
against the batch's targets); `log_prior` (log unigram frequencies of the training split,
`headless.demo.unigram_log_prior(PackedDataset(DATA, "train"))`) adds that back, as the demo does.
Special tokens are never predicted.  Exact only for exports trained without `objective.projector`
(the card says when one was used): the helper refuses those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from headless.errors import HeadlessError


@torch.no_grad()
def embedding_logits(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                     log_prior: Optional[torch.Tensor] = None, **inputs) -> torch.Tensor:
    """[B, L, V] scores of every vocabulary token at every position: last hidden state @ E^T
    (+ `log_prior`, [V'] with V' <= V, on the first V' tokens)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, **inputs)
    hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0]
    logits = hidden @ model.get_input_embeddings().weight.T
    if log_prior is not None:
        logits[..., : log_prior.shape[-1]] += log_prior.to(logits)
    return logits


def load_encoder(model_dir):
    """(AutoModel, tokenizer) of a headless encoder export; refused when CWT scored its outputs
    through a projector that is not exported (these scores would not be what was trained)."""
    from transformers import AutoModel

    from headless.data.tokenizers import load_model_tokenizer

    path = Path(model_dir)
    try:
        meta = json.loads((path / "headless.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    if isinstance(meta, dict) and meta.get("projector") not in (None, "none"):
        raise HeadlessError(f"{path} was trained with objective.projector={meta['projector']}, which is not "
                            "exported: its embedding scores would not be the ones CWT trained")
    tokenizer = load_model_tokenizer(path)
    if tokenizer.mask_token_id is None:
        raise HeadlessError(f"the tokenizer of {path} has no mask token: nothing to fill")
    try:
        model = AutoModel.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise HeadlessError(f"cannot load {path} with AutoModel: {str(err).splitlines()[0]}") from None
    return model.eval(), tokenizer


def fill_mask(model_dir, text: str, *, top_k: int = 5, log_prior: Optional[torch.Tensor] = None, model=None,
              tokenizer=None) -> list[list[tuple[str, float]]]:
    """For every mask token in `text`, the `top_k` (token, probability) by embedding scores; the
    embedding rows past the tokenizer (vocabulary padding) and special tokens are never chosen."""
    if model is None or tokenizer is None:
        model, tokenizer = load_encoder(model_dir)
    enc = tokenizer(text, return_tensors="pt", truncation=True)
    positions = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if not positions:
        raise HeadlessError(f"no {tokenizer.mask_token} in the text: nothing to fill")
    from headless.data.tokenizers import special_token_ids

    scores = embedding_logits(model, **enc, log_prior=log_prior)[0, positions, : len(tokenizer)].float()
    scores[:, special_token_ids(tokenizer)] = float("-inf")
    probs = scores.softmax(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, ids)]
            for ps, ids in zip(top.values, top.indices)]
