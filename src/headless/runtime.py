"""Where and in which precision things run: the one device resolver and the one dtype table.

Training, evaluation and the bench all resolve `device=` and `precision=` here, so "auto", a bad
spec and a missing GPU mean the same thing (and give the same one-line error) everywhere.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Optional

from headless.errors import HeadlessError

if TYPE_CHECKING:  # torch is imported on use: config validation must not pay for it
    import torch

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_DTYPE_NAMES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
                "fp16": "float16", "float16": "float16"}


def _dtype(name: str) -> "torch.dtype":
    import torch

    return getattr(torch, _DTYPE_NAMES[name])


def check_device_spec(spec: str, what: str = "device") -> None:
    if not isinstance(spec, str) or not DEVICE_PATTERN.match(spec):
        raise HeadlessError(f"invalid {what} {spec!r}: use auto, cpu, cuda, cuda:N or mps")


def resolve_device(spec: Optional[str] = "auto", local_rank: int = 0, *, mps: bool = False) -> "torch.device":
    """`auto` = CUDA when visible (then MPS when `mps`), else CPU; `cuda` = this rank's GPU."""
    import torch

    spec = "auto" if spec in (None, "") else spec
    check_device_spec(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif mps and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HeadlessError(f"device={spec} but no CUDA device is visible; use device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise HeadlessError(f"device={spec} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def compute_dtype(precision: "Optional[str | torch.dtype]", device: "torch.device") -> "Optional[torch.dtype]":
    """The autocast / mixed-precision dtype of `precision`: None means full fp32.
    "auto" = bf16 on CUDA, fp32 elsewhere."""
    import torch

    if isinstance(precision, torch.dtype):
        return None if precision == torch.float32 else precision
    if precision in (None, "", "no"):
        return None
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision not in _DTYPE_NAMES:
        raise HeadlessError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    dtype = _dtype(precision)
    return None if dtype == torch.float32 else dtype


def parse_dtype(name: "Optional[str | torch.dtype]") -> "torch.dtype":
    """A storage dtype by name (evaluation's --dtype): float32 unless told otherwise."""
    import torch

    if isinstance(name, torch.dtype):
        return name
    if name in (None, "", "auto"):
        return torch.float32
    if name not in _DTYPE_NAMES:
        raise HeadlessError(f"bad dtype {name!r}: use one of float32, bfloat16, float16")
    return _dtype(name)


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_plan(compile: "bool | str", mode: str, device: "torch.device", world_size: int = 1
                 ) -> "tuple[Optional[str], Optional[str]]":
    """(the torch.compile mode to use, None for eager; a note to print or None).

    `compile: auto` (the GPU presets) compiles on CUDA only: on the CPU Inductor's first step and
    first evaluation each take minutes for a model that runs eagerly at once.  `compile: true`
    compiles anywhere, but CUDA graphs need a CUDA device and a single process (untested with
    DDP/FSDP2 hooks), so their modes fall back to the same compilation without graphs."""
    if not compile:
        return None, None
    if compile == "auto" and device.type != "cuda":
        return None, (f"compile: auto compiles on CUDA only; running eagerly on {device.type} "
                      "(compile=true compiles here anyway, without CUDA graphs)")
    if mode not in CUDA_GRAPH_MODES:
        return mode, None
    plain = "max-autotune-no-cudagraphs" if mode == "max-autotune" else "default"
    if device.type != "cuda":
        return plain, f"compile_mode={mode}: CUDA graphs need a CUDA device; compiling with mode={plain} on {device.type}"
    if world_size > 1:
        return plain, (f"compile_mode={mode}: CUDA graphs are not used with several processes "
                       f"(untested with DDP/FSDP2 hooks); compiling with mode={plain}")
    return mode, None


def to_device(tensor: "torch.Tensor", device: "torch.device") -> "torch.Tensor":
    """Asynchronous host-to-GPU copy.  Fresh CPU tensors (masked inputs, labels, fine-tuning
    batches) are pageable, and a copy from pageable memory blocks the host until the GPU has caught
    up, which serialises host and GPU once per copy; a pinned staging copy (cheap, from the caching
    host allocator) keeps `non_blocking` truly so."""
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def host_memory_bytes() -> int:
    """This machine's physical memory: the bound for sizes a user can mistype (a model, a step)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: a fixed, generous bound
        return 1 << 40
