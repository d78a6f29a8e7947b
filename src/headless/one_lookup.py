"""Inputs and CWT targets looked up in ONE embedding call.

CWT scores outputs against the input embeddings of the targets. Looked up twice (the backbone's
lookup of the inputs, then `weight[targets]` in the loss), autograd builds two dense V×D weight
gradients and their sum: 4·V·D floats of extra memory traffic per step, which grows with V.  One
`F.embedding` of [inputs; targets] builds one (captured on an H100 at the multilingual shape: CWT's
cost over the backbone went from +0.5 / +1.0 ms to ±0.1 ms at V = 119,547 / 250,048,
docs/results/2026-12-05-one-lookup).  Used by `LanguageModel` and by the HF integration
(`headless.integrations.hf.compute_cwt_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# model types whose base model gives the same hidden states for `inputs_embeds` as for the
# `input_ids` they were looked up from, pad tokens included (tests/test_models.py checks it):
# RoBERTa's position ids count the pad tokens of input_ids, so it is not one of them
INPUTS_EMBEDS_EXACT = frozenset({"bert", "distilbert", "modernbert", "gpt_neox", "llama", "gpt2"})


def takes_one_lookup(model: nn.Module) -> bool:
    """Whether `model` (an HF model) can be fed `inputs_embeds` from `lookup_inputs_and_targets`
    with the same result as `input_ids`: a plain `nn.Embedding` (a subclass, such as a scaled
    embedding, keeps its own forward; no max_norm, which renormalises in place; no
    scale_grad_by_freq, which the extra rows would change; not sparse) with a trainable weight and
    no hooks, a local weight (not sharded by FSDP: it is read outside the model's forward), and a
    model type whose `inputs_embeds` path is exact (`INPUTS_EMBEDS_EXACT`)."""
    emb = model.get_input_embeddings() if callable(getattr(model, "get_input_embeddings", None)) else None
    return (type(emb) is nn.Embedding and emb.max_norm is None and not emb.scale_grad_by_freq
            and not emb.sparse and type(emb.weight.data) is torch.Tensor
            # a frozen embedding gains nothing; hooks (HF's enable_input_require_grads for gradient
            # checkpointing with a frozen embedding, NEFTune's noise, accelerate's offload) run only
            # when the module is called, which the one lookup does not do
            and emb.weight.requires_grad and not emb._forward_hooks and not emb._forward_pre_hooks
            and getattr(emb, "_hf_hook", None) is None
            and getattr(getattr(model, "config", None), "model_type", None) in INPUTS_EMBEDS_EXACT)


def lookup_inputs_and_targets(emb: nn.Embedding, input_ids: torch.Tensor, targets: torch.Tensor):
    """(inputs_embeds [*input_ids.shape, D], target_vectors [*targets.shape, D]) from one `F.embedding`.

    Same values and gradients as the two lookups.  The pad token: `nn.Embedding(padding_idx=)` gives
    the pad INPUTS no gradient, `weight[targets]` gives a pad TARGET one; the lookup runs without
    padding_idx and the pad inputs' rows are detached instead, so both hold.  Ignored targets
    (negative ids) look up row 0, which the loss never scores (a zero gradient).  No host read: it
    stays capturable."""
    ids = torch.cat([input_ids.reshape(-1), targets.reshape(-1).clamp_min(0)])
    # split (its backward concatenates) rather than two slices (each backward zero-fills all rows)
    inputs, target_vectors = F.embedding(ids, emb.weight).split([input_ids.numel(), targets.numel()])
    inputs = inputs.view(*input_ids.shape, inputs.shape[-1])
    if emb.padding_idx is not None:
        inputs = torch.where((input_ids == emb.padding_idx).unsqueeze(-1), inputs.detach(), inputs)
    return inputs, target_vectors.view(*targets.shape, target_vectors.shape[-1])
