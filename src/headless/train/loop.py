"""`pretrain(config)`: the whole run — data, model, optimizer, the loop, checkpoints, logs.

The same code path trains the tiny preset on a laptop CPU and Pythia-sized models on GPUs (one, or
many under torchrun).  Headless and vanilla runs differ only in `config.flavour`, so twins are fair
by construction: same data order, same masks, same schedule.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from headless.config import TrainConfig, config_from_file, save_config
from headless.errors import HeadlessError
from headless.train import distributed as dist
from headless.train.checkpoint import latest_checkpoint, load_checkpoint, load_model_weights, save_checkpoint, set_rng_state
from headless.train.optim import autocast_dtype, build_optimizer, lr_factor, skip_if_nonfinite
from headless.train.step import DataInfo, evaluate, forward_backward, global_row, make_inputs

# Settings a resumed run may change: they do not alter the trajectory.
RESUMABLE_OVERRIDES = {"max_steps", "eval_every", "log_every", "save_every", "keep_last", "progress",
                       "tensorboard", "eval_batches", "device", "batch_size", "grad_accum"}


# ------------------------------------------------------------------------------------------------
# data


def cache_dir(config: TrainConfig) -> Path:
    base = config.data.cache_dir or os.environ.get("HEADLESS_CACHE") or Path.home() / ".cache" / "headless"
    return Path(base)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _input_key(inputs: list[str]) -> list[str]:
    return [str(Path(i).resolve()) if Path(i).exists() else i for i in inputs]


def resolve_dataset(config: TrainConfig, env=None) -> Path:
    """The prepared dataset of a run: `data.path`, or raw inputs (default: the embedded corpus)
    tokenized and packed once into the cache, with a BPE tokenizer trained on them if none is given."""
    from headless.data.default_corpus import DEFAULT_CORPUS
    from headless.data.prepare import prepare_dataset
    from headless.data.tokenizers import load_tokenizer, tokenizer_hash, train_tokenizer

    data = config.data
    if data.path:
        path = Path(data.path)
        if not (path / "manifest.json").is_file():
            raise HeadlessError(f"{path} is not a prepared dataset (no manifest.json); run `headless prepare` first")
        return path
    inputs = list(data.inputs) or [DEFAULT_CORPUS]
    root = cache_dir(config)
    is_main = env is None or env.is_main
    if data.tokenizer:
        tokenizer = load_tokenizer(data.tokenizer)
    else:
        kind = "wordpiece" if config.model.is_encoder else "bpe"
        tok_dir = root / "tokenizers" / f"{kind}-{data.tokenizer_vocab_size}-{_key(_input_key(inputs), data.text_field)}"
        if is_main and not (tok_dir / "tokenizer.json").is_file():
            train_tokenizer(inputs, kind=kind, vocab_size=data.tokenizer_vocab_size, output_dir=tok_dir)
        dist.barrier()
        tokenizer = load_tokenizer(str(tok_dir))
    out = root / "datasets" / _key(_input_key(inputs), tokenizer_hash(tokenizer), data.seq_len,
                                   data.validation_fraction, data.text_field)
    if is_main:
        prepare_dataset(inputs, out, tokenizer, seq_len=data.seq_len, validation_fraction=data.validation_fraction,
                        text_field=data.text_field, progress=config.progress)
    dist.barrier()
    return out


def data_info(dataset) -> DataInfo:
    return DataInfo(vocab_size=dataset.vocab_size, eos_token_id=dataset.eos_token_id,
                    mask_token_id=dataset.mask_token_id, special_token_ids=list(dataset.special_token_ids))


# ------------------------------------------------------------------------------------------------
# run directory


def default_run_dir(config: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.preset or 'custom'}-{config.flavour}-{stamp}"


def prepare_run_dir(config: TrainConfig, resume: bool) -> tuple[TrainConfig, Path]:
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise HeadlessError(f"cannot resume: {run_dir} has no config.yaml (is it a run directory?)")
        old = config_from_file(saved)
        changed = [k for k in _differences(old.to_dict(), config.to_dict())
                   if k.split(".")[0] not in RESUMABLE_OVERRIDES | {"run_dir"}]
        if changed:
            raise HeadlessError(f"cannot resume with a different config: {', '.join(changed[:5])} changed")
        if latest_checkpoint(run_dir) is None:
            raise HeadlessError(f"cannot resume: no checkpoint in {run_dir / 'checkpoints'}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise HeadlessError(f"run directory {run_dir} exists and is not empty; pass --resume to continue it "
                            "or choose another --run-dir")
    return dataclasses.replace(config, run_dir=str(run_dir)), run_dir


def resume_run(run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Continue a run from its last checkpoint; only settings that keep the trajectory may change
    (max_steps, logging, evaluation and saving intervals, device)."""
    from headless.config import _deep_merge, _from_dict, parse_overrides

    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise HeadlessError(f"cannot resume: {run_dir} has no config.yaml (is it a run directory?)")
    update = parse_overrides(list(overrides or []))
    illegal = [k for k in update if k not in RESUMABLE_OVERRIDES]
    if illegal:
        raise HeadlessError(f"cannot resume with a different config: {', '.join(sorted(illegal))} "
                            f"(only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change)")
    merged = _deep_merge(config_from_file(saved).to_dict(), update)
    merged["run_dir"] = str(run_dir)
    return pretrain(_from_dict(TrainConfig, merged).validate(), resume=True)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(prefix + key)
    return out


def _atomic_write_yaml(config: TrainConfig, path: Path) -> None:
    tmp = path.with_suffix(".yaml.tmp")
    save_config(config, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# the run


def _check_tokenizer_fits(dataset, model) -> None:
    rows = model.input_embedding_weight().shape[0]
    if dataset.vocab_size > rows:
        raise HeadlessError(f"the dataset's tokenizer has {dataset.vocab_size} tokens but the model's embedding "
                            f"has {rows} rows; use a matching tokenizer or a larger model.vocab_size")
    max_pos = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if max_pos is not None and dataset.seq_len > max_pos:
        raise HeadlessError(f"sequence length {dataset.seq_len} of the dataset exceeds the model's "
                            f"{max_pos} positions")


def pretrain(config: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) one run and return its summary (also written to RUN_DIR/summary.json)."""
    from headless.data.loader import BatchIterator, PackedDataset
    from headless.models import build_model, count_parameters

    env = dist.init_distributed(config.device)
    try:
        return _pretrain(config, resume, env, BatchIterator, PackedDataset, build_model, count_parameters)
    finally:
        dist.shutdown()


def _pretrain(config, resume, env, BatchIterator, PackedDataset, build_model, count_parameters):
    from headless.train.logging import RunLogger, flops_per_token, peak_flops, plot_curves, write_summary

    config, run_dir = prepare_run_dir(config, resume)
    dist.barrier()
    device = env.device
    torch.manual_seed(config.seed + env.rank)

    dataset_path = resolve_dataset(config, env)
    train_set = PackedDataset(dataset_path, "train")
    if train_set.seq_len != config.data.seq_len and config.data.path:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, seq_len=train_set.seq_len))
    try:
        val_set = PackedDataset(dataset_path, "validation")
        if len(val_set) == 0:
            val_set = None
    except HeadlessError:
        val_set = None
    info = data_info(train_set)

    model = build_model(config.model, config.objective, config.loss_kind, info.vocab_size,
                        pad_token_id=getattr(train_set.tokenizer, "pad_token_id", None), eos_token_id=info.eos_token_id)
    _check_tokenizer_fits(train_set, model)
    if config.trainable == "head":
        if not model.has_head:
            raise HeadlessError("trainable=head needs a model with a vocabulary head (flavour vanilla)")
        for name, param in model.named_parameters():
            param.requires_grad = not name.startswith("hf." + model.hf.base_model_prefix + ".")
    params = count_parameters(model)
    model.to(device)

    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_yaml(config, run_dir / "config.yaml")
        tok_dir = run_dir / "tokenizer"
        if not tok_dir.exists():
            shutil.copytree(Path(dataset_path) / "tokenizer", tok_dir)
    dist.barrier()

    ckpt = load_checkpoint(latest_checkpoint(run_dir)) if resume else None
    if ckpt is not None:  # into the plain model: DDP/FSDP2 broadcast rank 0's weights when wrapping
        load_model_weights(model, ckpt["model"])
    strategy = config.distributed
    if strategy == "auto":
        strategy = "ddp" if env.world_size > 1 else "none"
    wrapped = dist.wrap_model(model, strategy, env, mixed_precision=config.precision)
    model.loss_group = dist.loss_group(config.objective.negatives, env)
    optimizer = build_optimizer(model, config, device)  # after wrapping: FSDP2 swaps in sharded params
    # read through `config` at call time: a time budget fixes max_steps after calibration
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    cuda = device.type == "cuda"
    loader = BatchIterator(train_set, config.batch_size, seed=config.seed, rank=env.rank,
                           world_size=env.world_size, pin_memory=cuda, prefetch=2 if cuda else 0)

    step, counters = 0, {"tokens": 0, "nan_skips": 0, "elapsed": 0.0}
    if ckpt is not None:
        dist.load_full_optimizer_state_dict(wrapped, optimizer, ckpt["optimizer"]["optimizer"])
        scheduler.load_state_dict(ckpt["optimizer"]["scheduler"])
        state = ckpt["state"]
        saved_global = state.get("global_batch")
        global_batch = config.batch_size * config.grad_accum * env.world_size
        if saved_global and saved_global != global_batch:
            raise HeadlessError(f"cannot resume: the global batch would change from {saved_global} to {global_batch} "
                                "sequences (batch_size x grad_accum x processes must stay the same)")
        step = int(state["step"])
        counters.update(state.get("counters", {}))
        if config.time_budget_s is not None and "resolved_max_steps" in counters:
            config = dataclasses.replace(config, max_steps=int(counters["resolved_max_steps"]))
        loader.load_state_dict(state["loader"])  # a global position: valid at any world size
        set_rng_state(ckpt["rng"])
        if env.rank:
            torch.manual_seed(config.seed + env.rank + step)
    graphs = False
    if config.compile:
        mode = config.compile_mode
        if env.world_size > 1 and mode in ("reduce-overhead", "max-autotune"):
            mode = "max-autotune-no-cudagraphs" if mode == "max-autotune" else "default"
            if env.is_main:
                print(f"compile_mode={config.compile_mode}: CUDA graphs are not used with several processes "
                      f"(untested with DDP/FSDP2 hooks); compiling with mode={mode}", flush=True)
        graphs = model.compile_backbone(mode)
    amp_dtype = autocast_dtype(config, device)
    if strategy == "fsdp2":
        amp_dtype = None  # FSDP2's MixedPrecisionPolicy casts instead

    val_batches = _validation_batches(val_set, config, info, env) if val_set is not None else []
    tokens_per_step = config.batch_size * config.grad_accum * env.world_size * train_set.seq_len
    peak = peak_flops(device)

    logger = None
    if env.is_main:
        logger = RunLogger(run_dir, config.max_steps, step, tensorboard=config.tensorboard, progress=config.progress)
        logger.write(f"run {run_dir}: {config.flavour} {config.model.architecture} "
                     f"({params['total'] / 1e6:.1f}M params, {params['non_embedding'] / 1e6:.1f}M non-embedding), "
                     f"{config.objective_kind.upper()} with {config.loss_kind} loss, {env.world_size} x {device.type}, "
                     f"{len(train_set)} train sequences of {train_set.seq_len} tokens")

    wrapped.train()
    seen_epoch = loader.epoch if step else 0
    window_start, window_tokens = time.perf_counter(), 0
    last_val: dict = {}
    last_train: dict = {}
    start_time = time.perf_counter() - counters["elapsed"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    nan_guard = _NonFiniteGuard(device, counters, config.max_nan_skips, step)
    budget = _TimeBudget(config, counters, device)
    keep_steps = budget.keep_steps(config)
    trainable = [p for p in model.parameters() if p.requires_grad]  # fixed once wrapped (FSDP2 shards)
    try:
        # No host<->device sync per step: the loss, the gradient norm and the non-finite-step count
        # stay on the device and are read on log and save steps (and the last step) only.
        while step < config.max_steps:
            if graphs:  # a new iteration: the CUDA graphs may reuse the previous step's buffers
                torch.compiler.cudagraph_mark_step_begin()
            micro = []
            for i in range(config.grad_accum):
                batch = next(loader)
                first = global_row(i, env.rank, env.world_size, config.batch_size)
                micro.append(make_inputs(batch, config, info, step=step, first_row=first))
            model.with_accuracy = not cuda or (step + 1) % config.log_every == 0 or step + 1 == config.max_steps
            result = forward_backward(wrapped, micro, device=device, autocast_dtype=amp_dtype,
                                      world_size=env.world_size, all_reduce=dist.all_reduce,
                                      no_sync=lambda skip: dist.no_sync(wrapped, skip))
            grad_norm = dist.clip_grad_norm_(trainable, config.optim.grad_clip, as_tensor=True)
            # NaN guard: a step whose loss or gradient is not finite is skipped (fused AdamW's
            # found_inf, like GradScaler's skipped steps; see skip_if_nonfinite) and counted.
            bad = ~(torch.isfinite(result.loss_sum) & torch.isfinite(grad_norm))
            if env.world_size > 1:  # the loss is per rank: every rank must skip the same steps
                bad = dist.all_reduce(bad.to(torch.float32), op="max") > 0
            nan_guard.record(bad, step + 1)
            skip_if_nonfinite(optimizer, bad)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            counters["tokens"] += tokens_per_step
            if loader.epoch != seen_epoch:
                seen_epoch = loader.epoch
                if logger:
                    logger.write(f"step {step}: the training data ran out; epoch {seen_epoch} starts (reshuffled)")
            window_tokens += tokens_per_step
            if budget.pending:
                resolved = budget.observe(step)
                if resolved is not None:  # max_steps is known from here on
                    config = dataclasses.replace(config, max_steps=resolved)
                    keep_steps = budget.keep_steps(config)
                    if env.is_main:
                        _atomic_write_yaml(config, run_dir / "config.yaml")
                    if logger:
                        logger.set_total(resolved)
                        logger.write(f"step {step}: {counters['steady_s_per_step'] * 1e3:.1f} ms per step measured; "
                                     f"the time budget of {config.time_budget_s:g} s gives max_steps={resolved}")

            log_step = step % config.log_every == 0 or step == config.max_steps
            if log_step or step % config.save_every == 0:
                nan_guard.check(step, logger)  # may raise HeadlessError("training diverged ...")

            if log_step:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                now = time.perf_counter()
                tps = window_tokens / max(now - window_start, 1e-9)
                window_start, window_tokens = now, 0
                num_targets = int(result.num_targets)
                stats = dist.all_reduce(torch.stack([result.loss_sum, result.correct]).double())
                loss = float(stats[0]) / max(num_targets, 1)
                loss_positions = num_targets / tokens_per_step
                scored = float(result.unique) if config.loss_kind in ("cwt", "nce") else info.vocab_size
                fpt = flops_per_token(params["non_embedding"], config.model.num_layers, config.model.hidden_size,
                                      train_set.seq_len, loss_positions, scored)
                last_train = {"loss": loss, "accuracy": float(stats[1]) / max(num_targets, 1),
                              "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "epoch": loader.epoch,
                              "tokens_per_s": tps, "tokens": counters["tokens"], "targets": num_targets}
                if config.loss_kind in ("cwt", "nce", "ce+cwt"):
                    last_train["unique_targets"] = float(result.unique)
                if peak:
                    last_train["mfu"] = fpt * tps / env.world_size / peak
                if device.type == "cuda":
                    last_train["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                if logger:
                    logger.log("train", step, last_train)
                    postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tps:,.0f}"}
                    if "mfu" in last_train:
                        postfix["mfu"] = f"{last_train['mfu']:.0%}"
                    logger.progress(step, postfix)

            if val_batches and (step % config.eval_every == 0 or step == config.max_steps):
                model.with_accuracy = True
                last_val = evaluate(wrapped, val_batches, device=device, autocast_dtype=amp_dtype,
                                    all_reduce=dist.all_reduce)
                if logger:
                    logger.log("val", step, last_val)
                    logger.write(f"step {step}: validation loss {last_val['loss']:.4f}, "
                                 f"accuracy {last_val['accuracy']:.3f}")

            if step % config.save_every == 0 or step == config.max_steps or step in keep_steps:
                counters["elapsed"] = time.perf_counter() - start_time
                _save(run_dir, step, model, optimizer, scheduler, loader, counters, config, env, keep_steps)
    finally:
        loader.close()
        if logger:
            logger.close()

    elapsed = time.perf_counter() - start_time
    summary = {
        "run_dir": str(run_dir), "flavour": config.flavour, "architecture": config.model.architecture,
        "objective": config.objective_kind, "loss": config.loss_kind, "steps": step,
        "tokens": counters["tokens"], "parameters": params["total"],
        "non_embedding_parameters": params["non_embedding"], "world_size": env.world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "wall_time_s": elapsed, "final_train_loss": last_train.get("loss"),
        "final_val_loss": last_val.get("loss"), "final_val_accuracy": last_val.get("accuracy"),
        "tokens_per_s_last": last_train.get("tokens_per_s"), "mfu_last": last_train.get("mfu"),
        "peak_mem_gib": last_train.get("peak_mem_gib"), "nan_skips": counters["nan_skips"],
        "time_budget_s": config.time_budget_s, "steady_s_per_step": counters.get("steady_s_per_step"),
        "checkpoint_steps": sorted(keep_steps),
    }
    if env.is_main:
        plot_curves(run_dir)
        write_summary(run_dir, summary)
    return summary


class _TimeBudget:
    """Turns `time_budget_s` into max_steps from the measured steady-state seconds per step.

    Steps 1..skip are untimed (compilation, CUDA-graph capture); the next `calibration_steps` are
    timed between two device synchronisations, the only ones this adds to the run.  The resolved
    max_steps is min(config.max_steps, budget / seconds per step): config.max_steps is a cap.
    """

    def __init__(self, config: TrainConfig, counters: dict, device: torch.device):
        self.budget, self.device, self.counters = config.time_budget_s, device, counters
        self.start_at = config.calibration_skip
        self.end_at = config.calibration_skip + config.calibration_steps
        self.cap = config.max_steps
        self.pending = self.budget is not None and "resolved_max_steps" not in counters
        self.t0 = None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def observe(self, step: int):
        if step == self.start_at:
            self.t0 = self._now()
        elif step == self.end_at and self.t0 is not None:
            per_step = (self._now() - self.t0) / (self.end_at - self.start_at)
            resolved = max(step, min(self.cap, int(self.budget / per_step)))
            self.counters.update(steady_s_per_step=per_step, resolved_max_steps=resolved)
            self.pending = False
            return resolved
        return None

    def keep_steps(self, config: TrainConfig) -> frozenset[int]:
        """The steps of `checkpoint_fractions`, once max_steps is final (with a time budget, none
        before the step at which it became final)."""
        if self.pending:
            return frozenset()
        first = self.end_at if self.budget is not None else 1
        return frozenset(max(first, round(f * config.max_steps)) for f in config.checkpoint_fractions)


class _NonFiniteGuard:
    """Counts the steps skipped for a non-finite loss or gradient, on the device.

    `record` (every step) only queues device ops; `check` (log and save steps, and the last step)
    reads the count back, updates counters["nan_skips"] (an int, as checkpoints and the summary
    store it), logs the skips since the last check and raises once there are more than
    `max_skips`.  So a diverged run is stopped at the next log or save step, not at the step that
    went bad; the skipped steps in between changed nothing (see `skip_if_nonfinite`).
    """

    def __init__(self, device: torch.device, counters: dict, max_skips: int, step: int):
        self.counters, self.max_skips = counters, max_skips
        self.base = int(counters["nan_skips"])  # skips of the run before a resume
        self.last_check = step
        self.count = torch.zeros((), dtype=torch.int64, device=device)  # skips since this process started
        self.last_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based step, 0: none

    def record(self, bad: torch.Tensor, step_number: int) -> None:
        self.count += bad
        self.last_bad = torch.maximum(self.last_bad, bad * step_number)

    def check(self, step: int, logger) -> None:
        count, last_bad = torch.stack([self.count, self.last_bad]).tolist()
        total = self.base + count
        new = total - self.counters["nan_skips"]
        self.counters["nan_skips"] = total
        since, self.last_check = self.last_check, step
        if new <= 0:
            return
        if logger:
            logger.write(f"step {step}: {new} step(s) with a non-finite loss/gradient skipped in steps "
                         f"{since + 1}-{step}, the last at step {last_bad} ({total}/{self.max_skips})")
        if total > self.max_skips:
            raise HeadlessError(f"training diverged: {total} non-finite steps (last at step {last_bad}); "
                                "lower optim.lr or check the data")


def _save(run_dir, step, model, optimizer, scheduler, loader, counters, config, env, keep_steps=frozenset()) -> None:
    weights = dist.full_model_state_dict(model)
    optim_state = dist.full_optimizer_state_dict(model, optimizer)
    if env.is_main:
        save_checkpoint(run_dir, step, weights if dist.is_sharded(model) else model,
                        {"optimizer": optim_state, "scheduler": scheduler.state_dict()},
                        {"loader": loader.state_dict(), "counters": dict(counters), "world_size": env.world_size,
                         "global_batch": config.batch_size * config.grad_accum * env.world_size},
                        keep_last=config.keep_last, keep_steps=keep_steps)
    dist.barrier()


def _validation_batches(val_set, config: TrainConfig, info: DataInfo, env) -> list:
    """Fixed validation batches and masks: every evaluation of the run scores the same positions."""
    from headless.data.loader import BatchIterator

    per_rank = len(val_set) // env.world_size
    batch_size = min(config.batch_size, per_rank)
    if batch_size == 0:
        return []
    count = min(config.eval_batches, per_rank // batch_size)
    it = BatchIterator(val_set, batch_size, seed=config.seed, shuffle=False, rank=env.rank, world_size=env.world_size)
    return [make_inputs(next(it), config, info, step=0, first_row=global_row(i, env.rank, env.world_size, batch_size),
                        split=1) for i in range(count)]
