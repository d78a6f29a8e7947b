"""One optimizer step: objective -> forward (loss inside the model) -> normalise -> backward.

The loss of a step is `sum of per-position losses / number of loss positions in the WHOLE step`
(all micro-batches, all ranks).  Averaging micro-batch means instead would weight MLM positions
unequally, since the number of masked positions varies from micro-batch to micro-batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from headless.config import TrainConfig
from headless.objectives import IGNORE_INDEX, clm_labels, document_ids_from_eos, mix64, mlm_mask
from headless.runtime import to_device


@dataclass
class DataInfo:
    """What the objective needs to know about the tokenizer of the training data."""

    vocab_size: int
    eos_token_id: Optional[int]
    mask_token_id: Optional[int]
    special_token_ids: list


def masking_key(seed: int, step: int, split: int = 0) -> int:
    """The key of a step's masks.  Each sequence's masks hash (key, its row of the global batch,
    position), so a resumed run masks exactly as before, and so does the same global batch split
    over another number of ranks or micro-batches."""
    return mix64(mix64(mix64(seed) ^ step) ^ split)


def global_row(micro: int, rank: int, world_size: int, batch_size: int) -> int:
    """Index of a micro-batch's first sequence in the step's global batch (the loader's order)."""
    return (micro * world_size + rank) * batch_size


def make_inputs(batch: torch.Tensor, config: TrainConfig, info: DataInfo, *, step: int, first_row: int,
                split: int = 0):
    """(input_ids, labels) for the configured objective; labels hold the ORIGINAL token ids."""
    obj = config.objective
    if config.objective_kind == "mlm":  # one vectorised call for the micro-batch (on its device)
        return mlm_mask(batch, mask_token_id=info.mask_token_id, vocab_size=info.vocab_size,
                        special_token_ids=info.special_token_ids, mask_prob=obj.mask_prob,
                        replace_prob=obj.replace_prob, random_prob=obj.random_prob, masking=obj.masking,
                        key=masking_key(config.seed, step, split), first_row=first_row)
    doc_ids = None
    if obj.respect_documents and info.eos_token_id is not None:
        doc_ids = document_ids_from_eos(batch, info.eos_token_id)
    return batch, clm_labels(batch, document_ids=doc_ids)


def micro_batches(loader, config: TrainConfig, info: DataInfo, *, step: int, rank: int = 0, world_size: int = 1):
    """The step's grad_accum micro-batches of this rank, objective applied."""
    return [make_inputs(next(loader), config, info, step=step,
                        first_row=global_row(i, rank, world_size, config.batch_size))
            for i in range(config.grad_accum)]


@dataclass
class StepResult:
    loss_sum: torch.Tensor  # detached, summed over this rank's loss positions
    correct: torch.Tensor  # detached: number of top-1 hits on this rank
    # loss positions of the whole step, all ranks: an int in one process; with several, a 0-d int64
    # tensor on the device (all-reduced there, not read back: the trainer calls int() on log steps)
    num_targets: int | torch.Tensor
    unique: torch.Tensor  # detached: mean unique targets per micro-batch (CWT), 0 otherwise
    # long: the most unique targets of a micro-batch that overflowed CWT's "bounded" room, else 0
    unique_overflow: Optional[torch.Tensor] = None


def forward_backward(
    model: torch.nn.Module,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast_dtype: Optional[torch.dtype],
    world_size: int,
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
    no_sync: Callable[[bool], contextlib.AbstractContextManager],
) -> StepResult:
    """Accumulate gradients of the step's normalised loss over the micro-batches."""
    local = sum(int((labels != IGNORE_INDEX).sum()) for _, labels in micro_batches)  # labels are on the CPU
    # DDP/FSDP average gradients over ranks; scaling by world_size turns that mean into the sum we want.
    if world_size == 1:
        total = local
        scale = world_size / max(total, 1)
    else:  # the global count stays on the device: no host sync (a Python float would need one)
        total = all_reduce(to_device(torch.tensor(local, dtype=torch.int64), device))
        scale = (world_size / total.clamp(min=1).double()).float()  # rounded as the float path was
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    unique = torch.zeros((), device=device)
    overflow = torch.zeros((), dtype=torch.long, device=device)
    for i, (input_ids, labels) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        input_ids = to_device(input_ids, device)
        labels = to_device(labels, device)
        with no_sync(not last), _autocast(device, autocast_dtype):
            out = model(input_ids, labels)
        (out.loss.float() * scale).backward()
        loss_sum += out.loss.detach().float()
        if out.accuracy is not None:
            correct += out.accuracy.detach().float() * out.num_targets.detach().float()
        if out.num_unique is not None:
            unique += out.num_unique.detach().float() / len(micro_batches)  # no host sync
        if getattr(out, "unique_overflow", None) is not None:
            overflow = torch.maximum(overflow, out.unique_overflow.detach())
    return StepResult(loss_sum=loss_sum, correct=correct, num_targets=total, unique=unique, unique_overflow=overflow)


@dataclass
class TrainStepOutput:
    result: StepResult
    grad_norm: torch.Tensor  # 0-d, on the device (read on log steps only)
    bad: torch.Tensor        # 0-d bool: the step was skipped (non-finite loss or gradient)


def _single(_skip: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast_dtype: Optional[torch.dtype],
    grad_clip: Optional[float],
    scheduler=None,
    trainable: Optional[list] = None,
    world_size: int = 1,
    all_reduce: Callable = lambda t, op="sum": t,
    no_sync: Callable[[bool], contextlib.AbstractContextManager] = _single,
    clip_grad_norm: Optional[Callable] = None,
    graphs: bool = False,
) -> TrainStepOutput:
    """One optimizer step, the same for training, `headless bench` and the tests: forward/backward
    over the micro-batches, clipping (`grad_clip` None or 0: none, the norm is still measured), the
    non-finite guard (the step is skipped on the device, no host sync) and the schedule."""
    from headless.train.optim import skip_if_nonfinite

    if graphs:  # a new iteration: the CUDA graphs may reuse the previous step's buffers
        torch.compiler.cudagraph_mark_step_begin()
    result = forward_backward(model, micro, device=device, autocast_dtype=autocast_dtype, world_size=world_size,
                              all_reduce=all_reduce, no_sync=no_sync)
    params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
    max_norm = grad_clip if grad_clip else float("inf")
    if clip_grad_norm is None:
        grads = [p for p in params if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(grads, max_norm) if grads else torch.zeros((), device=device)
    else:
        grad_norm = clip_grad_norm(params, max_norm, as_tensor=True)
    # fused AdamW's found_inf skips the update, like GradScaler's skipped steps (skip_if_nonfinite)
    bad = ~(torch.isfinite(result.loss_sum) & torch.isfinite(grad_norm))
    if world_size > 1:  # the loss is per rank: every rank must skip the same steps
        bad = all_reduce(bad.to(torch.float32), op="max") > 0
    skip_if_nonfinite(optimizer, bad)
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return TrainStepOutput(result, grad_norm, bad)


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model, batches, *, device, autocast_dtype, all_reduce) -> dict:
    """Validation loss per loss position and top-1 accuracy, on fixed batches and masks."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    overflow = torch.zeros((), device=device, dtype=torch.long)  # CWT "bounded": a room too small
    for input_ids, labels in batches:
        with _autocast(device, autocast_dtype):
            out = model(input_ids.to(device), labels.to(device))
        loss_sum += out.loss.double()
        n = out.num_targets.double()
        count += n
        if out.accuracy is not None:
            correct += out.accuracy.double() * n
        if getattr(out, "unique_overflow", None) is not None:
            overflow = torch.maximum(overflow, out.unique_overflow.detach())
    stats = all_reduce(torch.stack([loss_sum, correct, count]))
    if was_training:
        model.train()
    total = max(float(stats[2]), 1.0)
    result = {"loss": float(stats[0]) / total, "accuracy": float(stats[1]) / total, "targets": int(stats[2])}
    worst = int(all_reduce(overflow, op="max"))
    if worst:  # its loss is NaN: say why instead of logging it
        result["unique_overflow"] = worst
    return result
