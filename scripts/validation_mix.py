"""How mixed are a prepared multilingual dataset's batches: validation in stored order, validation
in the trainer's fixed shuffled order, and a training batch (the share of each batch's main script).

    python scripts/validation_mix.py [--data-root ../shared/data] [--work-dir runs/reproduce]

Prepares (or reuses) the multilingual study's data in WORK_DIR, then classifies every sequence by
its most frequent script: Latin, Hangul (ko), kana (ja), or CJK ideographs. Why it matters: CWT's
in-batch loss depends on a batch's mix, a vocabulary head's does not (docs/guide/reproduction.md).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from headless.data.loader import BatchIterator, PackedDataset
from headless.lab.reproduce import load_study
from headless.lab.reproduce.data import prepare_study_data


def script(text: str) -> str:
    counts: collections.Counter = collections.Counter()
    for ch in text:
        o = ord(ch)
        if 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
            counts["ko"] += 1
        elif 0x3040 <= o <= 0x30FF:
            counts["ja"] += 1
        elif 0x4E00 <= o <= 0x9FFF:
            counts["cjk"] += 1
        elif ch.isalpha():
            counts["latin"] += 1
    return counts.most_common(1)[0][0] if counts else "none"


def batch_mix(dataset: PackedDataset, batch_size: int, batches: int, shuffle: bool) -> list[collections.Counter]:
    it = BatchIterator(dataset, batch_size, seed=0, shuffle=shuffle, rank=0, world_size=1)
    tok = dataset.tokenizer
    return [collections.Counter(script(tok.decode(row.tolist())) for row in next(it).numpy()) for _ in range(batches)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--work-dir", default="runs/reproduce/multilingual")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    config = load_study("multilingual", overrides=[f"data_root={args.data_root}", "progress=false"])
    data = prepare_study_data(config, Path(args.work_dir), 128)
    val, train = PackedDataset(data.dataset, "validation"), PackedDataset(data.dataset, "train")
    size = min(args.batch_size, len(val))
    count = min(args.batches, len(val) // size)
    print(f"{len(val)} validation sequences: {count} batches of {size}")
    for name, mixes in [("validation, stored order", batch_mix(val, size, count, False)),
                        ("validation, shuffled (the trainer now)", batch_mix(val, size, count, True)),
                        ("training", batch_mix(train, size, count, True))]:
        share = np.mean([m.most_common(1)[0][1] / size for m in mixes])
        print(f"{name}: main script {100 * share:.0f} % of a batch on average; first batch {dict(mixes[0])}")


if __name__ == "__main__":
    main()
