"""Tokenizer loading (NeoX tokenizer.json, BERT vocab.txt, HF directory), special tokens, training."""

from __future__ import annotations

import json

import pytest

from headless.data.tokenizers import load_tokenizer, special_token_ids, tokenizer_hash, train_tokenizer
from headless.errors import HeadlessError

TEXT = "Héllo wörld — the café's 3 naïve <|mask|> tests.\n\tIndented  line 🙂"


def test_neox_gets_a_mask_token(neox_tokenizer_file):
    from tokenizers import Tokenizer

    base = Tokenizer.from_file(str(neox_tokenizer_file)).get_vocab_size(with_added_tokens=True)
    tok = load_tokenizer(neox_tokenizer_file)
    assert len(tok) == base + 1 <= 50304            # <|mask|> added, fits Pythia's padded vocab
    assert tok.mask_token == "<|mask|>" and tok.mask_token_id == base
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 0
    assert tok.pad_token == "<|padding|>" and tok.pad_token_id == 1
    assert {0, 1, base} <= set(special_token_ids(tok))
    assert tok.decode(tok(TEXT, add_special_tokens=False)["input_ids"]) == TEXT


def test_bert_vocab_uses_sep_as_eos(bert_vocab_file):
    tok = load_tokenizer(bert_vocab_file)
    assert len(tok) == 30522                        # nothing added
    assert (tok.eos_token, tok.eos_token_id, tok.mask_token_id, tok.pad_token_id) == ("[SEP]", 102, 103, 0)
    assert set(special_token_ids(tok)) == {0, 100, 101, 102, 103}
    assert tok.tokenize("Hello World") == ["hello", "world"]


def test_saved_directory_round_trips_with_same_hash(neox_tokenizer_file, bert_vocab_file, tmp_path):
    tok = load_tokenizer(neox_tokenizer_file)
    tok.save_pretrained(str(tmp_path / "neox"))
    again = load_tokenizer(tmp_path / "neox")
    assert len(again) == len(tok) and again.mask_token_id == tok.mask_token_id
    assert tokenizer_hash(again) == tokenizer_hash(tok)
    assert tokenizer_hash(load_tokenizer(bert_vocab_file)) != tokenizer_hash(tok)


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(HeadlessError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nope" / "tokenizer.json")
    (tmp_path / "t.bin").write_bytes(b"x")
    with pytest.raises(HeadlessError, match="unknown tokenizer file"):
        load_tokenizer(tmp_path / "t.bin")
    (tmp_path / "bad.json").write_text(json.dumps({"not": "a tokenizer"}))
    with pytest.raises(HeadlessError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "bad.json")
    with pytest.raises(HeadlessError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HeadlessError, match="HF_HUB_OFFLINE"):
        load_tokenizer("EleutherAI/pythia-70m")
    with pytest.raises(HeadlessError, match="unknown tokenizer kind"):
        train_tokenizer(kind="sentencepiece", vocab_size=500, output_dir=tmp_path / "x")


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    from headless.data.default_corpus import default_corpus_documents

    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in default_corpus_documents()[:60]))
    return path


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_train_each_kind(kind, small_corpus, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / kind
    tok = train_tokenizer(small_corpus, kind=kind, vocab_size=600, output_dir=out, progress=False)
    assert 400 <= len(tok) <= 600
    reloaded = AutoTokenizer.from_pretrained(str(out))           # a plain HF directory
    assert reloaded.get_vocab() == tok.get_vocab()
    assert tok.eos_token_id is not None and tok.mask_token_id is not None and tok.pad_token_id is not None
    assert tok.mask_token_id in special_token_ids(tok)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    if kind == "bpe":                                             # byte-level: lossless
        assert tok.decode(ids) == TEXT
    if kind == "wordpiece":                                       # BERT layout, lowercased
        assert tok.decode(ids).startswith("hello")
        full = tok("a b")["input_ids"]
        assert full[0] == tok.cls_token_id and full[-1] == tok.sep_token_id == tok.eos_token_id
