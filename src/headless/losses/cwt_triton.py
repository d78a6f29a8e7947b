"""Fused linear cross-entropy with a per-class bias, in Triton (never builds the K×U score matrix).

    loss_k = logsumexp_u(scale·o_k·c_u + b_u) − (scale·o_k·c_{y_k} + b_{y_k})

CWT calls it with classes = the unique target embeddings and b = log(count) (so that deduplicated
classes score exactly like the paper's K×K matrix with repeats); vanilla CE with the head weight/bias.

Design (see docs/reference/kernels.md):
- forward: one program per block of rows, online log-sum-exp over blocks of classes, tl.dot over
  blocks of D with fp32 accumulation; only the per-row LSE [K] (fp32) is saved for backward.
- backward, with ``G = scale·g_k·(P − onehot)``, deterministic (no atomics): a Triton kernel
  recomputes G for a chunk of classes into a bounded buffer (K × chunk ≤ 2^27 elements), then
  cuBLAS does ``dO += G @ C_chunk`` and ``dC_chunk = Gᵀ @ O``. (An all-Triton backward with no G
  buffer measured slower at every shape and was removed: docs/reference/kernels.md.)
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

try:  # triton is optional (GPU extra); importing this module must work without it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device | str | None = None) -> bool:
    """True when the kernel can run for real: triton importable, CUDA present (and ``device`` is CUDA)."""
    if triton is None or not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


if triton is not None:

    def _configs() -> list:
        """A small Hopper-oriented autotune space (compile time grows with every config)."""
        if _INTERPRET:  # tiny blocks so CPU tests exercise many blocks and all the masking
            return [triton.Config({"BLOCK_K": 16, "BLOCK_U": 16, "BLOCK_D": 16}, num_warps=1)]
        shapes = [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4)]
        return [
            triton.Config({"BLOCK_K": bk, "BLOCK_U": bu, "BLOCK_D": bd}, num_warps=w, num_stages=s)
            for bk, bu, bd, w, s in shapes
        ]

    @triton.jit
    def _scores(o_ptr, c_ptr, rows, cols, rmask, cmask, D, BLOCK_D: tl.constexpr, acc):
        """acc += O[rows] @ C[cols]ᵀ over all of D (masked tails), fp32 accumulation."""
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            dmask = d < D
            o = tl.load(o_ptr + rows[:, None] * D + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            c = tl.load(c_ptr + cols[:, None] * D + d[None, :], mask=cmask[:, None] & dmask[None, :], other=0.0)
            acc += tl.dot(o, tl.trans(c))
        return acc

    @triton.jit
    def _logits(o_ptr, c_ptr, b_ptr, rows, cols, rmask, cmask, D, scale, HAS_BIAS: tl.constexpr,
                BLOCK_K: tl.constexpr, BLOCK_U: tl.constexpr, BLOCK_D: tl.constexpr):
        """The [BLOCK_K, BLOCK_U] tile scale·O[rows] @ C[cols]ᵀ (+ b[cols])."""
        s = _scores(o_ptr, c_ptr, rows, cols, rmask, cmask, D, BLOCK_D,
                    tl.zeros([BLOCK_K, BLOCK_U], tl.float32)) * scale
        if HAS_BIAS:
            s += tl.load(b_ptr + cols, mask=cmask, other=0.0)[None, :]
        return s

    @triton.autotune(configs=_configs(), key=["D"])
    @triton.jit
    def _fwd_kernel(o_ptr, c_ptr, b_ptr, y_ptr, loss_ptr, lse_ptr, K, U, D, scale,
                    HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_U: tl.constexpr,
                    BLOCK_D: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        rmask = rows < K
        y = tl.load(y_ptr + rows, mask=rmask, other=-1)
        m_i = tl.full([BLOCK_K], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_K], tl.float32)
        t_i = tl.zeros([BLOCK_K], tl.float32)
        for u0 in range(0, U, BLOCK_U):
            cols = u0 + tl.arange(0, BLOCK_U)
            cmask = cols < U
            s = _logits(o_ptr, c_ptr, b_ptr, rows, cols, rmask, cmask, D, scale, HAS_BIAS, BLOCK_K, BLOCK_U, BLOCK_D)
            s = tl.where(cmask[None, :], s, float("-inf"))
            t_i += tl.sum(tl.where(cols[None, :] == y[:, None], s, 0.0), 1)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(s - m_new[:, None]), 1)
            m_i = m_new
        lse = m_i + tl.log(l_i)
        tl.store(lse_ptr + rows, lse, mask=rmask)
        tl.store(loss_ptr + rows, tl.where(y >= 0, lse - t_i, 0.0), mask=rmask)

    @triton.jit
    def _grad_tile(s, lse, g, is_target, valid):
        """G = g·(P − onehot) for one score tile (g already holds scale·dL/dloss·[not ignored])."""
        p = tl.where(valid, tl.exp(s - lse), 0.0)
        return (p - is_target.to(tl.float32)) * g

    @triton.autotune(configs=_configs(), key=["D"])
    @triton.jit
    def _grad_chunk_kernel(o_ptr, c_ptr, b_ptr, y_ptr, lse_ptr, g_ptr, out_ptr, K, D, u_start, n_cols,
                           scale, HAS_BIAS: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_U: tl.constexpr, BLOCK_D: tl.constexpr):
        """out[K, n_cols] = G for classes u_start … u_start+n_cols (every element written once)."""
        rows = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
        local = tl.program_id(1) * BLOCK_U + tl.arange(0, BLOCK_U)
        rmask = rows < K
        cmask = local < n_cols
        cols = u_start + local
        y = tl.load(y_ptr + rows, mask=rmask, other=-1)
        lse = tl.load(lse_ptr + rows, mask=rmask, other=0.0)
        g = tl.load(g_ptr + rows, mask=rmask, other=0.0)
        s = _logits(o_ptr, c_ptr, b_ptr, rows, cols, rmask, cmask, D, scale, HAS_BIAS, BLOCK_K, BLOCK_U, BLOCK_D)
        grad = _grad_tile(s, lse[:, None], g[:, None], cols[None, :] == y[:, None],
                          rmask[:, None] & cmask[None, :])
        tl.store(out_ptr + rows[:, None].to(tl.int64) * n_cols + local[None, :],
                 grad.to(out_ptr.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])

# The backward's G buffer: 256 MiB in bf16 whatever K and U (tiny in the interpreter, so that
# CPU tests cross several class chunks).
_G_CHUNK_ELEMENTS, _CHUNK_STEP = (2**10, 16) if _INTERPRET else (2**27, 256)


class _LinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, outputs, classes, bias, labels, scale):
        K, D = outputs.shape
        U = classes.shape[0]
        loss = torch.empty(K, device=outputs.device, dtype=torch.float32)
        lse = torch.empty_like(loss)
        grid = lambda meta: (triton.cdiv(K, meta["BLOCK_K"]),)  # noqa: E731
        _fwd_kernel[grid](outputs, classes, bias if bias is not None else loss, labels, loss, lse,
                          K, U, D, scale, HAS_BIAS=bias is not None)
        ctx.save_for_backward(outputs, classes, bias, labels, lse)
        ctx.scale = scale
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        outputs, classes, bias, labels, lse = ctx.saved_tensors
        K, D = outputs.shape
        U = classes.shape[0]
        scale = ctx.scale
        # scale·dL/dloss_k, zero on ignored rows: the kernels then need no ignore logic.
        g = (grad_loss.float() * scale * (labels >= 0)).contiguous()
        b = bias if bias is not None else g
        args = (outputs, classes, b, labels, lse, g)
        need_out, need_cls = ctx.needs_input_grad[:2]
        return (*_backward_gemm(args, K, U, D, scale, bias is not None, need_out, need_cls), None, None, None)


def _backward_gemm(args, K, U, D, scale, has_bias, need_out, need_cls):
    """G = scale·g·(P − onehot) by chunks of classes (Triton, bounded memory), then two cuBLAS GEMMs."""
    outputs, classes = args[0], args[1]
    step = _CHUNK_STEP
    chunk = min(U, max(step, _G_CHUNK_ELEMENTS // max(K, 1) // step * step))
    buf = torch.empty(K * chunk, device=outputs.device, dtype=outputs.dtype)
    d_out = torch.zeros(K, D, device=outputs.device, dtype=torch.float32) if need_out else None
    d_cls = torch.empty_like(classes) if need_cls else None
    for u0 in range(0, U, chunk):
        n = min(chunk, U - u0)
        grad = buf[: K * n].view(K, n)
        grid = lambda meta: (triton.cdiv(K, meta["BLOCK_K"]), triton.cdiv(n, meta["BLOCK_U"]))  # noqa: E731
        _grad_chunk_kernel[grid](*args, grad, K, D, u0, n, scale, HAS_BIAS=has_bias)
        if need_out:
            d_out += grad @ classes[u0:u0 + n]
        if need_cls:
            torch.matmul(grad.T, outputs, out=d_cls[u0:u0 + n])
    return (d_out.to(outputs.dtype) if need_out else None), d_cls


def linear_ce_triton(outputs: Tensor, classes: Tensor, class_bias: Tensor | None, labels: Tensor,
                     scale: float = 1.0) -> Tensor:
    """Per-row loss [K] (fp32) of ``softmax(scale·outputs @ classesᵀ + class_bias)`` against ``labels``.

    outputs [K, D] and classes [U, D] (bf16/fp16/fp32; classes are cast to outputs' dtype) get
    gradients; class_bias [U] (None = 0) does not. labels [K] index classes; a negative label (−100)
    marks an ignored row: loss 0, zero gradient. Labels ≥ U are not checked (that would cost a sync).
    Deterministic.
    """
    if outputs.dim() != 2 or classes.dim() != 2 or outputs.shape[1] != classes.shape[1]:
        raise ValueError(f"expected outputs [K, D] and classes [U, D], got {tuple(outputs.shape)} "
                         f"and {tuple(classes.shape)}")
    K, U = outputs.shape[0], classes.shape[0]
    if labels.shape != (K,):
        raise ValueError(f"labels must have shape [{K}], got {tuple(labels.shape)}")
    if K == 0:
        return outputs.new_zeros(0, dtype=torch.float32) + 0.0 * outputs.sum() + 0.0 * classes.sum()
    if U == 0:
        raise ValueError("linear_ce_triton needs at least one class")
    if class_bias is not None:
        if class_bias.shape != (U,):
            raise ValueError(f"class_bias must have shape [{U}], got {tuple(class_bias.shape)}")
        class_bias = class_bias.detach().float().contiguous()
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    if triton is None:
        raise RuntimeError("linear_ce_triton needs triton: pip install 'headless[gpu]'")
    if outputs.is_cuda and outputs.dtype == torch.float32 and torch.is_autocast_enabled("cuda"):
        # Under autocast a layer norm hands us fp32; run like F.linear would (bf16/fp16 inputs,
        # fp32 accumulation): the backward GEMMs are not autocast and would otherwise run in fp32.
        outputs = outputs.to(torch.get_autocast_dtype("cuda"))
    return _LinearCE.apply(outputs.contiguous(), classes.to(outputs.dtype).contiguous(), class_bias,
                           labels.long().contiguous(), scale)
