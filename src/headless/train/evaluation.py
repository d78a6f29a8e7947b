"""Validation on an interval: fixed batches and masks, scored every `eval_every` steps and at the end."""

from __future__ import annotations

from typing import Optional

from headless.config import TrainConfig
from headless.train import distributed as dist
from headless.train.guards import room_error
from headless.train.step import DataInfo, evaluate, global_row, make_inputs


def validation_batches(val_set, config: TrainConfig, info: DataInfo, env) -> list:
    """Fixed validation batches and masks: every evaluation of the run scores the same positions.

    The sequences are drawn in a fixed shuffled order (the run's seed), as training draws them:
    `headless prepare` stores documents in source order, so in-order batches of a mix (the
    multilingual study: English, then German, Japanese...) would each hold one source, and CWT's
    in-batch loss depends on the batch's mix while a vocabulary head's does not."""
    from headless.data.loader import BatchIterator

    per_rank = len(val_set) // env.world_size
    batch_size = min(config.batch_size, per_rank)
    if batch_size == 0:
        return []
    count = min(config.eval_batches, per_rank // batch_size)
    it = BatchIterator(val_set, batch_size, seed=config.seed, shuffle=True, rank=env.rank, world_size=env.world_size)
    return [make_inputs(next(it), config, info, step=0, first_row=global_row(i, env.rank, env.world_size, batch_size),
                        split=1) for i in range(count)]


class Evaluator:
    """`maybe(step, last)` scores the validation batches when the interval (or the end) says so."""

    def __init__(self, run, logger):
        config, data = run.config, run.data
        self.run, self.logger, self.every = run, logger, config.eval_every
        self.batches = validation_batches(data.validation, config, data.info, run.env) if data.validation else []
        self.last: dict = {}

    def due(self, step: int, last: bool) -> bool:
        return bool(self.batches) and (step % self.every == 0 or last)

    def maybe(self, step: int, last: bool) -> Optional[dict]:
        if not self.due(step, last):
            return None
        run = self.run
        run.model.with_accuracy = True
        self.last = evaluate(run.wrapped, self.batches, device=run.device, autocast_dtype=run.autocast_dtype,
                             all_reduce=dist.all_reduce)
        if self.last.get("unique_overflow"):
            raise room_error(step, self.last["unique_overflow"], run.config.objective.unique_bound,
                             "a validation micro-batch")
        if self.logger:
            self.logger.log("val", step, self.last)
            self.logger.write(f"step {step}: validation loss {self.last['loss']:.4f}, "
                              f"accuracy {self.last['accuracy']:.3f}")
        return self.last
