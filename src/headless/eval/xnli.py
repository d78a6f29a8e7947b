"""XNLI fine-tuning (`headless xnli MODEL_DIR`): cross-lingual transfer and per-language training.

Three data layouts are accepted in --data-dir:
- `dev-<lang>.tsv` files (`premise<TAB>hypothesis<TAB>label`, no header, parallel across languages,
  as in ../shared/data/xnli): with no training set, the items are split by line number, the first
  half to fine-tune and the last half to evaluate, identically for every language;
- the same with `train-<lang>.tsv` files beside them (the same columns; for example MNLI, or XNLI's
  machine-translated train split, the paper's fine-tuning data): fine-tune on train-<lang>.tsv,
  evaluate on all of dev-<lang>.tsv.  Transfer mode needs only the source language's;
- the XNLI-1.0 release (`xnli.dev.tsv`, `xnli.test.tsv`, with a `language` column): fine-tune on
  dev, evaluate on test.
Modes: "transfer" fine-tunes on English only and evaluates every language (zero-shot transfer);
"target" fine-tunes and evaluates within each language; "all" (translate-train-all) fine-tunes once
on every language's fine-tuning items together and evaluates every language: with the parallel dev
files, 15 × 1,245 = 18,675 examples instead of one language's 1,245, enough to lift small models
off chance.  "both" is transfer and target; several modes may be given comma-separated.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import random
import statistics
import sys
import time
from pathlib import Path

from headless.errors import HeadlessError
from headless.eval.classification import (
    Example,
    Recipe,
    encode,
    fine_tuning_time,
    finetune_all,
    fmt_score,
    load_tokenizer,
    over_seeds,
    parse_seeds,
    require_encoder,
    summarize,
    write_results,
)
from headless.eval.datasets import HUB_XNLI, XNLI_LABELS, XNLI_LANGUAGES, resolve, xnli_from_hub
from headless.eval.metrics import classification_metrics
from headless.runtime import resolve_device

log = logging.getLogger(__name__)

# Paper §5: AdamW 2e-5, CE, wd 0, batch 128, constant LR after 10% warm-up; epochs not stated in
# the paper, the official code uses 10.  The last epoch is reported (no separate dev set here).
XNLI_RECIPE = Recipe(lr=2e-5, epochs=10, batch_size=128, weight_decay=0.0, schedule="constant",
                     loss="ce", select="last")
MODES = ("transfer", "target", "all")  # and "both" = transfer,target


def parse_modes(mode: str) -> list[str]:
    """'both' -> transfer, target; 'transfer,all' -> [transfer, all]; one line for an unknown mode."""
    modes = ["transfer", "target"] if mode == "both" else [m.strip() for m in str(mode).split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise HeadlessError(f"unknown XNLI mode {mode!r}; choose from {', '.join(MODES)}, both, or several "
                            "comma-separated")
    return list(dict.fromkeys(modes))


ALL = "*all*"  # the fine-tuning set of mode all: every language's items together


def _label(raw: str, where: str) -> int:
    raw = raw.strip()
    if raw not in XNLI_LABELS:
        raise HeadlessError(f"{where}: label {raw!r} is not one of {', '.join(XNLI_LABELS)}")
    return XNLI_LABELS.index(raw)


def _rows(path: Path):
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as handle:
        yield from enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), start=1)


def _read_parallel(path: Path) -> list[Example]:
    examples = []
    for line, row in _rows(path):
        if len(row) != 3:
            raise HeadlessError(f"{path} line {line}: expected 3 tab-separated columns "
                                f"(premise, hypothesis, label), found {len(row)}")
        examples.append(Example(row[0], row[1], _label(row[2], f"{path} line {line}")))
    return examples


def _read_release(path: Path, languages: set[str]) -> dict[str, list[Example]]:
    """xnli.dev.tsv / xnli.test.tsv of XNLI-1.0: one file, a `language` column."""
    rows = _rows(path)
    _, header = next(rows, (1, []))
    needed = ("language", "gold_label", "sentence1", "sentence2")
    missing = [c for c in needed if c not in header]
    if missing:
        raise HeadlessError(f"{path}: the header lacks column(s) {', '.join(missing)}")
    lang, gold, s1, s2 = (header.index(c) for c in needed)
    out: dict[str, list[Example]] = {}
    for line, row in rows:
        if len(row) < len(header):
            raise HeadlessError(f"{path} line {line}: expected {len(header)} columns, found {len(row)}")
        if row[lang] in languages:
            out.setdefault(row[lang], []).append(Example(row[s1], row[s2], _label(row[gold], f"{path} line {line}")))
    return out


def _subset_indices(n: int, limit: int | None) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise HeadlessError(f"--max-*-examples must be positive, got {limit}")
    return sorted(random.Random(0).sample(range(n), limit))


def load_xnli(data_dir: str | Path | None, languages: list[str] | None = None, *,
              max_train_examples: int | None = None, max_eval_examples: int | None = None,
              hub_train: list[str] | None = None) -> tuple[str, dict[str, tuple[list[Example], list[Example]]]]:
    """(layout, {language: (fine-tuning examples, evaluation examples)}).

    Subsets take the same item indices in every language, so the languages stay parallel.
    `hub_train`: languages to fine-tune on the hub's train splits (the paper's protocol); the hub's
    validation splits then evaluate, whatever else is set.
    """
    if hub_train:
        if data_dir is not None:
            raise HeadlessError("--hub-train fetches its own XNLI data from the hub; leave out --data-dir")
        try:
            data_dir = xnli_from_hub(languages, train_languages=hub_train)
        except HeadlessError:
            raise
        except Exception as err:  # offline, or the dataset is missing from the cache
            raise HeadlessError(f"--hub-train: could not load the hub dataset {HUB_XNLI} "
                                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if data_dir is None:
        data_dir = resolve(None, "xnli", flag="--data-dir", what="XNLI", hub=HUB_XNLI,
                           from_hub=lambda: xnli_from_hub(languages))
    root = Path(data_dir)
    if not root.is_dir():
        raise HeadlessError(f"XNLI --data-dir {root} is not a directory")
    if (root / "xnli.dev.tsv").is_file():
        layout = "xnli-1.0"
        if not (root / "xnli.test.tsv").is_file():
            raise HeadlessError(f"{root} has xnli.dev.tsv but no xnli.test.tsv to evaluate on")
        wanted = set(languages or XNLI_LANGUAGES)
        dev, test = _read_release(root / "xnli.dev.tsv", wanted), _read_release(root / "xnli.test.tsv", wanted)
        found = [lang for lang in (languages or XNLI_LANGUAGES) if lang in dev and lang in test]
        splits = {lang: (dev[lang], test[lang]) for lang in found}
    else:
        layout = "train+dev" if any(root.glob("train-*.tsv")) else "dev-split"
        found = languages or [lang for lang in XNLI_LANGUAGES if (root / f"dev-{lang}.tsv").is_file()]
        splits, sizes = {}, {}
        for lang in found:
            path = root / f"dev-{lang}.tsv"
            if not path.is_file():
                raise HeadlessError(f"missing XNLI file {path} for language {lang!r}")
            items = _read_parallel(path)
            sizes[lang] = len(items)
            if layout == "train+dev":  # a language without a train file can still be evaluated
                train = root / f"train-{lang}.tsv"
                splits[lang] = (_read_parallel(train) if train.is_file() else [], items)
            else:
                half = len(items) // 2  # same line split for every language: the files are parallel
                splits[lang] = (items[:half], items[half:])
        if len(set(sizes.values())) > 1:
            raise HeadlessError(f"the dev-<lang>.tsv files are not parallel (line counts {sizes})")
    if not splits:
        raise HeadlessError(f"no XNLI data in {root} (expected dev-<lang>.tsv files or xnli.dev.tsv "
                            "+ xnli.test.tsv)")
    missing = [lang for lang in (languages or []) if lang not in splits]
    if missing:
        raise HeadlessError(f"language(s) {', '.join(missing)} not found in {root}")
    first_train, first_eval = next(iter(splits.values()))
    keep_eval = _subset_indices(len(first_eval), max_eval_examples)
    if layout == "train+dev":  # train files need not be parallel (nor present): each is subset alone
        return layout, {lang: ([tr[i] for i in _subset_indices(len(tr), max_train_examples)] if tr else [],
                               [ev[i] for i in keep_eval]) for lang, (tr, ev) in splits.items()}
    keep_train = _subset_indices(len(first_train), max_train_examples)
    return layout, {lang: ([tr[i] for i in keep_train if i < len(tr)], [ev[i] for i in keep_eval if i < len(ev)])
                    for lang, (tr, ev) in splits.items()}


def run_xnli(
    model_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    mode: str = "transfer",
    languages: list[str] | None = None,
    train_language: str = "en",
    seeds: list[int] | str | int = (0,),
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    max_seq_len: int = 128,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    device: str = "auto",
    bf16: bool = False,
    output_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = 1,
    hub_train: bool = False,
) -> dict:
    """Fine-tune and evaluate `model_dir` on XNLI; returns (and writes xnli.json/.md) the results.
    `workers` processes fine-tune side by side (`finetune_all`); `hub_train` fine-tunes on the
    hub's train splits (MultiNLI and its translations, as the paper does)."""
    require_encoder(model_dir, "headless xnli")
    recipe = XNLI_RECIPE.override(epochs=epochs, lr=lr, batch_size=batch_size)
    seeds = parse_seeds(seeds)
    modes = parse_modes(mode)
    wanted = list(dict.fromkeys(languages)) if languages else None
    if wanted and "transfer" in modes and train_language not in wanted:
        wanted.append(train_language)  # needed to fine-tune; not reported unless asked for
    # --hub-train fetches the train splits that the modes fine-tune on, not all fifteen
    train_on = (([train_language] if "transfer" in modes else [])
                + (list(wanted or XNLI_LANGUAGES) if {"target", "all"} & set(modes) else [])) if hub_train else []
    layout, data = load_xnli(data_dir, wanted, max_train_examples=max_train_examples,
                             max_eval_examples=max_eval_examples, hub_train=list(dict.fromkeys(train_on)))
    report = [lang for lang in data if not languages or lang in languages]
    if "transfer" in modes and (train_language not in data or not data[train_language][0]):
        raise HeadlessError(f"transfer mode fine-tunes on {train_language!r}, which has no fine-tuning data in "
                            f"{data_dir}" + (f" (train-{train_language}.tsv)" if layout == "train+dev" else ""))
    untrained = [lang for lang in report if not data[lang][0]]
    if "target" in modes and untrained:
        raise HeadlessError(f"target mode fine-tunes in each language: no train-<lang>.tsv in {data_dir} for "
                            f"{', '.join(untrained)}")
    dev = resolve_device(device)
    pooled = [ex for tr, _ in data.values() for ex in tr]  # translate-train-all: every language's items
    if "all" in modes and not pooled:
        raise HeadlessError(f"mode all fine-tunes on every language's fine-tuning items; {data_dir} has none")
    tokenizer = load_tokenizer(model_dir)
    encoded = {lang: (encode(tokenizer, tr, max_seq_len) if tr else None, encode(tokenizer, ev, max_seq_len))
               for lang, (tr, ev) in data.items()}
    if "all" in modes:
        encoded[ALL] = (encode(tokenizer, pooled, max_seq_len), None)

    def job(train_lang: str, eval_langs: list[str], seed: int) -> dict:
        return dict(model_dir=model_dir, tokenizer=tokenizer, train=encoded[train_lang][0],
                    evals={lang: encoded[lang][1] for lang in eval_langs}, num_labels=len(XNLI_LABELS),
                    metric=functools.partial(classification_metrics, "accuracy"), recipe=recipe,
                    seed=seed, device=dev, bf16=bf16, progress=progress, desc=f"XNLI {train_lang}")

    # every fine-tuning of every mode at once, in `workers` processes (finetune_all)
    plan = ([("transfer", seed, None) for seed in seeds] if "transfer" in modes else []) + \
           ([("target", seed, lang) for seed in seeds for lang in report] if "target" in modes else []) + \
           ([("all", seed, ALL) for seed in seeds] if "all" in modes else [])
    started = time.perf_counter()
    runs = finetune_all([job(train_language, report, seed) if lang is None else
                         job(ALL, report, seed) if lang == ALL else job(lang, [lang], seed)
                         for _, seed, lang in plan], workers=workers)
    fine_tuning = fine_tuning_time(runs, time.perf_counter() - started, workers)
    by_seed: dict[str, dict[int, dict[str, float]]] = {}  # mode -> seed -> {lang: accuracy}
    preds: dict[str, dict[int, dict[str, list]]] = {}  # mode -> seed -> {lang: predictions}
    for (mode_name, seed, _), run in zip(plan, runs):
        by_seed.setdefault(mode_name, {}).setdefault(seed, {}).update(
            {name: s["accuracy"] for name, s in run["scores"].items()})
        preds.setdefault(mode_name, {}).setdefault(seed, {}).update(run["predictions"])
    per_seed = {m: list(seeds_.values()) for m, seeds_ in by_seed.items()}  # mode -> [{lang: accuracy} per seed]
    results = {"benchmark": "xnli", "model": str(model_dir), "layout": layout, "train_language": train_language,
               "recipe": dataclasses.asdict(recipe), "seeds": seeds, "max_seq_len": max_seq_len,
               "train_examples": len(data[train_language if "transfer" in modes else report[0]][0]),
               "all_train_examples": len(pooled) if "all" in modes else None,
               "eval_examples": len(data[report[0]][1]),
               "modes": {m: {"languages": {lang: summarize([s[lang] for s in runs]) for lang in report},
                             "average": summarize([statistics.fmean(s.values()) for s in runs]),
                             # each seed's predictions per language, for paired tests across models
                             "predictions": {lang: [preds[m][seed][lang] for seed in by_seed[m]] for lang in report}}
                         for m, runs in per_seed.items()},
               "labels": {lang: list(encoded[lang][1].labels) for lang in report},
               # (mode, seed, fine-tuning language) of the runs whose bf16 run diverged and ran in float32
               "fp32_retries": [[m, seed, lang or train_language] for (m, seed, lang), run in zip(plan, runs)
                                if "retried_fp32" in run],
               "fine_tuning": fine_tuning}
    for retry in results["fp32_retries"]:
        retry[2] = "all languages" if retry[2] == ALL else retry[2]
    write_results(results, xnli_markdown(results), output_dir, "xnli")
    if output_dir is not None and results["modes"]:
        xnli_plot(results, Path(output_dir) / "xnli.png")
    return results


def xnli_plot(results: dict, path: Path) -> Path:
    """xnli.png: accuracy per language and the average, one bar per mode, mean ± std over the seeds."""
    from headless.eval.plots import bar_plot

    modes = results["modes"]
    langs = list(next(iter(modes.values()))["languages"])
    series = {m: [modes[m]["languages"].get(lang) for lang in langs] + [modes[m]["average"]] for m in modes}
    return bar_plot(langs + ["Average"], series, path, title=f"XNLI, {over_seeds(results['seeds'])}",
                    ylabel="accuracy (points)")


def xnli_markdown(results: dict) -> str:
    """Accuracy per language (rows) and mode (columns), mean ± std over seeds, plus the average."""
    modes = list(results["modes"])
    recipe = results["recipe"]
    names = {"transfer": f"transfer (fine-tuned on {results['train_language']})",
             "target": "target (fine-tuned per language)",
             "all": f"translate-train-all ({results.get('all_train_examples') or 0:,} items, every language)"}
    langs = list(next(iter(results["modes"].values()))["languages"])
    lines = [f"# XNLI: {results['model']}", "",
             f"Accuracy, {over_seeds(results['seeds'])}; lr {recipe['lr']:g}, {recipe['epochs']} "
             f"epochs, batch {recipe['batch_size']}; {results['train_examples']} fine-tuning and "
             f"{results['eval_examples']} evaluation items per language ({results['layout']}).", "",
             "| Language | " + " | ".join(names[m] for m in modes) + " |",
             "|---|" + "---|" * len(modes)]
    for lang in langs:
        cells = (fmt_score(results["modes"][m]["languages"][lang]) for m in modes)
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines.append("| **Average** | " + " | ".join(fmt_score(results["modes"][m]["average"]) for m in modes) + " |")
    return "\n".join(lines) + "\n"
