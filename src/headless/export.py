"""Run directory -> a standard Hugging Face directory that anyone's code can load.

* headless runs export the base model (`AutoModel`): there is no head to export.  Encoders get the
  modules AutoModel builds by default (BERT's pooler, which MLM never trains, initialised) so that
  AutoModel, sentence-transformers and fine-tuning load them without a missing-weights report.
* vanilla runs export the model with its head (`AutoModelForMaskedLM` / `AutoModelForCausalLM`).
* `add_head=True` turns a headless decoder into a causal LM whose new, untied head is a copy of the
  input embeddings — the starting point of HLM+FT (`headless finetune-head`).

The tokenizer travels with the model (`save_model_tokenizer`) and README.md is a Hub model card
(`headless.model_card`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from headless.errors import HeadlessError
from headless.files import (
    check_replaceable,
    describe_os_error,
    is_write_failure,
    mark,
    publish_dir,
    remove_stale_tmp,
    tmp_sibling,
)

def load_run_model(run_dir: Path, checkpoint: Optional[str]):
    """The run's model with the weights of `checkpoint` (default: the newest that verifies); only
    the weights are read, so a checkpoint without optimizer or RNG state exports too."""
    from headless.config import config_from_file
    from headless.data.tokenizers import load_saved_tokenizer
    from headless.models import build_model
    from headless.train.checkpoint import load_checkpoint, load_model_weights, load_newest_valid

    if not (run_dir / "config.yaml").is_file():
        raise HeadlessError(f"{run_dir} is not a run directory (no config.yaml)")
    config = config_from_file(run_dir / "config.yaml")
    if checkpoint:
        if not Path(checkpoint).is_dir():
            raise HeadlessError(f"no checkpoint directory {checkpoint}")
        own = (run_dir / "checkpoints").resolve()
        if Path(checkpoint).resolve().parent != own:  # another run's weights would be labelled as this run
            raise HeadlessError(f"--checkpoint {checkpoint} is not a checkpoint of {run_dir} (those are in {own})")
        ckpt = load_checkpoint(checkpoint, parts=("model",))
    else:
        ckpt = load_newest_valid(run_dir, parts=("model",))
        if ckpt is None:
            raise HeadlessError(f"no checkpoint to export in {run_dir / 'checkpoints'}")
    tokenizer = load_saved_tokenizer(run_dir / "tokenizer")
    model = build_model(config.model, config.objective, config.loss_kind, len(tokenizer),
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    try:
        load_model_weights(model, ckpt["model"])
    except RuntimeError as err:  # load_state_dict's shape errors: config.yaml no longer matches the weights
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line),
                      str(err).splitlines()[0])
        raise HeadlessError(f"the checkpoint does not fit {run_dir / 'config.yaml'} (was it edited?): "
                            f"{detail}") from None
    return config, model, tokenizer, ckpt["state"]["step"]


def export(run_dir: str | Path, out_dir: str | Path, *, checkpoint: Optional[str] = None,
           add_head: bool = False, overwrite: bool = False, license: str = "other") -> Path:
    """Write the run's latest (or given) checkpoint as an HF directory; returns `out_dir`.
    `license` is the Hub card's (an SPDX-like id the Hub knows, e.g. apache-2.0): the weights' terms
    follow from the training data, which only the user knows, hence "other" unless told."""
    from headless.data.tokenizers import save_model_tokenizer
    from headless.model_card import read_manifest, write_model_card
    from headless.models import attach_lm_head

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not license or any(c.isspace() for c in license):
        raise HeadlessError(f"--license takes a license id such as apache-2.0, mit or other, got {license!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise HeadlessError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")
        check_replaceable(out_dir, "export", protect=(run_dir,))  # never a run, a dataset, a parent
    config, model, tokenizer, step = load_run_model(run_dir, checkpoint)

    if add_head:
        if config.model.is_encoder:
            raise HeadlessError("--add-head is for decoders; a headless encoder is used through AutoModel")
        if model.has_head:
            raise HeadlessError("--add-head: this run already has a vocabulary head (vanilla flavour)")
        hf = attach_lm_head(model.backbone)
        untrained = []
    elif model.has_head:
        hf, untrained = model.hf, []
    else:
        hf, untrained = _default_base_model(model.backbone)
    if config.model.is_encoder:
        auto = "AutoModelForMaskedLM" if model.has_head else "AutoModel"
    else:
        auto = "AutoModelForCausalLM" if (model.has_head or add_head) else "AutoModel"
    meta = {"flavour": config.flavour, "loss": config.loss_kind, "objective": config.objective_kind,
            "projector": config.objective.projector, "step": step, "run": run_dir.resolve().name,
            "add_head": add_head, "vocabulary_head": "trained" if model.has_head else "new" if add_head else "none",
            "auto_class": auto, "untrained_modules": untrained, "license": license}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir.absolute().parent, re.escape(out_dir.absolute().name))  # a killed export's
    tmp = tmp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        save_model_tokenizer(tokenizer, tmp, hf.config)
        (tmp / "headless.json").write_text(json.dumps(meta, indent=2))
        mark(tmp, "export")
        write_model_card(tmp, name=out_dir.name, config=config, manifest=read_manifest(config.data.path),
                         summary=_read_json(run_dir / "summary.json"), model_class=type(hf).__name__)
        publish_dir(tmp, out_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, HeadlessError) and is_write_failure(err):
            raise HeadlessError(f"cannot write the export {out_dir}: {describe_os_error(err)}; nothing was "
                                "written") from None
        raise
    return out_dir


def _default_base_model(backbone) -> tuple[Any, list[str]]:
    """(the backbone as `AutoModel.from_pretrained` builds it, the modules added).  The trainer leaves
    out modules MLM never trains (BERT's pooler, see architectures.py), which AutoModel would then
    report MISSING on every load; they are added here, initialised as transformers initialises them
    (seeded: an export is reproducible), and the card says they are untrained."""
    import torch
    import transformers as tf

    from headless.architectures import by_model_type

    entry = by_model_type(getattr(backbone.config, "model_type", ""))
    if entry is None or not entry.base_model_kwargs:  # built as AutoModel builds it: nothing left out
        return backbone, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = tf.AutoModel.from_config(backbone.config)
    if type(full) is not type(backbone):
        return backbone, []
    children = dict(backbone.named_children())
    missing, unexpected = full.load_state_dict(backbone.state_dict(), strict=False)
    added = sorted({key.split(".")[0] for key in missing})
    if not missing or unexpected or any(name in children for name in added):
        return backbone, []  # nothing to add, or not only whole new modules: export what was trained
    return full.to(next(backbone.parameters()).dtype), added


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
