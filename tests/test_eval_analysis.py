"""Representation analysis: known answers for anisotropy and synonym cosines, several models (a
decoder and an encoder) side by side, the shipped/user synonym lists, CLI and errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
)

from tiny_models import tiny_decoder
from headless.cli import main
from headless.errors import HeadlessError
from headless.eval.analysis import (
    EMBEDDED_TEXT,
    analyze_models,
    anisotropy,
    load_encoder,
    read_synonyms,
    synonym_similarity,
)


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory, neox_tokenizer_file):
    return tiny_decoder(tmp_path_factory.mktemp("tiny-neox"), neox_tokenizer_file, seed=3)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, bert_vocab_file):
    path = tmp_path_factory.mktemp("tiny-bert")
    tok = BertTokenizerFast(vocab=str(bert_vocab_file))
    torch.manual_seed(4)
    BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                               vocab_size=len(tok))).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_known_answers(decoder_dir):
    model, tok = load_encoder(decoder_dir, torch.device("cpu"))
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        (happy,), (glad,), (big,), (large,) = (tok(f" {w}")["input_ids"] for w in ("happy", "glad", "big", "large"))
        emb[glad] = 3 * emb[happy]
        emb[large] = -emb[big]
    sim = synonym_similarity(model, tok, [("happy", "glad"), ("big", "large"), ("cold", "chilly")], num_random=50)
    assert sim["synonym"][:2] == pytest.approx([1.0, -1.0], abs=1e-5)
    assert sim["num_pairs"] == 3 and len(sim["random"]) == 50
    before = anisotropy(model, tok, EMBEDDED_TEXT, num_pairs=200)
    assert len(before) == 3 and before[0] < 0.5  # embeddings + 2 layers; random rows are not aligned
    with torch.no_grad():
        emb[:] = torch.randn(32)  # every token the same vector: layer 0 is perfectly anisotropic
    assert anisotropy(model, tok, EMBEDDED_TEXT, num_pairs=200)[0] == pytest.approx(1.0, abs=1e-5)


def test_multi_token_words(decoder_dir):
    model, tok = load_encoder(decoder_dir, torch.device("cpu"))
    pairs = [("happy", "glad"), ("antidisestablishmentarianism", "big"), ("fast", "quick")]
    assert synonym_similarity(model, tok, pairs, multi_token="mean")["num_pairs"] == 3
    assert synonym_similarity(model, tok, pairs, multi_token="skip")["num_pairs"] == 2


def test_synonym_lists(tmp_path):
    shipped = read_synonyms()
    assert len(shipped) >= 200 and len({frozenset(p) for p in shipped}) == len(shipped)
    own = tmp_path / "syn.tsv"
    own.write_text("# mine\nfast\tquick\n\nbegin\tstart\n")
    assert read_synonyms(own) == [("fast", "quick"), ("begin", "start")]
    own.write_text("fast quick\n")
    with pytest.raises(HeadlessError, match="two words separated by a tab"):
        read_synonyms(own)


def test_compare_decoder_and_encoder(decoder_dir, encoder_dir, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(EMBEDDED_TEXT))
    out = tmp_path / "out"
    assert main(["analyze", str(decoder_dir), str(encoder_dir), "--text", str(text), "--pairs", "300",
                 "--device", "cpu", "--output", str(out)]) == 0
    result = json.loads((out / "analysis.json").read_text())
    dec, enc = result["models"]
    assert (len(dec["anisotropy"]), len(enc["anisotropy"])) == (3, 4)  # embeddings + each layer
    assert all(-1 <= a <= 1 for m in (dec, enc) for a in m["anisotropy"])
    assert dec["num_pairs"] >= 200 and enc["num_pairs"] >= 200
    assert dec["synonym_cosine"] == pytest.approx(sum(dec["synonym_cosines"]) / len(dec["synonym_cosines"]))
    table = (out / "analysis.md").read_text()
    assert str(decoder_dir) in table and str(encoder_dir) in table and "| emb |" in table
    assert (out / "analysis.png").read_bytes()[:4] == b"\x89PNG"
    assert "Anisotropy per layer" in capsys.readouterr().out
    # Same seed, same pairs: the API reproduces the CLI's numbers.
    again = analyze_models([decoder_dir], text=text, num_pairs=300, device="cpu")["models"][0]
    assert again["anisotropy"] == pytest.approx(dec["anisotropy"])


def test_bad_inputs(decoder_dir, tmp_path, capsys):
    for argv, message in [
        (["analyze", str(decoder_dir), "--text", str(tmp_path / "none.txt")], "not found"),
        (["analyze", str(decoder_dir), "--synonyms", str(tmp_path / "none.tsv")], "not found"),
        (["analyze", str(tmp_path)], "config.json"),
    ]:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and message in err.strip().splitlines()[-1]
    one = tmp_path / "one.txt"
    one.write_text("Just one short paragraph of text.")
    with pytest.raises(HeadlessError, match="at least two"):
        analyze_models([decoder_dir], text=one, device="cpu")
