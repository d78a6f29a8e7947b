"""The run directory: created, locked, cleaned and checked before anything is written into it.

Order of a start (`open_run_dir`), so that a refused command leaves the directory as it was:
1. the directory is created (or found) and an exclusive `flock` taken on RUN_DIR/.lock: a second
   process on the same run gets one line instead of mixing its files into the first one's;
2. leftovers that only a killed process of this run can have made are removed (checkpoint temp
   directories, `.config.yaml.tmp-PID`...);
3. a fresh run refuses a directory with anything in it, except a run of its own whose marker says
   it never saved a checkpoint (`state: started`; that is cleared: there is nothing to resume) and
   that holds nothing but a run's own files (checked before anything is deleted).  The first save
   turns the marker to `state: checkpointed` (`mark_checkpointed`): from then on the run is never
   "started again", even with its checkpoints deleted (nor resumed from step 0).  A marker older
   than states is never cleared either; it may be resumed from step 0 only if it has no summary;
4. a resume picks the newest checkpoint that verifies and checks the new config against it
   (`accept_resume`): only then is config.yaml written (`write_config`).
A start refused before step 4 takes back its lock file and marker, and the directory if it made
it (`undo_open`), so that a bad command leaves nothing behind, not even an empty run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from headless.config import TrainConfig, config_from_file, save_config
from headless.errors import HeadlessError
from headless.files import (
    MARKER_PREFIX,
    atomic_write,
    describe_os_error,
    mark,
    marked_kinds,
    marker_state,
    remove_stale_tmp,
)
from headless.train.checkpoint import CHECKPOINT_DIR, checkpoint_step, list_checkpoints, remove_leftovers

LOCK_FILE = ".lock"
# a run marker's states: only a `started` run (no checkpoint ever saved) may be cleared by a fresh start
STARTED, CHECKPOINTED = "started", "checkpointed"
# what a run writes at its top level (removed when a run that never checkpointed is restarted)
RUN_FILES = ("config.yaml", "metrics.jsonl", "tensorboard", "wandb", "curves.png", "summary.md", "summary.json",
             "tokenizer", CHECKPOINT_DIR)
# Settings a resumed run may change without changing its trajectory (dotted keys; a key covers its
# sub-keys).  batch_size / grad_accum may change for losses scored against the vocabulary if the
# global batch stays the same; for in-batch losses (CWT, NCE) the negatives are the micro-batch's
# targets, so the micro-batch is part of the objective (see `accept_resume`).  optim.schedule_steps
# is an explicit change of the LR schedule from the checkpoint on; optim.extend says how a larger
# max_steps continues it (headless.train.optim.Schedule.extend).  objective.unique_bound only sizes
# the classes of an exact path (raise it when a run stops for it).
RESUMABLE = {"max_steps", "eval_every", "log_every", "save_every", "keep_last", "progress", "tensorboard",
             "report_to", "eval_batches", "device", "batch_size", "grad_accum", "optim.schedule_steps", "optim.extend", "run_dir",
             "plateau_patience", "objective.unique_bound",
             "model.attention_kernel"}


def default_run_dir(config: TrainConfig) -> Path:
    """runs/<preset>-<flavour>-<time>-<pid><random>: runs of a sweep started together never collide."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.preset or 'custom'}-{config.flavour}-{stamp}-{os.getpid()}{secrets.token_hex(2)}"


class RunLock:
    """An exclusive advisory lock (fcntl.flock) on RUN_DIR/.lock, held for the process's run.
    The kernel drops it when the process dies, so a killed run never leaves a stale lock."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.handle = None
        self.added: list[Path] = []  # files this start created (the lock, the run marker): `undo_open`

    def acquire(self) -> "RunLock":
        import fcntl

        if not self.path.exists():
            self.added.append(self.path)
        try:
            self.handle = open(self.path, "a+")
        except OSError as err:
            raise HeadlessError(f"cannot write to run directory {self.path.parent}: {describe_os_error(err)}") from None
        try:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "another process"
            self.handle.close()
            self.handle = None
            raise HeadlessError(f"run directory {self.path.parent} is in use by {owner}; wait for it to finish "
                                "or choose another --run-dir") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        self.handle.flush()
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the flock
            self.handle = None


def _contents(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name != LOCK_FILE and not p.name.startswith(MARKER_PREFIX)]


def run_state(run_dir: Path) -> Optional[str]:
    """STARTED, CHECKPOINTED, "legacy" (a marker written before states) or None (no run marker)."""
    if "run" not in marked_kinds(run_dir):
        return None
    return marker_state(run_dir, "run") or "legacy"


def mark_checkpointed(run_dir: Path) -> None:
    """After a save: the run has something to resume, so no fresh start may clear it any more."""
    if marker_state(run_dir, "run") != CHECKPOINTED:
        mark(run_dir, "run", CHECKPOINTED)


def _occupied(run_dir: Path, state: Optional[str]) -> str:
    """The one line for a fresh start into a directory it may not clear: what to do instead."""
    found = list_checkpoints(run_dir)
    if found:
        step = checkpoint_step(found[-1])
        return (f"run directory {run_dir} holds a run (checkpoint at step {step}); continue it with --resume "
                f"(--resume max_steps=N with N > {step} to train further) or choose another --run-dir")
    if state == "legacy" and not (run_dir / "summary.json").exists():
        return (f"run directory {run_dir} holds a run with no checkpoint, made by an older headless that did not "
                "record whether it ever saved one; --resume continues it from step 0, or choose another --run-dir")
    if state in (CHECKPOINTED, "legacy"):
        return (f"run directory {run_dir} holds a run whose checkpoints are gone, so it can neither be resumed nor "
                "started again without deleting its files; choose another --run-dir")
    return f"run directory {run_dir} exists and is not empty; choose another --run-dir"


def open_run_dir(run_dir: Path, resume: bool, say=print) -> RunLock:
    """Steps 1-3 above, on the main process; returns the held lock."""
    if run_dir.exists() and not run_dir.is_dir():
        raise HeadlessError(f"run directory {run_dir} is a file; choose another --run-dir")
    if resume and not (run_dir / "config.yaml").is_file():
        raise HeadlessError(f"cannot resume: {run_dir} has no config.yaml (is it a run directory?)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HeadlessError(f"cannot create run directory {run_dir}: {describe_os_error(err)}") from None
    lock = RunLock(run_dir).acquire()
    try:
        remove_leftovers(run_dir)
        names = [*RUN_FILES, f"{MARKER_PREFIX}run"]
        remove_stale_tmp(run_dir, "|".join(n.replace(".", r"\.") for n in names), dead_only=False)
        state = run_state(run_dir)
        if resume and not list_checkpoints(run_dir) and state in (CHECKPOINTED, "legacy") and (
                state == CHECKPOINTED or (run_dir / "summary.json").exists()):
            raise HeadlessError(f"cannot resume {run_dir}: it saved checkpoints but none is left (deleted?); "
                                "restore them or start a new run with another --run-dir")
        if not resume and _contents(run_dir):
            if state != STARTED or list_checkpoints(run_dir):
                raise HeadlessError(_occupied(run_dir, state))
            foreign = sorted(p.name for p in _contents(run_dir) if p.name not in RUN_FILES)
            if foreign:  # checked before anything is deleted: a refusal deletes nothing
                raise HeadlessError(f"run directory {run_dir} holds files that are not the run's "
                                    f"({', '.join(foreign[:3])}); move them or choose another --run-dir")
            say(f"{run_dir}: the previous attempt stopped before its first checkpoint; starting it again")
            for name in RUN_FILES:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
        if state is None:
            mark(run_dir, "run", STARTED)
            lock.added.append(run_dir / f"{MARKER_PREFIX}run")
        elif state != STARTED and not resume and not _contents(run_dir):  # an emptied run: a new one
            mark(run_dir, "run", STARTED)
    except OSError as err:
        _give_back(lock)
        raise HeadlessError(f"cannot write to run directory {run_dir}: {describe_os_error(err)}") from None
    except BaseException:
        _give_back(lock)
        raise
    return lock


def _give_back(lock: RunLock) -> None:
    """A refused open: release the lock and remove only what this open added (the lock file)."""
    lock.release()
    for path in lock.added:
        path.unlink(missing_ok=True)


def undo_open(run_dir: Path, created: bool, lock: RunLock) -> None:
    """A start refused before it wrote anything (bad data, a bad resume): take back the lock file
    and the marker that `open_run_dir` added (`lock.added`, never a file that was there before),
    and the directory too if this command created it."""
    try:
        if not run_dir.is_dir() or _contents(run_dir):
            return
        for path in lock.added:
            path.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):
            run_dir.rmdir()
    except OSError:  # best effort: the start's own error is the one to report
        pass


def write_config(config: TrainConfig, run_dir: Path) -> None:
    """config.yaml, atomically: only ever called once the command has been accepted."""
    try:
        atomic_write(run_dir / "config.yaml", lambda tmp: save_config(config, tmp))
    except OSError as err:
        raise HeadlessError(f"cannot write {run_dir / 'config.yaml'}: {describe_os_error(err)}") from None


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(prefix + key)
    return out


def _resumable(key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in RESUMABLE for i in range(1, len(parts) + 1))


def saved_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise HeadlessError(f"cannot resume: {run_dir} has no config.yaml (is it a run directory?)")
    return config_from_file(path)


def _keys(tree: dict, prefix: str = "") -> list[str]:
    return [k for key, v in tree.items()
            for k in (_keys(v, f"{prefix}{key}.") if isinstance(v, dict) and key != "extra" else [prefix + key])]


def check_resume_overrides(update: dict) -> None:
    """Refuse `--resume key=value` overrides of settings that shape the trajectory."""
    illegal = [k for k in _keys(update) if not _resumable(k)]
    if illegal:
        raise HeadlessError(f"cannot resume with a different config: {', '.join(sorted(illegal))} "
                            f"(only {', '.join(sorted(RESUMABLE - {'run_dir'}))} may change)")


def negative_pool(config: TrainConfig, world_size: int) -> Optional[int]:
    """Sequences whose targets are the negatives of one micro-step (None: the loss scores the
    vocabulary, so the micro-batch does not enter the objective)."""
    if not config.loss.in_batch:
        return None
    return config.batch_size * (world_size if config.objective.negatives == "global" else 1)


def accept_resume(config: TrainConfig, old: TrainConfig, state: dict[str, Any], world_size: int,
                  data_fingerprint: str) -> TrainConfig:
    """Refuse a resume that would not continue the checkpoint's trajectory; returns the config to
    run.  The schedule and a time budget's plan come from the checkpoint (train/start.py)."""
    changed = [k for k in differences(old.to_dict(), config.to_dict()) if not _resumable(k)]
    if changed:
        raise HeadlessError(f"cannot resume with a different config: {', '.join(changed[:5])} changed")
    step = int(state["step"])
    if config.max_steps < step:
        raise HeadlessError(f"cannot resume: max_steps={config.max_steps} is below the checkpoint's step {step}; "
                            "pass a larger max_steps")
    saved_global = state.get("global_batch")
    global_batch = config.batch_size * config.grad_accum * world_size
    if saved_global and saved_global != global_batch:
        raise HeadlessError(f"cannot resume: the global batch would change from {saved_global} to {global_batch} "
                            "sequences (batch_size x grad_accum x processes must stay the same)")
    saved_pool = state.get("negative_pool", negative_pool(old, state.get("world_size", world_size)))
    pool = negative_pool(config, world_size)
    if pool is not None and saved_pool is not None and pool != saved_pool:
        raise HeadlessError(f"cannot resume: the {config.loss_kind} negatives come from {saved_pool} sequences per "
                            f"micro-step and would come from {pool}; that changes the objective "
                            "(keep batch_size, or batch_size x processes with objective.negatives=global)")
    saved_data = state.get("data_fingerprint")
    if saved_data and saved_data != data_fingerprint:
        raise HeadlessError(f"cannot resume: the dataset at {config.data.path or 'the cache'} is not the one the "
                            "checkpoint was trained on (it was prepared again?); restore it or start a new run")
    return config
