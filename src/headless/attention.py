"""PyTorch SDPA for HF models that keeps the fused (flash / cuDNN) kernels under torch.compile.

HF's "sdpa" builds no mask for an unpadded batch, so SDPA runs with `is_causal=True` (decoders) or
no mask (encoders) and can pick its flash kernels.  While torch.compile traces the model, though,
transformers (at least up to torch 2.13) cannot prove the batch is unpadded and materialises a
[B, 1, T, T] mask, which rules the flash kernels out: compiled attention then ran about twice
as long as eager (docs/reference/performance.md).  Our pretraining batches are packed and never padded, so
this registers "headless_sdpa": HF's own SDPA attention with a mask function that returns no mask
whenever there is nothing to mask (no attention_mask, plain causal or bidirectional pattern, no
cache offset) and defers to HF's `sdpa_mask` otherwise.  Same numbers, faster kernels.

Which of SDPA's kernels runs is torch's choice unless `model.attention_kernel` names one
(`kernel_context`, entered by the model's forward; `check_kernel` refuses one absent here).
"""

from __future__ import annotations

import contextlib

from torch.nn.attention import SDPBackend, sdpa_kernel  # here: nothing is imported inside a compiled graph

NAME = "headless_sdpa"
_registered = False

# `model.attention_kernel` -> the SDPBackend that SDPA is restricted to (auto: no restriction)
KERNELS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
           "math": "MATH"}


def _mask(*args, **kwargs):
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function, sdpa_mask

    q_len = kwargs.get("q_length")
    if q_len is None and kwargs.get("cache_position") is not None:
        q_len = kwargs["cache_position"].shape[0]
    unmasked = (not args and kwargs.get("attention_mask") is None
                and kwargs.get("mask_function") in (causal_mask_function, bidirectional_mask_function)
                and q_len is not None and q_len == kwargs.get("kv_length")
                and not kwargs.get("q_offset") and not kwargs.get("kv_offset") and not kwargs.get("local_size"))
    return None if unmasked else sdpa_mask(*args, **kwargs)


def register() -> str:
    """Register "headless_sdpa" with transformers (idempotent) and return its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, sdpa_attention_forward)
        AttentionMaskInterface.register(NAME, _mask)
        _registered = True
    return NAME


def kernel_context(kernel: str):
    """SDPA restricted to `kernel` (`model.attention_kernel`); "auto" leaves torch's own choice.

    `torch.nn.attention.sdpa_kernel` is traced by torch.compile, so the choice holds inside a
    compiled graph too; the backward follows the kernel its forward ran."""
    if kernel == "auto":
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, KERNELS[kernel])])


def check_kernel(kernel: str, device, dtype, head_dim: int, causal: bool, dropout: float = 0.0) -> None:
    """Refuse, in one line, a `model.attention_kernel` that cannot run here: a forward and backward of
    a small attention with the model's head dimension, dtype, masking and dropout, laid out as HF
    lays it out ([B, T, H, D] transposed), under that kernel alone.  torch knows best which kernel
    runs where (device, build, GPU generation, dtype, head dimension), so it is asked rather than a
    table kept here; without this, the first training step would fail with "No available kernel"
    deep in a traceback (or inside a compiled graph)."""
    if kernel == "auto":
        return
    import warnings

    import torch
    import torch.nn.functional as F

    from headless.errors import HeadlessError

    device = torch.device(device)
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    # fork_rng: the probe's dropout must leave the run's random state as it found it
    with torch.random.fork_rng(devices=rng_devices), torch.enable_grad(), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leaves = [torch.full((1, 128, 2, head_dim), 0.1, device=device, dtype=dtype, requires_grad=True)
                  for _ in range(3)]
        q, k, v = (t.transpose(1, 2) for t in leaves)
        try:
            with kernel_context(kernel):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)
            out.float().sum().backward()
            error = None
        except RuntimeError as err:
            error = str(err)
    if error is not None:
        # torch explains why in warnings ("Flash attention requires ..."); its error only says "no kernel"
        reasons = [m for m in (str(w.message) for w in caught)
                   if "not used because" not in m and ("attention" in m.lower() or "kernel" in m.lower())]
        why = " ".join(" ".join(reasons[:2] or [error]).split()).rstrip(".")  # one line
        raise HeadlessError(f"model.attention_kernel={kernel} cannot run on {device} "
                            f"({str(dtype).replace('torch.', '')}, head dimension {head_dim}"
                            f"{f', attention dropout {dropout:g}' if dropout else ''}): {why[:300]}; "
                            "use model.attention_kernel=auto (torch's own choice) or another kernel")
