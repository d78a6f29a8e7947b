"""GLUE fine-tuning of any Hugging Face encoder (`headless glue MODEL_DIR`).

Data: the standard GLUE TSV layout (TASK/train.tsv, TASK/dev.tsv; MNLI: dev_matched.tsv and
dev_mismatched.tsv), read with csv.QUOTE_NONE like the original distribution expects, or the
`nyu-mll/glue` dataset from the hub when no --data-dir is given.  Two recipes: "standard" (the
usual BERT one) and "paper" (Godey et al. 2024, Tab. 14 + App. E.1); see docs/guide/evaluation-encoders.md.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

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
from headless.eval.metrics import classification_metrics
from headless.runtime import resolve_device

log = logging.getLogger(__name__)

RECIPES = {
    "standard": Recipe(lr=2e-5, epochs=3, batch_size=32, weight_decay=0.01, schedule="linear",
                       loss="ce", select="last"),
    "paper": Recipe(lr=1e-5, epochs=10, batch_size=32, weight_decay=0.0, schedule="constant",
                    loss="balanced_ce", select="best"),
}


@dataclass(frozen=True)
class GlueTask:
    name: str                      # display name, also the folder name
    text_a: str | int              # header name, or column index for header-less files (CoLA)
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...] | None  # label strings in class order; None = regression in [0, 5]
    metric: str                    # a metric set of headless.eval.metrics.classification_metrics
    hub: tuple[str, str | None]    # text columns of nyu-mll/glue
    dev: tuple[tuple[str, str, str], ...] = (("dev", "dev.tsv", "validation"),)  # name, file, hub split
    header: bool = True
    lenient: bool = False          # skip malformed rows (QQP has a few) instead of failing

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", 3, None, 1, _BIN, "matthews", ("sentence", None), header=False),
    "sst2": GlueTask("SST-2", "sentence", None, "label", _BIN, "accuracy", ("sentence", None)),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", _BIN, "f1_accuracy",
                     ("sentence1", "sentence2")),
    "stsb": GlueTask("STS-B", "sentence1", "sentence2", "score", None, "correlation",
                     ("sentence1", "sentence2")),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", _BIN, "f1_accuracy",
                    ("question1", "question2"), lenient=True),
    "mnli": GlueTask("MNLI", "sentence1", "sentence2", "gold_label",
                     ("entailment", "neutral", "contradiction"), "accuracy", ("premise", "hypothesis"),
                     dev=(("matched", "dev_matched.tsv", "validation_matched"),
                          ("mismatched", "dev_mismatched.tsv", "validation_mismatched"))),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", _NLI2, "accuracy",
                     ("question", "sentence")),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", _NLI2, "accuracy",
                    ("sentence1", "sentence2")),
    "wnli": GlueTask("WNLI", "sentence1", "sentence2", "label", _BIN, "accuracy",
                     ("sentence1", "sentence2")),
}


def glue_task(name: str) -> tuple[str, GlueTask]:
    """Look a task up by any usual spelling (SST-2, sst2, sst_2, STSB...)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise HeadlessError(f"unknown GLUE task {name!r}; choose from {', '.join(GLUE_TASKS)}")
    return key, GLUE_TASKS[key]


def _parse_label(task: GlueTask, raw: str, where: str) -> float:
    raw = raw.strip()
    if task.labels is None:
        try:
            value = float(raw)
        except ValueError:
            raise HeadlessError(f"{where}: score {raw!r} is not a number") from None
        if not 0.0 <= value <= 5.0:
            raise HeadlessError(f"{where}: score {value} is outside the STS-B range [0, 5]")
        return value
    if raw not in task.labels:
        raise HeadlessError(f"{where}: label {raw!r} is not one of {', '.join(task.labels)}")
    return task.labels.index(raw)


def read_tsv(task: GlueTask, path: Path) -> list[Example]:
    """One GLUE TSV file -> Examples, with file:line errors for anything malformed."""
    if not path.is_file():
        raise HeadlessError(f"missing {task.name} file {path} (expected the GLUE layout "
                            f"{task.name}/train.tsv, {task.name}/{task.dev[0][1]})")
    csv.field_size_limit(sys.maxsize)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        columns = [task.text_a, task.text_b, task.label]
        first = 1
        if task.header:
            header = [h.strip() for h in next(rows, [])]
            missing = [c for c in columns if c is not None and c not in header]
            if missing:
                raise HeadlessError(f"{path}: the header lacks column(s) {', '.join(map(repr, missing))} "
                                    f"(found {', '.join(header) or 'nothing'})")
            columns = [None if c is None else header.index(c) for c in columns]
            first = 2
        needed = max(c for c in columns if c is not None) + 1
        examples, skipped = [], 0
        for line, row in enumerate(rows, start=first):
            if not row or row == [""]:
                continue
            where = f"{path} line {line}"
            if len(row) < needed:
                if task.lenient:
                    skipped += 1
                    continue
                raise HeadlessError(f"{where}: expected at least {needed} tab-separated columns, "
                                    f"found {len(row)}")
            a, b, y = columns
            examples.append(Example(row[a], None if b is None else row[b],
                                    _parse_label(task, row[y], where)))
    if skipped:
        log.warning("%s: skipped %d malformed rows", path, skipped)
    if not examples:
        raise HeadlessError(f"{path} has no examples")
    return examples


def _from_hub(task: GlueTask, key: str, split: str) -> list[Example]:
    from headless.eval.datasets import load_hub_split

    try:
        data = load_hub_split("nyu-mll/glue", key, split)
    except Exception as err:  # offline, no such split...: name the three ways to data
        raise HeadlessError(f"GLUE {task.name}: no data found; pass --data-dir with the GLUE TSV layout, or set "
                            f"HEADLESS_SHARED_DATA to an absolute folder laid out like ../shared/data "
                            f"(with glue/{task.name}/train.tsv), or go online for the hub dataset nyu-mll/glue "
                            f"({type(err).__name__})") from err
    a, b = task.hub
    return [Example(row[a], None if b is None else row[b], float(row["label"]) if task.labels is None
                    else int(row["label"])) for row in data]


def _subset(examples: list[Example], limit: int | None) -> list[Example]:
    """A fixed random subset (seed 0, original order kept): the same for every model and seed."""
    if limit is None or limit >= len(examples):
        return examples
    if limit <= 0:
        raise HeadlessError(f"--max-*-examples must be positive, got {limit}")
    keep = sorted(random.Random(0).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def load_glue_task(name: str, data_dir: str | Path | None = None, *, max_train_examples: int | None = None,
                   max_eval_examples: int | None = None) -> tuple[list[Example], dict[str, list[Example]]]:
    """(train examples, {dev split name: examples}) of one task, from TSV files or the hub."""
    key, task = glue_task(name)
    if data_dir is None:
        train = _from_hub(task, key, "train")
        devs = {dev: _from_hub(task, key, split) for dev, _, split in task.dev}
    else:
        folder = Path(data_dir) / task.name
        train = read_tsv(task, folder / "train.tsv")
        devs = {dev: read_tsv(task, folder / file) for dev, file, _ in task.dev}
    return (_subset(train, max_train_examples),
            {dev: _subset(ex, max_eval_examples) for dev, ex in devs.items()})


def available_tasks(data_dir: str | Path) -> list[str]:
    return [key for key, task in GLUE_TASKS.items() if (Path(data_dir) / task.name / "train.tsv").is_file()]


def run_glue(
    model_dir: str | Path,
    *,
    tasks: list[str] | None = None,
    recipe: str = "standard",
    seeds: list[int] | str | int = (0,),
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    max_seq_len: int = 128,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    device: str = "auto",
    bf16: bool = False,
    data_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = 1,
    tolerate_divergence: bool = False,
) -> dict:
    """Fine-tune `model_dir` on each task with each seed; returns (and writes) the results.

    A run whose loss becomes non-finite ends everything with one error, unless
    `tolerate_divergence`: then its task is left out of "tasks" and its message kept under
    "diverged" (a learning-rate sweep disqualifies that rate rather than losing the other tasks).

    Tasks default to every task found under `data_dir` (all nine from the hub without one).
    epochs/lr/batch_size override the recipe.  `workers` processes fine-tune side by side
    (`finetune_all`).  Writes glue.json and glue.md to `output_dir`.
    """
    if recipe not in RECIPES:
        raise HeadlessError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    require_encoder(model_dir, "headless glue")
    chosen = RECIPES[recipe].override(epochs=epochs, lr=lr, batch_size=batch_size)
    seeds = parse_seeds(seeds)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise HeadlessError(f"--data-dir {data_dir} is not a directory")
    if data_dir is None:  # then $HEADLESS_SHARED_DATA/glue, then the hub (headless.eval.datasets)
        from headless.eval.datasets import shared_path

        data_dir = shared_path("glue")
    if tasks is None:
        tasks = available_tasks(data_dir) if data_dir is not None else list(GLUE_TASKS)
        if not tasks:
            raise HeadlessError(f"no GLUE task folder (e.g. SST-2/train.tsv) found in {data_dir}")
    keys = list(dict.fromkeys(glue_task(t)[0] for t in tasks))
    dev = resolve_device(device)
    tokenizer = load_tokenizer(model_dir)
    results = {"benchmark": "glue", "model": str(model_dir), "recipe": {"name": recipe, **dataclasses.asdict(chosen)},
               "seeds": seeds, "max_seq_len": max_seq_len, "max_train_examples": max_train_examples,
               "max_eval_examples": max_eval_examples, "tasks": {}}
    data = {key: load_glue_task(key, data_dir, max_train_examples=max_train_examples,
                                max_eval_examples=max_eval_examples) for key in keys}  # fail before training
    jobs, gold = [], {}
    for key, (train, devs) in data.items():
        task = GLUE_TASKS[key]
        log.info("%s: %d training examples, %s", task.name, len(train),
                 ", ".join(f"{len(v)} {k}" for k, v in devs.items()))
        train_enc = encode(tokenizer, train, max_seq_len)
        dev_enc = {name: encode(tokenizer, ex, max_seq_len) for name, ex in devs.items()}
        gold[key] = {name: list(enc.labels) for name, enc in dev_enc.items()}
        jobs += [dict(model_dir=model_dir, tokenizer=tokenizer, train=train_enc, evals=dev_enc,
                      num_labels=task.num_labels, metric=functools.partial(classification_metrics, task.metric),
                      recipe=chosen, seed=seed, device=dev, bf16=bf16, progress=progress, desc=task.name)
                 for seed in seeds]
    # every task and seed at once: `workers` processes
    started = time.perf_counter()
    finished = finetune_all(jobs, workers=workers, tolerate_divergence=tolerate_divergence)
    results["fine_tuning"] = fine_tuning_time(finished, time.perf_counter() - started, workers)
    done = iter(finished)
    for key, (train, devs) in data.items():
        task = GLUE_TASKS[key]
        runs = [next(done) for _ in seeds]
        failed = [r["diverged"] for r in runs if "diverged" in r]
        if failed:
            log.warning("%s", failed[0])
            results.setdefault("diverged", {})[key] = failed[0]
            continue
        metrics = {name: {metric: summarize([r["scores"][name][metric] for r in runs])
                          for metric in runs[0]["scores"][name] if metric != "main"}
                   for name in devs}
        results["tasks"][key] = {
            "name": task.name, "metrics": metrics,
            "main": summarize([statistics.fmean(s["main"] for s in r["scores"].values()) for r in runs]),
            "epochs": [r["epoch"] for r in runs], "train_examples": len(train),
            "eval_examples": {name: len(ex) for name, ex in devs.items()},
            # per dev set: the gold labels and each seed's predictions, for paired tests across models
            "labels": gold[key],
            "predictions": {name: [r["predictions"][name] for r in runs] for name in devs},
            # seeds whose bf16 run diverged and ran again in float32 (finetune_all)
            "fp32_retries": [seed for seed, r in zip(seeds, runs) if "retried_fp32" in r]}
    if results["tasks"]:
        results["average"] = summarize([statistics.fmean(t["main"]["values"][i] for t in results["tasks"].values())
                                        for i in range(len(seeds))])
    write_results(results, glue_markdown(results), output_dir, "glue")
    if output_dir is not None and results["tasks"]:
        glue_plot(results, Path(output_dir) / "glue.png")
    return results


def glue_plot(results: dict, path: Path) -> Path:
    """glue.png: each task's score and the average, mean ± std over the seeds."""
    from headless.eval.plots import bar_plot

    tasks = list(results["tasks"].values())
    scores = [t["main"] for t in tasks] + ([results["average"]] if "average" in results else [])
    names = [t["name"] for t in tasks] + (["Average"] if "average" in results else [])
    return bar_plot(names, {Path(str(results["model"])).name: scores}, path,
                    title=f"GLUE dev, {over_seeds(results['seeds'])}")


def glue_predictions(results: dict, keys: list[str] | None = None) -> dict[str, dict]:
    """The dev predictions of `run_glue` results as `eval.bootstrap` entries (group = the task,
    one entry per dev set); {} for results written before predictions were kept."""
    tasks = results["tasks"]
    return {f"{k}/{dev}": {"group": k, "metric": GLUE_TASKS[k].metric, "labels": tasks[k]["labels"][dev],
                           "seeds": tasks[k]["predictions"][dev]}
            for k in (keys if keys is not None else list(tasks)) if k in tasks and "predictions" in tasks[k]
            for dev in tasks[k]["labels"]}


def glue_markdown(results: dict) -> str:
    """One model's table: the score averaged into GLUE, then every metric, mean ± std over seeds."""
    recipe = results["recipe"]
    lines = [f"# GLUE: {results['model']}", "",
             f"Recipe `{recipe['name']}` (lr {recipe['lr']:g}, {recipe['epochs']} epochs, batch "
             f"{recipe['batch_size']}, {recipe['select']} epoch); {over_seeds(results['seeds'])}, in points.", "",
             "| Task | Score | Metrics |", "|---|---|---|"]
    for task in results["tasks"].values():
        details = ", ".join(f"{(split + ' ') if len(task['metrics']) > 1 else ''}{metric} {fmt_score(s)}"
                            for split, metrics in task["metrics"].items() for metric, s in metrics.items())
        lines.append(f"| {task['name']} | {fmt_score(task['main'])} | {details} |")
    for key, message in results.get("diverged", {}).items():
        lines.append(f"| {GLUE_TASKS[key].name} | diverged | {message} |")
    if "average" in results:
        lines.append(f"| **Average** | {fmt_score(results['average'])} | |")
    return "\n".join(lines) + "\n"


def _load_results(path: str | Path) -> dict:
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise HeadlessError(f"cannot read GLUE results {path}: {err}") from err
    if not isinstance(results, dict) or results.get("benchmark") != "glue":
        raise HeadlessError(f"{path} is not a glue.json written by `headless glue`")
    return results


def compare_glue(a: str | Path, b: str | Path, output_dir: str | Path | None = None) -> str:
    """Side-by-side Markdown table of two glue.json files, with the difference B − A."""
    ra, rb = _load_results(a), _load_results(b)
    keys = list(dict.fromkeys([*ra["tasks"], *rb["tasks"]]))
    lines = [f"# GLUE: A = {ra['model']} vs B = {rb['model']}", "",
             f"Recipes: A `{ra['recipe']['name']}`, B `{rb['recipe']['name']}`; "
             f"{over_seeds(ra['seeds'], rb['seeds'])}.", "",
             "| Task | A | B | B − A |", "|---|---|---|---|"]

    def row(name, sa, sb):
        delta = f"{100 * (sb['mean'] - sa['mean']):+.2f}" if sa and sb else "–"
        lines.append(f"| {name} | {fmt_score(sa)} | {fmt_score(sb)} | {delta} |")

    for key in keys:
        ta, tb = ra["tasks"].get(key), rb["tasks"].get(key)
        row((ta or tb)["name"], ta and ta["main"], tb and tb["main"])
    shared = [k for k in keys if k in ra["tasks"] and k in rb["tasks"]]

    def average(r):  # over the tasks both files have, so that the two numbers compare
        return shared and summarize([statistics.fmean(r["tasks"][k]["main"]["values"][i] for k in shared)
                                     for i in range(len(r["seeds"]))])

    row("**Average**" if len(shared) == len(keys) else "**Average (shared tasks)**", average(ra), average(rb))
    from headless.eval.bootstrap import paired_bootstrap

    paired = shared and paired_bootstrap(glue_predictions(rb, shared), glue_predictions(ra, shared), shared)
    if paired:
        lines += ["", f"Paired bootstrap of B − A on that average ({paired['replicates']:,} replicates over the "
                  f"{paired['examples']:,} dev examples and the seeds): 95 % interval [{paired['low']:+.2f}, "
                  f"{paired['high']:+.2f}]; B is ahead in {100 * paired['ahead']:.0f} % of them."]
    elif shared:
        lines += ["", "No paired bootstrap: the two files do not both carry dev predictions on the same examples."]
    markdown = "\n".join(lines) + "\n"
    write_results({"benchmark": "glue-compare", "a": ra, "b": rb, "paired_bootstrap": paired or None}, markdown,
                  output_dir, "glue-compare")
    if output_dir is not None and shared:
        from headless.eval.plots import forest_plot

        rows = [_difference(ra, rb, [k], ra["tasks"][k]["main"], rb["tasks"][k]["main"], ra["tasks"][k]["name"])
                for k in shared]
        rows.append(_difference(ra, rb, shared, average(ra), average(rb), "Average", paired))
        forest_plot(rows, Path(output_dir) / "glue-compare.png", title=f"GLUE: B = {rb['model']} − A = {ra['model']}",
                    xlabel="B − A (points); whiskers: 95 % paired bootstrap, else over seeds")
    return markdown


def _difference(ra: dict, rb: dict, keys: list[str], sa: dict, sb: dict, label: str,
                paired: Optional[dict] = None) -> tuple:
    """(label, B − A, low, high) in points: the paired bootstrap's interval over dev examples and
    seeds when both carry predictions, else a normal interval over the seeds (none with one seed)."""
    from headless.eval.bootstrap import paired_bootstrap

    delta = 100 * (sb["mean"] - sa["mean"])
    paired = paired or paired_bootstrap(glue_predictions(rb, keys), glue_predictions(ra, keys), keys)
    if paired:
        return label, delta, paired["low"], paired["high"]
    spread = (sa["std"] ** 2 / len(sa["values"]) + sb["std"] ** 2 / len(sb["values"])) ** 0.5
    return (label, delta, delta - 196 * spread, delta + 196 * spread) if spread > 0 else (label, delta, None, None)
