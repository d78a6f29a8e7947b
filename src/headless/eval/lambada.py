"""LAMBADA (OpenAI version): can the model produce the last word of a passage?

Protocol (as lm-eval's `lambada_openai`): the target is " word" after the context; an example is
correct when every target token is the argmax given the context and the previous target tokens
(teacher-forced, which is exactly what greedy generation would produce). Perplexities:
`word_perplexity` = exp(mean over passages of the target's total NLL), the number lm-eval reports as
`perplexity`; `token_perplexity` = exp(total NLL / total target tokens).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from headless.errors import HeadlessError
from headless.eval.scoring import (
    load_causal_lm,
    markdown_table,
    read_jsonl,
    score_continuations,
    write_outputs,
)

DEFAULT_FILE = Path("lambada") / "lambada_openai_dev.jsonl"


def default_data_path() -> Path:
    """$HEADLESS_SHARED_DATA/lambada/lambada_openai_dev.jsonl, else the hub's lambada_openai test set
    (see headless.eval.datasets); the error names --data, the variable and the hub dataset."""
    from headless.eval.datasets import HUB_LAMBADA, lambada_from_hub, resolve

    return resolve(None, DEFAULT_FILE, flag="--data", what="LAMBADA", hub=HUB_LAMBADA[0], from_hub=lambada_from_hub)


def read_lambada(path: str | os.PathLike, limit: int | None = None) -> list[tuple[str, str]]:
    """(context, last word) pairs from `{"context","continuation"}` or OpenAI `{"text"}` lines."""
    examples = []
    for i, row in enumerate(read_jsonl(path, limit), 1):
        if isinstance(row.get("context"), str) and isinstance(row.get("continuation"), str):
            context, word = row["context"], row["continuation"].strip()
        elif isinstance(row.get("text"), str) and " " in row["text"].strip():
            context, word = row["text"].strip().rsplit(" ", 1)
        else:
            raise HeadlessError(
                f"{path}: example {i} needs string fields \"context\" and \"continuation\" (or \"text\")"
            )
        if not word:
            raise HeadlessError(f"{path}: example {i} has an empty target word")
        examples.append((context.rstrip(), word))
    return examples


def evaluate_lambada(
    model_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 16,
    device: str | None = "auto",
    dtype: str | None = None,
    output_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict:
    """Accuracy and perplexities on LAMBADA; writes lambada.{json,md} (+ per-example predictions
    in the JSON) to `output_dir` when given."""
    if data is not None and not Path(data).is_file():
        raise HeadlessError(f"LAMBADA: data file {data} not found")
    path = Path(data) if data is not None else default_data_path()
    if limit is not None and limit < 1:
        raise HeadlessError(f"--limit must be positive, got {limit}")
    examples = read_lambada(path, limit)
    model, tokenizer, dev = load_causal_lm(model_dir, device=device, dtype=dtype)
    scores = score_continuations(
        model, tokenizer, [(c, " " + w) for c, w in examples],
        batch_size=batch_size, device=dev, progress=progress,
    )
    n = len(scores)
    total_nll = -sum(s.logprob for s in scores)
    tokens = sum(s.num_tokens for s in scores)
    result = {
        "task": "lambada_openai",
        "model": str(model_dir),
        "data": str(path),
        "num_examples": n,
        "accuracy": sum(s.is_greedy for s in scores) / n,
        "word_perplexity": math.exp(total_nll / n),
        "token_perplexity": math.exp(total_nll / tokens),
        "mean_target_tokens": tokens / n,
        "correct": [int(s.is_greedy) for s in scores],  # per example, in file order: for paired tests
    }
    if output_dir is not None:
        table = markdown_table(
            ["model", "examples", "accuracy", "word ppl", "token ppl"],
            [[str(model_dir), n, result["accuracy"], result["word_perplexity"], result["token_perplexity"]]],
        )
        details = dict(result, examples=[
            {"target": w, "logprob": s.logprob, "num_tokens": s.num_tokens, "correct": s.is_greedy}
            for (_, w), s in zip(examples, scores)
        ])
        write_outputs(output_dir, "lambada", details, table)
    return result
