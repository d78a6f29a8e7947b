"""lm-evaluation-harness bridge: a tiny export runs under lm-eval's `hf` model on local task YAMLs,
and our LAMBADA / multiple-choice scores agree with lm-eval's on the same examples."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from tiny_models import tiny_decoder
from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.harness import run_harness
from headless.eval.lambada import evaluate_lambada, read_lambada
from headless.eval.scoring import load_causal_lm, score_continuations
from headless.eval.zeroshot import evaluate_zeroshot, read_task

LAMBADA_YAML = """task: local_lambada
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{' ' + continuation}}}}"
target_delimiter: ""
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""
CHOICE_YAML = """task: local_arc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, neox_tokenizer_file):
    # lm-eval needs an EOS/BOS token (the prefix of empty contexts); Pythia's is <|endoftext|>.
    return tiny_decoder(tmp_path_factory.mktemp("tiny-neox"), neox_tokenizer_file, seed=2, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory, shared_data, model_dir):
    """Two local lm-eval tasks: 6 LAMBADA passages (3 of them rewritten so that the target is the
    model's own greedy word, so that accuracy is not trivially 0) and 5 ARC-Easy questions."""
    folder = tmp_path_factory.mktemp("tasks")
    model, tok, _ = load_causal_lm(model_dir, device="cpu")
    rows = []
    for context, word in read_lambada(shared_data / "lambada" / "lambada_openai_dev.jsonl", limit=6):
        if len(rows) % 2:
            with torch.no_grad():
                top = model(torch.tensor([tok(context)["input_ids"]])).logits[0, -1].topk(50).indices
            words = [tok.decode(int(t)) for t in top]
            word = next((w.strip() for w in words if w.startswith(" ") and w.strip().isalpha()), word)
        rows.append({"context": context, "continuation": word})
    (folder / "lambada.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    arc = (shared_data / "zeroshot" / "arc_easy.jsonl").read_text().splitlines()[:5]
    (folder / "arc.jsonl").write_text("\n".join(arc) + "\n")
    (folder / "local_lambada.yaml").write_text(LAMBADA_YAML.format(data=folder / "lambada.jsonl"))
    (folder / "local_arc.yaml").write_text(CHOICE_YAML.format(data=folder / "arc.jsonl"))
    return folder


def test_missing_lm_eval_is_one_clear_line(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(HeadlessError, match=r"pip install 'headless\[eval\]'"):
        run_harness(model_dir, "lambada_openai")


def test_agrees_with_lm_eval(model_dir, local_tasks, tmp_path):
    pytest.importorskip("lm_eval.models.huggingface",
                        reason="lm-evaluation-harness not installed (pip install 'lm_eval[hf]')")
    out = run_harness(model_dir, ["local_lambada", "local_arc"], include_path=local_tasks, device="cpu",
                      batch_size=4, log_samples=True, output_dir=tmp_path)
    model, tok, _ = load_causal_lm(model_dir, device="cpu")

    lam = sorted(out["samples"]["local_lambada"], key=lambda s: s["doc_id"])
    examples = read_lambada(local_tasks / "lambada.jsonl")
    ours = score_continuations(model, tok, [(c, " " + w) for c, w in examples], batch_size=4)
    theirs = [s["resps"][0][0] for s in lam]
    assert [s.logprob for s in ours] == pytest.approx([float(ll) for ll, _ in theirs], abs=1e-4)
    assert [s.is_greedy for s in ours] == [bool(g) for _, g in theirs]
    assert any(s.is_greedy for s in ours)
    summary = evaluate_lambada(model_dir, local_tasks / "lambada.jsonl", device="cpu")
    assert summary["accuracy"] == pytest.approx(out["results"]["local_lambada"]["acc,none"])
    assert math.log(summary["word_perplexity"]) == pytest.approx(
        math.log(out["results"]["local_lambada"]["perplexity,none"]), abs=1e-5)

    arc = sorted(out["samples"]["local_arc"], key=lambda s: s["doc_id"])
    questions = read_task(local_tasks / "arc.jsonl")
    requests = [r for q in questions for r in q.requests()]
    assert requests == [tuple(a) for s in arc for a in s["arguments"]]  # identical prompts
    ours = [s.logprob for s in score_continuations(model, tok, requests, batch_size=3)]
    assert ours == pytest.approx([float(r[0][0]) for s in arc for r in s["resps"]], abs=1e-4)
    mc = evaluate_zeroshot(model_dir, [str(local_tasks / "arc.jsonl")], device="cpu")["tasks"]["arc"]
    assert mc["acc"] == pytest.approx(out["results"]["local_arc"]["acc,none"])
    assert mc["acc_norm"] == pytest.approx(out["results"]["local_arc"]["acc_norm,none"])
    assert "| local_arc | acc_norm |" in (tmp_path / "harness.md").read_text()


def test_cli(model_dir, local_tasks, tmp_path, capsys):
    pytest.importorskip("lm_eval.models.huggingface",
                        reason="lm-evaluation-harness not installed (pip install 'lm_eval[hf]')")
    assert main(["eval", "harness", str(model_dir), "--tasks", "local_arc", "--include-path", str(local_tasks),
                 "--limit", "2", "--device", "cpu", "--output", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "harness.json").read_text())["n-samples"]["local_arc"]["effective"] == 2
    assert "local_arc" in capsys.readouterr().out
    assert main(["eval", "harness", str(tmp_path / "nowhere"), "--tasks", "local_arc"]) == 2
    assert "no config.json" in capsys.readouterr().err.strip().splitlines()[-1]
