"""The trainer's metrics: what a log step reads back from the device and records.

Between log steps nothing is read from the device (no host sync); on a log step the loss, the
accuracy, the gradient norm and the unique-target count of the last step are read once, with the
throughput of the window since the previous log step and the MFU of the loss's FLOPs.
"""

from __future__ import annotations

import time

import torch

from headless.train import distributed as dist
from headless.models import model_shape
from headless.train.logging import RunLogger, flops_per_token, peak_flops
from headless.train.plateau import PlateauWatch


class Metrics:
    def __init__(self, run, start_step: int, counters: dict):
        config, env = run.config, run.env
        self.run, self.counters = run, counters
        self.logger = None
        if env.is_main:
            self.logger = RunLogger(config.run_dir, config.max_steps, start_step, tensorboard=config.tensorboard,
                                    progress=config.progress, report_to=tuple(config.report_to),
                                    config=config.to_dict())
        self.peak = peak_flops(run.device)
        # the FLOPs estimate's layers and width, from the built model: an init_from model's are not in config.model
        self.layers, self.hidden = model_shape(run.model)
        self.window_start, self.window_tokens = time.perf_counter(), 0
        self.epoch = run.loader.epoch if start_step else 0
        self.last: dict = {}
        # the MLM plateau is an MLM run's: a CLM run's accuracy climbs slowly from its first steps
        self.plateau = PlateauWatch(config.optim.warmup_steps,
                                    config.plateau_patience if config.objective_kind == "mlm" else 0)
        if run.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(run.device)
        self.header()

    def write(self, message: str) -> None:
        if self.logger:
            self.logger.write(message)

    def set_total(self, max_steps: int, message: str) -> None:
        """A policy changed the run's length: the progress bar's total, and the reason in the log."""
        if self.logger:
            self.logger.set_total(max_steps)
        self.write(message)

    def header(self) -> None:
        run, config, params = self.run, self.run.config, self.run.params
        self.write(f"run {config.run_dir}: {config.flavour} {config.model.architecture} "
                   f"({params['total'] / 1e6:.1f}M params, {params['non_embedding'] / 1e6:.1f}M non-embedding), "
                   f"{config.objective_kind.upper()} with {config.loss_kind} loss, {run.env.world_size} x "
                   f"{run.device.type}, {len(run.data.train)} train sequences of {run.data.train.seq_len} tokens")

    def step(self, step: int, out, log: bool) -> None:
        """Account for one step; on log steps read it back and record it."""
        run = self.run
        self.counters["tokens"] += run.tokens_per_step
        self.window_tokens += run.tokens_per_step
        if self.logger:
            self.logger.advance(step)  # the bar moves every step; its numbers refresh on log steps
        if run.loader.epoch != self.epoch:
            self.epoch = run.loader.epoch
            self.write(f"step {step}: the training data ran out; epoch {self.epoch} starts (reshuffled)")
        if log:
            self._record(step, out)

    def _record(self, step: int, out) -> None:
        run, config, result = self.run, self.run.config, out.result
        device = run.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        tps = self.window_tokens / max(now - self.window_start, 1e-9)
        self.window_start, self.window_tokens = now, 0
        num_targets = int(result.num_targets)
        stats = dist.all_reduce(torch.stack([result.loss_sum, result.correct]).double())
        loss = float(stats[0]) / max(num_targets, 1)
        kind = config.loss
        scored = float(result.unique) if kind.scores == "in-batch" else run.data.info.vocab_size
        fpt = flops_per_token(run.params["non_embedding"], self.layers, self.hidden, run.data.train.seq_len,
                              num_targets / run.tokens_per_step, scored)
        record = {"loss": loss, "accuracy": float(stats[1]) / max(num_targets, 1),
                  "lr": run.scheduler.get_last_lr()[0], "grad_norm": float(out.grad_norm), "epoch": run.loader.epoch,
                  "tokens_per_s": tps, "tokens": self.counters["tokens"], "targets": num_targets}
        if "unique_targets" in kind.metrics:
            record["unique_targets"] = float(result.unique)
        if self.peak:
            record["mfu"] = fpt * tps / run.env.world_size / self.peak
        if device.type == "cuda":
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        self.last = record
        warning = self.plateau.update(step, record["accuracy"])
        if warning:
            self.write(warning)
        if self.logger:
            self.logger.log("train", step, record)
            postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tps:,.0f}"}
            if "mfu" in record:
                postfix["mfu"] = f"{record['mfu']:.0%}"
            self.logger.progress(step, postfix)

    def close(self) -> None:
        if self.logger:
            self.logger.close()


def _gpu_uuid(device: torch.device) -> str | None:
    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return str(uuid) if uuid is not None else None


def summarize(run, state, last_train: dict, last_val: dict, elapsed: float, keep_steps, policies=()) -> dict:
    """The run's summary: returned by `pretrain` and written to summary.json / summary.md / curves.png."""
    from headless.provenance import source_fingerprint
    from headless.train.logging import plot_curves, write_summary

    config, env, device, params = run.config, run.env, run.device, run.params
    summary = {
        "run_dir": str(config.run_dir), "flavour": config.flavour, "architecture": config.model.architecture,
        "objective": config.objective_kind, "loss": config.loss_kind, "steps": state.step,
        "tokens": state.counters["tokens"], "parameters": params["total"],
        "non_embedding_parameters": params["non_embedding"], "world_size": env.world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        # which GPU: two machines of one model can run the same step apart (docs/guide/reproduction.md)
        "device_uuid": _gpu_uuid(device),
        "source": source_fingerprint(),  # which library code (headless.provenance)
        "wall_time_s": elapsed, "final_train_loss": last_train.get("loss"),
        "final_val_loss": last_val.get("loss"), "final_val_accuracy": last_val.get("accuracy"),
        "tokens_per_s_last": last_train.get("tokens_per_s"), "mfu_last": last_train.get("mfu"),
        "peak_mem_gib": last_train.get("peak_mem_gib"), "nan_skips": state.counters["nan_skips"],
        **{k: v for policy in policies for k, v in policy.summary().items()},  # the time budget's plan
        "checkpoint_steps": sorted(keep_steps),
    }
    if env.is_main:
        plot_curves(config.run_dir)
        write_summary(config.run_dir, summary)
    return summary
