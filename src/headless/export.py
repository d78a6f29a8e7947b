"""Run directory -> a standard Hugging Face directory that anyone's code can load.

* headless runs export the base model (`AutoModel`): there is no head to export.
* vanilla runs export the model with its head (`AutoModelForMaskedLM` / `AutoModelForCausalLM`).
* `add_head=True` turns a headless decoder into a causal LM whose new, untied head is a copy of the
  input embeddings — the starting point of HLM+FT (`headless finetune-head`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

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

MODEL_CARD = """---
library_name: transformers
tags: [headless, contrastive-weight-tying]
---
# {name}

Exported by `headless` from `{run_dir}` (step {step}).

- flavour: **{flavour}** ({loss} loss, {objective})
- architecture: {architecture} ({cls})
- {head_note}

Load with `transformers.{auto}.from_pretrained(PATH)`.
"""


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
           add_head: bool = False, overwrite: bool = False) -> Path:
    """Write the run's latest (or given) checkpoint as an HF directory; returns `out_dir`."""
    from headless.models import attach_lm_head

    run_dir, out_dir = Path(run_dir), Path(out_dir)
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
    else:
        hf = model.hf if model.has_head else model.backbone
    if config.model.is_encoder:
        auto = "AutoModelForMaskedLM" if model.has_head else "AutoModel"
    else:
        auto = "AutoModelForCausalLM" if (model.has_head or add_head) else "AutoModel"
    head_note = ("head: the original vocabulary head" if model.has_head else
                 "head: NEW, untied, initialised from the input embeddings — fine-tune it (HLM+FT)" if add_head
                 else "no vocabulary head: the model was trained with Contrastive Weight Tying")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_dir.absolute().parent, re.escape(out_dir.absolute().name))  # a killed export's
    tmp = tmp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        meta = {"flavour": config.flavour, "loss": config.loss_kind, "objective": config.objective_kind,
                "step": step, "run_dir": str(run_dir), "add_head": add_head, "auto_class": auto}
        (tmp / "headless.json").write_text(json.dumps(meta, indent=2))
        mark(tmp, "export")
        (tmp / "README.md").write_text(MODEL_CARD.format(
            name=out_dir.name, run_dir=run_dir, step=step, flavour=config.flavour, loss=config.loss_kind,
            objective=config.objective_kind.upper(), architecture=config.model.architecture,
            cls=type(hf).__name__, head_note=head_note, auto=auto))
        publish_dir(tmp, out_dir)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, Exception) and not isinstance(err, HeadlessError) and is_write_failure(err):
            raise HeadlessError(f"cannot write the export {out_dir}: {describe_os_error(err)}; nothing was "
                                "written") from None
        raise
    return out_dir
