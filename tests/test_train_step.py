"""`train_step`: the one optimizer step that the trainer, `headless bench` and these tests call."""

from __future__ import annotations

import torch
from torch import nn

from headless.losses import LossOutput
from headless.train.step import train_step


class Tiny(nn.Module):
    """forward(input_ids, labels) -> LossOutput(reduction="sum"), as LanguageModel's."""

    def __init__(self, poison: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(16, 4)
        self.norm = nn.LayerNorm(4)
        self.poison = poison

    def forward(self, input_ids, labels):
        keep = labels != -100
        loss = (self.norm(self.emb(input_ids))[keep] ** 2).sum() * 50
        if self.poison:
            loss = loss * float("nan")
        count = keep.sum()
        return LossOutput(loss=loss, num_targets=count, accuracy=None, num_unique=None)


def _micro():
    ids = torch.arange(8).view(2, 4)
    return [(ids, ids.clone())]


def _step(model, grad_clip):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** s)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_step(model, optimizer, _micro(), device=torch.device("cpu"), autocast_dtype=None,
                     grad_clip=grad_clip, scheduler=scheduler)
    return out, before, optimizer, scheduler


def test_a_finite_step_updates_and_schedules():
    model = Tiny()
    out, before, optimizer, scheduler = _step(model, grad_clip=1.0)
    assert not bool(out.bad) and float(out.grad_norm) > 1.0  # measured before clipping
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert scheduler.get_last_lr() == [0.05]
    assert all(p.grad is None for p in model.parameters())


def test_grad_clip_off_keeps_the_gradient_and_still_measures_it():
    def moment(optimizer):  # AdamW's first moment is (1 - beta1) x the (clipped) gradient
        return sum(float(s["exp_avg"].norm() ** 2) for s in optimizer.state.values()) ** 0.5

    a, _, clipped, _ = _step(Tiny(), grad_clip=1e-3)
    b, _, unclipped, _ = _step(Tiny(), grad_clip=None)
    c, _, zero, _ = _step(Tiny(), grad_clip=0)
    assert float(a.grad_norm) == float(b.grad_norm) == float(c.grad_norm) > 1e-3
    assert moment(clipped) < 1e-3 * 0.11 < moment(unclipped) == moment(zero)


def test_a_non_finite_step_changes_nothing():
    model = Tiny(poison=True)
    out, before, optimizer, scheduler = _step(model, grad_clip=1.0)
    assert bool(out.bad)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(not s or float(s["step"]) == 0 for s in optimizer.state.values())
