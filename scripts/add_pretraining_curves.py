"""Add a finished run's pretraining curves to a piece written before pieces carried them.

    python scripts/add_pretraining_curves.py PIECE.json RUN/metrics.jsonl

Pieces now carry `pretrain.curves` (`headless.lab.reproduce.piece.pretraining_curves`), which
`headless report` plots as <study>-pretraining.png. For older pieces whose run's metrics.jsonl
was kept, this adds the same curves from it and records where they came from
(`pretrain.curves_source`); nothing else in the piece changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from headless.files import atomic_write_json
from headless.lab.reproduce.piece import pretraining_curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("piece")
    parser.add_argument("metrics")
    args = parser.parse_args()
    piece = json.loads(Path(args.piece).read_text(encoding="utf-8"))
    records = [json.loads(line) for line in Path(args.metrics).read_text(encoding="utf-8").splitlines() if line]
    curves = pretraining_curves(records)
    train = curves.get("train", {}).get("step", [])
    steps, every = piece["pretrain"]["steps"], piece["train_config"].get("log_every", 1)
    if not train or not 0 <= steps - train[-1] < every:
        raise SystemExit(f"{args.metrics} does not end at the piece's {steps} steps (its last train step is "
                         f"{train[-1] if train else 'none'}, logged every {every}): not this piece's run")
    piece["pretrain"]["curves"] = curves
    piece["pretrain"]["curves_source"] = f"{Path(args.metrics).name}, added by scripts/add_pretraining_curves.py"
    atomic_write_json(Path(args.piece), piece)
    print(f"{args.piece}: {len(train)} train and {len(curves.get('val', {}).get('step', []))} validation points")


if __name__ == "__main__":
    main()
