"""The plateau probes' table: per run, accuracy every 1k steps, collapse, largest gradient norm, the
output geometry at the end, and when the run left the MLM plateau (`headless.train.plateau`).

    python scripts/plateau_table.py docs/results/2026-12-05-plateau/*.jsonl [--ms-per-step vanilla=18.5,...]

`--ms-per-step NAME=MS` converts the exit step into GPU seconds for runs whose name starts with NAME
(the probes ran side by side, so their own wall times are shared time): take the step times of
`scripts/step_times_ml.sh` on the same GPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headless.train.plateau import plateau_exit


def row(path: Path, ms_per_step: dict[str, float]) -> str:
    lines = [json.loads(line) for line in path.open()]
    header, points = lines[0], lines[1:]
    acc = {p["step"]: p["acc"] for p in points}
    config = header["config"]
    info = plateau_exit([p["step"] for p in points], [p["acc"] for p in points],
                        config["optim"]["warmup_steps"], config.get("plateau_patience", 4000))
    collapse = next((p["step"] for p in points if p["acc"] < 0.01 and p["step"] > 500), None)
    last = [p for p in points if "o_cos" in p][-1]
    name = path.stem
    ms = next((v for k, v in ms_per_step.items() if name.startswith(k)), None)
    if info["left_at"] is None:
        left = "never" if info["level"] is not None else "too short"
    else:
        left = f"{info['left_at']:,}" + (f" ({info['left_at'] * ms / 1000:.0f} s)" if ms else "")
    cells = [name, f"{points[-1]['step']:,}"]
    cells += [f"{acc[s]:.3f}" if s in acc else "–" for s in (1000, 2000, 3000, 4000, 5000)]
    cells += [f"{points[-1]['acc']:.3f}", f"{collapse:,}" if collapse else "–", left,
              f"{max(p['grad_norm'] for p in points):,.1f}", f"{last['o_cos']:.2f}", f"{last['o_norm']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--ms-per-step", default="", help="NAME=MS[,NAME=MS]: solo step times per run-name prefix")
    args = parser.parse_args()
    ms = {k: float(v) for k, v in (item.split("=") for item in args.ms_per_step.split(",") if item)}
    print("| run | steps | 1k | 2k | 3k | 4k | 5k | last | collapse at | left the plateau at | max grad norm "
          "| output cosine | output norm |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.runs:
        print(row(path, ms))


if __name__ == "__main__":
    main()
