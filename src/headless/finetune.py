"""HLM+FT (paper §3.3): give a headless decoder a vocabulary head and fine-tune it with plain
next-token cross-entropy on a small token budget of the pretraining data.

The new head is untied and starts as a copy of the input embeddings (what CWT trained the outputs to
match), so fine-tuning starts far better than from a random head.  It is an ordinary pretraining run
of the vanilla flavour that starts from that model, so it gets the trainer's checkpoints, resume,
logs and plots for free; `--probe` trains the head alone.
"""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path
from typing import Optional

from headless.architectures import by_model_type
from headless.errors import HeadlessError, load_error


def _headless_with_head(model_dir: Path, work_dir: Path) -> Path:
    """A causal-LM directory with the new head: from a run dir, an HF base model, or as is."""
    from transformers import AutoModel

    from headless.data.tokenizers import load_model_tokenizer, save_model_tokenizer
    from headless.export import export
    from headless.models import attach_lm_head, model_dir_config

    if (model_dir / "config.yaml").is_file():  # a headless run directory
        return export(model_dir, work_dir, add_head=True, overwrite=True)
    if not (model_dir / "config.json").is_file():
        raise HeadlessError(f"{model_dir} is neither a run directory nor a Hugging Face model directory")
    config = model_dir_config(model_dir)  # one line, never remote code, for any config.json
    archs = config.architectures or []
    tokenizer = load_model_tokenizer(model_dir)  # no tokenizer, or not the model's: one line, before training
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return model_dir  # already has a head (e.g. exported with --add-head): fine-tune it as is
    try:
        base = AutoModel.from_pretrained(str(model_dir), trust_remote_code=False)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise HeadlessError(f"cannot load {model_dir}: {load_error(err)}") from None
    lm = attach_lm_head(base)
    lm.save_pretrained(str(work_dir), safe_serialization=True)
    save_model_tokenizer(tokenizer, work_dir, lm.config)
    return work_dir


def finetune_head(
    model_dir: str | Path,
    output_dir: str | Path,
    *,
    data: str,
    tokens: int = 5_000_000,
    probe: bool = False,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup_steps: Optional[int] = None,
    run_dir: Optional[str] = None,
    device: str = "auto",
    seed: int = 0,
    overrides: Optional[list[str]] = None,
    progress: bool = True,
) -> dict:
    """Fine-tune a headless decoder into a causal LM; the result is exported to `output_dir`.

    `data` is a dataset prepared with the model's tokenizer (`headless prepare`); `tokens` is the
    budget (the paper used <2% of the pretraining tokens: 10k steps x 256 x 2048).
    """
    from transformers import AutoConfig

    from headless.config import load_config
    from headless.data.tokenizers import load_saved_tokenizer
    from headless.data.loader import PackedDataset
    from headless.export import export
    from headless.train.loop import pretrain

    if tokens < 1 or batch_size < 1:
        raise HeadlessError(f"finetune-head needs tokens >= 1 and batch_size >= 1, got {tokens} and {batch_size}")
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise HeadlessError(f"{output_dir} exists and is not empty")
    dataset = PackedDataset(data, "train")
    # the run (optimizer state, checkpoints, logs) is training output: it goes under runs/, never next
    # to the exported model (which is all that OUTPUT holds)
    run_dir = Path(run_dir) if run_dir else default_run_dir(output_dir)
    init_dir = run_dir.parent / f".{run_dir.name}-init"
    shutil.rmtree(init_dir, ignore_errors=True)
    init = _headless_with_head(model_dir, init_dir)

    model_tok = load_saved_tokenizer(init)
    if model_tok.get_vocab() != dataset.tokenizer.get_vocab():
        raise HeadlessError(f"the dataset {data} was prepared with another tokenizer than the model's; "
                            "prepare it with the model's tokenizer")
    hf_config = AutoConfig.from_pretrained(str(init), trust_remote_code=False)
    entry = by_model_type(hf_config.model_type)
    if entry is None or not entry.causal:
        raise HeadlessError(f"finetune-head needs a decoder; got model_type {hf_config.model_type!r}")
    arch = entry.name
    steps = max(1, math.ceil(tokens / (batch_size * dataset.seq_len)))
    config = load_config(overrides={
        "flavour": "vanilla", "seed": seed, "device": device, "run_dir": str(run_dir), "progress": progress,
        "batch_size": batch_size, "max_steps": steps, "trainable": "head" if probe else "all",
        "model": {"architecture": arch, "init_from": str(init),
                  "max_position_embeddings": getattr(hf_config, "max_position_embeddings", dataset.seq_len)},
        "objective": {"kind": "clm", "loss": "ce"},
        "data": {"path": str(data), "seq_len": dataset.seq_len},
        # paper §4.2: constant LR after a warm-up, no weight decay on the new head's run (Tab. 15)
        "optim": {"lr": lr, "schedule": "constant", "weight_decay": 0.0,
                  "warmup_steps": warmup_steps if warmup_steps is not None else min(2000, steps // 10)},
        **schedule(steps),
    })
    if overrides:
        config = load_config(overrides=_merge(config.to_dict(), overrides))
    summary = pretrain(config)
    export(run_dir, output_dir)
    shutil.rmtree(init_dir, ignore_errors=True)
    return summary


def default_run_dir(output_dir: Path) -> Path:
    """runs/<OUTPUT name>-finetune-head (a fresh name if that one is taken)."""
    base = Path("runs") / f"{Path(output_dir).resolve().name}-finetune-head"
    run_dir, n = base, 1
    while run_dir.exists() and any(run_dir.iterdir()):
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def schedule(steps: int) -> dict:
    """Validation about five times a run but at most every 50 steps (short runs: only at the end, which
    the trainer always evaluates); one checkpoint, at the end, for runs under 1000 steps."""
    eval_every = max(steps // 5, 50)
    return {"eval_every": eval_every if eval_every < steps else steps,
            "save_every": steps if steps < 1000 else max(500, steps // 4), "keep_last": 1,
            "log_every": max(1, min(10, steps // 10))}


def _merge(base: dict, overrides: list[str]) -> dict:
    from headless.config import deep_merge, parse_overrides

    return deep_merge(base, parse_overrides(overrides))
