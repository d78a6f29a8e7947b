"""The README.md of an export: a Hub model card built from what the export and its run record.

It says what the model is (and, for a headless export, that it has no vocabulary head and how to get
one), what it was trained on (the dataset manifest: source names and token counts, never local paths),
the objective and its settings, the results measured on it (the run's validation scores and any
`eval-results/` tables inside the export), how to load it, and the paper to cite.  Everything comes
from headless.json and the files beside it, so `write_model_card(EXPORT)` rebuilds the card after an
evaluation wrote its tables into EXPORT/eval-results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from headless.files import atomic_write

RESULTS_DIR = "eval-results"
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s|`/]+/)*([^\s|`/]+)")
CITATION = """@inproceedings{godey2024headless,
  title     = {Headless Language Models: Learning without Predicting with Contrastive Weight Tying},
  author    = {Godey, Nathan and de la Clergerie, {\\'E}ric and Sagot, Beno{\\^\\i}t},
  booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
  year      = {2024},
  url       = {https://arxiv.org/abs/2309.08351}
}"""
OBJECTIVES = {"mlm": "masked language modelling", "clm": "causal language modelling"}
LOSSES = {"cwt": "Contrastive Weight Tying (the outputs retrieve their target's input embedding among the "
                 "batch's targets; no vocabulary projection)",
          "ce": "cross-entropy over the vocabulary (a standard language-modelling head)"}


def read_manifest(data_path) -> Optional[dict]:
    try:
        data = json.loads((Path(data_path) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def pipeline_tag(meta: dict, is_encoder: bool) -> str:
    """The Hub's task for what the export can do as saved: a trained or new head generates or fills
    masks; a headless base model gives features."""
    if meta.get("vocabulary_head") == "none":
        return "feature-extraction"
    return "fill-mask" if is_encoder else "text-generation"


def _source_name(source: dict) -> str:
    """A source as the card may show it: hub names as they are, local files by their name only."""
    kind, location = source.get("kind"), str(source.get("location", ""))
    if kind == "hf-hub":
        return f"`{location}` (Hugging Face Hub)"
    if kind == "default":
        return "the embedded default corpus (Python's documentation)"
    return f"`{Path(location).name}` (a local {'dataset' if kind == 'hf-disk' else 'file'})"


def _data_section(manifest: Optional[dict], seq_len: int) -> list[str]:
    if not manifest:
        return ["- data: the run's dataset manifest was not found when this was exported"]
    lines = ["- data: " + ", ".join(_source_name(s) for s in manifest.get("sources") or []
                                    if isinstance(s, dict)) or "- data: (no sources recorded)"]
    splits = manifest.get("splits") or {}
    for split in ("train", "validation"):
        info = splits.get(split) or {}
        if info.get("num_tokens"):
            lines.append(f"- {split} split: {info['num_tokens']:,} tokens in {info.get('num_sequences', 0):,} "
                         f"sequences of {manifest.get('seq_len', seq_len)} tokens")
    tok = manifest.get("tokenizer") or {}
    if tok.get("vocab_size"):
        lines.append(f"- tokenizer: {tok['vocab_size']:,} tokens (saved with the model), sha256 "
                     f"`{str(tok.get('sha256', ''))[:16]}…`")
    return lines


def _head_section(meta: dict, is_encoder: bool) -> list[str]:
    head = meta.get("vocabulary_head")
    lines = []
    if head == "none":
        cls = "AutoModelForMaskedLM` / `pipeline(\"fill-mask\")" if is_encoder else \
            "AutoModelForCausalLM` / `pipeline(\"text-generation\")` / `lm_eval"
        lines += ["**This model has no vocabulary head.** It was trained with Contrastive Weight Tying: its "
                  "outputs are scored against the input embeddings, so no head was ever trained. Loaded with "
                  f"`{cls}`, transformers would add a *randomly initialised* head and its predictions would "
                  "be noise. Use it as an encoder of text (`AutoModel`, fine-tuning) or give it a head:", ""]
        if is_encoder:
            lines += ["- score masks with the input embeddings, as CWT was trained: "
                      "`headless.embedding_head.fill_mask(MODEL, \"text with [MASK]\")` "
                      "(logits = last hidden state @ input embeddings^T);",
                      "- or fine-tune it on a task (e.g. `headless glue MODEL`)."]
        else:
            lines += ["- `headless export RUN_DIR OUT --add-head`: a causal-LM head initialised from the input "
                      "embeddings (what CWT trained the outputs to match);",
                      "- `headless finetune-head MODEL OUT --data DATASET`: that head fine-tuned with "
                      "cross-entropy on a small token budget (HLM+FT, the paper's §3.3)."]
    elif head == "new":
        lines.append("**Its vocabulary head is new**: untied, initialised from the input embeddings, not yet "
                     "trained. Fine-tune it (`headless finetune-head`) before generating.")
    else:
        lines.append("The vocabulary head is the one trained with the model.")
    if meta.get("projector") not in (None, "none"):
        lines += ["", f"CWT scored the outputs through a `{meta['projector']}` projector (Linear, GELU, "
                  "LayerNorm) that is **not exported**: last hidden state @ embeddings^T is not what was trained."]
    for module in meta.get("untrained_modules") or []:
        lines += ["", f"`{module}` is initialised, not trained (the objective never uses it); fine-tuning "
                  "trains it."]
    return lines


def _settings(config, meta: dict) -> list[str]:
    obj, optim, m = config.objective, config.optim, config.model
    lines = [f"- objective: {OBJECTIVES.get(meta['objective'], meta['objective'])} with "
             f"{LOSSES.get(meta['loss'], meta['loss'] + ' loss')}"]
    settings = {}
    if meta["objective"] == "mlm":
        settings.update(mask_prob=obj.mask_prob, replace_prob=obj.replace_prob, random_prob=obj.random_prob,
                        masking=obj.masking)
    if meta["loss"] != "ce":
        settings.update(temperature=obj.temperature, negatives=obj.negatives, projector=obj.projector)
        if obj.max_negatives:
            settings["max_negatives"] = obj.max_negatives
    settings["respect_documents"] = obj.respect_documents
    lines.append("- objective settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()))
    lines.append(f"- steps: {meta['step']:,}, batch size {config.batch_size} (per device) of "
                 f"{config.data.seq_len}-token sequences")
    lines.append(f"- optimiser: AdamW, lr `{optim.lr}`, `{optim.schedule}` schedule, {optim.warmup_steps} "
                 f"warm-up steps, weight decay `{optim.weight_decay}`, betas ({optim.beta1}, {optim.beta2}), "
                 f"gradient clipping `{optim.grad_clip}`")
    lines.append(f"- model: {m.architecture}, {m.num_layers} layers, hidden size {m.hidden_size}, "
                 f"{m.num_heads} heads, {m.max_position_embeddings} positions")
    return lines


def _results(export_dir: Path, summary: Optional[dict], meta: dict) -> list[str]:
    lines = []
    if summary and summary.get("final_val_loss") is not None:
        acc = summary.get("final_val_accuracy")
        lines.append(f"- validation {meta['loss'].upper()} loss at the end of pretraining: "
                     f"{summary['final_val_loss']:.4f}" + (f" (top-1 accuracy {acc:.3f})" if acc is not None else ""))
    results = export_dir / RESULTS_DIR
    for table in sorted(results.glob("*.md")) if results.is_dir() else []:
        text = table.read_text(encoding="utf-8").strip()
        lines += ["", f"### {table.stem}", "", ABSOLUTE_PATH.sub(r"\1", text)]  # a table's model column: its name
    return lines or ["None measured yet: evaluate with `headless glue|xnli|eval ... --output MODEL/eval-results` "
                     "and the card is rebuilt with them."]


def _usage(meta: dict, is_encoder: bool) -> str:
    auto = meta.get("auto_class", "AutoModel")
    if auto == "AutoModelForCausalLM":
        body = ('model = AutoModelForCausalLM.from_pretrained("REPO")\n'
                'ids = tokenizer("The capital of France is", return_tensors="pt")\n'
                'print(tokenizer.decode(model.generate(**ids, max_new_tokens=20)[0]))')
        head = "from transformers import AutoModelForCausalLM, AutoTokenizer"
    elif auto == "AutoModelForMaskedLM":
        body = (f'fill = pipeline("fill-mask", model="REPO")\nprint(fill("Paris is the {{}} of France."'
                '.format(fill.tokenizer.mask_token)))')
        head = "from transformers import pipeline"
        return f"```python\n{head}\n\n{body}\n```"
    else:
        body = ('model = AutoModel.from_pretrained("REPO")\n'
                'hidden = model(**tokenizer("Some text.", return_tensors="pt")).last_hidden_state')
        head = "from transformers import AutoModel, AutoTokenizer"
    return f'```python\n{head}\n\ntokenizer = AutoTokenizer.from_pretrained("REPO")\n{body}\n```'


def write_model_card(export_dir, *, name: Optional[str] = None, config=None, manifest: Optional[dict] = None,
                     summary: Optional[dict] = None, model_class: Optional[str] = None) -> Path:
    """Write EXPORT/README.md.  At export time the run's config, manifest and summary are given and
    their card parts are kept in headless.json's `card`; later calls (after an evaluation wrote
    EXPORT/eval-results) rebuild the card from those and the results found."""
    export_dir = Path(export_dir)
    meta = json.loads((export_dir / "headless.json").read_text(encoding="utf-8"))
    card: dict[str, Any] = meta.get("card") or {}
    if config is not None:
        card = {"name": name or export_dir.name, "is_encoder": config.model.is_encoder,
                "architecture": config.model.architecture, "model_class": model_class,
                "data": _data_section(manifest, config.data.seq_len), "settings": _settings(config, meta),
                "summary": {k: (summary or {}).get(k) for k in ("final_val_loss", "final_val_accuracy")},
                "datasets": [s["location"] for s in (manifest or {}).get("sources") or []
                             if isinstance(s, dict) and s.get("kind") == "hf-hub"]}
        meta["card"] = card
        atomic_write(export_dir / "headless.json", json.dumps(meta, indent=2) + "\n")
    is_encoder = card["is_encoder"]
    tags = ["headless", "contrastive-weight-tying" if meta["loss"] != "ce" else "cross-entropy",
            card["architecture"], meta["objective"]]
    front = ["---", f"license: {meta.get('license', 'other')}", "library_name: transformers",
             f"pipeline_tag: {pipeline_tag(meta, is_encoder)}", "tags:", *[f"- {t}" for t in tags]]
    if card["datasets"]:
        front += ["datasets:", *[f"- {d}" for d in card["datasets"]]]
    front.append("---")
    kind = "encoder" if is_encoder else "decoder"
    text = [*front, f"# {card['name']}", "",
            f"A {card['architecture']} {kind} ({card['model_class']}) pretrained with "
            f"{OBJECTIVES.get(meta['objective'], meta['objective'])} by "
            "[headless](https://arxiv.org/abs/2309.08351), the **" + meta["flavour"] + "** flavour "
            f"(step {meta['step']:,} of run `{meta.get('run', '')}`).", "",
            "## Vocabulary head", "", *_head_section(meta, is_encoder), "",
            "## Training", "", *card["data"], *card["settings"], "",
            "## Results", "", *_results(export_dir, card["summary"], meta), "",
            "## Usage", "", _usage(meta, is_encoder), "",
            "## Citation", "", "```bibtex", CITATION, "```", ""]
    if meta.get("license", "other") == "other":  # after the introduction
        text.insert(len(front) + 4, "License: not set at export (`headless export --license ID`); the "
                    "weights' terms follow from the training data's.\n")
    path = export_dir / "README.md"
    atomic_write(path, "\n".join(text))
    return path


def refresh_if_export(results_dir) -> None:
    """Rebuild the card when an evaluation wrote its tables into EXPORT/eval-results."""
    from headless.files import marked_kinds

    results_dir = Path(results_dir)
    export_dir = results_dir.resolve().parent
    if results_dir.name == RESULTS_DIR and "export" in marked_kinds(export_dir) and \
            (export_dir / "headless.json").is_file():
        try:
            write_model_card(export_dir)
        except (OSError, ValueError, KeyError):
            pass  # an export written before cards had their parts: its card stays as it was
