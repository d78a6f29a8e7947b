"""Steady seconds per step of a finished run, from its own metrics.jsonl.

    python scripts/steady_step_time.py RUN/metrics.jsonl [--after 500]

The median over the windows between consecutive train log records that start at or after step
`--after` (past compilation and CUDA-graph capture).  This is how docs/guide/reproduction.md reads the
true step time of runs made before `measured_s_per_step` existed.
"""

from __future__ import annotations

import argparse
import json
import statistics


def steady_step_time(path: str, after: int = 500) -> tuple[float, int]:
    """(median seconds per step, number of windows)."""
    with open(path, encoding="utf-8") as handle:
        train = [r for r in map(json.loads, handle) if r.get("split") == "train"]
    windows = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:])
               if a["step"] >= after]
    if not windows:
        raise SystemExit(f"{path}: no train log windows after step {after}")
    return statistics.median(windows), len(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+")
    parser.add_argument("--after", type=int, default=500)
    args = parser.parse_args()
    for path in args.metrics:
        seconds, count = steady_step_time(path, args.after)
        print(f"{path}: {seconds * 1e3:.2f} ms per step (median of {count} windows after step {args.after})")


if __name__ == "__main__":
    main()
