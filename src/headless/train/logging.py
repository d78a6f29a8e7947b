"""What a run tells the person watching it: metrics.jsonl, TensorBoard, a live progress bar, a PNG
of the curves and a human-readable summary.md.  Only rank 0 ever creates a `RunLogger`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Optional

# Dense bf16 peak of the accelerators we know (spec sheet, no sparsity); MFU is not shown elsewhere.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "RTX 8000": 130e12,
    "V100": 125e12,
}


def peak_flops(device) -> Optional[float]:
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def flops_per_token(non_embedding_params: int, num_layers: int, hidden: int, seq_len: int,
                    loss_positions_per_token: float, scored_classes: float) -> float:
    """Training FLOPs per input token (forward + backward = 3x forward).

    6·N for the weights (N = non-embedding parameters), 12·L·d·T for attention (PaLM's estimate),
    plus the output scoring: 6·D·C per loss position, where C = V for a vocabulary head and the number
    of unique in-batch targets for CWT.  This is what "MFU" divides by the peak.
    """
    weights = 6 * non_embedding_params
    attention = 12 * num_layers * hidden * seq_len
    scoring = 6 * hidden * scored_classes * loss_positions_per_token
    return weights + attention + scoring


class RunLogger:
    """metrics.jsonl always; TensorBoard, W&B and MLflow (`report_to`) through their own libraries, each
    given the run's config: TensorBoard as text (config.yaml) and hparams, W&B as its run config,
    MLflow as params and a config.yaml artifact, so runs can be compared where people look."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, *, tensorboard: bool, progress: bool,
                 report_to: tuple = ("tensorboard",), config: Optional[dict] = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._truncate_after(start_step)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._tb = self._wandb = self._mlflow = None
        if tensorboard and "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError:  # tensorboard is a dependency, but never let logging kill a run
                self._tb = None
        if "wandb" in report_to:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "headless"), name=self.run_dir.name,
                                     dir=str(self.run_dir), config=config, resume="allow",
                                     id=hashlib.sha1(str(self.run_dir.resolve()).encode()).hexdigest()[:16])
        if "mlflow" in report_to:
            import mlflow

            self._mlflow = mlflow
            if mlflow.active_run() is None:
                mlflow.start_run(run_name=self.run_dir.name)
        if config is not None and start_step == 0:
            self._log_config(config)
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def _log_config(self, config: dict) -> None:
        """The config as text and its scalar settings as hparams (TensorBoard's HParams tab, linked to
        this run's val/loss and val/accuracy curves); as params + config.yaml artifact in MLflow."""
        import yaml

        text = yaml.safe_dump(config, sort_keys=False)
        flat = flat_hparams(config)
        if self._tb is not None:
            from torch.utils.tensorboard.summary import hparams

            self._tb.add_text("config", "```\n" + text + "```", 0)
            writer = self._tb._get_file_writer()  # same run as the scalars, so the HParams tab links them
            for summary in hparams(flat, {"val/loss": float("nan"), "val/accuracy": float("nan")}):
                writer.add_summary(summary)
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
            self._mlflow.log_text(text, "config.yaml")

    def set_total(self, total_steps: int) -> None:
        """The run's length became known (a time budget was resolved)."""
        if self._bar is not None:
            self._bar.total = total_steps
            self._bar.refresh()

    def _truncate_after(self, step: int) -> None:
        """On resume, drop records the killed run wrote after its last checkpoint."""
        if not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if record.get("step", 0) <= step:
                kept.append(line)
        from headless.files import atomic_write

        atomic_write(self.metrics_path, "".join(line + "\n" for line in kept))

    def log(self, split: str, step: int, values: dict[str, Any]) -> None:
        record = {"split": split, "step": step, "time": time.time(), **values}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        scalars = {f"{split}/{key}": value for key, value in values.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step=step)

    def advance(self, step: int) -> None:
        """Every step: move the bar (tqdm redraws at most every 0.1 s, with its ETA and steps/s).
        Host-side only: no device value is read, so this adds no synchronisation."""
        if self._bar is not None and step > self._bar.n:
            self._bar.update(step - self._bar.n)

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        """Log steps: refresh the numbers shown after the bar (loss, tokens/s, MFU)."""
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
        self._metrics.close()


def flat_hparams(config: dict, prefix: str = "") -> dict:
    """{"optim.lr": 5e-4, ...}: the scalar leaves of a nested config (lists as text), as hparams take them."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{prefix}{key}."))
        elif value is None:
            out[f"{prefix}{key}"] = "none"
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def plot_curves(run_dir: Path) -> Optional[Path]:
    """loss / accuracy / throughput against step, train and validation, as curves.png."""
    try:
        import matplotlib
    except ImportError:  # a plot is a convenience: never let it fail a finished run
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    if not train:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if val:
        axes[0].plot([r["step"] for r in val], [r["loss"] for r in val], "o-", label="validation")
    axes[0].set_title("loss")
    axes[0].set_xlabel("step")
    axes[0].legend()
    if any("accuracy" in r for r in train):
        axes[1].plot([r["step"] for r in train if "accuracy" in r], [r["accuracy"] for r in train if "accuracy" in r], label="train")
    if val and any("accuracy" in r for r in val):
        axes[1].plot([r["step"] for r in val], [r.get("accuracy", float("nan")) for r in val], "o-", label="validation")
    axes[1].set_title("top-1 accuracy (CWT: in-batch retrieval; CE: vocabulary)")
    axes[1].set_xlabel("step")
    axes[1].legend()
    axes[2].plot([r["step"] for r in train], [r.get("tokens_per_s", float("nan")) for r in train])
    axes[2].set_title("tokens / s")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    lines = [f"# Run summary: {Path(run_dir).name}", ""]
    lines += ["| | |", "|---|---|"]
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"| {key} | {value} |")
    lines += ["", "Files: `config.yaml` (the exact config), `metrics.jsonl`, `tensorboard/`, `curves.png`,",
              "`checkpoints/` (resume with `headless pretrain --run-dir THIS_DIR --resume`), export with",
              f"`headless export {run_dir} OUT_DIR`.", ""]
    from headless.files import atomic_write

    path = Path(run_dir) / "summary.md"
    atomic_write(path, "\n".join(lines))
    atomic_write(Path(run_dir) / "summary.json", json.dumps(summary, indent=2))
    return path
