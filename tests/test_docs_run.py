"""Docs that run (issue #27, item 1): every bash / sh / python block of the user docs (README.md,
docs/guide, docs/reference, docs/contributing.md, docs/requirements.md; not docs/results, which are lab
records) is marked, directly above its fence, `<!-- doc-test: run -->` or `<!-- doc-test: skip REASON -->`.
An unmarked block fails here, so no new example can rot silently; the `run` ones run here, as written
but for the few size and budget substitutions of `SIZES`, on the synthetic fixtures.

Each page runs in its own directory beside a `../shared/data` laid out like the real one (the fixtures
of tests/fixtures.py, tokenizers trained on their corpus, enwiki-style .jsonl.xz shards), so the docs'
paths resolve unchanged; `headless` on PATH is `python -m headless` of this checkout. A page's blocks
run in page order in that directory: a later block may read what an earlier one wrote.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = {"bash", "sh", "python"}
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*doc-test:\s*(\S+)\s*(.*?)\s*-->\s*$")

# Sizes and budgets only: (text in the page's `run` blocks, what the test runs instead). Every entry
# must still match (test_every_substitution_still_applies), so the table cannot go stale.
SIZES: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        ("--seq-len 2048", "--seq-len 64"),
        ("--preset pythia-70m", "--preset tiny-gpt"),
        ("max_steps=2000", "max_steps=3 batch_size=4 tensorboard=false"),
        ("max_steps=4000", "max_steps=5"),
        ("--tokens 5e6", "--tokens 2e3 --batch-size 4"),
        ("--preset bert-small", "--preset tiny"),
        ("max_steps=1000", "max_steps=2 batch_size=4 tensorboard=false"),
        ("--tasks sst2,mrpc,stsb,rte,wnli", "--tasks rte,wnli"),
    ],
    "docs/guide/data.md": [
        ("--seq-len 2048", "--seq-len 64"),
        ("--vocab-size 8192", "--vocab-size 512"),
        ("batch_size=8", "batch_size=4"),
    ],
    "docs/guide/hf-trainer.md": [
        ("max_steps=1000", "max_steps=2"),
        ("per_device_train_batch_size=32", "per_device_train_batch_size=4"),
    ],
}


@dataclass
class Block:
    page: str
    line: int       # of the opening fence, 1-based
    language: str
    marker: str | None  # "run", "skip", or None when unmarked
    reason: str
    code: str


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md")),
            *sorted((ROOT / "docs" / "reference").glob("*.md")), ROOT / "docs" / "contributing.md",
            ROOT / "docs" / "requirements.md"]


def code_blocks(page: Path, name: str | None = None) -> list[Block]:
    """The bash / sh / python blocks of a page with the marker above each (blank lines allowed between)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence[0] * len(fence)):
            end += 1
        if language in LANGUAGES:
            above = i - 1
            while above >= 0 and not lines[above].strip():
                above -= 1
            marker = MARKER.match(lines[above]) if above >= 0 else None
            code = textwrap.dedent("\n".join(lines[i + 1:end])) + "\n"
            blocks.append(Block(name or str(page), i + 1, language, marker and marker.group(1),
                                marker.group(2) if marker else "", code))
        i = end + 1
    return blocks


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def marker_problems(blocks: list[Block]) -> list[str]:
    problems = []
    for b in blocks:
        where = f"{b.page}:{b.line} ({b.language})"
        if b.marker is None:
            problems.append(f"{where}: no <!-- doc-test: run --> or <!-- doc-test: skip REASON --> above it")
        elif b.marker not in ("run", "skip"):
            problems.append(f"{where}: unknown marker {b.marker!r} (run or skip)")
        elif b.marker == "skip" and not b.reason:
            problems.append(f"{where}: a skip needs a reason")
        elif b.marker == "run" and b.reason:
            problems.append(f"{where}: `run` takes no reason ({b.reason!r})")
    return problems


def test_every_block_is_marked():
    problems = [p for page in doc_pages() for p in marker_problems(code_blocks(page, _name(page)))]
    assert not problems, "unmarked or badly marked code blocks:\n" + "\n".join(problems)


def test_the_marker_check_sees_an_unmarked_block(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- doc-test: run -->\n\n```bash\necho a\n```\n\n```python\nprint(1)\n```\n"
                    "<!-- doc-test: skip -->\n```sh\nx\n```\n<!-- doc-test: skip needs a GPU -->\n```bash\ny\n```\n"
                    "```yaml\nnot: checked\n```\n1. a step:\n\n   <!-- doc-test: run -->\n   ```python\n   z = 1\n   ```\n")
    blocks = code_blocks(page, "p.md")
    assert [(b.line, b.marker, b.reason) for b in blocks] == [
        (3, "run", ""), (7, None, ""), (11, "skip", ""), (15, "skip", "needs a GPU"), (24, "run", "")]
    assert blocks[-1].code == "z = 1\n"
    assert [p.split(":")[1] for p in marker_problems(blocks)] == ["7 (python)", "11 (sh)"]


def test_every_substitution_still_applies():
    stale = []
    for page, table in SIZES.items():
        text = "".join(b.code for b in code_blocks(ROOT / page) if b.marker == "run")
        stale += [f"{page}: {old!r}" for old, _ in table if old not in text]
    assert not stale, "SIZES entries that no `run` block of their page contains any more:\n" + "\n".join(stale)


# ------------------------------------------------------------------------------------------------
# running them


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory, fixture_data, fixture_tokenizers) -> Path:
    """`root/shared/data` laid out like ../shared/data, a `headless` shim in `root/bin`, a cache."""
    root = tmp_path_factory.mktemp("docs-run")
    data = root / "shared" / "data"
    shutil.copytree(fixture_data["root"], data)
    neox = data / "tokenizers" / "gpt-neox-20b"
    neox.mkdir(parents=True)
    shutil.copy(fixture_tokenizers["bpe"] / "tokenizer.json", neox / "tokenizer.json")
    bert = data / "tokenizers" / "bert-base-uncased"
    bert.mkdir(parents=True)
    vocab = json.loads((fixture_tokenizers["wordpiece"] / "tokenizer.json").read_text())["model"]["vocab"]
    (bert / "vocab.txt").write_text("".join(f"{t}\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
    lines = fixture_data["corpus"].read_bytes().splitlines(keepends=True)
    shards = {"train/enwiki-000": lines[:150], "train/enwiki-001": lines[150:300],
              "validation/enwiki-029": lines[300:]}
    for name, part in shards.items():
        (data / "enwiki" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "enwiki" / f"{name}.jsonl.xz").write_bytes(lzma.compress(b"".join(part)))
    (data / "MANIFEST.md").write_text("synthetic fixtures (tests/fixtures.py), laid out like ../shared/data\n")
    shim = root / "bin" / "headless"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m headless "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


def _substitute(code: str, page: str) -> str:
    for old, new in SIZES.get(page, []):
        code = code.replace(old, new)
    return code


def run_page(page: str, root: Path, path: Path | None = None) -> None:
    """Run the page's `run` blocks in order in a fresh directory beside root/shared/data."""
    blocks = [b for b in code_blocks(path or ROOT / page, page) if b.marker == "run"]
    work = root / re.sub(r"\W", "-", page)
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "HEADLESS_SHARED_DATA": str(root / "shared" / "data"), "HEADLESS_CACHE": str(root / "cache"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"}
    for block in blocks:
        script = work / f"block-{block.line}.{'py' if block.language == 'python' else 'sh'}"
        script.write_text(_substitute(block.code, page), encoding="utf-8")
        command = [sys.executable, script.name] if block.language == "python" else ["bash", "-euo", "pipefail",
                                                                                     script.name]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"{page}:{block.line} failed (exit {done.returncode}); ran:\n"
                                      f"{script.read_text()}\nstdout:\n{done.stdout[-3000:]}\n"
                                      f"stderr:\n{done.stderr[-5000:]}")


RUN_PAGES = [_name(p) for p in doc_pages() if any(b.marker == "run" for b in code_blocks(p))]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_docs_run(page, docs_root):
    run_page(page, docs_root)


def test_a_failing_block_fails_the_page(docs_root, tmp_path):
    """bash runs with -e (a failing command stops the block) and a later block sees an earlier one's files."""
    page = tmp_path / "p.md"
    page.write_text("<!-- doc-test: run -->\n```bash\nheadless --help > help.txt\n```\n"
                    "<!-- doc-test: run -->\n```python\nassert 'pretrain' in open('help.txt').read()\n```\n")
    run_page("ok.md", docs_root, page)
    page.write_text("<!-- doc-test: run -->\n```bash\nfalse\necho reached\n```\n")
    with pytest.raises(AssertionError, match="failed"):
        run_page("bad.md", docs_root, page)
