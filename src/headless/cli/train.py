"""`headless pretrain` and `headless finetune-head`."""

from __future__ import annotations

import argparse

from headless.cli.options import add_config_options, add_progress_flag

PRETRAIN_EPILOG = """examples:
  headless pretrain                                   # tiny headless encoder on the embedded corpus
  headless pretrain --preset tiny --flavour vanilla   # its vanilla twin
  headless pretrain --preset pythia-70m --data .data/enwiki-neox max_steps=2000
  headless pretrain --preset tiny-gpt --data .data/wiki --optim.lr 1e-3 --max-steps 500
  headless pretrain --run-dir runs/my-run --resume    # continue exactly where it stopped
  torchrun --nproc_per_node 8 -m headless pretrain --preset bert-base distributed=ddp objective.negatives=global
Every config field below is an option (--optim.lr 1e-3, --max_steps 10 or --max-steps 10) and a
key=value override (optim.lr=1e-3), in any order; `--show-config` prints the resolved config.
Defaults shown are the dataclass defaults; the preset may change them.
With --data, data.seq_len follows the dataset and a preset's model.max_position_embeddings grows to fit."""

PRESETS = "tiny, tiny-gpt, bert-small, bert-base, pythia-70m, pythia-160m, multilingual"
# fields that have their own options (or that a run sets itself)
OWN_OPTIONS = {"flavour", "run_dir", "preset", "progress"}


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain a headless (or vanilla) language model",
                              description="Pretrain a language model with Contrastive Weight Tying "
                              "(flavour headless) or its vanilla twin.", epilog=PRETRAIN_EPILOG,
                              usage="headless pretrain [--preset P] [--data DIR] [--run-dir DIR] [options] "
                                    "[--KEY VALUE | KEY=VALUE ...]",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-3")
    p.add_argument("--preset", default=None, help=f"preset name ({PRESETS}) or a YAML path; default: tiny "
                   "(also when only --config is given)")
    p.add_argument("--config", default=None, help="a YAML config file applied on top of the preset")
    p.add_argument("--flavour", "--flavor", choices=["headless", "vanilla"], default=None,
                   help="headless (CWT, no vocabulary head) or vanilla (cross-entropy head); default headless")
    p.add_argument("--data", default=None, help="a prepared dataset directory (headless prepare); = data.path")
    p.add_argument("--run-dir", "--run_dir", default=None,
                   help="where the run writes (default runs/<preset>-<flavour>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    add_progress_flag(p, "no progress bar (logs still go to metrics.jsonl)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    add_config_options(p, skip=OWN_OPTIONS, aliases={"optim.lr": ["--lr"]})
    p.set_defaults(func=_pretrain)

    f = subparsers.add_parser("finetune-head", help="HLM+FT: add an LM head to a headless decoder and fine-tune it",
                              description="Give a headless decoder (run dir or exported HF dir) a new LM head "
                              "initialised from its input embeddings and fine-tune with next-token cross-entropy. "
                              "The run (checkpoints, logs) goes to runs/, only the final model to OUTPUT.",
                              usage="headless finetune-head MODEL OUTPUT --data DIR [options] [--KEY VALUE | KEY=VALUE ...]")
    f.add_argument("model", help="a headless decoder: run directory or exported HF directory")
    f.add_argument("output", help="directory for the fine-tuned causal LM (HF format)")
    f.add_argument("--data", required=True, help="a dataset prepared with the model's tokenizer")
    f.add_argument("--tokens", type=float, default=5e6, help="token budget of the fine-tuning (default 5e6)")
    f.add_argument("--probe", action="store_true", help="train only the new head (backbone frozen)")
    f.add_argument("--batch-size", "--batch_size", type=int, default=8, help="sequences per step (default 8)")
    f.add_argument("--lr", "--optim.lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    f.add_argument("--warmup-steps", "--warmup_steps", "--optim.warmup_steps", "--optim.warmup-steps", type=int,
                   default=None, help="default: a tenth of the steps, at most 2000")
    f.add_argument("--run-dir", "--run_dir", default=None,
                   help="the fine-tuning run (default runs/<OUTPUT name>-finetune-head)")
    f.add_argument("--device", default="auto")
    f.add_argument("--seed", type=int, default=0)
    add_progress_flag(f, "no progress bar (logs still go to metrics.jsonl)")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    add_config_options(f, skip=OWN_OPTIONS | {"batch_size", "optim.lr", "optim.warmup_steps", "device", "seed",
                                              "flavour", "data.path", "model.init_from", "max_steps"})
    f.set_defaults(func=_finetune)


def _pretrain(args) -> int:
    import yaml

    from headless.config import load_config
    from headless.errors import HeadlessError
    from headless.train.loop import pretrain, resume_run

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.quiet:
        overrides.append("progress=false")
    if args.resume:
        if not args.run_dir:
            raise HeadlessError("--resume needs --run-dir RUN_DIR")
        if args.preset or args.config or args.flavour or args.data:
            raise HeadlessError("--resume takes its config from RUN_DIR/config.yaml; drop --preset/--config/--flavour/--data")
        overrides = [o for o in overrides if not o.startswith("run_dir=")]
        summary = resume_run(args.run_dir, overrides)
        print(f"done: {summary['steps']} steps; summary in {summary['run_dir']}/summary.md")
        return 0
    config = load_config(args.preset or "tiny", args.config, overrides, args.flavour)
    if args.show_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    summary = pretrain(config, resume=args.resume)
    if summary.get("run_dir"):
        print(f"done: {summary['steps']} steps; summary in {summary['run_dir']}/summary.md")
    return 0


def _finetune(args) -> int:
    import math

    from headless.errors import HeadlessError
    from headless.finetune import finetune_head

    if not (math.isfinite(args.tokens) and args.tokens >= 1):
        raise HeadlessError(f"--tokens must be a token budget >= 1, got {args.tokens:g}")
    if args.batch_size < 1:
        raise HeadlessError(f"--batch-size must be >= 1, got {args.batch_size}")

    finetune_head(args.model, args.output, data=args.data, tokens=int(args.tokens), probe=args.probe,
                  batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps, run_dir=args.run_dir,
                  device=args.device, seed=args.seed, overrides=args.overrides, progress=not args.quiet)
    print(f"fine-tuned causal LM written to {args.output}")
    return 0
