"""Other libraries' fused linear cross-entropy kernels, as exact back ends of our two losses.

Exact CWT is a linear cross-entropy (classes = the unique target embeddings, bias = their log
counts; see cwt.py), and so is the vanilla head, so any fused linear-CE kernel computes either
without materialising the scores.  Back ends, all optional:

* "liger": Liger-Kernel's fused linear cross-entropy (chunked logits, CUDA); takes a bias.
* "cce":   Apple's Cut Cross-Entropy (Triton, CUDA; 16-bit inputs only in backward) in its EXACT
           mode (`filter_eps=None`; its default gradient filtering changes the gradients).  It has
           no bias argument, so the bias is folded in as extra features: [o, 1]·[c, b] = o·c + b
           (the bias split in two 16-bit halves, so it keeps its precision).
* "quack": Tri Dao's quack-kernels (CuTe DSL, CUDA, 16-bit inputs): its chunked linear
           cross-entropy for summed losses (no bias argument: folded as for CCE), its logits +
           cross-entropy kernel for per-row losses.
* "torch": `torch.nn.functional.linear_cross_entropy` (torch >= 2.13, chunked, any device).

Inputs follow autocast like our Triton kernel: under autocast the outputs and classes are cast to
the autocast dtype (bf16 GEMMs) and the losses come back in float32.

Summed losses (`linear_ce_total`) are computed the way each library's own trainer integration calls
it (Liger's `LigerForCausalLMLoss`, CCE's and quack's modules): the ignored rows keep their place
with the label -100 and the kernel returns one sum.  Per-row losses are a second code path in these
libraries, and Liger's fails in backward with 16-bit inputs (liger-kernel 0.8.5).
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from headless.errors import HeadlessError

BACKENDS = ("liger", "cce", "quack", "torch")
# back end -> (module, the name to pip install)
_PACKAGES = {"liger": ("liger_kernel", "liger-kernel"), "cce": ("cut_cross_entropy", "cut-cross-entropy"),
             "quack": ("quack", "quack-kernels")}
IGNORED = -100  # the label the kernels skip (every one of them defaults to it)


def missing_package(backend: str) -> str | None:
    """The install hint when `backend`'s package is absent (None when it is there, or needs none)."""
    if backend not in _PACKAGES:
        return None
    module, dist = _PACKAGES[backend]
    if importlib.util.find_spec(module) is not None:
        return None
    return f"{module} is not installed (pip install {dist}; docs/requirements.md has the tested pins)"


def unavailable_reason(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run on `device` (None when it can)."""
    if backend == "torch":
        if not hasattr(F, "linear_cross_entropy"):
            return f"torch.nn.functional.linear_cross_entropy needs torch >= 2.13 (this is {torch.__version__})"
        return None
    missing = missing_package(backend)
    if missing:
        return missing
    if device.type != "cuda":
        return f"{_PACKAGES[backend][0]} needs a CUDA device"
    return None


def _compute_dtype(outputs: Tensor) -> torch.dtype:
    if outputs.is_cuda and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return outputs.dtype


def _check(backend: str, outputs: Tensor) -> None:
    reason = unavailable_reason(backend, outputs.device)
    if reason:
        raise HeadlessError(f"loss back end {backend!r} is unavailable: {reason}")


def _prepare(outputs: Tensor, classes: Tensor, bias: Tensor | None, scale: float, backend: str):
    """(o, c, bias, sixteen): o and c in the compute dtype, contiguous, the bias folded into the
    features where the kernel takes none (CCE, quack) or would promote it (Liger with 16-bit
    inputs).  Called while the caller's autocast is still on (it decides the dtype); the kernels
    then run with autocast off."""
    dtype = _compute_dtype(outputs)
    o = outputs if scale == 1.0 else outputs * scale
    o, c = o.to(dtype).contiguous(), classes.to(dtype).contiguous()
    sixteen = dtype in (torch.float16, torch.bfloat16)
    if backend == "quack" and not sixteen:
        raise HeadlessError("loss back end 'quack' takes 16-bit inputs only: run under bf16 autocast "
                            "(precision: bf16 or auto on a GPU)")
    if bias is not None and (backend in ("cce", "quack") or sixteen):
        # fold: [o, 1, 1, 0…]·[c, b_hi, b_lo, 0…] with b = b_hi + b_lo, so the bias keeps ~16 bits
        # in 16-bit inputs (the kernels accumulate in float32; Liger would promote a float32 bias
        # and then fail on mixed dtypes); D stays a multiple of 16
        b_hi = bias.to(dtype)
        b_lo = (bias.float() - b_hi.float()).to(dtype)
        pad = -(o.shape[1] + 2) % 16
        o = torch.cat([o, o.new_ones(o.shape[0], 2), o.new_zeros(o.shape[0], pad)], dim=1)
        c = torch.cat([c, b_hi[:, None], b_lo[:, None], c.new_zeros(c.shape[0], pad)], dim=1)
        bias = None
    return o, c, bias, sixteen


def _torch_linear_ce(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, scale: float,
                     reduction: str) -> Tensor:
    """torch's chunked linear cross-entropy, accumulated in float32 (float64 for float64 inputs)."""
    o = outputs if scale == 1.0 else outputs * scale
    acc = torch.float64 if o.dtype == torch.float64 else torch.float32
    return F.linear_cross_entropy(o.to(acc), classes.to(acc), labels, reduction=reduction, ignore_index=IGNORED,
                                  linear_bias=None if bias is None else bias.to(acc),
                                  options=torch.nn.LinearCrossEntropyOptions())


def _kernel_ce(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, scale: float,
               backend: str, reduction: str) -> Tensor:
    """One call of `backend`'s kernel, reduction "sum" (rows labelled -100 skipped) or "none", float32."""
    _check(backend, outputs)
    if backend == "torch":
        return _torch_linear_ce(outputs, classes, bias, labels, scale, reduction)
    o, c, bias, sixteen = _prepare(outputs, classes, bias, scale, backend)
    with torch.autocast("cuda", enabled=False):
        if backend == "liger":
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

            if reduction == "none" and sixteen:
                raise HeadlessError("Liger's per-row losses (reduction='none' or max_negatives) fail in backward "
                                    "with 16-bit inputs; use reduction 'sum'/'mean' or another back end")
            return liger_fused_linear_cross_entropy(o, c, labels, bias=None if bias is None else bias.float(),
                                                    ignore_index=IGNORED, reduction=reduction,
                                                    accum_dtype=torch.float32).float()
        if backend == "quack":
            if reduction == "none":  # its per-row path materialises the K x V logits (its own module does too)
                from quack.linear_cross_entropy import linear_cross_entropy_func

                return linear_cross_entropy_func(o, c, None, labels, reduction="none").float()
            from quack.linear_cross_entropy import chunked_linear_cross_entropy

            pad = -o.shape[0] % 8  # its GEMMs (TMA) need a multiple of 8 rows: padded rows are ignored
            if pad:
                o = torch.cat([o, o.new_zeros(pad, o.shape[1])])
                labels = torch.cat([labels, labels.new_full((pad,), IGNORED)])
            return chunked_linear_cross_entropy(o, c, labels, ignore_index=IGNORED, reduction="sum").float()
        from cut_cross_entropy import linear_cross_entropy

        return linear_cross_entropy(o, c, labels, ignore_index=IGNORED, reduction=reduction, filter_eps=None).float()


def linear_ce_total(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, scale: float,
                    backend: str) -> Tensor:
    """Sum over the rows whose label is not -100 of the cross-entropy of scale·outputs @ classesᵀ
    (+ bias), float32 scalar: one call with reduction "sum" and the ignored rows labelled -100, as
    the libraries' trainer integrations call their kernels (static shapes: no row selection)."""
    return _kernel_ce(outputs, classes, bias, labels, scale, backend, "sum")


def linear_ce(outputs: Tensor, classes: Tensor, bias: Tensor | None, labels: Tensor, scale: float,
              backend: str, rows: bool = True) -> Tensor:
    """Per-row cross-entropy of scale·outputs @ classesᵀ (+ bias) at `labels`, float32 [K].

    With `rows=False` the caller only uses the SUM of the result: every row then holds the mean,
    which runs the kernels' summed path (`linear_ce_total`; Liger's per-row path fails in backward
    with 16-bit inputs in liger-kernel 0.8.5: a float32 upstream gradient meets bf16 weights)."""
    if not rows:
        total = linear_ce_total(outputs, classes, bias, labels, scale, backend)
        return (total / labels.numel()).expand(labels.numel())
    return _kernel_ce(outputs, classes, bias, labels, scale, backend, "none")
