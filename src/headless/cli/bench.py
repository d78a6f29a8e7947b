"""`headless bench`."""

from __future__ import annotations

from headless.cli.options import add_config_options, add_progress_flag


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x]


def register(subparsers) -> None:
    from headless.lab.bench import OBJECTIVES

    p = subparsers.add_parser("bench", usage="headless bench [--preset P] [options] [--KEY VALUE | KEY=VALUE ...]", help="time headless vs vanilla training steps (tokens/s, MFU, memory)",
                              description="Full training steps of each objective on one backbone, side by side: "
                              "tokens/s, MFU, peak memory; table + JSON + PNG. Objectives: "
                              + ", ".join(f"{k} ({v[0]} {v[1]}, {v[2]})" for k, v in OBJECTIVES.items()))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--objectives", default="cwt,ce", help="comma-separated, from: " + ", ".join(OBJECTIVES))
    p.add_argument("--vocab-sizes", default=None, type=_ints,
                   help="comma-separated, e.g. 32768,50304,256000; default: the preset's vocabulary")
    p.add_argument("--batch-sizes", default="8", type=_ints, help="comma-separated micro-batch sizes")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--sync-debug", action="store_true",
                   help="also count the host-device synchronisations of one step, and where they happen (CUDA)")
    p.add_argument("--profile", action="store_true",
                   help="also run torch.profiler over 2 steps per case: top-kernel tables and GPU busy fraction")
    p.add_argument("--max-batch", action="store_true",
                   help="also search the largest micro-batch of each objective and V that trains (GPU); with "
                   "--compile each probe compiles")
    p.add_argument("--max-batch-eager", action="store_true",
                   help="--max-batch probes without torch.compile (seconds per probe instead of a compile each; "
                   "eager memory)")
    p.add_argument("--max-batch-seconds", type=float, default=300.0, metavar="S",
                   help="start no probe of a --max-batch search after S seconds (default 300): the answer is then "
                   "a lower bound")
    p.add_argument("--output", default=None, help="directory for bench.json, bench.md, bench.png")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_progress_flag(p)
    add_config_options(p, skip={"flavour", "run_dir", "preset", "progress", "device", "compile", "batch_size",
                                "data.seq_len", "max_steps"})
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from headless.lab.bench import bench, format_table

    rows = bench(args.preset, objectives=args.objectives.split(","), vocab_sizes=args.vocab_sizes,
                 batch_sizes=args.batch_sizes, seq_len=args.seq_len, steps=args.steps, warmup=args.warmup,
                 device=args.device, compile=args.compile, max_batch=args.max_batch,
                 max_batch_eager=args.max_batch_eager, max_batch_seconds=args.max_batch_seconds, overrides=args.overrides,
                 output=args.output, profile=args.profile, progress=not args.quiet,
                 sync_debug=args.sync_debug)
    print(format_table(rows))
    return 0
