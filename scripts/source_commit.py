"""Which commits of this checkout hold the library code a result names by its source fingerprint.

    python scripts/source_commit.py FINGERPRINT [--last N] [--repo DIR]

Reads `src/headless` at each of the last N commits (default 200) of DIR (default: this checkout)
from git and prints those whose
files give FINGERPRINT (headless.provenance), newest first; exit status 1 when none does.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from headless.provenance import SUFFIXES, fingerprint_files  # noqa: E402

PREFIX = "src/headless/"


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def commit_fingerprint(repo: Path, commit: str) -> str:
    names = [n for n in git(repo, "ls-tree", "-r", "--name-only", commit, "--", PREFIX).decode().splitlines()
             if n.endswith(SUFFIXES) and "__pycache__" not in n]
    return fingerprint_files({n[len(PREFIX):]: git(repo, "show", f"{commit}:{n}") for n in names})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fingerprint")
    parser.add_argument("--last", type=int, default=200, help="how many commits back to look (default 200)")
    parser.add_argument("--repo", type=Path, default=ROOT, help="the git checkout (default: this one)")
    args = parser.parse_args(argv)
    found = [c for c in git(args.repo, "rev-list", f"--max-count={args.last}", "HEAD").decode().split()
             if commit_fingerprint(args.repo, c) == args.fingerprint]
    for commit in found:
        print(git(args.repo, "log", "-1", "--format=%h %cs %s", commit).decode().strip())
    if not found:
        print(f"no commit among the last {args.last} has source fingerprint {args.fingerprint}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
