"""PyTorch SDPA for HF models that keeps the fused (flash / cuDNN) kernels under torch.compile.

HF's "sdpa" builds no mask for an unpadded batch, so SDPA runs with `is_causal=True` (decoders) or
no mask (encoders) and can pick its flash kernels.  While torch.compile traces the model, though,
transformers (at least up to torch 2.13) cannot prove the batch is unpadded and materialises a
[B, 1, T, T] mask, which rules the flash kernels out: compiled attention then ran about twice
as long as eager (docs/reference/performance.md).  Our pretraining batches are packed and never padded, so
this registers "headless_sdpa": HF's own SDPA attention with a mask function that returns no mask
whenever there is nothing to mask (no attention_mask, plain causal or bidirectional pattern, no
cache offset) and defers to HF's `sdpa_mask` otherwise.  Same numbers, faster kernels.
"""

from __future__ import annotations

NAME = "headless_sdpa"
_registered = False


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
