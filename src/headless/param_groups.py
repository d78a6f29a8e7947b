"""AdamW parameter groups, shared by pretraining (`train/optim`) and evaluation fine-tuning
(`eval/classification`): one rule in a home that neither layer owns, so evaluation needs nothing
of the trainer."""

from __future__ import annotations

import torch


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices, none on biases and normalisation weights
    (the trainable parameters with fewer than two dimensions)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
