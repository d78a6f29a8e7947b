"""Time the trainer's MLM input preparation (`train.step.make_inputs`) for one micro-batch on CPU.

    python scripts/bench_masking.py [--batch 256] [--seq 128] [--masking bernoulli|exact|static]

One thread, BERT's vocabulary size, median of 30 calls after 3 warm-ups.  Run the same script on an
older checkout (PYTHONPATH=OLD/src) to compare versions: `make_inputs` kept its signature.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from headless.config import load_config
from headless.train.step import DataInfo, make_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--masking", default=None, help="objective.masking (newer versions only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [f"objective.masking={args.masking}"] if args.masking else []
    config = load_config("bert-small", overrides=overrides)
    info = DataInfo(vocab_size=30522, eos_token_id=102, mask_token_id=103, special_token_ids=[0, 100, 101, 102, 103])
    batch = torch.randint(999, 30522, (args.batch, args.seq))
    times = []
    for step in range(33):
        start = time.perf_counter()
        make_inputs(batch, config, info, step=step, first_row=0)
        times.append(time.perf_counter() - start)
    print(f"make_inputs {args.batch} x {args.seq} ({args.masking or 'default'} masking): "
          f"{statistics.median(times[3:]) * 1e3:.1f} ms (median of 30, one thread)")


if __name__ == "__main__":
    main()
