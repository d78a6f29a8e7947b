"""Zero-shot multiple choice: each choice is scored by its log-likelihood after the prompt.

Prompts follow lm-eval's templates for these tasks: `query + "\\nAnswer:"` then `" " + choice`
(PubMedQA's context already ends with "Answer: "; its candidates are yes/no/maybe). As in lm-eval,
`acc` picks the highest summed log-likelihood and `acc_norm` the highest log-likelihood divided by
the choice's length in characters (so long choices are not penalised for having more tokens).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from headless.errors import HeadlessError
from headless.eval.scoring import (
    encode_pair,
    load_causal_lm,
    markdown_table,
    max_length,
    read_jsonl,
    score_tokens,
    write_outputs,
)

log = logging.getLogger(__name__)

TASK_FILES = {
    "boolq": "boolq.jsonl",
    "piqa": "piqa.jsonl",
    "arc_easy": "arc_easy.jsonl",
    "pubmedqa": "pubmed_qa_labeled.jsonl",
}
DEFAULT_TASKS = tuple(TASK_FILES)
PUBMEDQA_CHOICES = ["yes", "no", "maybe"]
ANSWER_PREFIX = "\nAnswer:"


@dataclass(frozen=True)
class Example:
    context: str
    choices: list[str]
    gold: int

    def requests(self) -> list[tuple[str, str]]:
        # A context ending in a space already holds the delimiter (PubMedQA's "Answer: ").
        sep = "" if self.context.endswith(" ") else " "
        return [(self.context, sep + c) for c in self.choices]


def default_data_dir() -> Path | None:
    """$HEADLESS_SHARED_DATA/zeroshot when it exists (else None: task files come from the hub)."""
    from headless.eval.datasets import shared_path

    return shared_path("zeroshot")


def task_path(task: str, data_dir: str | os.PathLike | None = None) -> Path:
    """A task name (boolq, piqa, arc_easy, pubmedqa) or the path of a jsonl file.  Names resolve in
    --data-dir, else $HEADLESS_SHARED_DATA/zeroshot, else the hub dataset lm-eval's task reads."""
    from headless.eval.datasets import HUB_ZEROSHOT, resolve, zeroshot_from_hub

    if task in TASK_FILES:
        if data_dir is not None:
            path = Path(data_dir) / TASK_FILES[task]
            if not path.is_file():
                raise HeadlessError(f"zero-shot task {task}: {path} not found (--data-dir)")
            return path
        return resolve(None, Path("zeroshot") / TASK_FILES[task], flag="--data-dir", what=f"zero-shot task {task}",
                       hub=HUB_ZEROSHOT[task][0], from_hub=lambda: zeroshot_from_hub(task))
    if task.endswith(".jsonl") or os.sep in task:
        return Path(task)
    raise HeadlessError(f"unknown task {task!r}: use {', '.join(TASK_FILES)} or the path of a .jsonl file")


def read_task(path: str | os.PathLike, limit: int | None = None, answer_prefix: str = ANSWER_PREFIX) -> list[Example]:
    """Examples from `{"query","choices","gold"}` or `{"context","continuation"}` (yes/no/maybe) lines."""
    examples = []
    for i, row in enumerate(read_jsonl(path, limit), 1):
        if isinstance(row.get("query"), str) and isinstance(row.get("choices"), list):
            choices, gold = row["choices"], row.get("gold")
            if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise HeadlessError(f"{path}: example {i} needs at least two non-empty string choices")
            if not isinstance(gold, int) or not 0 <= gold < len(choices):
                raise HeadlessError(f"{path}: example {i} needs an integer \"gold\" indexing its choices")
            examples.append(Example(row["query"].rstrip() + answer_prefix, choices, gold))
        elif isinstance(row.get("context"), str) and isinstance(row.get("continuation"), str):
            answer = row["continuation"].strip().lower()
            if answer not in PUBMEDQA_CHOICES:
                raise HeadlessError(f"{path}: example {i} has continuation {answer!r}, expected yes/no/maybe")
            examples.append(Example(row["context"], PUBMEDQA_CHOICES, PUBMEDQA_CHOICES.index(answer)))
        else:
            raise HeadlessError(
                f"{path}: example {i} needs fields \"query\", \"choices\", \"gold\" (or \"context\", \"continuation\")"
            )
    return examples


def predict(logprobs: list[float], choices: list[str]) -> tuple[int, int]:
    """(argmax of log-likelihood, argmax of log-likelihood per character); ties go to the first."""
    norm = [lp / len(c) for lp, c in zip(logprobs, choices)]
    return max(range(len(norm)), key=logprobs.__getitem__), max(range(len(norm)), key=norm.__getitem__)


def evaluate_zeroshot(
    model_dir: str | os.PathLike,
    tasks=DEFAULT_TASKS,
    *,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    device: str | None = "auto",
    dtype: str | None = None,
    answer_prefix: str = ANSWER_PREFIX,
    output_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """{"model", "tasks": {task: {"acc", "acc_norm", "num_examples", "skipped_too_long"}}}; writes
    zeroshot.{json,md}.  An example with a choice longer than the model's window cannot be scored
    (lm-eval refuses it): it is left out of that task, counted and logged, the same for every model
    with this tokenizer and window."""
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t]
    if not tasks:
        raise HeadlessError("no tasks given")
    if limit is not None and limit < 1:
        raise HeadlessError(f"--limit must be positive, got {limit}")
    data = {t: read_task(task_path(t, data_dir), limit, answer_prefix) for t in tasks}
    model, tokenizer, dev = load_causal_lm(model_dir, device=device, dtype=dtype)
    window = max_length(model, tokenizer)
    results = {}
    for task, examples in data.items():
        name = Path(task).stem if task not in TASK_FILES else task
        encoded = [[encode_pair(tokenizer, c, x) for c, x in ex.requests()] for ex in examples]
        fits = [all(len(cont) <= window for _, cont in pairs) for pairs in encoded]
        skipped = fits.count(False)
        if skipped == len(examples):
            raise HeadlessError(f"zero-shot task {name}: every example has a choice longer than the model's "
                                f"window of {window} tokens")
        if skipped:
            log.warning("zero-shot task %s: %d of %d examples left out, a choice longer than the model's window "
                        "of %d tokens", name, skipped, len(examples), window)
        examples = [ex for ex, ok in zip(examples, fits) if ok]
        pairs = [pair for pairs, ok in zip(encoded, fits) if ok for pair in pairs]
        scores = iter(score_tokens(model, pairs, batch_size=batch_size, window=window, device=dev,
                                   progress=progress))
        acc = acc_norm = 0
        for ex in examples:
            pred, pred_norm = predict([next(scores).logprob for _ in ex.choices], ex.choices)
            acc += pred == ex.gold
            acc_norm += pred_norm == ex.gold
        n = len(examples)
        results[name] = {"acc": acc / n, "acc_norm": acc_norm / n, "num_examples": n, "skipped_too_long": skipped}
    out = {"model": str(model_dir), "tasks": results}
    if output_dir is not None:
        table = markdown_table(["task", "examples", "acc", "acc_norm"],
                               [[t, r["num_examples"], r["acc"], r["acc_norm"]] for t, r in results.items()])
        write_outputs(output_dir, "zeroshot", out, table)
    return out
