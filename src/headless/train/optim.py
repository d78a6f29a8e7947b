"""Optimizer, learning-rate schedule and mixed-precision choice of a run."""

from __future__ import annotations

import math
from typing import Optional

import torch

from headless.config import TrainConfig
from headless.param_groups import decay_groups


def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights.

    They are exactly the parameters with fewer than two dimensions, whatever the architecture calls
    them (the official code matched 'LayerNorm' and so decayed GPT-NeoX's `layernorm` weights).

    The fused implementation wherever torch has it (CUDA, and CPU since torch 2.4; FSDP2's DTensor
    shards too), so every device runs the same update and the same non-finite guard: a fused AdamW
    reads `optimizer.found_inf` (see `skip_if_nonfinite`) and leaves parameters, moments and step
    counts untouched when it is 1, without a host sync.  Otherwise the default (foreach) AdamW,
    whose caller must skip bad steps itself (`supports_found_inf` is then False).
    """
    groups = decay_groups(model, config.optim.weight_decay)
    o = config.optim
    kwargs = dict(lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    if _fused_supported([p for g in groups for p in g["params"]]):
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def _fused_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch has a fused AdamW kernel for all of `params` (floating point, on a device
    with fused optimizer kernels; torch < 2.4 has none for the CPU)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a torch that moved the private helper: CUDA has had fused AdamW since 2.0
        devices = {"cuda"}
    return all(torch.is_floating_point(p) and p.device.type in devices for p in params)


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """True when `optimizer.step()` honours `optimizer.found_inf` (what GradScaler relies on)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def skip_if_nonfinite(optimizer: torch.optim.Optimizer, bad: torch.Tensor) -> None:
    """`optimizer.step()` unless the 0-d bool tensor `bad` is True, with no host sync.

    The fused AdamW kernel returns early when `found_inf == 1` and undoes its step-count
    increment, so parameters, exp_avg/exp_avg_sq and `step` are left exactly as they were.
    Optimizers without that support fall back to reading `bad` (one host sync).
    """
    if supports_found_inf(optimizer):
        optimizer.found_inf = bad.to(torch.float32)  # the kernels read a float32 1.0 / 0.0
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # as GradScaler does: no stale flag for a later plain step()
    elif not bool(bad):
        optimizer.step()


def lr_factor(step: int, config: TrainConfig) -> float:
    o = config.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    span = max((o.schedule_steps or config.max_steps) - o.warmup_steps, 1)  # past its end: the final LR
    progress = min(max(step - o.warmup_steps, 0) / span, 1.0)
    if o.schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape


def autocast_dtype(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    from headless.runtime import compute_dtype

    return compute_dtype(config.precision, device)
