"""The vanilla objective and the paper's ablations (Tab. 6), with the same interface as `cwt_loss`.

Full-vocabulary cross-entropy IS a linear cross-entropy whose classes are the head's rows, so it
reuses the chunked log-sum-exp of `cwt.py` (and the same Triton kernel on GPU). A head tied to the
input embeddings is just `head_weight=embeddings.weight`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from headless.errors import HeadlessError
from headless.losses.cwt import (LossOutput, _triton_module, accumulation_dtype, check_choice, check_inputs,
                                 cwt_loss, device_scalar, empty_output, linear_logsumexp, reduce_rows, row_dot,
                                 select_rows, triton_usable, REDUCTIONS)

VANILLA_IMPLEMENTATIONS = ("auto", "reference", "chunked", "triton", "torch", "liger", "cce", "quack")
AUTO_DENSE_LOGITS_BYTES = 256 * 2**20  # on CPU, "auto" materialises the logits up to this size
AUTO_DENSE_LOGITS_BYTES_CUDA = 4 * 2**30  # on CUDA, for heads with a trainable bias


def _auto(outputs: Tensor, num_rows: int, num_classes: int, trainable_bias: bool = False) -> str:
    """Fastest exact path (docs/reference/performance.md). CUDA: the Triton kernel (faster than materialised
    logits in a full decoder training step, and linear in memory), except for a head with a
    trainable bias (BERT's MLM head) whose logits take at most 4 GiB: there the dense logits were
    faster (folding the bias into the kernel's classes copies the head every step). CPU: dense
    logits up to 256 MiB, then the chunked path."""
    if triton_usable(outputs):
        if trainable_bias and num_rows * num_classes * 4 <= AUTO_DENSE_LOGITS_BYTES_CUDA:
            return "reference"
        return "triton"
    acc_bytes = torch.finfo(accumulation_dtype(outputs)).bits // 8
    return "reference" if num_rows * num_classes * acc_bytes <= AUTO_DENSE_LOGITS_BYTES else "chunked"


def vanilla_ce_loss(outputs: Tensor, target_ids: Tensor, head_weight: Tensor, head_bias: Tensor | None = None, *,
                    ignore_index: int = -100, reduction: str = "mean", implementation: str = "auto",
                    chunk_size: int | None = None, allow_empty: bool = False,
                    with_accuracy: bool = True, check_ids: bool = True, static_rows: bool = False) -> LossOutput:
    """Cross-entropy of outputs [..., D] projected on head_weight [V, D] (+ head_bias [V]).

    Paths (same value): "reference" (logits + F.cross_entropy), "chunked" (online log-sum-exp,
    never K×V), "triton" (our GPU kernel), "torch" (torch.nn.functional.linear_cross_entropy,
    chunked, torch >= 2.13), "liger" / "cce" / "quack" (Liger-Kernel's / Cut Cross-Entropy's /
    quack's fused kernels, when installed; see external.py). Accumulation in float32 (float64 for float64 inputs).
    accuracy = top-1 over the vocabulary (the target's logit is the maximum; ties count as
    correct). With the fused paths it costs an extra forward pass: with_accuracy=False skips it.
    check_ids=False skips the host-side range check of target_ids (a GPU synchronisation).
    static_rows=True (reduction "sum"/"mean"): score every position and zero the ignored ones
    instead of selecting the others (a selection whose size the host must read), as in `cwt_loss`:
    for rows gathered with static shapes (static MLM masking), a few of them ignored.
    """
    fn = "vanilla_ce_loss"
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("implementation", implementation, VANILLA_IMPLEMENTATIONS)
    valid = None  # static rows: bool[N], the rows that count
    if static_rows and reduction != "none":
        check_inputs(fn, outputs, target_ids, head_weight, "head_weight", head_bias)
        if check_ids:
            select_rows(fn, outputs, target_ids, head_weight, ignore_index, "head_weight", head_bias)
        rows, o = None, outputs.reshape(-1, outputs.shape[-1])
        flat = target_ids.reshape(-1).long()
        valid = flat != ignore_index
        ids = torch.where(valid, flat, 0)  # any real class: the row's loss is zeroed below
        if not allow_empty and not o.is_cuda and not bool(valid.any()):  # on CPU the check is free
            raise HeadlessError(f"{fn}: every target is ignored (ignore_index={ignore_index}); "
                                "pass allow_empty=True to get a zero loss for such batches")
    else:
        rows, o, ids = select_rows(fn, outputs, target_ids, head_weight, ignore_index, "head_weight", head_bias,
                                   check_ids=check_ids)
    acc = accumulation_dtype(outputs, head_weight)
    if ids.numel() == 0:
        return empty_output(fn, allow_empty, ignore_index, target_ids, [o, head_weight, head_bias], acc, reduction)
    if implementation == "auto":
        trainable_bias = head_bias is not None and head_bias.requires_grad
        implementation = _auto(outputs, ids.numel(), head_weight.shape[0], trainable_bias)
    stats = total = None
    if implementation == "reference":
        logits = F.linear(o.to(acc), head_weight.to(acc), None if head_bias is None else head_bias.to(acc))
        losses = F.cross_entropy(logits, ids, reduction="none")
        detached = logits.detach()
        stats = (detached.max(dim=1).values, detached.gather(1, ids.unsqueeze(1)).squeeze(1))
    elif implementation == "chunked":
        lse, best, target = linear_logsumexp(o, head_weight, head_bias, ids, chunk_size=chunk_size)
        logit = row_dot(o, head_weight, ids, 1.0)
        losses = lse - (logit if head_bias is None else logit + head_bias[ids].to(acc))
        stats = (best, target)
    elif implementation == "triton":
        if not triton_usable(outputs):
            raise HeadlessError(f"{fn}: implementation='triton' needs a CUDA tensor and an importable triton kernel")
        kernel = _triton_module().linear_ce_triton
        if head_bias is not None and head_bias.requires_grad:
            # The kernel differentiates classes, not the bias: fold the bias into the classes as an
            # extra column scored against a constant 1, so its gradient is that column's gradient.
            ones = torch.ones(o.shape[0], 1, dtype=o.dtype, device=o.device)
            classes = torch.cat([head_weight.to(o.dtype), head_bias.to(o.dtype)[:, None]], dim=1)
            losses = kernel(torch.cat([o, ones], dim=1), classes, None, ids, 1.0)
        else:
            bias = None if head_bias is None else head_bias.float()
            losses = kernel(o, head_weight, bias, ids, 1.0)
    elif valid is not None:  # static rows, summed: the kernel skips the ignored ones itself, as the
        # libraries' trainer integrations call it (one sum; Liger's per-row path fails at bf16)
        from headless.losses.external import IGNORED, linear_ce_total

        total = linear_ce_total(o, head_weight, head_bias, torch.where(valid, ids, IGNORED), 1.0, implementation)
    else:
        from headless.losses.external import linear_ce

        losses = linear_ce(o, head_weight, head_bias, ids, 1.0, implementation, rows=reduction == "none")
    if stats is None and with_accuracy:
        with torch.no_grad():
            _, best, target = linear_logsumexp(o, head_weight, head_bias, ids, chunk_size=chunk_size)
        stats = (best, target)
    if valid is not None:
        count = valid.sum()
        if total is None:  # per-row losses (the external kernels summed already)
            total = torch.where(valid, losses, torch.zeros_like(losses)).sum()
        accuracy = None if stats is None else \
            ((stats[1] >= stats[0]) & valid).sum().float() / count.clamp_min(1)
        loss = total if reduction == "sum" else total / count.clamp_min(1).to(total.dtype)
        return LossOutput(loss, count, accuracy, None)
    accuracy = (stats[1] >= stats[0]).float().mean() if stats is not None else None
    return LossOutput(reduce_rows(losses, rows, target_ids, reduction),
                      device_scalar(ids.numel(), ids.device), accuracy, None)


def ce_plus_cwt_loss(ce_outputs: Tensor, ce_target_ids: Tensor, head_weight: Tensor, cwt_outputs: Tensor,
                     cwt_target_ids: Tensor, embedding_weight: Tensor, *, head_bias: Tensor | None = None,
                     ce_weight: float = 1.0, cwt_weight: float = 1.0, reduction: str = "mean",
                     ignore_index: int = -100, ce_implementation: str = "auto", **cwt_kwargs) -> LossOutput:
    """CE + CWT (paper Tab. 6: an unweighted sum; the official code's loss weights default to 1).

    The two terms take separate inputs because a vanilla model's head input (e.g. after BERT's
    transform) need not be the hidden state CWT scores. Metrics: CE's num_targets and top-1
    accuracy, CWT's num_unique. `cwt_kwargs` go to `cwt_loss` (temperature, group, ...); those that
    both losses take (allow_empty, with_accuracy, check_ids, static_rows) go to both.
    """
    shared = {k: cwt_kwargs[k] for k in ("allow_empty", "with_accuracy", "check_ids", "static_rows") if k in cwt_kwargs}
    ce = vanilla_ce_loss(ce_outputs, ce_target_ids, head_weight, head_bias, ignore_index=ignore_index,
                         reduction=reduction, implementation=ce_implementation, **shared)
    cwt = cwt_loss(cwt_outputs, cwt_target_ids, embedding_weight, ignore_index=ignore_index,
                   reduction=reduction, **cwt_kwargs)
    if reduction == "none" and ce.loss.shape != cwt.loss.shape:
        raise HeadlessError(f"ce_plus_cwt_loss: reduction='none' needs CE and CWT targets of one shape, got "
                            f"{tuple(ce.loss.shape)} and {tuple(cwt.loss.shape)}")
    return LossOutput(ce_weight * ce.loss + cwt_weight * cwt.loss, ce.num_targets, ce.accuracy, cwt.num_unique)


def nce_untied_loss(outputs: Tensor, target_ids: Tensor, target_embedding_weight: Tensor, **kwargs) -> LossOutput:
    """Paper Tab. 6 "NCE (wo/ WT)": the CWT loss against a SEPARATE trainable target matrix [V, D].

    Identical computation to `cwt_loss`; only the weight differs (a new parameter, not the input
    embeddings), which is why it costs ×1.57 parameters in the paper. Same keyword arguments.
    """
    return cwt_loss(outputs, target_ids, target_embedding_weight, **kwargs)
