"""Which code made a result: a fingerprint of the installed package's own files.

The GPU machine runs a copy of the working tree without its git history, so a piece or a run
cannot name its commit; it records this instead (run summaries, study pieces, `headless --version`).
Two results with the same fingerprint were made by the same library code; `scripts/source_commit.py`
finds the commits of a checkout that have it.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SUFFIXES = (".py", ".yaml", ".tsv")  # code, presets, evaluation tables: what decides a result


def fingerprint_files(files: dict[str, bytes]) -> str:
    """16 hex digits of sha256 over (relative path, content), in path order."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def source_fingerprint(package: Path = PACKAGE) -> str:
    """The fingerprint of `package`'s files (compiled caches and data left out)."""
    files = {p.relative_to(package).as_posix(): p.read_bytes() for p in package.rglob("*")
             if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts}
    return fingerprint_files(files)
