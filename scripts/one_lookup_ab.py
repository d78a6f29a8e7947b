"""A/B of CWT's one embedding lookup (`LanguageModel.one_lookup`) against the two lookups before it,
through `headless bench`, in one process and on one machine: the step of the backbone alone and of
CWT, alternating the two paths `--repeats` times.

    python scripts/one_lookup_ab.py --preset tiny --vocab-size 250000 --batch-size 8 --seq-len 128 --device cpu
    python scripts/one_lookup_ab.py --preset multilingual --vocab-size 250048 --batch-size 128 --compile   # GPU
"""

from __future__ import annotations

import argparse

import headless.models as models
from headless.lab.bench import bench

ONE_LOOKUP = models.LanguageModel.one_lookup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--vocab-size", type=int, default=250000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="captured, as the trainer runs on CUDA")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    overrides = ["objective.masking=static"] + (["compile_mode=reduce-overhead"] if args.compile else [])
    for repeat in range(args.repeats):
        for path in ("one lookup", "two lookups"):
            models.LanguageModel.one_lookup = ONE_LOOKUP if path == "one lookup" else property(lambda self: False)
            rows = bench(args.preset, objectives=["backbone", "cwt"], vocab_sizes=[args.vocab_size],
                         batch_sizes=[args.batch_size], seq_len=args.seq_len, steps=args.steps, warmup=3,
                         device=args.device, compile=args.compile, overrides=overrides, progress=False)
            ms = {r["objective"]: r["step_ms"] for r in rows}
            print(f"repeat {repeat}, {path:11s}: backbone {ms['backbone']:8.2f} ms, cwt {ms['cwt']:8.2f} ms, "
                  f"cwt over the backbone {ms['cwt'] - ms['backbone']:+7.2f} ms", flush=True)
    models.LanguageModel.one_lookup = ONE_LOOKUP


if __name__ == "__main__":
    main()
