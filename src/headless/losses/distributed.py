"""Gathering variable-length tensors across a `torch.distributed` group (for in-batch negatives).

Ranks rarely have the same number of loss positions (MLM masks, ignored padding), while the
collectives want equal shapes: gather the counts, pad to the largest, gather, trim.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_info(group) -> tuple[int, int]:
    """(rank, world_size) of this process in `group`."""
    return dist.get_rank(group=group), dist.get_world_size(group=group)


def gather_counts(count: int, device: torch.device, group) -> list[int]:
    """Every rank's `count`, in rank order."""
    _, world = world_info(group)
    local = torch.tensor([count], dtype=torch.long, device=device)
    counts = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(counts, local, group=group)
    return [int(c.item()) for c in counts]


def _pad_rows(tensor: Tensor, rows: int) -> Tensor:
    if tensor.shape[0] == rows:
        return tensor.contiguous()
    pad = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, pad]).contiguous()


def all_gather_variable(tensor: Tensor, counts: list[int], group) -> Tensor:
    """Concatenate every rank's `tensor` (first dims given by `counts`) in rank order; no gradient."""
    longest = max(counts)
    padded = _pad_rows(tensor.detach(), longest)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([p[:n] for p, n in zip(parts, counts)])


class _AllGatherVariable(torch.autograd.Function):
    """all_gather with autograd: the gradient of rank r's slice is summed over every rank's loss.

    Written here (instead of `torch.distributed.nn.functional.all_gather`, deprecated since torch
    2.6) with an all_reduce in backward, which every backend (gloo included) supports.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, counts: list[int], group) -> Tensor:
        ctx.counts, ctx.group = counts, group
        return all_gather_variable(tensor, counts, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        rank, _ = world_info(ctx.group)
        start = sum(ctx.counts[:rank])
        return grad[start : start + ctx.counts[rank]], None, None


def all_gather_variable_with_grad(tensor: Tensor, counts: list[int], group) -> Tensor:
    """Like `all_gather_variable`, differentiable. Every rank must run the backward pass."""
    return _AllGatherVariable.apply(tensor, counts, group)
