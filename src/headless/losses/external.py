"""Other libraries' fused linear cross-entropy kernels, as exact back ends of our two losses.

Exact CWT is a linear cross-entropy (classes = the unique target embeddings, bias = their log
counts; see cwt.py), and so is the vanilla head, so any fused linear-CE kernel computes either
without materialising the scores.  Back ends, all optional:

* "liger": Liger-Kernel's fused linear cross-entropy (chunked logits, CUDA); takes a bias.
* "cce":   Apple's Cut Cross-Entropy (Triton, CUDA; 16-bit inputs only in backward) in its EXACT
           mode (`filter_eps=None`; its default gradient filtering changes the gradients).  It has
           no bias argument, so the bias is folded in as extra features: [o, 1]·[c, b] = o·c + b
           (the bias split in two 16-bit halves, so it keeps its precision).
* "torch": `torch.nn.functional.linear_cross_entropy` (torch >= 2.13, chunked, any device).

Inputs follow autocast like our Triton kernel: under autocast the outputs and classes are cast to
the autocast dtype (bf16 GEMMs) and the losses come back in float32.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from headless.errors import HeadlessError

BACKENDS = ("liger", "cce", "torch")
_PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy"}


def missing_package(backend: str) -> str | None:
    """The install hint when `backend`'s package is absent (None when it is there, or needs none)."""
    package = _PACKAGES.get(backend)
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return f"{package} is not installed (pip install {package.replace('_', '-')})"


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` (None when it can)."""
    if backend == "torch":
        if not hasattr(F, "linear_cross_entropy"):
            return f"torch.nn.functional.linear_cross_entropy needs torch >= 2.13 (this is {torch.__version__})"
        return None
    package = _PACKAGES[backend]
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package.replace('_', '-')})"
    if device.type != "cuda":
        return f"{package} needs a CUDA device"
    return None


def _compute_dtype(outputs: Tensor) -> torch.dtype:
    if outputs.is_cuda and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return outputs.dtype


def linear_ce(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, scale: float,
              backend: str, rows: bool = True) -> Tensor:
    """Per-row cross-entropy of scale·outputs @ classesᵀ (+ bias) at `labels`, float32 [K].

    With `rows=False` the caller only uses the SUM of the result: every row then holds the mean,
    which lets Liger run its fast summed path (its per-row path fails in backward with 16-bit
    inputs in liger-kernel 0.8.5: a float32 upstream gradient meets bf16 weights)."""
    reason = unavailable_reason(backend, outputs.device)
    if reason:
        raise HeadlessError(f"loss back end {backend!r} is unavailable: {reason}")
    dtype = _compute_dtype(outputs)
    o = outputs if scale == 1.0 else outputs * scale
    if backend == "torch":
        acc = torch.float64 if o.dtype == torch.float64 else torch.float32
        return F.linear_cross_entropy(o.to(acc), classes.to(acc), labels, reduction="none",
                                      linear_bias=None if bias is None else bias.to(acc),
                                      options=torch.nn.LinearCrossEntropyOptions())
    with torch.autocast("cuda", enabled=False):
        o, c = o.to(dtype).contiguous(), classes.to(dtype).contiguous()
        sixteen = dtype in (torch.float16, torch.bfloat16)
        if bias is not None and (backend == "cce" or sixteen):
            # fold: [o, 1, 1, 0…]·[c, b_hi, b_lo, 0…] with b = b_hi + b_lo, so the bias keeps ~16 bits
            # in 16-bit inputs (the kernels accumulate in float32; Liger would promote a float32 bias
            # and then fail on mixed dtypes); D stays a multiple of 16
            b_hi = bias.to(dtype)
            b_lo = (bias.float() - b_hi.float()).to(dtype)
            pad = -(o.shape[1] + 2) % 16
            o = torch.cat([o, o.new_ones(o.shape[0], 2), o.new_zeros(o.shape[0], pad)], dim=1)
            c = torch.cat([c, b_hi[:, None], b_lo[:, None], c.new_zeros(c.shape[0], pad)], dim=1)
            bias = None
        if backend == "liger":
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

            b = None if bias is None else bias.float()
            if not rows:
                total = liger_fused_linear_cross_entropy(o, c, labels, bias=b, reduction="sum",
                                                         accum_dtype=torch.float32).float()
                return (total / labels.numel()).expand(labels.numel())
            if sixteen:
                raise HeadlessError("Liger's per-row losses (reduction='none' or max_negatives) fail in backward "
                                    "with 16-bit inputs; use reduction 'sum'/'mean' or another back end")
            return liger_fused_linear_cross_entropy(o, c, labels, bias=b, reduction="none",
                                                    accum_dtype=torch.float32).float()
        from cut_cross_entropy import linear_cross_entropy

        if not rows:
            total = linear_cross_entropy(o, c, labels, reduction="sum", filter_eps=None).float()
            return (total / labels.numel()).expand(labels.numel())
        return linear_cross_entropy(o, c, labels, reduction="none", filter_eps=None).float()
