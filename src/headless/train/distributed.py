"""Data-parallel training on PyTorch's own engine: torchrun env, DDP / FSDP2, full-state checkpoints.

Every function here is a no-op (or the plain single-process equivalent) when no process group
exists, so the trainer has one code path for a laptop and for `torchrun --nnodes 4`.

The model handed to `wrap_model` must compute its loss INSIDE `forward` (and return it): with
FSDP2 the input embedding is a sharded DTensor outside forward, and only inside the root's
forward is it the full [V, D] matrix that CWT scores against. Loss normalisation is the
trainer's (see `dp_loss_scale`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

from headless.errors import HeadlessError

log = logging.getLogger(__name__)
STRATEGIES = ("none", "ddp", "fsdp2")


@dataclass
class DistEnv:
    """Where this process sits in the job. world_size 1 and backend None: no process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that logs, shows progress and writes files."""
        return self.rank == 0


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistEnv:
    """Join the job that torchrun (or `spawn`) described in RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*.

    Without those variables this is a single process and no group is created. nccl on CUDA, gloo on
    CPU. `timeout_s` bounds every collective: a dead or stuck peer ends the job with an error after
    that long instead of hanging it forever (NCCL aborts through its watchdog).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistEnv(0, 1, 0, _pick_device(device, 0), None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = _pick_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not _initialized():
        dist.init_process_group(backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local_rank, dev, backend)


def _pick_device(device: str, local_rank: int) -> torch.device:
    from headless.runtime import resolve_device

    return resolve_device(device, local_rank)


def shutdown() -> None:
    """Destroy the process group (call in a `finally`, on success and on error alike)."""
    if _initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if _initialized():
        dist.barrier()


_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK")


@contextlib.contextmanager
def single_process():
    """Hide torchrun's variables, so that work done by one rank alone after the job's collectives
    (rank 0's evaluation: HLM+FT runs the trainer) does not try to join the finished job."""
    saved = {k: os.environ.pop(k) for k in _LAUNCH_VARS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def rank_zero_first(fn, timeout_s: float = 24 * 3600.0):
    """fn() on rank 0, then on the other ranks, which then find rank 0's work (a prepared dataset,
    a trained tokenizer) and only read it.  The wait is a barrier on a gloo group of its own with a
    long timeout, so that minutes of data preparation do not trip the job's collective timeout; if
    rank 0 fails, torchrun stops the waiting ranks."""
    if not _initialized() or dist.get_world_size() == 1:
        return fn()
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    try:
        result = fn() if dist.get_rank() == 0 else None
        dist.barrier(group=group)
        return result if dist.get_rank() == 0 else fn()
    finally:
        dist.destroy_process_group(group)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all_reduce over the job ("sum", "mean", "max", "min"); returns the tensor."""
    if not _initialized():
        return tensor
    ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
           "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op])  # gloo has no AVG: sum, then divide
    if op == "mean":
        tensor /= dist.get_world_size()
    return tensor


def gather_object(obj: Any) -> list:
    """Every rank's picklable `obj`, in rank order, on every rank (e.g. data-loader positions)."""
    if not _initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's picklable `obj` on every rank (e.g. a default run directory with a random name)."""
    if not _initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def loss_group(negatives: str, env: DistEnv):
    """The group whose targets serve as CWT negatives: None ("rank", the paper) or the whole job."""
    if negatives not in ("rank", "global"):
        raise HeadlessError(f"negatives must be 'rank' or 'global', got {negatives!r}")
    if negatives == "global" and env.world_size > 1 and _initialized():
        return dist.group.WORLD
    return None


def dp_loss_scale(num_targets_global: int | torch.Tensor, world_size: int) -> float:
    """Factor turning this rank's SUM-reduced loss into its share of the job's mean loss.

    The loss of a step is sum(all ranks, all micro-batches) / N, N = the all-reduced target count.
    DDP and FSDP2 AVERAGE gradients over ranks, i.e. they divide the summed gradient by W; so
    each rank back-propagates W * local_sum / N and the average is exactly d(sum / N). Dividing by
    the local count instead (a mean of means) over-weights ranks with few targets (MLM masks).
    """
    return world_size / max(int(num_targets_global), 1)


# -- wrapping ---------------------------------------------------------------------------------


def mixed_precision_dtype(mixed_precision: Optional[str], device: torch.device) -> Optional[torch.dtype]:
    """None (full fp32) or the compute dtype; "auto" = bf16 on CUDA, fp32 elsewhere."""
    from headless.runtime import compute_dtype

    return compute_dtype(mixed_precision, device)


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated layers of any HF backbone (encoder.layer, layers, gpt_neox.layers, h, ...).

    Found structurally, not by name: the outermost nn.ModuleLists whose entries are all of one
    class. Each becomes one FSDP2 unit, so one block's weights are gathered at a time.
    """
    blocks: list[nn.Module] = []
    taken: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            blocks.extend(module)
            taken.add(name)
    return blocks


def wrap_model(model: nn.Module, strategy: str, env: DistEnv, *, mixed_precision: Optional[str] = None,
               find_unused_parameters: bool = False) -> nn.Module:
    """Wrap `model` (already on env.device) for data parallelism; returns the module to call.

    "ddp": DistributedDataParallel; mixed precision is the caller's torch.autocast (the weights
    and their gradient all-reduce stay fp32). "fsdp2": `fully_shard` on every transformer block,
    then the root (embeddings, head, loss), in place: `model` itself becomes the FSDPModule and its
    parameters DTensor shards, so BUILD THE OPTIMIZER AFTER THIS CALL. Rank 0's weights are
    broadcast first (DDP does the same), so ranks need not share an init seed. Mixed precision
    is a MixedPrecisionPolicy: bf16/fp16 compute, fp32 gradient reduction and master weights.
    Without a process group (one process) every strategy returns `model` unchanged.
    """
    if strategy not in STRATEGIES:
        raise HeadlessError(f"distributed must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy == "none" or not _initialized():
        if strategy != "none":
            log.info("distributed=%s in a single process: running unwrapped", strategy)
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=find_unused_parameters,
                   gradient_as_bucket_view=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, src=0)
    mesh = init_device_mesh(env.device.type, (env.world_size,))
    dtype = mixed_precision_dtype(mixed_precision, env.device)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    # The root's parameters (embeddings) stay gathered between forward and backward (FSDP2's
    # default for the root): the loss and the backward both need the full embedding matrix.
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True when `model` is an FSDP2 module (its parameters are DTensor shards outside forward)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def no_sync(model: nn.Module, enabled: bool):
    """Skip the gradient reduction of this backward (gradient accumulation, all but the last micro-step).

    Gradients accumulate locally and the last micro-step's reduction carries the whole sum. DDP:
    `no_sync()`; FSDP2: `set_requires_gradient_sync(False)` (unsharded gradients are then kept
    until the synced backward: more memory, fewer reduce-scatters).
    """
    if not enabled:
        return contextlib.nullcontext()
    from torch.nn.parallel import DistributedDataParallel as DDP

    if isinstance(model, DDP):
        return model.no_sync()
    if is_sharded(model):
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def clip_grad_norm_(parameters, max_norm: float, *, as_tensor: bool = False) -> float | torch.Tensor:
    """clip_grad_norm_ that also works on FSDP2's DTensor gradients; returns the global norm.

    `as_tensor=True` returns it as a 0-d tensor on the gradients' device instead of a float: no
    host sync (the trainer reads it on log steps only).  A non-finite norm is returned, not raised.
    """
    norm = torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm if as_tensor else float(norm)


# -- checkpoints: full (unsharded) state dicts, so any world size can load them -----------------

def _options(load: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if load:
        broadcast = _initialized() and dist.get_world_size() > 1
        return StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast)
    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _unwrap(model: nn.Module) -> nn.Module:
    """DDP's inner module, so names carry no "module." prefix and match at every world size."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return model.module if isinstance(model, DDP) else model


def _detached_copy(tree, live: nn.Module, optimizer=None):
    """Clone the tensors that are still the live ones (CPU runs: cpu_offload is then a no-op), so a
    saved state is not changed by the next optimizer step."""
    live_tensors = [*live.parameters(), *live.buffers()]
    if optimizer is not None:
        live_tensors += [t for st in optimizer.state.values() for t in st.values() if torch.is_tensor(t)]
    ptrs = {t.untyped_storage().data_ptr() for t in live_tensors if not hasattr(t, "full_tensor")}

    def copy(x):
        if isinstance(x, dict):
            return {k: copy(v) for k, v in x.items()}
        if isinstance(x, list):
            return [copy(v) for v in x]
        if torch.is_tensor(x) and x.untyped_storage().data_ptr() in ptrs:
            return x.detach().clone()
        return x

    return copy(tree)


def full_model_state_dict(model: nn.Module) -> dict:
    """The full weights on CPU on rank 0 ({} elsewhere). Collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    model = _unwrap(model)
    return _detached_copy(get_model_state_dict(model, options=_options(load=False)), model)


def load_full_model_state_dict(model: nn.Module, state_dict: dict) -> None:
    """Load full weights into a wrapped or plain model. Multi-process: only rank 0's `state_dict`
    is read (others may pass {}), it is broadcast and each rank keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(_unwrap(model), state_dict, options=_options(load=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter NAME (not position), full, on rank 0 ({} elsewhere)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    model = _unwrap(model)
    state = get_optimizer_state_dict(model, optimizer, options=_options(load=False))
    return _detached_copy(state, model, optimizer)


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state_dict: dict) -> None:
    """Inverse of `full_optimizer_state_dict`; call after `wrap_model` and the optimizer's creation."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(_unwrap(model), optimizer, state_dict, options=_options(load=True))


# -- local launcher (tests, notebooks): N processes on this machine, like torchrun ---------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(fn, args, rank: int, nprocs: int, port: int, outdir: str, threads: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(nprocs), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    out = Path(outdir)
    try:
        result = fn(*args)
        torch.save(result, out / f"{rank}.pt")
    except BaseException as exc:
        (out / f"{rank}.err").write_text(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        raise SystemExit(1)
    finally:
        shutdown()


def spawn(fn: Callable, nprocs: int, *args, timeout_s: float = 120.0, grace_s: float = 15.0) -> list:
    """Run `fn(*args)` in `nprocs` fresh processes set up as torchrun would; return their results.

    `fn` (a module-level function) calls `init_distributed` itself. If a rank fails, the others get
    `grace_s` to fail too (a dead peer breaks their collectives), then are killed; raises
    RuntimeError with every failed rank's error, or TimeoutError after `timeout_s`.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // nprocs)
    with tempfile.TemporaryDirectory(prefix="headless-spawn-") as outdir:
        port = free_port()
        procs = [ctx.Process(target=_child, args=(fn, args, r, nprocs, port, outdir, threads), daemon=True)
                 for r in range(nprocs)]
        for p in procs:
            p.start()
        start, failed_at = time.monotonic(), None
        while any(p.is_alive() for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.exitcode not in (None, 0) for p in procs):
                failed_at = now
            if now - start > timeout_s or (failed_at is not None and now - failed_at > grace_s):
                break
            time.sleep(0.05)
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        errors = {r: (Path(outdir) / f"{r}.err").read_text() for r in range(nprocs)
                  if (Path(outdir) / f"{r}.err").exists()}
        for r, p in enumerate(procs):
            if p.exitcode != 0 and r not in errors and r not in hung:
                errors[r] = f"exited with code {p.exitcode}"
        if errors:
            lines = [f"rank {r}: {msg.splitlines()[0]}" for r, msg in sorted(errors.items())]
            lines += [f"rank {r}: killed (still running)" for r in hung]
            raise RuntimeError("distributed job failed\n" + "\n".join(lines) + "\n\nfirst traceback:\n"
                               + errors[min(errors)])
        if hung:
            raise TimeoutError(f"ranks {hung} still running after {timeout_s:.0f}s; killed")
        return [torch.load(Path(outdir) / f"{r}.pt", weights_only=False) for r in range(nprocs)]
