"""Which code made a result: the source fingerprint and finding its commit (headless.provenance)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from headless.provenance import source_fingerprint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "src" / "headless"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_fingerprint_follows_the_code_and_nothing_else(tmp_path):
    package = _package(tmp_path, {"a.py": "x = 1\n", "presets/p.yaml": "lr: 1\n"})
    first = source_fingerprint(package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"\0compiled")
    (package / "notes.txt").write_text("not code")
    assert source_fingerprint.__wrapped__(package) == first  # caches and other files do not count
    (package / "presets" / "p.yaml").write_text("lr: 2\n")
    assert source_fingerprint.__wrapped__(package) != first  # a preset decides a result too
    assert len(first) == 16 and int(first, 16) >= 0


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_source_commit_names_the_commits_that_hold_a_fingerprint(tmp_path, capsys):
    import source_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    git("init", "-q")
    package = _package(tmp_path, {"a.py": "x = 1\n"})
    old = source_fingerprint.__wrapped__(package)
    git("add", "-A"); git("commit", "-qm", "first")
    _package(tmp_path, {"a.py": "x = 2\n"})
    git("add", "-A"); git("commit", "-qm", "second")
    (tmp_path / "README.md").write_text("docs only")
    git("add", "-A"); git("commit", "-qm", "third, docs")

    assert source_commit.main([old, "--repo", str(tmp_path)]) == 0
    assert [line.split(" ", 2)[2] for line in capsys.readouterr().out.splitlines()] == ["first"]
    new = source_fingerprint.__wrapped__(package)
    assert source_commit.main([new, "--repo", str(tmp_path)]) == 0
    assert [line.split(" ", 2)[2] for line in capsys.readouterr().out.splitlines()] == ["third, docs", "second"]
    assert source_commit.main(["0" * 16, "--repo", str(tmp_path)]) == 1
    assert "no commit among the last 200" in capsys.readouterr().err


def test_version_names_the_source(capsys):
    import headless
    from headless.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"headless {headless.__version__} (source {source_fingerprint()})"
