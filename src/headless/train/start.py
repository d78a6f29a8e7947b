"""Starting a run: the run directory, the data, the checkpoint to resume and the config accepted,
in an order where a refused command writes nothing (see `headless.train.rundir`)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from headless.config import TrainConfig
from headless.errors import HeadlessError
from headless.files import json_digest
from headless.train import distributed as dist
from headless.train.build import Run, build_model, build_run, load_data
from headless.train.checkpoint import Checkpointer, ModelState, OptimizerState, RngState
from headless.train.rundir import (
    RESUMABLE,
    accept_resume,
    default_run_dir,
    negative_pool,
    open_run_dir,
    saved_config,
    undo_open,
    write_config,
)


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
    """The loop's own state, saved in state.json: step, counters (tokens, elapsed, nan_skips,
    the time budget's calibration) and what a resume must find unchanged."""

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
    ckpt = None
    if resume:
        old = saved_config(run_dir)
        ckpt = checkpointer.read(warn=lambda m: _say(env, m))
        if ckpt is None:
            _say(env, f"{run_dir}: no checkpoint yet (the run stopped before its first one); starting from step 0")
            ckpt_state = {"step": 0}
        else:
            ckpt_state = ckpt["state"]
        config = accept_resume(config, old, ckpt_state, env.world_size, data.fingerprint)
        if ckpt is not None and int(ckpt_state["step"]) == config.max_steps:
            summary_file = run_dir / "summary.json"
            done = json.loads(summary_file.read_text()) if summary_file.is_file() else {"run_dir": str(run_dir)}
            done.setdefault("steps", config.max_steps)
            _say(env, f"{run_dir} already reached max_steps={config.max_steps}; nothing to do "
                      "(pass a larger max_steps to continue)")
            return Started(None, state, checkpointer, lock, done=done)
    if config.optim.schedule_steps is None and config.time_budget_s is None:  # fixed by the first run
        config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, schedule_steps=config.max_steps))
    model = build_model(config, data)
    checkpointer.register("model", ModelState(model))
    if ckpt is not None:  # into the plain model: DDP/FSDP2 broadcast rank 0's weights when wrapping
        checkpointer.restore(ckpt)
    state.fixed = {"world_size": env.world_size, "global_batch": config.batch_size * config.grad_accum * env.world_size,
                   "negative_pool": negative_pool(config, env.world_size), "data_fingerprint": data.fingerprint,
                   "config_fingerprint": config_fingerprint(config)}

    def accepted() -> None:  # from here on the command is accepted: write its config
        write_config(config, run_dir)
        if not (run_dir / "tokenizer").exists():
            shutil.copytree(Path(data.path) / "tokenizer", run_dir / "tokenizer")

    _on_main(env, accepted)
    dist.barrier()
    run = build_run(config, env, data, model)
    checkpointer.register("optimizer", OptimizerState(run.wrapped, run.optimizer, run.scheduler))
    checkpointer.register("loader", run.loader)
    checkpointer.register("train", state)
    checkpointer.register("rng", RngState())  # last: saved and restored after everything else
    if ckpt is not None:
        checkpointer.restore(ckpt)
        if env.rank:
            torch.manual_seed(config.seed + env.rank + state.step)
    return Started(run, state, checkpointer, lock)


def save(started: Started, keep_steps=frozenset()) -> None:
    run, state = started.run, started.state
    started.checkpointer.keep_steps = frozenset(keep_steps)
    started.checkpointer.keep_last = run.config.keep_last
    started.checkpointer.save(state.step)
