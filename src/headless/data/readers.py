"""Turn input specs into a stream of documents (one `str` each).

An input spec is one of: a `.txt` / `.jsonl` / `.parquet` file, optionally compressed (`.gz`,
`.xz`, `.zst`); a directory (every such file below it, recursively, in sorted order); a glob
(`data/*.jsonl.xz`); a `datasets.save_to_disk` directory; `hf:NAME[:CONFIG][@SPLIT]` for a Hub
dataset (needs the internet); or `python-docs`, the embedded default corpus.  Specs are checked
up front so a typo fails in a second, not after an hour of tokenisation.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from headless.errors import HeadlessError

COMPRESSIONS = (".gz", ".xz", ".zst")
FORMATS = (".txt", ".jsonl", ".parquet")
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class Source:
    """One resolved input: kind is "file", "hf-disk", "hf-hub" or "default"."""

    kind: str
    location: str
    fmt: str = ""            # ".txt" / ".jsonl" / ".parquet" for files
    compression: str = ""    # "" or one of COMPRESSIONS

    def describe(self) -> dict[str, Any]:
        """Manifest entry; files carry size and mtime (the default corpus, the Python version) so
        that a changed input re-triggers preparation."""
        entry: dict[str, Any] = {"kind": self.kind, "location": self.location}
        if self.kind == "file":
            st = os.stat(self.location)
            entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        elif self.kind == "default":                 # the corpus is Python's own documentation
            import platform
            entry["python"] = platform.python_version()
        return entry


def file_format(path: Path) -> tuple[str, str] | None:
    """(format, compression) from the name, or None when the type is unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else ""
    if suffixes and suffixes[-1] in FORMATS:
        return suffixes[-1], compression
    return None


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def _file_source(path: Path) -> Source:
    fmt = file_format(path)
    if fmt is None:
        raise HeadlessError(f"unknown file type: {path} (expected .txt, .jsonl or .parquet, "
                            f"optionally with .gz/.xz/.zst)")
    return Source("file", str(path), *fmt)


def resolve_inputs(inputs: Any) -> list[Source]:
    """Expand specs into sources, failing early on a missing path, empty glob or unknown type."""
    from headless.data.default_corpus import DEFAULT_CORPUS

    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs or [])
    if not inputs:
        inputs = [DEFAULT_CORPUS]
    sources: list[Source] = []
    for spec in inputs:
        text = str(spec)
        path = Path(text).expanduser()
        if text == DEFAULT_CORPUS and not path.exists():
            sources.append(Source("default", DEFAULT_CORPUS))
        elif text.startswith(HUB_PREFIX):
            sources.append(Source("hf-hub", text[len(HUB_PREFIX):]))
        elif path.is_dir():
            if _is_saved_dataset(path):
                sources.append(Source("hf-disk", str(path)))
                continue
            files = sorted(p for p in path.rglob("*") if p.is_file() and file_format(p) is not None
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                raise HeadlessError(f"no .txt/.jsonl/.parquet files under {path}")
            sources.extend(_file_source(p) for p in files)
        elif path.is_file():
            sources.append(_file_source(path))
        elif globlib.has_magic(text):
            matches = sorted(Path(p) for p in globlib.glob(os.path.expanduser(text), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise HeadlessError(f"no file matches {text}")
            sources.extend(_file_source(p) for p in files)
        else:
            raise HeadlessError(f"input not found: {text}")
    return sources


_BYTES_READ = [0]


def bytes_read() -> int:
    """Bytes read so far from input files, as stored on disk (compressed bytes for .gz/.xz/.zst):
    what `headless prepare`'s progress bar counts against the inputs' total size."""
    return _BYTES_READ[0]


class _CountingFile(io.FileIO):
    def readinto(self, buffer) -> int | None:
        n = super().readinto(buffer)
        _BYTES_READ[0] += n or 0
        return n

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        _BYTES_READ[0] += len(data or b"")
        return data

    def readall(self) -> bytes:
        data = super().readall()
        _BYTES_READ[0] += len(data)
        return data


@contextlib.contextmanager
def _open_binary(source: Source) -> Iterator[IO[bytes]]:
    with io.BufferedReader(_CountingFile(source.location, "rb")) as raw:
        if source.compression == ".gz":
            import gzip
            with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
                yield fh
        elif source.compression == ".xz":
            import lzma
            try:  # lzma's errors are no OSError: a .xz that is not xz would be a traceback
                with lzma.LZMAFile(raw, "rb") as fh:
                    yield fh
            except lzma.LZMAError as err:
                raise HeadlessError(f"cannot read {source.location}: not valid xz data ({err})") from None
        elif source.compression == ".zst":
            import zstandard
            try:
                with io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)) as fh:  # adds line iteration
                    yield fh
            except zstandard.ZstdError as err:
                raise HeadlessError(f"cannot read {source.location}: not valid zstd data ({err})") from None
        else:
            yield raw


def _decode(data: bytes, name: str, base_offset: int = 0) -> str:
    """UTF-8 text, or a one-line error naming the file and the byte offset of the problem."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise HeadlessError(f"{name} looks binary (NUL byte at offset {base_offset + nul}); expected UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HeadlessError(f"{name} is not valid UTF-8 (byte offset {base_offset + err.start})") from None


def _read_txt(source: Source, split_paragraphs: bool) -> Iterator[str]:
    try:
        with _open_binary(source) as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise HeadlessError(f"cannot read {source.location}: {err}") from None
    text = _decode(data, source.location).removeprefix("\ufeff")
    if split_paragraphs:
        import re
        yield from re.split(r"\n[ \t]*\n", text)
    else:
        yield text


def _read_jsonl(source: Source, text_field: str) -> Iterator[str]:
    name = source.location
    offset = 0
    try:
        with _open_binary(source) as fh:
            for lineno, raw in enumerate(fh, start=1):
                line = _decode(raw, f"{name}:{lineno}", offset)
                offset += len(raw)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise HeadlessError(f"{name}:{lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict) or text_field not in record:
                    raise HeadlessError(f"{name}:{lineno}: no field {text_field!r} (use --text-field)")
                value = record[text_field]
                if not isinstance(value, str):
                    raise HeadlessError(f"{name}:{lineno}: field {text_field!r} is not a string")
                yield value
    except (OSError, EOFError) as err:
        raise HeadlessError(f"cannot read {name}: {err}") from None


def _read_parquet(source: Source, text_field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if source.compression:
            with _open_binary(source) as fh:
                handle: Any = io.BytesIO(fh.read())
        else:
            handle = source.location
        pf = pq.ParquetFile(handle)
    except (OSError, EOFError, pa.ArrowException) as err:
        raise HeadlessError(f"cannot read parquet file {source.location}: {err}") from None
    if text_field not in pf.schema_arrow.names:
        raise HeadlessError(f"{source.location}: no column {text_field!r} (columns: "
                            f"{', '.join(pf.schema_arrow.names)}; use --text-field)")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if value is not None:
                yield str(value)


def _read_hf(dataset: Any, text_field: str, name: str) -> Iterator[str]:
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise HeadlessError(f"{name} has splits {', '.join(dataset)}; none is 'train'")
        dataset = dataset["train"]
    if text_field not in dataset.column_names:
        raise HeadlessError(f"{name}: no column {text_field!r} (columns: {', '.join(dataset.column_names)})")
    for batch in dataset.iter(batch_size=1024):
        yield from (t for t in batch[text_field] if t is not None)


def _read_hub(spec: str, text_field: str) -> Iterator[str]:
    import datasets

    if datasets.config.HF_HUB_OFFLINE:
        raise HeadlessError(f"dataset hf:{spec} needs the Hugging Face Hub but HF_HUB_OFFLINE is set; "
                            "save it locally and pass the path")
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    try:
        dataset = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as err:  # noqa: BLE001 - datasets raises many types when offline
        raise HeadlessError(f"could not load dataset {name!r} from the Hugging Face Hub (offline?): "
                            f"{type(err).__name__}; save it locally and pass the path") from None
    yield from _read_hf(dataset, text_field, f"hf:{spec}")


def iter_source(source: Source, *, text_field: str = "text", split_paragraphs: bool = False) -> Iterator[str]:
    """Every document of one source, as stored (empty ones included)."""
    if source.kind == "default":
        from headless.data.default_corpus import default_corpus_documents
        yield from default_corpus_documents()
    elif source.kind == "hf-hub":
        yield from _read_hub(source.location, text_field)
    elif source.kind == "hf-disk":
        from datasets import load_from_disk
        yield from _read_hf(load_from_disk(source.location), text_field, source.location)
    elif source.fmt == ".txt":
        yield from _read_txt(source, split_paragraphs)
    elif source.fmt == ".jsonl":
        yield from _read_jsonl(source, text_field)
    else:
        yield from _read_parquet(source, text_field)


def iter_documents(
    inputs: Any = None,
    *,
    text_field: str = "text",
    split_paragraphs: bool = False,
    sources: Iterable[Source] | None = None,
) -> Iterator[str]:
    """Non-empty documents of every input in order; HeadlessError if there are none at all.

    `inputs=None` reads the embedded default corpus.  A `.txt` file is one document unless
    `split_paragraphs` (then blank lines separate documents).
    """
    resolved = list(sources) if sources is not None else resolve_inputs(inputs)
    count = 0
    for source in resolved:
        for doc in iter_source(source, text_field=text_field, split_paragraphs=split_paragraphs):
            if doc.strip():
                count += 1
                yield doc
    if count == 0:
        names = ", ".join(s.location for s in resolved[:3]) + (" ..." if len(resolved) > 3 else "")
        raise HeadlessError(f"empty corpus: no non-empty document in {names}")
