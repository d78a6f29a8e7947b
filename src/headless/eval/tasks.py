"""The evaluation tasks, one table: the CLI (`headless eval ...`, `headless glue`, `headless xnli`) and
the studies (`lab/reproduce/evaluate.py`) look a task up here instead of wiring each one by hand.

A task is an object with
- `name`, `help` (one line) and `model` ("decoder", "encoder" or "any": what it evaluates);
- `run(model_dir, **options) -> TaskResult`: resolves its data (an explicit path, else
  $HEADLESS_SHARED_DATA, else the hub: `eval.datasets`), evaluates, writes its tables when given
  `output_dir`;
- `render(result) -> str`: the markdown the CLI prints.

`TaskResult.scores` are flat `{name: [values]}` (one value per fine-tuning seed, one for a
deterministic evaluation; accuracies in %), the form studies store and `headless report` reads;
`predictions` are per-example `eval.bootstrap` entries for paired tests; `details` is the task's
own full result.  Adding a task: a class here, `register(...)` it, and a fixture run in
tests/test_eval_tasks.py (docs/contributing.md).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from headless.errors import HeadlessError


@dataclass
class TaskResult:
    task: str
    scores: dict[str, list[float]]
    predictions: dict[str, dict] = field(default_factory=dict)
    details: dict = field(default_factory=dict)


class Task(Protocol):
    name: str
    help: str
    model: str  # "decoder", "encoder" or "any"

    def run(self, model_dir, **options) -> TaskResult: ...

    def render(self, result: TaskResult) -> str: ...


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"evaluation task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise HeadlessError(f"unknown evaluation task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    from headless.eval.scoring import markdown_table

    return markdown_table(headers, rows)


# -- decoders ------------------------------------------------------------------------------------


class Lambada:
    name, model = "lambada", "decoder"
    help = "LAMBADA last-word accuracy and perplexity"

    def run(self, model_dir, *, data=None, **options) -> TaskResult:
        from headless.eval.lambada import evaluate_lambada

        r = evaluate_lambada(model_dir, data, **options)
        return TaskResult(self.name, {"lambada_acc": [100 * r["accuracy"]],
                                      "lambada_token_ppl": [r["token_perplexity"]],
                                      "lambada_word_ppl": [r["word_perplexity"]]},
                          {"lambada": {"group": "lambada", "metric": "accuracy", "labels": [1] * len(r["correct"]),
                                       "seeds": [r["correct"]]}}, r)

    def render(self, result: TaskResult) -> str:
        r = result.details
        return _table(["examples", "accuracy", "word ppl", "token ppl"],
                      [[r["num_examples"], r["accuracy"], r["word_perplexity"], r["token_perplexity"]]])


class Zeroshot:
    name, model = "zeroshot", "decoder"
    help = "zero-shot multiple choice (BoolQ, PIQA, ARC-Easy, PubMedQA)"

    def run(self, model_dir, *, tasks=None, data_dir=None, **options) -> TaskResult:
        from headless.eval.zeroshot import DEFAULT_TASKS, evaluate_zeroshot

        r = evaluate_zeroshot(model_dir, tasks or DEFAULT_TASKS, data_dir=data_dir, **options)
        scores = {f"{t}_acc": [100 * v["acc"]] for t, v in r["tasks"].items()}
        scores["zeroshot_avg"] = [statistics.fmean(100 * v["acc"] for v in r["tasks"].values())]
        return TaskResult(self.name, scores, {}, r)

    def render(self, result: TaskResult) -> str:
        return _table(["task", "examples", "acc", "acc_norm"],
                      [[t, v["num_examples"], v["acc"], v["acc_norm"]] for t, v in result.details["tasks"].items()])


class Heldout:
    name, model = "heldout", "decoder"
    help = "next-token cross-entropy on the validation split of a prepared dataset"

    def run(self, model_dir, *, data=None, **options) -> TaskResult:
        from headless.eval.heldout import heldout_cross_entropy

        if data is None:
            raise HeadlessError("held-out cross-entropy needs a prepared dataset (`headless prepare`): pass its path")
        r = heldout_cross_entropy(model_dir, data, **options)
        return TaskResult(self.name, {"heldout_ce": [r["cross_entropy"]], "heldout_bpb": [r["bits_per_byte"]]},
                          {"heldout": {"group": "heldout", "metric": "mean", "labels": [0] * len(r["per_sequence"]),
                                       "seeds": [r["per_sequence"]]}}, r)

    def render(self, result: TaskResult) -> str:
        r = result.details
        return _table(["sequences", "tokens", "bytes", "cross-entropy (nats/token)", "perplexity", "bits per byte"],
                      [[r["sequences"], r["tokens"], r["bytes"], r["cross_entropy"], r["perplexity"],
                        r["bits_per_byte"]]])


class Harness:
    name, model = "harness", "decoder"
    help = "run lm-evaluation-harness tasks (needs `pip install 'lm_eval[hf]'`)"

    def run(self, model_dir, *, tasks=None, **options) -> TaskResult:
        from headless.eval.harness import run_harness

        if not tasks:
            raise HeadlessError("lm-eval harness: name its tasks (--tasks)")
        out = run_harness(model_dir, tasks, **options)
        scores = {f"{task}_{k.split(',')[0]}": [float(v)] for task, metrics in out.get("results", {}).items()
                  for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and "," in k and "stderr" not in k}
        return TaskResult(self.name, scores, {}, out)

    def render(self, result: TaskResult) -> str:
        lines = []
        for task, metrics in result.details.get("results", {}).items():
            shown = {k.split(",")[0]: round(v, 4) for k, v in metrics.items()
                     if isinstance(v, float) and "stderr" not in k}
            lines.append(f"{task} {shown}\n")
        return "".join(lines)


# -- encoders ------------------------------------------------------------------------------------


class Glue:
    name, model = "glue", "encoder"
    help = "fine-tune an encoder on GLUE"

    def run(self, model_dir, **options) -> TaskResult:
        from headless.eval.glue import glue_predictions, run_glue

        r = run_glue(model_dir, **options)
        scores = {k: [100 * v for v in t["main"]["values"]] for k, t in r["tasks"].items()}
        scores.update({f"{k}_fp32_retries": [float(len(t["fp32_retries"]))]
                       for k, t in r["tasks"].items() if t.get("fp32_retries")})
        return TaskResult(self.name, scores, glue_predictions(r, list(r["tasks"])), r)

    def render(self, result: TaskResult) -> str:
        from headless.eval.glue import glue_markdown

        return glue_markdown(result.details)


class Xnli:
    name, model = "xnli", "encoder"
    help = "fine-tune an encoder on XNLI (cross-lingual transfer or per language)"

    def run(self, model_dir, **options) -> TaskResult:
        from headless.eval.xnli import run_xnli

        r = run_xnli(model_dir, **options)
        scores: dict[str, list[float]] = {}
        for mode, block in r["modes"].items():
            for lang, summary in block["languages"].items():
                scores[f"xnli_{mode}_{lang}"] = [100 * v for v in summary["values"]]
            scores[f"xnli_{mode}_avg"] = [100 * v for v in block["average"]["values"]]
        if r.get("fp32_retries"):  # runs that diverged in bf16 and ran again in float32 (a setting)
            scores["xnli_fp32_retries"] = [float(len(r["fp32_retries"]))]
        predictions = {f"{mode}/{lang}": {"group": f"{mode}/{lang}", "metric": "accuracy",
                                          "labels": r["labels"][lang], "seeds": block["predictions"][lang]}
                       for mode, block in r["modes"].items() for lang in block["languages"]}
        return TaskResult(self.name, scores, predictions, r)

    def render(self, result: TaskResult) -> str:
        from headless.eval.xnli import xnli_markdown

        return xnli_markdown(result.details)


# -- any model -----------------------------------------------------------------------------------


class Analysis:
    """One model's embedding geometry; `headless analyze` shows several side by side."""

    name, model = "analysis", "any"
    help = "anisotropy per layer and synonym similarity of the input embeddings"

    def run(self, model_dir, **options) -> TaskResult:
        from headless.eval.analysis import analyze_models

        r = analyze_models([model_dir], **options)
        m = r["models"][0]
        return TaskResult(self.name, {"synonym_cosine": [m["synonym_cosine"]], "random_cosine": [m["random_cosine"]],
                                      "synonym_gap": [m["synonym_cosine"] - m["random_cosine"]],
                                      "anisotropy_last": [m["anisotropy"][-1]]}, {}, r)

    def render(self, result: TaskResult) -> str:
        from headless.eval.analysis import analysis_markdown

        return analysis_markdown(result.details)


for _task in (Lambada(), Zeroshot(), Heldout(), Harness(), Glue(), Xnli(), Analysis()):
    register(_task)


def run_task(name: str, model_dir: str | Path, **options) -> TaskResult:
    """Look `name` up and run it on `model_dir`."""
    return get_task(name).run(model_dir, **options)
