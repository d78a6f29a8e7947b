"""`pretrain`: start (train/start.py), loop, summary.  The loop knows only training: policies (train/policy.py,
e.g. the time budget) may change its length after a step; no host sync per step but on log and save steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from headless.config import TrainConfig
from headless.train import distributed as dist
from headless.train.evaluation import Evaluator
from headless.train.guards import StepGuards, StopSignals
from headless.train.metrics import Metrics, summarize
from headless.train.policy import keep_steps, paused
from headless.train.start import resume_config, save, start
from headless.train.step import micro_batches, train_step


def pretrain(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) one run and return its summary (also written to RUN_DIR/summary.json)."""
    env, started = dist.init_distributed(config.device), None
    try:
        started = start(config, resume, env)
        return started.done if started.done is not None else _train(started)
    finally:
        if started is not None and started.lock is not None:
            started.lock.release()
        dist.shutdown()


def resume_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Continue a run from its newest valid checkpoint (see `start.resume_config`)."""
    return pretrain(resume_config(run_dir, overrides), resume=True)


def _train(started) -> dict[str, Any]:
    run, state, policies, config = started.run, started.state, started.policies, started.run.config
    env, device, counters, max_steps = run.env, run.device, state.counters, run.config.max_steps
    metrics, keep = Metrics(run, state.step, counters), keep_steps(policies, max_steps)
    evaluator = Evaluator(run, metrics.logger)
    guards = StepGuards(device, counters, config, state.step)
    start_time = time.perf_counter() - counters["elapsed"]
    try:
        with StopSignals() as signals:
            while state.step < max_steps:
                micro = micro_batches(run.loader, config, run.data.info, step=state.step, rank=env.rank,
                                      world_size=env.world_size)
                run.model.with_accuracy = device.type != "cuda" or (state.step + 1) % config.log_every == 0 \
                    or state.step + 1 == max_steps
                out = train_step(run.wrapped, run.optimizer, micro, device=device, autocast_dtype=run.autocast_dtype,
                                 grad_clip=config.optim.grad_clip, scheduler=run.scheduler, trainable=run.trainable,
                                 world_size=env.world_size, all_reduce=dist.all_reduce, graphs=run.graphs,
                                 no_sync=lambda s: dist.no_sync(run.wrapped, s), clip_grad_norm=dist.clip_grad_norm_)
                guards.record(out, state.step + 1)
                state.step = step = state.step + 1
                for plan in filter(None, [policy.on_step_end(step) for policy in policies]):
                    max_steps, keep = plan.max_steps, keep_steps(policies, plan.max_steps)
                    run.schedule.set_length(plan.schedule_steps or run.schedule.length)
                    metrics.set_total(max_steps, plan.message)
                last, log, periodic = step == max_steps, step % config.log_every == 0, step % config.save_every == 0
                if log or last or periodic:
                    guards.check(step, metrics.logger, dist.all_reduce)  # may raise HeadlessError
                metrics.step(step, out, log or last)
                for warning in filter(None, [policy.finish(step) for policy in policies] if last else []):
                    metrics.write(warning)
                if evaluator.due(step, last):
                    with paused(policies):
                        evaluator.maybe(step, last)
                stop = signals.agreed(env.world_size, dist.all_reduce, device, check=log or last or periodic)
                if periodic or last or step in keep or stop:
                    counters["elapsed"] = time.perf_counter() - start_time
                    with paused(policies):
                        save(started, keep)
                if stop and not last:  # at the last step the run simply ends
                    raise signals.interrupted(step, config.run_dir)
    finally:
        run.loader.close()
        metrics.close()
    return summarize(run, state, metrics.last, evaluator.last, time.perf_counter() - start_time, keep, policies)
