"""Readers: every format and compression, directories and globs, and each bad input's error."""

from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import pytest

from headless.data.readers import iter_documents, resolve_inputs
from headless.errors import HeadlessError

DOCS = ["First document.\nWith two lines, accents é and emoji 🙂.", "Second one.", "Third: <|endoftext|> inside."]


def _zstd(data: bytes) -> bytes:
    # imported here so that the module collects on a machine without zstandard (pytest -m gpu)
    zstandard = pytest.importorskip("zstandard")
    return zstandard.ZstdCompressor().compress(data)


COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".xz": lzma.compress, ".zst": _zstd}


def _write(path: Path, data: bytes) -> Path:
    suffix = path.suffixes[-1] if path.suffixes and path.suffixes[-1] in COMPRESS else ""
    path.write_bytes(COMPRESS[suffix](data))
    return path


@pytest.mark.parametrize("compression", ["", ".gz", ".xz", ".zst"])
def test_jsonl_every_compression(tmp_path, compression):
    lines = "\n".join(json.dumps({"id": i, "text": d}) for i, d in enumerate(DOCS)) + "\n\n"
    path = _write(tmp_path / f"a.jsonl{compression}", lines.encode())
    assert list(iter_documents(path)) == DOCS


@pytest.mark.parametrize("compression", ["", ".gz", ".xz", ".zst"])
def test_txt_every_compression_one_document_per_file(tmp_path, compression):
    text = "\n\n".join(DOCS)
    path = _write(tmp_path / f"a.txt{compression}", text.encode())
    assert list(iter_documents(path)) == [text]
    assert list(iter_documents(path, split_paragraphs=True)) == DOCS


@pytest.mark.parametrize("compression", ["", ".zst"])
def test_parquet(tmp_path, compression):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"body": DOCS, "n": [1, 2, 3]}), buffer)
    path = _write(tmp_path / f"a.parquet{compression}", buffer.getvalue())
    assert list(iter_documents(path, text_field="body")) == DOCS
    with pytest.raises(HeadlessError, match="no column 'text'"):
        list(iter_documents(path))


def test_directory_recursive_sorted_and_glob(tmp_path):
    (tmp_path / "b").mkdir()
    _write(tmp_path / "b" / "2.txt", b"two")
    _write(tmp_path / "1.txt.gz", b"one")
    _write(tmp_path / "3.jsonl", json.dumps({"text": "three"}).encode())
    _write(tmp_path / "README", b"not data")        # unknown types are skipped inside directories
    _write(tmp_path / ".hidden.txt", b"hidden")
    assert list(iter_documents(tmp_path)) == ["one", "three", "two"]
    assert list(iter_documents(str(tmp_path / "*.txt*"))) == ["one"]
    assert list(iter_documents([tmp_path / "3.jsonl", tmp_path / "1.txt.gz"])) == ["three", "one"]


def test_saved_hf_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict

    Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "ds"))
    assert list(iter_documents(tmp_path / "ds")) == DOCS
    DatasetDict({"train": Dataset.from_dict({"text": DOCS[:1]})}).save_to_disk(str(tmp_path / "dd"))
    assert list(iter_documents(tmp_path / "dd")) == DOCS[:1]


def test_hub_dataset_offline_is_a_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)   # the env var is read at import
    with pytest.raises(HeadlessError, match="Hugging Face Hub"):
        list(iter_documents("hf:no-such-user/no-such-dataset"))


def test_errors(tmp_path):
    with pytest.raises(HeadlessError, match="input not found"):
        resolve_inputs(tmp_path / "missing.jsonl")
    with pytest.raises(HeadlessError, match="no file matches"):
        resolve_inputs(str(tmp_path / "*.jsonl"))
    with pytest.raises(HeadlessError, match="unknown file type"):
        resolve_inputs(_write(tmp_path / "data.csv", b"a,b"))
    with pytest.raises(HeadlessError, match="no .txt/.jsonl/.parquet files"):
        resolve_inputs(_make_dir(tmp_path / "empty"))

    bad_utf8 = _write(tmp_path / "bad.txt", "ok".encode() + b"\xff\xfe rest")
    with pytest.raises(HeadlessError, match=r"bad.txt is not valid UTF-8 \(byte offset 2\)"):
        list(iter_documents(bad_utf8))
    binary = _write(tmp_path / "bin.txt.gz", b"abc\x00def")
    with pytest.raises(HeadlessError, match=r"looks binary \(NUL byte at offset 3\)"):
        list(iter_documents(binary))

    not_json = _write(tmp_path / "x.jsonl", b'{"text": "fine"}\n{broken\n')
    with pytest.raises(HeadlessError, match=r"x.jsonl:2: not valid JSON"):
        list(iter_documents(not_json))
    no_field = _write(tmp_path / "y.jsonl", b'{"text": "fine"}\n{"body": "no"}\n')
    with pytest.raises(HeadlessError, match=r"y.jsonl:2: no field 'text'"):
        list(iter_documents(no_field))
    bad_line = _write(tmp_path / "z.jsonl", b'{"text": "fine"}\n{"text": "\xc3("}\n')
    with pytest.raises(HeadlessError, match=r"z.jsonl:2 is not valid UTF-8 \(byte offset 27\)"):
        list(iter_documents(bad_line))

    empty = _write(tmp_path / "empty.jsonl", b'{"text": ""}\n{"text": "  \\n"}\n')
    with pytest.raises(HeadlessError, match="empty corpus"):
        list(iter_documents(empty))


def _make_dir(path: Path) -> Path:
    path.mkdir()
    return path
