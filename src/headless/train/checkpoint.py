"""Atomic, resumable checkpoints.

Layout: RUN_DIR/checkpoints/step-00000100/
    model.safetensors      weights (safetensors; tied tensors handled by safetensors.torch.save_model)
    optimizer.pt           optimizer + scheduler state: tensors and plain numbers only, so it loads
                           with torch.load(weights_only=True)
    rng.pt                 RNG states as uint8 tensors (torch CPU/CUDA, numpy), weights_only loadable
    state.json             step, data-loader position, counters, and the sha256 of every file above

A checkpoint is written into a temporary sibling directory, every file fsynced, then renamed into
place: a crash leaves either the previous checkpoint or the new one, never half of one.  `state.json`
is written last and holds the checksums, so a truncated or corrupted file is detected on load.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from headless.errors import HeadlessError
from headless.files import describe_os_error, fsync_file, is_write_failure, publish_dir, sha256_file, tmp_sibling

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step-"


def _write_weights(model: torch.nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """A module (tied tensors handled by `save_model`) or a gathered (FSDP2) state dict, where one
    name per tied storage is kept."""
    from safetensors.torch import save_file, save_model

    if not isinstance(model, dict):
        save_model(model, str(path))
        return
    seen, weights = set(), {}
    for name, tensor in model.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key not in seen:
            seen.add(key)
            weights[name] = tensor.contiguous()
    save_file(weights, str(path))


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _write_tensors(value: Any, path: Path) -> None:
    torch.save(value, path)


def _read_tensors(path: Path) -> Any:
    return torch.load(path, weights_only=True, map_location="cpu")


@dataclass(frozen=True)
class PartFile:
    """How a part with a file of its own is stored."""

    name: str
    write: Callable[[Any, Path], None]
    read: Callable[[Path], Any]


# The layout: the parts with a file of their own (read without a run, e.g. by export: the weights
# alone).  Every other part lives in state.json under its name, except TOP_LEVEL's fields (step,
# counters, fingerprints), which sit at its top where resume and export read them.
PART_FILES = {"model": PartFile("model.safetensors", _write_weights, _read_weights),
              "optimizer": PartFile("optimizer.pt", _write_tensors, _read_tensors),   # tensors and numbers
              "rng": PartFile("rng.pt", _write_tensors, _read_tensors)}               # only: weights_only
ALL_PARTS = tuple(PART_FILES)
TOP_LEVEL = "train"


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    state["numpy_keys"] = torch.from_numpy(np_state[1].astype(np.int64))
    state["numpy_meta"] = torch.tensor([np_state[2], np_state[3], np_state[4]], dtype=torch.float64)
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "numpy_keys" in state:
        meta = state["numpy_meta"].tolist()
        np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(meta[0]), int(meta[1]),
                             float(meta[2])))


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    files: dict[str, Any],
    state: dict[str, Any],
    keep_last: int = 2,
    keep_steps: frozenset[int] | set[int] = frozenset(),
) -> Path:
    """Write checkpoint `step` atomically: `files` maps each part of `PART_FILES` to its value,
    `state` goes to state.json.  Then prune all but the newest `keep_last` (checkpoints at
    `keep_steps`, the points of a learning curve, are never pruned)."""
    missing = set(PART_FILES) - set(files)
    if missing:
        raise ValueError(f"a checkpoint needs every part of PART_FILES; missing {sorted(missing)}")
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = tmp_sibling(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for part, value in files.items():
            PART_FILES[part].write(value, tmp / PART_FILES[part].name)
        names = [PART_FILES[part].name for part in files]
        for name in names:
            fsync_file(tmp / name)
        meta = dict(state, step=step, files={name: sha256_file(tmp / name) for name in names})
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        fsync_file(tmp / "state.json")
        publish_dir(tmp, final)  # replaces a save of the same step (the final save after a periodic one)
    except Exception as err:  # noqa: BLE001 - OSError, torch's RuntimeError, safetensors' SafetensorError
        shutil.rmtree(tmp, ignore_errors=True)
        if not (isinstance(err, RuntimeError) or is_write_failure(err)):
            raise
        raise HeadlessError(f"cannot write checkpoint {final}: {describe_os_error(err)}; the previous checkpoint "
                            "is intact: free space (or fix permissions) and --resume") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        if checkpoint_step(old) not in keep_steps:
            shutil.rmtree(old, ignore_errors=True)
    return final


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Temporary checkpoint directories of killed saves (`.step-N.tmp-PID`, and the older
    `.tmp-step-N-PID`).  Call only under the run's lock: then no live process is writing them."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    pattern = re.compile(r"^(\.step-\d{8}\.tmp-\d+|\.tmp-step-\d{8}-\d+)$")
    removed = [p for p in root.iterdir() if pattern.match(p.name) and p.is_dir() and not p.is_symlink()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, verify: bool = True, parts: tuple = ALL_PARTS) -> dict[str, Any]:
    """Read a checkpoint back: {"model": state dict, "optimizer": ..., "rng": ..., "state": ...}.

    Only `parts` are checked and read (export needs the weights alone).  Raises HeadlessError
    naming the file if one of them is missing, truncated or corrupt.
    """
    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise HeadlessError(f"checkpoint {path} is incomplete (no state.json)")
    try:
        state = json.loads(state_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HeadlessError(f"checkpoint {path} is corrupt: state.json is not valid JSON") from None
    digests = state.get("files", {})
    for part in parts:
        name = PART_FILES[part].name
        file = path / name
        if not file.is_file():
            raise HeadlessError(f"checkpoint {path} is incomplete: {name} is missing")
        if verify and name in digests and sha256_file(file) != digests[name]:
            raise HeadlessError(f"checkpoint {path} is corrupt or truncated: {name} fails its checksum")
    out: dict[str, Any] = {"state": state}
    try:
        for part in parts:
            out[part] = PART_FILES[part].read(path / PART_FILES[part].name)
    except Exception as err:  # noqa: BLE001 - any decoding error means a bad file
        raise HeadlessError(f"checkpoint {path} cannot be read: {str(err).splitlines()[0]}") from None
    return out


def load_newest_valid(run_dir: str | Path, parts: tuple = ALL_PARTS, warn=None) -> Optional[dict[str, Any]]:
    """The newest checkpoint that verifies, with its "path"; a bad newer one is reported through
    `warn` (default: stderr) and skipped.  None when there is no checkpoint; HeadlessError when
    none verifies (naming the newest one's problem)."""
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    candidates = list_checkpoints(run_dir)[::-1]
    errors = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path, parts=parts)
        except HeadlessError as err:
            errors.append(str(err))
            continue
        for message in errors:
            warn(f"warning: {message}; falling back to {path.name}")
        ckpt["path"] = path
        return ckpt
    if errors:
        extra = f" (and {len(errors) - 1} older one(s) fail too)" if len(errors) > 1 else ""
        raise HeadlessError(errors[0] + extra)
    return None


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's weights, tolerating the tied copies that safetensors drops."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise HeadlessError(f"checkpoint does not match the model: unexpected weights {unexpected[:3]}")
    tied: set[str] = set()
    ids: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        ids.setdefault(id(param), []).append(name)
    for names in ids.values():
        if any(n in weights for n in names):
            tied.update(names)
    really_missing = [m for m in missing if m not in tied and "rotary" not in m and "inv_freq" not in m]
    if really_missing:
        raise HeadlessError(f"checkpoint does not match the model: missing weights {really_missing[:3]}")


class Checkpointer:
    """The stateful parts of a run, registered once: `save(step)` writes every registered part and
    `restore(ckpt)` loads every part back the same way.

    A part is any object with `state_dict()` / `load_state_dict()` (the weights, optimizer and
    scheduler, data loader, loop state, RNG), stored as `PART_FILES` says.  Parts are saved and
    restored in the order registered: the weights are registered (and restored) as soon as the
    model is built, before wrapping, the others once they exist; the RNG last.  Saving is a
    collective (FSDP2 gathers shards); only the main process writes.
    """

    def __init__(self, run_dir: str | Path, *, is_main: bool, keep_last: int, keep_steps=frozenset(), barrier=None):
        self.run_dir, self.is_main, self.keep_last = Path(run_dir), is_main, keep_last
        self.keep_steps = frozenset(keep_steps)
        self.barrier = barrier or (lambda: None)
        self.parts: dict[str, Any] = {}
        self._restored: set[str] = set()

    def register(self, name: str, part: Any, restored: bool = False) -> None:
        """Add a part; `restored`: its owner loaded it already (restore leaves it alone)."""
        if name in self.parts:
            raise ValueError(f"checkpoint part {name!r} is registered already")
        self.parts[name] = part
        if restored:
            self._restored.add(name)

    def save(self, step: int) -> None:
        gathered = {name: part.state_dict() for name, part in self.parts.items()}  # collective: every rank
        if self.is_main:
            files = {name: value for name, value in gathered.items() if name in PART_FILES}
            meta: dict[str, Any] = {}
            for name, value in gathered.items():
                if name == TOP_LEVEL:
                    meta.update(value)
                elif name not in PART_FILES:
                    meta[name] = value
            save_checkpoint(self.run_dir, step, files, meta, keep_last=self.keep_last, keep_steps=self.keep_steps)
        self.barrier()

    def read(self, parts: tuple = ALL_PARTS, warn=None) -> Optional[dict[str, Any]]:
        """The newest checkpoint that verifies (falling back past bad ones, with a warning)."""
        return load_newest_valid(self.run_dir, parts, warn)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load every registered part not restored yet from `ckpt` (what `read` returned)."""
        for name, part in self.parts.items():
            if name in self._restored:
                continue
            if name in PART_FILES:
                part.load_state_dict(ckpt[name])
            else:
                part.load_state_dict(ckpt["state"] if name == TOP_LEVEL else ckpt["state"][name])
            self._restored.add(name)


class ModelState:
    """The weights: full (gathered) on save; on load into the plain model, before wrapping."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self):
        from headless.train import distributed as dist

        weights = dist.full_model_state_dict(self.model)
        return weights if dist.is_sharded(self.model) else self.model

    def load_state_dict(self, weights) -> None:
        load_model_weights(self.model, weights)


class OptimizerState:
    """Optimizer (keyed by parameter name, full) and scheduler; load after wrapping."""

    def __init__(self, wrapped: torch.nn.Module, optimizer, scheduler):
        self.wrapped, self.optimizer, self.scheduler = wrapped, optimizer, scheduler

    def state_dict(self):
        from headless.train import distributed as dist

        return {"optimizer": dist.full_optimizer_state_dict(self.wrapped, self.optimizer),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state) -> None:
        from headless.train import distributed as dist

        dist.load_full_optimizer_state_dict(self.wrapped, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class RngState:
    """The RNG streams (torch CPU/CUDA, numpy): registered last, so saved after every other part."""

    def state_dict(self):
        return rng_state()

    def load_state_dict(self, state) -> None:
        set_rng_state(state)
