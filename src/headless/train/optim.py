"""Optimizer, learning-rate schedule and mixed-precision choice of a run."""

from __future__ import annotations

import math
from typing import Optional

import torch

from headless.config import TrainConfig




def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights.

    They are exactly the parameters with fewer than two dimensions, whatever the architecture calls
    them (the official code matched 'LayerNorm' and so decayed GPT-NeoX's `layernorm` weights).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    o = config.optim
    kwargs = dict(lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def lr_factor(step: int, config: TrainConfig) -> float:
    o = config.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    span = max(config.max_steps - o.warmup_steps, 1)
    progress = min(max(step - o.warmup_steps, 0) / span, 1.0)
    if o.schedule == "linear":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return o.min_lr_ratio + (1.0 - o.min_lr_ratio) * shape


def autocast_dtype(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
