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

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from headless.errors import HeadlessError

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step-"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    model: torch.nn.Module | dict[str, torch.Tensor],
    optimizer_state: dict,
    state: dict[str, Any],
    keep_last: int = 2,
    keep_steps: frozenset[int] | set[int] = frozenset(),
) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep_last` (checkpoints at
    `keep_steps`, the points of a learning curve, are never pruned)."""
    from safetensors.torch import save_file, save_model

    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        if isinstance(model, dict):  # a gathered (FSDP2) state dict: keep one name per tied storage
            seen, weights = set(), {}
            for name, tensor in model.items():
                key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
                if key not in seen:
                    seen.add(key)
                    weights[name] = tensor.contiguous()
            save_file(weights, str(tmp / "model.safetensors"))
        else:
            save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        files = ["model.safetensors", "optimizer.pt", "rng.pt"]
        for name in files:
            _fsync_file(tmp / name)
        meta = dict(state, step=step, files={name: _sha256(tmp / name) for name in files})
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        _fsync_file(tmp / "state.json")
        if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        if checkpoint_step(old) not in keep_steps:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint back: {"model": state dict, "optimizer": ..., "rng": ..., "state": ...}.

    Raises HeadlessError naming the file if anything is missing, truncated or corrupt.
    """
    from safetensors.torch import load_file

    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise HeadlessError(f"checkpoint {path} is incomplete (no state.json)")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError:
        raise HeadlessError(f"checkpoint {path} is corrupt: state.json is not valid JSON") from None
    for name, digest in state.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise HeadlessError(f"checkpoint {path} is incomplete: {name} is missing")
        if verify and _sha256(file) != digest:
            raise HeadlessError(f"checkpoint {path} is corrupt or truncated: {name} fails its checksum")
    try:
        model = load_file(str(path / "model.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        rng = torch.load(path / "rng.pt", weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any decoding error means a bad file
        raise HeadlessError(f"checkpoint {path} cannot be read: {str(err).splitlines()[0]}") from None
    return {"model": model, "optimizer": optimizer, "rng": rng, "state": state}


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
