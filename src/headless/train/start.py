"""Starting a run: the run directory, the data, the checkpoint to resume and the config accepted,
in an order where a refused command writes nothing (see `headless.train.rundir`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from headless.config import TrainConfig, deep_merge, from_dict, parse_overrides
from headless.errors import HeadlessError
from headless.files import json_digest
from headless.train import distributed as dist
from headless.train.budget import TimeBudget
from headless.train.build import Run, build_model, build_run, load_data
from headless.train.checkpoint import Checkpointer, ModelState, OptimizerState, RngState
from headless.train.optim import Schedule
from headless.train.rundir import (
    RESUMABLE,
    accept_resume,
    check_resume_overrides,
    default_run_dir,
    negative_pool,
    open_run_dir,
    saved_config,
    undo_open,
    write_config,
)


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """The saved config.yaml with `--resume key=value` overrides; only settings that keep the
    trajectory may change (max_steps, logging / evaluation / saving intervals, device; see
    rundir.RESUMABLE)."""
    update = parse_overrides(list(overrides or []))
    check_resume_overrides(update)
    merged = dict(deep_merge(saved_config(Path(run_dir)).to_dict(), update), run_dir=str(run_dir))
    return from_dict(TrainConfig, merged).validate()


def config_fingerprint(config: TrainConfig) -> str:
    """sha256 of everything in the config that shapes the trajectory (not the resumable settings)."""
    data = config.to_dict()
    for key in RESUMABLE:
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    return json_digest(data)


@dataclasses.dataclass
class TrainState:
    """The loop's own state, saved in state.json: step, counters (tokens, elapsed, nan_skips) and
    what a resume must find unchanged."""

    step: int = 0
    counters: dict = dataclasses.field(default_factory=lambda: {"tokens": 0, "nan_skips": 0, "elapsed": 0.0})
    fixed: dict = dataclasses.field(default_factory=dict)  # world_size, global_batch, fingerprints

    def state_dict(self) -> dict:
        return {"step": self.step, "counters": dict(self.counters), **self.fixed}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.counters.update(state.get("counters", {}))


def _on_main(env, fn):
    """Run `fn` on the main process only; its HeadlessError is raised on every process."""
    result, error = None, None
    if env.is_main:
        try:
            result = fn()
        except HeadlessError as err:
            error = str(err)
    error = dist.broadcast_object(error) if env.world_size > 1 else error
    if error is not None:
        raise HeadlessError(error) from None
    return result


def _say(env, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


@dataclasses.dataclass
class Started:
    run: Optional[Run]
    state: TrainState
    checkpointer: Checkpointer
    lock: Any
    policies: list = dataclasses.field(default_factory=list)  # headless.train.policy.Policy objects
    done: Optional[dict] = None  # a resume of a finished run: its summary, nothing to do


def start(config: TrainConfig, resume: bool, env) -> Started:
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    run_dir = Path(dist.broadcast_object(str(run_dir)))
    config = dataclasses.replace(config, run_dir=str(run_dir))
    created = not run_dir.exists()
    lock = _on_main(env, lambda: open_run_dir(run_dir, resume, say=lambda m: _say(env, m)))
    try:
        return _start(config, resume, env, run_dir, lock)
    except BaseException:
        if lock is not None:
            lock.release()
            undo_open(run_dir, created, lock)  # refused before writing anything: leave no empty run behind
        raise


def _start(config: TrainConfig, resume: bool, env, run_dir: Path, lock) -> Started:
    torch.manual_seed(config.seed + env.rank)
    config, data = load_data(config, env)
    checkpointer = Checkpointer(run_dir, is_main=env.is_main, keep_last=config.keep_last, barrier=dist.barrier)
    state = TrainState()
    ckpt, old, ckpt_state = None, config, {"step": 0}
    if resume:
        old = saved_config(run_dir)
        ckpt = checkpointer.read(warn=lambda m: _say(env, m))
        if ckpt is None:
            _say(env, f"{run_dir}: no checkpoint yet (the run stopped before its first one); starting from step 0")
        else:
            ckpt_state = ckpt["state"]
        config = accept_resume(config, old, ckpt_state, env.world_size, data.fingerprint)
    step = int(ckpt_state["step"])
    policies = [TimeBudget(config, env.device, step, env.world_size, dist.all_reduce)]
    for policy in policies:  # checkpoints older than policy parts kept the budget in "counters"
        policy.load_state_dict(ckpt_state.get(policy.name, ckpt_state.get("counters", {})))
    max_steps = config.max_steps  # a new max_steps given to a resume wins over a policy's plan
    if ckpt is None or config.max_steps == old.max_steps:
        for policy in policies:
            max_steps = policy.max_steps(max_steps)
    if ckpt is not None and step == max_steps:
        summary_file = run_dir / "summary.json"
        done = json.loads(summary_file.read_text()) if summary_file.is_file() else {"run_dir": str(run_dir)}
        done.setdefault("steps", max_steps)
        _say(env, f"{run_dir} already reached max_steps={max_steps}; nothing to do "
                  "(pass a larger max_steps to continue)")
        return Started(None, state, checkpointer, lock, done=done)
    schedule = _schedule(config, old, ckpt, step, max_steps, ckpt is not None, lambda m: _say(env, m))
    model = build_model(config, data)
    if ckpt is not None:  # into the plain model: DDP/FSDP2 broadcast rank 0's weights when wrapping
        checkpointer.load(ckpt, {"model": ModelState(model)})
    state.fixed = {"world_size": env.world_size, "global_batch": config.batch_size * config.grad_accum * env.world_size,
                   "negative_pool": negative_pool(config, env.world_size), "data_fingerprint": data.fingerprint,
                   "config_fingerprint": config_fingerprint(config)}

    def accepted() -> None:  # from here on the command is accepted: write its config
        write_config(config, run_dir)
        if not (run_dir / "tokenizer").exists():
            shutil.copytree(Path(data.path) / "tokenizer", run_dir / "tokenizer")

    _on_main(env, accepted)
    dist.barrier()
    decided = dict(vars(schedule))
    run = build_run(dataclasses.replace(config, max_steps=max_steps), env, data, model, schedule)
    if ckpt is not None:
        checkpointer.load(ckpt, {"optimizer": OptimizerState(run.wrapped, run.optimizer, run.scheduler),
                                 "loader": run.loader, "train": state, "rng": RngState()})
        if env.rank:
            torch.manual_seed(config.seed + env.rank + state.step)
        vars(schedule).update(decided)  # the checkpoint's schedule as `_schedule` extended it
        schedule.restart(run.scheduler)
    run.wrapped.train()
    return Started(run, state, checkpointer, lock, policies)


def _schedule(config: TrainConfig, old: TrainConfig, ckpt, step: int, max_steps: int, resumed: bool,
              say) -> Schedule:
    """The LR schedule of this start: the checkpoint's (with an extension tail when max_steps goes
    past its end, see `Schedule.extend`), a length the user set, or max_steps; a refusal comes
    here, before anything is written."""
    length = config.optim.schedule_steps
    schedule = Schedule.of(config.optim, length or (old.max_steps if resumed else max_steps))
    saved = ckpt["optimizer"]["scheduler"]["lr_lambdas"][0] if resumed else None
    if saved:  # checkpoints older than `Schedule` saved none: the old run's max_steps was its length
        vars(schedule).update(saved)
    if not resumed:
        return schedule
    if length is not None and length != schedule.length:  # a stated new length, from the checkpoint on
        schedule.set_length(length)
    elif length is None and (message := schedule.extend(step, max_steps, config.optim.extend, config.optim.lr)):
        say(f"step {step}: {message}")
    return schedule


def save(started: Started, keep_steps=frozenset()) -> None:
    run, state = started.run, started.state
    started.checkpointer.keep_steps = frozenset(keep_steps)
    started.checkpointer.keep_last = run.config.keep_last
    started.checkpointer.save(state.step, {"model": ModelState(run.model),
                                           "optimizer": OptimizerState(run.model, run.optimizer, run.scheduler),
                                           "loader": run.loader, "train": state,
                                           **{policy.name: policy for policy in started.policies}})
