"""Zero-shot multiple choice: prompts, acc/acc_norm, batched = unbatched, CLI, bad inputs."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.scoring import load_causal_lm
from headless.eval.zeroshot import TASK_FILES, evaluate_zeroshot, predict, read_task, task_path
from tiny_models import tiny_decoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, neox_tokenizer_file):
    return tiny_decoder(tmp_path_factory.mktemp("tiny-neox"), neox_tokenizer_file, seed=1)


@pytest.fixture(scope="module")
def data_dir(shared_data):
    return shared_data / "zeroshot"


@torch.no_grad()
def plain_loglikelihood(model, tokenizer, context, continuation):
    """Written out without the library: move trailing spaces, encode, one forward, sum log-probs."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    ctx = tokenizer(stripped)["input_ids"]
    whole = tokenizer(stripped + continuation)["input_ids"]
    logprobs = model(torch.tensor([whole[:-1]])).logits[0, len(ctx) - 1:].log_softmax(-1)
    return sum(logprobs[i, token].item() for i, token in enumerate(whole[len(ctx):]))


def test_prompts_follow_lm_eval(data_dir):
    arc = read_task(data_dir / "arc_easy.jsonl", limit=1)[0]
    assert arc.context.startswith("Question: ") and arc.context.endswith("?\nAnswer:")
    assert [c for _, c in arc.requests()] == [" " + c for c in arc.choices] and len(arc.choices) == 4
    pub = read_task(data_dir / "pubmed_qa_labeled.jsonl", limit=1)[0]
    assert pub.choices == ["yes", "no", "maybe"] and pub.gold == 0 and pub.context.endswith("Answer: ")
    assert pub.requests()[0] == (pub.context, "yes")  # the trailing space becomes part of " yes"


def test_acc_norm_divides_by_characters():
    # The long choice loses on the sum but wins per character.
    assert predict([-10.0, -12.0], ["a", "abcdef"]) == (0, 1)
    assert predict([-3.0, -3.0], ["ab", "ab"]) == (0, 0)  # ties go to the first, as np.argmax


def test_batched_equals_unbatched(model_dir, data_dir):
    model, tok, _ = load_causal_lm(model_dir, device="cpu")
    acc = {}
    for task in TASK_FILES:
        examples = read_task(task_path(task, data_dir), limit=2)
        hits = [0, 0]
        for ex in examples:
            lls = [plain_loglikelihood(model, tok, c, x) for c, x in ex.requests()]
            pred, pred_norm = predict(lls, ex.choices)
            hits[0] += pred == ex.gold
            hits[1] += pred_norm == ex.gold
        acc[task] = {"acc": hits[0] / 2, "acc_norm": hits[1] / 2, "num_examples": 2, "skipped_too_long": 0}
    result = evaluate_zeroshot(model_dir, list(TASK_FILES), data_dir=data_dir, limit=2, batch_size=3, device="cpu")
    assert result["tasks"] == acc

    from headless.eval.scoring import score_continuations

    ex = read_task(task_path("piqa", data_dir), limit=2)
    requests = [r for e in ex for r in e.requests()]
    batched = [s.logprob for s in score_continuations(model, tok, requests, batch_size=3)]
    assert batched == pytest.approx([plain_loglikelihood(model, tok, c, x) for c, x in requests], abs=1e-4)


def test_cli_end_to_end(model_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "zeroshot", str(model_dir), "--tasks", "arc_easy,pubmedqa", "--data-dir", str(data_dir),
                 "--limit", "3", "--device", "cpu", "--output", str(out)]) == 0
    data = json.loads((out / "zeroshot.json").read_text())
    assert set(data["tasks"]) == {"arc_easy", "pubmedqa"} and data["tasks"]["arc_easy"]["num_examples"] == 3
    table = (out / "zeroshot.md").read_text()
    assert "| arc_easy | 3 |" in table and "acc_norm" in capsys.readouterr().out
    # A user's own jsonl in the same layout is a task named after the file.
    own = tmp_path / "mytask.jsonl"
    own.write_text(json.dumps({"query": "Question: Is fire hot?", "choices": ["no", "yes"], "gold": 1}) + "\n")
    assert set(evaluate_zeroshot(model_dir, [str(own)], device="cpu")["tasks"]) == {"mytask"}


def test_bad_inputs(model_dir, tmp_path, capsys):
    def error(argv):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err.strip().splitlines()[-1]

    base = ["eval", "zeroshot", str(model_dir), "--device", "cpu", "--tasks"]
    assert "unknown task" in error(base + ["hellaswag"])
    assert "not found" in error(base + [str(tmp_path / "missing.jsonl")])
    for row, message in [({"question": "x"}, "needs fields"),
                         ({"query": "q", "choices": ["a", "b"], "gold": 2}, "gold"),
                         ({"query": "q", "choices": ["a"], "gold": 0}, "two"),
                         ({"context": "c", "continuation": "perhaps"}, "yes/no/maybe")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(row) + "\n")
        assert message in error(base + [str(bad)])
    with pytest.raises(HeadlessError, match="no tasks"):
        evaluate_zeroshot(model_dir, "")


def test_a_choice_longer_than_the_window_is_left_out_and_counted(tmp_path, neox_tokenizer_file):
    """A 16-position model: the example whose choice takes 40 tokens cannot be scored (lm-eval refuses
    it); it is left out of the task, counted and logged, and the rest score as they would alone."""
    from headless.eval.scoring import score_tokens

    short = tiny_decoder(tmp_path / "short", neox_tokenizer_file, seed=1)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=16)))
    fits = {"query": "Question: Is fire hot?", "choices": ["no", "yes"], "gold": 1}
    too_long = {"query": "Question: Which?", "choices": ["a", " ".join(["word"] * 40)], "gold": 0}
    task = tmp_path / "mixed.jsonl"
    task.write_text(json.dumps(fits) + "\n" + json.dumps(too_long) + "\n")
    alone = tmp_path / "alone.jsonl"
    alone.write_text(json.dumps(fits) + "\n")
    # a handler of our own: the CLI's tests may have stopped `headless.eval` propagating to pytest's
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("headless.eval.zeroshot")
    logger.addHandler(handler)
    try:
        mixed = evaluate_zeroshot(short, [str(task)], device="cpu")["tasks"]["mixed"]
    finally:
        logger.removeHandler(handler)
    assert mixed["num_examples"] == 1 and mixed["skipped_too_long"] == 1
    logged = " ".join(r.getMessage() for r in records)
    assert "1 of 2 examples left out" in logged and "window of 16 tokens" in logged
    reference = evaluate_zeroshot(short, [str(alone)], device="cpu")["tasks"]["alone"]
    assert {k: mixed[k] for k in ("acc", "acc_norm")} == {k: reference[k] for k in ("acc", "acc_norm")}
    only_long = tmp_path / "long.jsonl"
    only_long.write_text(json.dumps(too_long) + "\n")
    with pytest.raises(HeadlessError, match="every example has a choice longer than the model's window of 16"):
        evaluate_zeroshot(short, [str(only_long)], device="cpu")
    model, _, _ = load_causal_lm(short, device="cpu")
    with pytest.raises(HeadlessError, match="a continuation of 20 tokens is longer than the model's window of 16"):
        score_tokens(model, [([1, 2], list(range(3, 23)))], window=16)
