"""Optimizer, learning-rate schedule and mixed-precision choice of a run."""

from __future__ import annotations

import math
from typing import Optional

import torch

from headless.config import TrainConfig
from headless.errors import HeadlessError
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


class Schedule:
    """The learning-rate factor of each step, with an explicit length: linear warm-up to 1, then
    `shape` (linear, cosine or constant) down to `min_ratio` at step `length`, the floor after it;
    and, after `extend`, a cosine `tail` from step `tail[0]` (factor `tail[2]`) to `min_ratio` at
    step `tail[1]`.  A callable object, so `LambdaLR.state_dict()` saves its fields with the
    optimizer: a resume continues the checkpoint's schedule, whatever the config says since."""

    def __init__(self, shape: str, warmup: int, length: int, min_ratio: float):
        self.shape, self.warmup, self.length, self.min_ratio = shape, warmup, length, min_ratio
        self.tail = None  # [from_step, to_step, start_factor]

    @classmethod
    def of(cls, optim, length: int) -> "Schedule":
        return cls(optim.schedule, optim.warmup_steps, length, optim.min_lr_ratio)

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.shape == "constant":
            return 1.0
        if self.tail is not None and step >= self.tail[0]:
            first, end, start = self.tail
            progress = min((step - first) / max(end - first, 1), 1.0)
            return self.min_ratio + (start - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        progress = min(max(step - self.warmup, 0) / max(self.length - self.warmup, 1), 1.0)  # past its end: the floor
        shape = 1.0 - progress if self.shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape

    @property
    def end(self) -> int:
        """The step from which the factor no longer changes."""
        return self.tail[1] if self.tail is not None else self.length

    def set_length(self, length: int) -> None:
        self.length, self.tail = length, None

    def extend(self, step: int, max_steps: int, how: str, lr: float) -> str | None:
        """A resume at `step` that trains to `max_steps`: nothing to do while the schedule reaches
        that far (or does not decay, or is still in warm-up: then it just follows max_steps);
        otherwise `how` (optim.extend) decides, and the line returned says what was chosen."""
        if max_steps <= self.end or self.shape == "constant":
            return None
        if step <= self.warmup:  # nothing trained so far depended on the length
            self.set_length(max_steps)
            return None
        head = f"max_steps={max_steps} goes past the end of the LR schedule (step {self.end})"
        if how == "refuse":
            raise HeadlessError(f"cannot resume: {head}; pass optim.extend=cosine (a new cosine tail), "
                                f"optim.extend=constant (keep the final LR) or optim.schedule_steps={max_steps}")
        if how == "constant":
            if self.min_ratio == 0:
                raise HeadlessError(f"cannot resume: {head} and optim.extend=constant would train at its final "
                                    "LR, 0; pass optim.extend=cosine (a new cosine tail)")
            return f"{head}: steps {self.end + 1}-{max_steps} keep its final LR {lr * self.min_ratio:.3g} " \
                   "(optim.extend=constant)"
        start = max(self(step), Schedule(self.shape, self.warmup, max_steps, self.min_ratio)(step))
        self.tail = [step, max_steps, start]
        return (f"{head}: a new cosine tail from LR {lr * start:.3g} at step {step} to "
                f"{lr * self.min_ratio:.3g} at step {max_steps} (optim.extend=cosine; constant keeps the final "
                "LR, refuse stops)")

    def restart(self, scheduler) -> None:
        """Apply a changed schedule to the next step's LR (a resume's extension)."""
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * self(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]


def autocast_dtype(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    from headless.runtime import compute_dtype

    return compute_dtype(config.precision, device)
