"""Starting a run: the run directory, the data, the checkpoint to resume and the config accepted,
in an order where a refused command writes nothing (see `headless.train.rundir`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

import torch

from headless.config import TrainConfig, deep_merge, from_dict, parse_overrides
from headless.data.prepare import verify_shards
from headless.errors import HeadlessError
from headless.files import copytree_atomic, describe_os_error, is_write_failure, json_digest, tree_digest
from headless.runtime import compute_dtype
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
    mark_checkpointed,
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
    checkpointed: bool = False   # the run marker says so (set after the first save)


def check_tokenizer_copy(run_dir: Path, expected: str, source: Path) -> None:
    """A resume refuses a damaged RUN_DIR/tokenizer (a 0-byte file left by a full disk, an edit):
    `expected` is the digest stored in the checkpoint (or, for runs older than it, the dataset's
    tokenizer it was copied from).  A missing copy is made again by `accepted`."""
    copy = run_dir / "tokenizer"
    if copy.exists() and tree_digest(copy) != expected:
        raise HeadlessError(f"{copy} is damaged (it differs from the tokenizer the run started with); replace it "
                            f"with a copy of {source} and --resume again")


def copy_tokenizer(source: Path, run_dir: Path) -> None:
    """RUN_DIR/tokenizer, copied atomically (a full disk leaves no copy, never a partial one)."""
    target = run_dir / "tokenizer"
    if target.exists():
        return
    try:
        copytree_atomic(source, target)
    except Exception as err:  # noqa: BLE001 - shutil.Error, OSError
        if not is_write_failure(err):
            raise
        raise HeadlessError(f"cannot copy the tokenizer into {target}: {describe_os_error(err)}") from None


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
        config = accept_resume(config, old, ckpt_state, env.world_size, resume_fingerprint(data, ckpt_state))
        _on_main(env, lambda: verify_shards(data.path))  # whole-shard hashes against the manifest
        source = Path(data.path) / "tokenizer"
        _on_main(env, lambda: check_tokenizer_copy(run_dir, ckpt_state.get("tokenizer_digest")
                                                   or tree_digest(source), source))
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
    model.check_attention_kernel(env.device, compute_dtype(config.precision, env.device))  # before anything is written
    checkpointer.register("model", ModelState(model))
    if ckpt is not None:  # into the plain model: DDP/FSDP2 broadcast rank 0's weights when wrapping
        checkpointer.restore(ckpt)
    state.fixed = {"world_size": env.world_size, "global_batch": config.batch_size * config.grad_accum * env.world_size,
                   "negative_pool": negative_pool(config, env.world_size), "data_fingerprint": data.fingerprint,
                   "config_fingerprint": config_fingerprint(config),
                   "tokenizer_digest": tree_digest(Path(data.path) / "tokenizer")}

    def accepted() -> None:  # from here on the command is accepted: write its config
        write_config(config, run_dir)
        copy_tokenizer(Path(data.path) / "tokenizer", run_dir)

    _on_main(env, accepted)
    dist.barrier()
    decided = dict(vars(schedule))
    run = build_run(dataclasses.replace(config, max_steps=max_steps), env, data, model, schedule)
    checkpointer.register("optimizer", OptimizerState(run.wrapped, run.optimizer, run.scheduler))
    checkpointer.register("loader", run.loader)
    checkpointer.register("train", state)
    for policy in policies:  # loaded above (older checkpoints kept their state elsewhere)
        checkpointer.register(policy.name, policy, restored=True)
    checkpointer.register("rng", RngState())  # last: saved and restored after everything else
    if ckpt is not None:
        checkpointer.restore(ckpt)
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
    started.checkpointer.save(state.step)
    if started.checkpointer.is_main and not started.checkpointed:  # never "started again" from here on
        try:
            mark_checkpointed(started.checkpointer.run_dir)
        except OSError as err:
            raise HeadlessError(f"cannot update {started.checkpointer.run_dir}/.headless-run: {describe_os_error(err)}"
                                f" (checkpoint {state.step} is saved; --resume continues)") from None
        started.checkpointed = True


def resume_fingerprint(data, saved: dict) -> str:
    """The dataset fingerprint to compare with a checkpoint's: the whole-shard one, or for a
    checkpoint written before it (a bare sha256) the sampled one it stored."""
    from headless.data.prepare import FINGERPRINT_PREFIX, sampled_fingerprint

    stored = saved.get("data_fingerprint")
    if stored and not str(stored).startswith(FINGERPRINT_PREFIX):
        return sampled_fingerprint(data.path)
    return data.fingerprint

