"""`pretrain(config)`: start the run (train/start.py), then the loop below, then the summary.

The same code path trains the tiny preset on a laptop CPU and Pythia-sized models on GPUs (one, or
many under torchrun).  Headless and vanilla runs differ only in `config.flavour`, so twins are fair
by construction: same data order, same masks, same schedule.  No host<->device sync per step: the
loss, gradient norm and non-finite count stay on the device and are read on log and save steps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from headless.config import TrainConfig, deep_merge, from_dict, parse_overrides
from headless.train import distributed as dist
from headless.train.evaluation import Evaluator
from headless.train.guards import NonFiniteGuard, StopSignals, TimeBudget
from headless.train.metrics import Metrics, summarize
from headless.train.rundir import RESUMABLE as RESUMABLE_OVERRIDES  # noqa: F401  (the name callers knew)
from headless.train.rundir import check_resume_overrides, saved_config, write_config
from headless.train.start import save, start
from headless.train.step import micro_batches, train_step


def pretrain(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) one run and return its summary (also written to RUN_DIR/summary.json)."""
    env = dist.init_distributed(config.device)
    started = None
    try:
        started = start(config, resume, env)
        return started.done if started.done is not None else _train(started)
    finally:
        if started is not None and started.lock is not None:
            started.lock.release()
        dist.shutdown()


def resume_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Continue a run from its newest valid checkpoint; only settings that keep the trajectory may
    change (max_steps, logging / evaluation / saving intervals, device; see rundir.RESUMABLE)."""
    update = parse_overrides(list(overrides or []))
    check_resume_overrides(update)
    merged = deep_merge(saved_config(Path(run_dir)).to_dict(), update)
    merged["run_dir"] = str(run_dir)
    return pretrain(from_dict(TrainConfig, merged).validate(), resume=True)


def _train(started) -> dict[str, Any]:
    run, state = started.run, started.state
    env, device, counters = run.env, run.device, state.counters
    metrics = Metrics(run, state.step, counters)
    evaluator = Evaluator(run, metrics.logger)
    nan_guard = NonFiniteGuard(device, counters, run.config.max_nan_skips, state.step)
    budget = TimeBudget(run.config, counters, device, state.step, env.world_size, dist.all_reduce)
    keep_steps = budget.keep_steps(run.config)
    start_time = time.perf_counter() - counters["elapsed"]
    metrics.header()
    run.wrapped.train()
    try:
        with StopSignals() as signals:
            while state.step < run.config.max_steps:
                config = run.config
                micro = micro_batches(run.loader, config, run.data.info, step=state.step, rank=env.rank,
                                      world_size=env.world_size)
                run.model.with_accuracy = device.type != "cuda" or (state.step + 1) % config.log_every == 0 \
                    or state.step + 1 == config.max_steps
                out = train_step(run.wrapped, run.optimizer, micro, device=device, autocast_dtype=run.autocast_dtype,
                                 grad_clip=config.optim.grad_clip, scheduler=run.scheduler, trainable=run.trainable,
                                 world_size=env.world_size, all_reduce=dist.all_reduce, graphs=run.graphs,
                                 no_sync=lambda skip: dist.no_sync(run.wrapped, skip),
                                 clip_grad_norm=dist.clip_grad_norm_)
                nan_guard.record(out.bad, state.step + 1)
                state.step = step = state.step + 1
                if (plan := budget.observe(step)) is not None:
                    run.config = config = budget.fix_length(config, plan.max_steps)
                    keep_steps = budget.keep_steps(config)
                    if env.is_main:
                        write_config(config, Path(config.run_dir))
                    if metrics.logger:
                        metrics.logger.set_total(plan.max_steps)
                    metrics.write(plan.message)
                last = step == config.max_steps
                log, periodic = step % config.log_every == 0 or last, step % config.save_every == 0
                if log or periodic:
                    nan_guard.check(step, metrics.logger)  # may raise HeadlessError("training diverged ...")
                metrics.step(step, out, log)
                if last and (warning := budget.finish(step)):
                    metrics.write(warning)
                if evaluator.due(step, last):
                    budget.pause()
                    evaluator.maybe(step, last)
                    budget.unpause()
                stop = signals.agreed(env.world_size, dist.all_reduce, device, check=log or periodic)
                if periodic or last or step in keep_steps or stop:
                    counters["elapsed"] = time.perf_counter() - start_time
                    budget.pause()
                    save(started, keep_steps)
                    budget.unpause()
                if stop and not last:  # at the last step the run simply ends
                    raise signals.interrupted(step, config.run_dir)
    finally:
        run.loader.close()
        metrics.close()
    return summarize(run, state, metrics.last, evaluator.last, time.perf_counter() - start_time, keep_steps)

