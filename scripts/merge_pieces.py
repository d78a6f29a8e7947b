"""Bring the device calls' archives of one piece (or both twins of a seed) into a campaign folder.

    python scripts/merge_pieces.py CAMPAIGN_DIR ARCHIVE [ARCHIVE ...]

ARCHIVEs ($OUT/STUDY-FLAVOUR.tgz of scripts/reproduce_gpu.sh) in the order the calls ran.  For every
piece (STUDY-FLAVOUR-seedN.json) in them: the piece, its pretraining run's metrics and summary as
STUDY-FLAVOUR-seedN-pretrain-{metrics.jsonl,summary.md} (from the last archive that has them), and
the calls' logs, concatenated under a "# device call K" line each with the per-epoch "training data
ran out" lines left out, as STUDY-FLAVOUR-seedN.log (STUDY-seedN.log when the calls made both twins
of a seed).  Files already in the campaign are never replaced: a different one stops the merge with
one line, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

NOISE = "the training data ran out"


def read_archive(path: Path) -> dict[str, bytes]:
    """{file name: content} of an archive's files (one folder: STUDY or STUDY-TAG)."""
    try:
        with tarfile.open(path) as tar:
            return {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError) as err:
        raise SystemExit(f"merge_pieces.py: {path}: not a readable archive ({err})") from None


def plan(archives: list[Path]) -> dict[str, bytes]:
    """{campaign file name: content} for every piece in the archives."""
    contents = [read_archive(a) for a in archives]
    pieces: dict[str, bytes] = {}
    for files in contents:
        pieces.update({n: b for n, b in files.items() if n.endswith(".json") and "-seed" in n})
    if not pieces:
        raise SystemExit("merge_pieces.py: no piece (STUDY-FLAVOUR-seedN.json) in " + ", ".join(map(str, archives)))
    out: dict[str, bytes] = {}
    seeds: dict[int, set[str]] = {}
    for name, body in sorted(pieces.items()):
        piece = json.loads(body)
        stem, run = name[:-len(".json")], Path(piece["train_config"]["run_dir"]).name
        out[name] = body
        seeds.setdefault(piece["seed"], set()).add(piece["flavour"])
        for kind in ("metrics.jsonl", "summary.md"):
            found = [files[f"{run}-{kind}"] for files in contents if f"{run}-{kind}" in files]
            if found:
                out[f"{stem}-pretrain-{kind}"] = found[-1]
    study = json.loads(next(iter(pieces.values())))["study"]
    logs = [(i, n, b) for i, files in enumerate(contents, 1) for n, b in sorted(files.items()) if n.endswith(".log")]
    for seed, flavours in seeds.items():
        text = "".join(f"# device call {i} ({archives[i - 1]}: {n})\n"
                       + "".join(line for line in b.decode().splitlines(keepends=True) if NOISE not in line)
                       for i, n, b in logs)
        name = f"{study}-{next(iter(flavours))}-seed{seed}.log" if len(flavours) == 1 else f"{study}-seed{seed}.log"
        out[name] = text.encode()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("campaign", type=Path)
    parser.add_argument("archives", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if not args.campaign.is_dir():
        print(f"merge_pieces.py: {args.campaign} is not a campaign folder", file=sys.stderr)
        return 2
    files = plan(args.archives)
    clash = [n for n, body in files.items() if (args.campaign / n).exists() and (args.campaign / n).read_bytes() != body]
    if clash:
        print(f"merge_pieces.py: {args.campaign} already holds other {', '.join(clash)}; nothing written",
              file=sys.stderr)
        return 2
    for name, body in files.items():
        (args.campaign / name).write_bytes(body)
        print(f"{args.campaign / name} ({len(body):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
