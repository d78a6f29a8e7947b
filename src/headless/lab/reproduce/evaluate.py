"""Downstream scores of one checkpoint of one twin, per study.

Every score is a list of values (one per fine-tuning seed; one value for deterministic
evaluations), so that `headless report` can give mean ± std over seeds and pretraining runs alike.

- decoder: vanilla as it is; headless raw (a new head copied from the input embeddings) and
  HLM+FT (that head fine-tuned on `finetune_tokens` of the pretraining data, its GPU time counted):
  LAMBADA accuracy and perplexities, held-out cross-entropy, zero-shot multiple choice;
- encoder: GLUE, the learning rate chosen per task on dev among `glue_lrs` (the usual protocol for
  small BERTs), or the paper's recipe (balanced cross-entropy, best epoch);
- multilingual: XNLI, fine-tuned on English and evaluated on every language (transfer) and
  fine-tuned within each language (target).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

from headless.errors import HeadlessError
from headless.lab.reproduce.config import StudyConfig


Predictions = dict[str, dict]  # entry -> {"group", "metric", "labels", "seeds": [[prediction per example] per seed]}


def _bf16(device: str) -> bool:
    from headless.runtime import resolve_device

    return resolve_device(device).type == "cuda"


def decoder_scores(model_dir: Path, config: StudyConfig, dataset: Path, *, final: bool
                   ) -> tuple[dict[str, list[float]], Predictions]:
    """The decoder tasks of the registry (headless.eval.tasks): LAMBADA, held-out cross-entropy
    and (final checkpoint) zero-shot; as `Predictions`, the LAMBADA examples' correctness and each
    held-out sequence's cross-entropy."""
    from headless.eval.tasks import run_task

    root = config.root
    plan = {"lambada": dict(data=root / "lambada" / "lambada_openai_dev.jsonl", limit=config.lambada_limit,
                            batch_size=32),
            "heldout": dict(data=dataset, max_sequences=config.heldout_sequences)}
    if config.zeroshot_tasks and (config.zeroshot_at == "all" or (final and config.zeroshot_at == "final")):
        plan["zeroshot"] = dict(tasks=config.zeroshot_tasks, data_dir=root / "zeroshot", limit=config.zeroshot_limit,
                                batch_size=32)
    scores: dict[str, list[float]] = {}
    predictions: Predictions = {}
    for name, options in plan.items():
        result = run_task(name, model_dir, device=config.device, **options)
        scores.update(result.scores)
        predictions.update(result.predictions)
    per_language = []
    for lang, held in language_heldout_sets(config, dataset).items():
        result = run_task("heldout", model_dir, device=config.device, data=held, max_sequences=config.heldout_sequences)
        scores[f"heldout_bpb_{lang}"] = result.scores["heldout_bpb"]
        per_language.append(result.scores["heldout_bpb"][0])
    if per_language:
        scores["heldout_bpb_languages"] = [statistics.fmean(per_language)]
    return scores, predictions


def heldout_languages(config: StudyConfig) -> list[str]:
    """The decoder study's per-language held-out sets: `heldout_languages`, or English and the mix's
    languages that XNLI has when the study trains its own tokenizer."""
    from headless.eval.datasets import XNLI_LANGUAGES

    if config.heldout_languages is not None:
        return list(config.heldout_languages)
    if not config.decoder_vocab_size:
        return []
    return [lang for lang in ["en", *config.languages] if lang in XNLI_LANGUAGES]


def language_heldout_sets(config: StudyConfig, dataset: Path) -> dict[str, Path]:
    """{language: a prepared dataset of XNLI dev-<lang>.tsv's distinct sentences} in the pretraining
    data's tokenizer and sequence length (validation split), made once next to the dataset.  The
    files are parallel, so each language scores the same content: bits per byte then compare
    languages and tokenizers."""
    import csv
    import json
    import sys

    from headless.data.loader import PackedDataset
    from headless.data.prepare import intact_manifest, prepare_dataset
    from headless.data.tokenizers import load_tokenizer

    langs = heldout_languages(config)
    if not langs:
        return {}
    seq_len = PackedDataset(dataset, "train").seq_len
    out: dict[str, Path] = {}
    for lang in langs:
        source = config.root / "xnli" / f"dev-{lang}.tsv"
        if not source.is_file():
            raise HeadlessError(f"held-out language {lang!r}: {source} not found (heldout_languages=...)")
        target = dataset.parent / f"{dataset.name}-heldout-{lang}"
        if intact_manifest(target) is None:
            csv.field_size_limit(sys.maxsize)
            with source.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
            sentences = list(dict.fromkeys(text for row in rows for text in row[:2] if text.strip()))
            texts = target.parent / f".{target.name}.jsonl"
            texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in sentences), encoding="utf-8")
            prepare_dataset([str(texts)], target, load_tokenizer(str(dataset / "tokenizer")), seq_len=seq_len,
                            validation_inputs=[str(texts)], progress=False,
                            min_validation_sequences=0)  # XNLI's sentences, ~24 x 2,048 tokens: all there is
            texts.unlink()
        out[lang] = target
    return out


def hlm_finetune(model_dir: Path, out_dir: Path, run_dir: Path, config: StudyConfig, dataset: Path) -> float:
    """HLM+FT of an exported headless decoder (with its embedding-initialised head); returns the
    fine-tuning's GPU seconds (its wall time: it runs eagerly, with no evaluation)."""
    from headless.finetune import finetune_head

    start = time.perf_counter()
    finetune_head(model_dir, out_dir, data=str(dataset), tokens=int(config.finetune_tokens), lr=config.finetune_lr,
                  run_dir=str(run_dir), device=config.device, seed=config.seed, progress=False,
                  overrides=["eval_every=1000000", "save_every=1000000", "keep_last=1", "tensorboard=false"])
    return time.perf_counter() - start


def glue_scores(model_dir: Path, config: StudyConfig, seeds: list[int]) -> tuple[dict[str, list[float]], Predictions]:
    """Per task: each learning rate with the first seed, the best on dev kept, then the other seeds
    at that rate; `glue_avg` averages the tasks' main scores seed by seed.  One `run_glue` call per
    rate covers every task, so each task's data is read and tokenized once per call, not per task.
    Also returns every kept seed's dev predictions (`Predictions`)."""
    from headless.eval.classification import describe_fine_tuning
    from headless.eval.glue import glue_task
    from headless.eval.tasks import TaskResult, get_task

    task = get_task("glue")
    common = dict(max_train_examples=config.glue_max_train_examples, device=config.device,
                  bf16=_bf16(config.device), data_dir=config.root / "glue", progress=False,
                  workers=config.eval_workers)
    keys = [glue_task(t)[0] for t in config.glue_tasks]

    def run_glue(model_dir: Path, **options) -> TaskResult:
        result = task.run(model_dir, **options)
        if "fine_tuning" in result.details:
            print(f"GLUE: {describe_fine_tuning(result.details['fine_tuning'])}", flush=True)
        return result

    def main_scores(result: TaskResult) -> dict[str, list[float]]:
        return {k: list(result.scores[k]) for k in keys if k in result.scores}

    def glue_predictions(result: TaskResult, tasks: list[str]) -> Predictions:
        return {name: entry for name, entry in result.predictions.items() if entry["group"] in tasks}

    kept: list[tuple[TaskResult, list[str]]] = []  # (run_glue result, the tasks whose scores it gave)
    if config.glue_recipe == "paper":
        result = run_glue(model_dir, tasks=keys, recipe="paper", seeds=seeds, **common)
        scores, predictions = main_scores(result), glue_predictions(result, keys)
        kept.append((result, keys))
    else:
        # a rate whose fine-tuning diverges is not chosen for that task; the other tasks keep it
        runs = {lr: run_glue(model_dir, tasks=keys, recipe="standard", lr=lr, epochs=config.glue_epochs,
                             seeds=seeds[:1], tolerate_divergence=True, **common) for lr in config.glue_lrs}
        first = {lr: main_scores(r) for lr, r in runs.items()}
        diverged = {k: [lr for lr in config.glue_lrs if k not in first[lr]] for k in keys}
        for k in keys:
            for lr in diverged[k]:
                print(f"{k}: not fine-tuned at lr {lr:g}, which diverged ({runs[lr].details['diverged'][k]})",
                      flush=True)
            if len(diverged[k]) == len(config.glue_lrs):
                raise HeadlessError(f"{k}: fine-tuning diverged at every rate of glue_lrs")
        best = {k: max((lr for lr in config.glue_lrs if lr not in diverged[k]), key=lambda lr: first[lr][k][0])
                for k in keys}  # first rate wins ties
        scores = {k: list(first[best[k]][k]) for k in keys}
        predictions = {name: entry for k in keys for name, entry in glue_predictions(runs[best[k]], [k]).items()}
        kept += [(runs[best[k]], [k]) for k in keys]
        if len(seeds) > 1:
            for lr in dict.fromkeys(best.values()):
                tasks = [k for k in keys if best[k] == lr]
                result = run_glue(model_dir, tasks=tasks, recipe="standard", lr=lr, epochs=config.glue_epochs,
                                  seeds=seeds[1:], **common)
                more = main_scores(result)
                for k in tasks:
                    scores[k] += more[k]
                for name, entry in glue_predictions(result, tasks).items():
                    predictions[name]["seeds"] = predictions[name]["seeds"] + entry["seeds"]
                kept.append((result, tasks))
        scores.update({f"{k}_lr": [best[k]] for k in keys})
        scores.update({f"{k}_diverged_lrs": lrs for k, lrs in diverged.items() if lrs})
    # how many kept runs diverged in bf16 and ran again in float32 (a setting, not a score)
    retries = {k: 0 for k in keys}
    for result, tasks in kept:
        for k in tasks:
            retries[k] += len(result.details["tasks"][k].get("fp32_retries", []))
    scores.update({f"{k}_fp32_retries": [float(n)] for k, n in retries.items() if n})
    return with_glue_averages(scores, keys), predictions


def without_rte(keys: list[str]) -> list[str]:
    """The tasks of `glue_avg_no_rte`: it exists only with RTE and at least two other tasks."""
    rest = [k for k in keys if k != "rte"]
    return rest if "rte" in keys and len(rest) >= 2 else []


def with_glue_averages(scores: dict[str, list[float]], keys: list[str]) -> dict[str, list[float]]:
    """`glue_avg`, the tasks' main scores averaged seed by seed, and `glue_avg_no_rte`, the same
    without RTE as the paper's Tab. 1 reports it (RTE's 139 shared dev examples make it the noisiest
    task, near chance for small models).  The report calls it on pieces written before the second one."""
    seeds = range(min(len(scores[k]) for k in keys))
    scores["glue_avg"] = [statistics.fmean(scores[k][i] for k in keys) for i in seeds]
    rest = without_rte(keys)
    if rest:
        scores["glue_avg_no_rte"] = [statistics.fmean(scores[k][i] for k in rest) for i in seeds]
    return scores


def covered_languages(languages: list[str]) -> list[str]:
    """The XNLI languages a multilingual pretraining mix of `languages` covers (English from enwiki)."""
    return ["en", *languages]


def xnli_scores(model_dir: Path, config: StudyConfig, seeds: list[int]) -> tuple[dict[str, list[float]], Predictions]:
    """Accuracy per mode and language, the averages, and each seed's predictions (`Predictions`)."""
    from headless.eval.classification import describe_fine_tuning
    from headless.eval.tasks import run_task

    mode = ",".join(dict.fromkeys(config.xnli_modes))
    run = run_task("xnli", model_dir, data_dir=config.root / "xnli", mode=mode, seeds=seeds, lr=config.xnli_lr,
                   epochs=config.xnli_epochs, max_train_examples=config.xnli_max_train_examples,
                   device=config.device, bf16=_bf16(config.device), progress=False, workers=config.eval_workers)
    result = run.details
    if "fine_tuning" in result:
        print(f"XNLI: {describe_fine_tuning(result['fine_tuning'])}", flush=True)
    covered = set(covered_languages(config.languages))
    scores: dict[str, list[float]] = {}
    n = len(seeds)
    for name, block in result["modes"].items():  # per language, the average, then covered and other
        scores.update({k: v for k, v in run.scores.items() if k.startswith(f"xnli_{name}_")})
        langs = block["languages"]
        seen = [lang for lang in langs if lang in covered]
        unseen = [lang for lang in langs if lang not in covered]
        for label, group in (("covered", seen), ("other", unseen)):
            if group:
                scores[f"xnli_{name}_{label}"] = [100 * statistics.fmean(langs[lang]["values"][i] for lang in group)
                                                  for i in range(n)]
    scores.update({k: v for k, v in run.scores.items() if k not in scores})  # the float32 retries
    return scores, run.predictions


ENCODER_EVALS: dict[str, Callable] = {"encoder": glue_scores, "multilingual": xnli_scores}
