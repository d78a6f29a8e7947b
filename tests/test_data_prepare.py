"""prepare_dataset: shards decode back to the documents, manifest, dtype, idempotency, safety."""

from __future__ import annotations

import json
import lzma
import unicodedata
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from headless.data.prepare import _is_validation, prepare_dataset
from headless.data.tokenizers import load_tokenizer, train_tokenizer
from headless.errors import HeadlessError


def _rows(directory: Path, split: str) -> np.ndarray:
    manifest = json.loads((directory / "manifest.json").read_text())
    dtype = np.dtype("<u2" if manifest["dtype"] == "uint16" else "<u4")
    parts = [np.fromfile(directory / s["file"], dtype=dtype) for s in manifest["splits"][split]["shards"]]
    return np.concatenate(parts).reshape(-1, manifest["seq_len"]) if parts else np.zeros((0, manifest["seq_len"]))


def _decoded_documents(directory: Path, split: str, tok) -> list[str]:
    """The packed stream split at EOS, each piece decoded; the last (cut) piece is left out."""
    stream = _rows(directory, split).reshape(-1).tolist()
    docs, current = [], []
    for token in stream:
        if token == tok.eos_token_id:
            docs.append(tok.decode(current, clean_up_tokenization_spaces=False))
            current = []
        else:
            current.append(token)
    return docs


def _split_docs(docs: list[str], seed: int, fraction: float) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], "validation": []}
    for i, doc in enumerate(docs):
        out["validation" if _is_validation(seed, i, fraction) else "train"].append(doc)
    return out


def _check_round_trip(directory: Path, docs: list[str], seed: int, fraction: float, tok) -> None:
    expected = _split_docs([unicodedata.normalize("NFC", d) for d in docs], seed, fraction)
    manifest = json.loads((directory / "manifest.json").read_text())
    for split, split_docs in expected.items():
        decoded = _decoded_documents(directory, split, tok)
        info = manifest["splits"][split]
        # every document whose EOS made it into a full row comes back verbatim, in order
        assert decoded == split_docs[: len(decoded)]
        assert len(split_docs) - len(decoded) <= 1 + info["dropped_tokens"] // 2
        assert info["num_documents"] == len(split_docs)
        assert info["num_tokens"] == info["num_sequences"] * manifest["seq_len"]


def test_enwiki_round_trip_with_neox(shared_data, neox_tokenizer_file, tmp_path):
    source = shared_data / "enwiki" / "train" / "enwiki-000.jsonl.xz"
    with lzma.open(source, "rt", encoding="utf-8") as fh:
        docs = [json.loads(line)["text"] for line in islice(fh, 200)]
    tok = load_tokenizer(neox_tokenizer_file)
    out = tmp_path / "enwiki"
    manifest = prepare_dataset(source, out, tok, seq_len=256, validation_fraction=0.05, max_documents=200,
                               num_workers=2, progress=False)
    assert manifest["format"] == "headless-packed-v1" and manifest["dtype"] == "uint16"
    assert manifest["tokenizer"]["vocab_size"] == len(tok)
    assert manifest["tokenizer"]["mask_token_id"] == tok.mask_token_id
    assert manifest["sources"][0]["location"] == str(source)
    assert manifest["splits"]["validation"]["num_sequences"] > 0
    _check_round_trip(out, docs, 0, 0.05, tok)
    # the tokens are the real ones: exactly what the tokenizer gives, EOS appended
    first = tok(docs[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert _rows(out, "train").reshape(-1)[: len(first)].tolist() == first
    assert load_tokenizer(out / "tokenizer").mask_token_id == tok.mask_token_id


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "bpe"
    return train_tokenizer(None, kind="bpe", vocab_size=2048, output_dir=out, progress=False)


def test_default_corpus_round_trip_with_trained_tokenizer(bpe, tmp_path):
    from headless.data.default_corpus import default_corpus_documents

    out = tmp_path / "docs"
    manifest = prepare_dataset(None, out, bpe, seq_len=128, validation_fraction=0.02, num_workers=1,
                               shard_tokens=128 * 500, progress=False)
    assert [(s["kind"], s["location"]) for s in manifest["sources"]] == [("default", "python-docs")]
    assert len(manifest["splits"]["train"]["shards"]) > 1                 # several shards, in order
    assert all(s["num_sequences"] == 500 for s in manifest["splits"]["train"]["shards"][:-1])
    _check_round_trip(out, default_corpus_documents(), 0, 0.02, bpe)


@pytest.fixture(scope="module")
def bert(bert_vocab_file):
    return load_tokenizer(bert_vocab_file)


def _jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def test_exact_multiple_keeps_everything_and_tail_is_counted(bert, tmp_path):
    docs = _jsonl(tmp_path / "d.jsonl", ["hello world"] * 4)                  # 4 x (2 + EOS) = 12 tokens
    exact = prepare_dataset(docs, tmp_path / "exact", bert, seq_len=6, validation_fraction=0, progress=False)
    assert exact["splits"]["train"]["num_sequences"] == 2
    assert exact["splits"]["train"]["dropped_tokens"] == 0
    hello, world = bert.convert_tokens_to_ids(["hello", "world"])
    assert _rows(tmp_path / "exact", "train").tolist() == [[hello, world, 102] * 2] * 2
    docs = _jsonl(tmp_path / "e.jsonl", ["hello world"] * 4 + ["hello"])    # 14 tokens
    tail = prepare_dataset(docs, tmp_path / "tail", bert, seq_len=6, validation_fraction=0, progress=False)
    assert (tail["splits"]["train"]["num_sequences"], tail["splits"]["train"]["dropped_tokens"]) == (2, 2)


def test_uint32_for_large_vocabularies(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[SEP]": 1, **{f"w{i}": i + 2 for i in range(70_000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]")
    docs = _jsonl(tmp_path / "d.jsonl", ["w69999 w3 w65536"])
    manifest = prepare_dataset(docs, tmp_path / "big", tok, seq_len=4, validation_fraction=0, progress=False)
    assert manifest["dtype"] == "uint32" and manifest["tokenizer"]["vocab_size"] == 70_003
    assert _rows(tmp_path / "big", "train").tolist() == [[70001, 5, 65538, 1]]


def test_idempotent_rerun_and_overwrite_rules(bert, tmp_path, capsys):
    docs = _jsonl(tmp_path / "d.jsonl", [f"document number {i} says hello" for i in range(50)])
    out = tmp_path / "out"
    first = prepare_dataset(docs, out, bert, seq_len=8, validation_fraction=0.1, progress=False)
    stamp = (out / "train-00000.bin").stat().st_mtime_ns
    capsys.readouterr()
    again = prepare_dataset(docs, out, bert, seq_len=8, validation_fraction=0.1, progress=True)
    assert again == first and (out / "train-00000.bin").stat().st_mtime_ns == stamp
    assert "already prepared" in capsys.readouterr().err

    with pytest.raises(HeadlessError, match="prepared with different settings"):
        prepare_dataset(docs, out, bert, seq_len=16, validation_fraction=0.1, progress=False)
    changed = prepare_dataset(docs, out, bert, seq_len=16, validation_fraction=0.1, overwrite=True, progress=False)
    assert changed["seq_len"] == 16 and _rows(out, "train").shape[1] == 16

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(HeadlessError, match="not empty|not a prepared dataset"):
            prepare_dataset(docs, tmp_path / "mine", bert, seq_len=8, overwrite=overwrite, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_failure_leaves_nothing_behind(bert, tmp_path):
    tiny = _jsonl(tmp_path / "tiny.jsonl", ["hello"])
    with pytest.raises(HeadlessError, match="fewer than seq_len"):
        prepare_dataset(tiny, tmp_path / "out", bert, seq_len=64, progress=False)
    empty = _jsonl(tmp_path / "empty.jsonl", [" "])
    with pytest.raises(HeadlessError, match="empty corpus"):
        prepare_dataset(empty, tmp_path / "out", bert, seq_len=64, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "tiny.jsonl"]


def test_validation_split_by_seed_and_from_separate_inputs(bert, tmp_path, monkeypatch):
    import headless.data.prepare as prepare

    monkeypatch.setattr(prepare, "_CHUNK_CHARS", 500)         # many chunks: exercise the worker pool
    docs = [f"document {i} " + "word " * (i % 7) for i in range(300)]
    source = _jsonl(tmp_path / "d.jsonl", docs)
    a = prepare_dataset(source, tmp_path / "a", bert, seq_len=8, validation_fraction=0.2, seed=3, progress=False)
    b = prepare_dataset(source, tmp_path / "b", bert, seq_len=8, validation_fraction=0.2, seed=3,
                        num_workers=2, progress=False)
    prepare_dataset(source, tmp_path / "c", bert, seq_len=8, validation_fraction=0.2, seed=4, progress=False)
    assert np.array_equal(_rows(tmp_path / "a", "validation"), _rows(tmp_path / "b", "validation"))
    assert a["splits"] == b["splits"]
    assert not np.array_equal(_rows(tmp_path / "a", "validation"), _rows(tmp_path / "c", "validation"))
    assert 30 <= a["splits"]["validation"]["num_documents"] <= 90

    held_out = _jsonl(tmp_path / "v.jsonl", ["held out text"] * 10)
    m = prepare_dataset(source, tmp_path / "v", bert, seq_len=8, validation_inputs=[held_out], progress=False)
    assert m["splits"]["train"]["num_documents"] == 300 and m["splits"]["validation"]["num_documents"] == 10
    assert _decoded_documents(tmp_path / "v", "validation", bert)[0] == "held out text"


# issue #28 item 7: whole-shard content hashes, and a full disk (no ../shared needed) ----------------

@pytest.fixture(scope="module")
def fixture_bpe(fixture_tokenizers):
    return load_tokenizer(str(fixture_tokenizers["bpe"]))


def test_manifest_records_each_whole_shards_sha256_and_a_mid_shard_edit_is_caught(fixture_data, fixture_bpe,
                                                                                  tmp_path):
    from headless.data.prepare import dataset_fingerprint, verify_shards
    from headless.files import sha256_file

    out = tmp_path / "ds"
    prepare_dataset(fixture_data["corpus"], out, fixture_bpe, seq_len=16, shard_tokens=16 * 200, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    assert len(shards) > 2
    for shard in shards:
        assert shard["sha256"] == sha256_file(out / shard["file"])
    verify_shards(out)  # intact: nothing to say
    before = dataset_fingerprint(out)
    path = out / shards[0]["file"]
    ids = np.fromfile(path, dtype="<u2")
    ids[len(ids) // 2] = (ids[len(ids) // 2] + 1) % 512  # one token id mid-shard, size unchanged
    ids.tofile(path)
    with pytest.raises(HeadlessError, match="has changed since it was prepared"):
        verify_shards(out)
    # a dataset prepared before the hashes were recorded: the fingerprint hashes the files itself
    for shard in manifest["splits"]["train"]["shards"] + manifest["splits"]["validation"]["shards"]:
        del shard["sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    verify_shards(out)  # nothing recorded to check against
    edited = dataset_fingerprint(out)
    ids[len(ids) // 2] = (ids[len(ids) // 2] + 1) % 512
    ids.tofile(path)
    assert dataset_fingerprint(out) != edited != before


def test_a_full_disk_during_prepare_is_one_line_and_leaves_nothing(fixture_data, fixture_tokenizers, tmp_path,
                                                                   monkeypatch, capsys):
    import errno

    from headless.cli import main
    from headless.data import prepare

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prepare._SplitWriter, "_write", full)
    out = tmp_path / "ds"
    status = main(["prepare", str(fixture_data["corpus"]), "--output", str(out), "--tokenizer",
                   str(fixture_tokenizers["bpe"]), "--seq-len", "16", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and "the disk is full" in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary directory


def test_a_validation_split_too_small_to_measure_is_reported_with_its_size(fixture_data, fixture_tokenizers,
                                                                         tmp_path, capsys):
    """`prepare --max-documents 300` used to leave 1 validation sequence in silence; pretraining then
    reported a validation loss from it.  The warning shows without progress bars too."""
    from headless.cli import main

    tok = str(fixture_tokenizers["bpe"])
    assert main(["prepare", str(fixture_data["corpus"]), "--tokenizer", tok, "--output", str(tmp_path / "small"),
                 "--seq-len", "64", "--max-documents", "60", "--validation-fraction", "0.05", "-q"]) == 0
    err = capsys.readouterr().err
    have = json.loads((tmp_path / "small" / "manifest.json").read_text())["splits"]["validation"]["num_sequences"]
    assert have < 32
    assert f"warning: the validation split holds {have} sequence(s) of 64 tokens" in err, err
    assert "needs at least 32" in err and err.count("validation split holds") == 1, err  # once, not twice
    prepare_dataset([str(fixture_data["corpus"])], tmp_path / "large", load_tokenizer(tok), seq_len=16,
                    validation_fraction=0.2, progress=False)
    assert "validation split holds" not in capsys.readouterr().err
    # a scoring set of a fixed size (the decoder study's per-language held-out sentences) asks for none
    prepare_dataset([str(fixture_data["corpus"])], tmp_path / "scoring", load_tokenizer(tok), seq_len=64,
                    max_documents=60, validation_fraction=0.05, progress=False, min_validation_sequences=0)
    assert "validation split holds" not in capsys.readouterr().err
