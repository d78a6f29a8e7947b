"""LAMBADA: batched scoring equals a plain per-example computation; the greedy check equals greedy
generation; the command runs end to end; bad inputs give one line and exit 2."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import GPTNeoXModel

from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.lambada import evaluate_lambada, read_lambada
from headless.eval.scoring import encode_pair, load_causal_lm, score_continuations, score_tokens
from tiny_models import tiny_decoder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, neox_tokenizer_file):
    return tiny_decoder(tmp_path_factory.mktemp("tiny-neox"), neox_tokenizer_file)


@pytest.fixture(scope="module")
def lambada_file(shared_data):
    return shared_data / "lambada" / "lambada_openai_dev.jsonl"


@torch.no_grad()
def plain_score(model, tokenizer, context, continuation):
    """One forward per example, no padding: (sum log-prob of the continuation, all tokens argmax)."""
    ctx = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    cont = whole[len(ctx):]
    logprobs = model(torch.tensor([whole[:-1]])).logits[0].log_softmax(-1)[len(ctx) - 1:]
    picked = logprobs[torch.arange(len(cont)), torch.tensor(cont)]
    return picked.sum().item(), logprobs.argmax(-1).tolist() == cont, len(cont)


def test_batched_equals_unbatched(model_dir, lambada_file):
    examples = read_lambada(lambada_file, limit=12)
    model, tok, _ = load_causal_lm(model_dir, device="cpu")
    scores = score_continuations(model, tok, [(c, " " + w) for c, w in examples], batch_size=5)
    plain = [plain_score(model, tok, c, " " + w) for c, w in examples]
    assert len({len(tok(c)["input_ids"]) for c, _ in examples}) > 3  # padding really happens
    for s, (lp, greedy, n) in zip(scores, plain):
        assert s.logprob == pytest.approx(lp, abs=1e-4)
        assert (s.is_greedy, s.num_tokens) == (greedy, n)
    result = evaluate_lambada(model_dir, lambada_file, limit=12, batch_size=5, device="cpu")
    nll = [-lp for lp, _, _ in plain]
    assert result["num_examples"] == 12
    assert result["accuracy"] == sum(g for _, g, _ in plain) / 12
    assert result["word_perplexity"] == pytest.approx(math.exp(sum(nll) / 12), rel=1e-4)
    assert result["token_perplexity"] == pytest.approx(math.exp(sum(nll) / sum(n for *_, n in plain)), rel=1e-4)


def test_greedy_check_equals_generation(model_dir, lambada_file):
    model, tok, _ = load_causal_lm(model_dir, device="cpu")
    pairs, expected = [], []
    for k, (context, _) in enumerate(read_lambada(lambada_file, limit=6)):
        ctx = tok(context)["input_ids"]
        out = model.generate(torch.tensor([ctx]), attention_mask=torch.ones(1, len(ctx), dtype=torch.long),
                             max_new_tokens=1 + k % 3, do_sample=False, pad_token_id=0)
        generated = out[0, len(ctx):].tolist()
        pairs += [(ctx, generated), (ctx, generated[:-1] + [(generated[-1] + 1) % len(tok)])]
        expected += [True, False]
    assert [s.is_greedy for s in score_tokens(model, pairs, batch_size=4)] == expected


def test_encode_pair_moves_trailing_space(model_dir):
    _, tok, _ = load_causal_lm(model_dir, device="cpu")
    ctx, cont = encode_pair(tok, "The cat sat on the ", "mat")
    assert tok.decode(ctx) == "The cat sat on the" and tok.decode(cont) == " mat"


def test_cli_end_to_end_and_text_layout(model_dir, lambada_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["eval", "lambada", str(model_dir), "--data", str(lambada_file), "--limit", "6",
                 "--batch-size", "4", "--device", "cpu", "--output", str(out)]) == 0
    data = json.loads((out / "lambada.json").read_text())
    assert data["num_examples"] == 6 and len(data["examples"]) == 6
    assert data["correct"] == [int(e["correct"]) for e in data["examples"]]  # per example, in file order
    assert sum(data["correct"]) / 6 == data["accuracy"]
    assert "accuracy" in (out / "lambada.md").read_text() and "word ppl" in capsys.readouterr().out
    # OpenAI {"text"} layout: the last word is split off and scored as " word".
    rows = [json.loads(line) for line in lambada_file.read_text().splitlines()[:3]]
    text_file = tmp_path / "openai.jsonl"
    text_file.write_text("".join(json.dumps({"text": r["context"] + " " + r["continuation"]}) + "\n" for r in rows))
    assert read_lambada(text_file) == [(r["context"], r["continuation"]) for r in rows]
    ours = evaluate_lambada(model_dir, text_file, device="cpu")
    assert ours["word_perplexity"] == pytest.approx(
        evaluate_lambada(model_dir, lambada_file, limit=3, device="cpu")["word_perplexity"], rel=1e-6)


def run_error(argv, capsys):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err  # may hold progress bars before the message
    assert "Traceback" not in err and err.count("headless: error:") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("headless: error:")
    return last


def test_bad_inputs(model_dir, lambada_file, tmp_path, capsys, neox_tokenizer_file, bert_vocab_file):
    base = ["eval", "lambada"]
    assert "not found" in run_error(base + [str(model_dir), "--data", str(tmp_path / "nope.jsonl")], capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\n')
    assert "context" in run_error(base + [str(model_dir), "--data", str(bad)], capsys)
    assert "config.json" in run_error(base + [str(tmp_path), "--data", str(lambada_file)], capsys)
    small = tiny_decoder(tmp_path / "small-vocab", neox_tokenizer_file, vocab_size=1000)
    assert "do not belong together" in run_error(base + [str(small), "--data", str(lambada_file)], capsys)
    headless = tiny_decoder(tmp_path / "no-head", neox_tokenizer_file, cls=GPTNeoXModel)
    assert "no language-modelling head" in run_error(base + [str(headless), "--data", str(lambada_file)], capsys)
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    bert_tok = BertTokenizerFast(vocab=str(bert_vocab_file))
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                               vocab_size=len(bert_tok))).save_pretrained(tmp_path / "bert")
    bert_tok.save_pretrained(tmp_path / "bert")
    assert "encoder" in run_error(base + [str(tmp_path / "bert"), "--data", str(lambada_file)], capsys)
    with pytest.raises(HeadlessError, match="positive"):
        evaluate_lambada(model_dir, lambada_file, limit=0)
