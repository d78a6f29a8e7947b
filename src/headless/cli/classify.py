"""`headless eval glue` and `headless eval xnli` (hidden aliases `headless glue|xnli`): fine-tune an encoder
directory on classification benchmarks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from headless.cli.options import add_alias, add_precision, add_progress_flag, check_precision
from headless.errors import HeadlessError


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def _common(parser: argparse.ArgumentParser, *, batch_help: str, epochs_help: str, lr_help: str) -> None:
    parser.add_argument("--seeds", default="0", help="comma-separated fine-tuning seeds (default 0); "
                        "tables report mean ± std over them")
    parser.add_argument("--epochs", type=int, help=epochs_help)
    parser.add_argument("--lr", type=float, help=lr_help)
    parser.add_argument("--batch-size", type=int, help=batch_help)
    parser.add_argument("--max-seq-len", type=int, default=128, help="truncate inputs (default 128)")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate on a fixed random subset of N examples")
    add_alias(parser, "--max-eval-examples", to="--limit", dest="limit", type=int)
    parser.add_argument("--train-limit", type=int, metavar="N", help="fine-tune on a fixed random subset of N examples")
    add_alias(parser, "--max-train-examples", to="--train-limit", dest="train_limit", type=int)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    add_precision(parser, choices=("fp32", "bf16"), help="bf16: bfloat16 autocast (GPU only); ")
    parser.add_argument("--workers", type=_positive, default=1,
                        help="fine-tune this many (task, seed) runs side by side, one process each; a small "
                             "model leaves a GPU mostly idle, so several can share it (default 1)")
    parser.add_argument("--output", type=Path, help="results directory (default: $HEADLESS_EVAL_RESULTS or ./eval-results, /MODEL_NAME)")
    add_progress_flag(parser, "no progress bars or per-epoch lines")


def register(subparsers) -> None:
    """`headless glue|xnli`: hidden aliases of `headless eval glue|xnli` (cli/eval.py adds those)."""
    add_glue(subparsers, hidden=True)
    add_xnli(subparsers, hidden=True)


def add_glue(subparsers, prog: str = "headless glue", hidden: bool = False) -> None:
    shown = {} if hidden else {"help": "fine-tune an encoder on GLUE; or `glue compare A.json B.json`"}
    glue = subparsers.add_parser(
        "glue", **shown,
        usage=f"{prog} MODEL_DIR [options]\n       {prog} compare A.json B.json [--output DIR]",
        description="Fine-tune a Hugging Face encoder directory on GLUE tasks (new classification "
                    "head, several seeds) and write glue.json + glue.md + glue.png.  `glue compare "
                    "A.json B.json` prints two results side by side and draws their differences.")
    glue.add_argument("target", nargs="+", metavar="MODEL_DIR",
                      help="a Hugging Face model directory (or: compare A.json B.json)")
    glue.add_argument("--tasks", help="comma-separated: cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte,wnli "
                      "(default: every task found in --data)")
    glue.add_argument("--recipe", choices=("standard", "paper"), default="standard",
                      help="standard: lr 2e-5, 3 epochs, linear decay, CE, wd 0.01, last epoch; paper: "
                           "lr 1e-5, 10 epochs, constant LR, balanced CE, wd 0, best epoch")
    glue.add_argument("--data", type=Path, metavar="DIR", help="GLUE TSV layout (TASK/train.tsv, TASK/dev.tsv); "
                      "default: $HEADLESS_SHARED_DATA/glue, else the nyu-mll/glue hub dataset")
    add_alias(glue, "--data-dir", to="--data", dest="data", type=Path)
    _common(glue, batch_help="default 32", epochs_help="override the recipe's epochs",
            lr_help="override the recipe's learning rate")
    glue.set_defaults(func=_glue)


def add_xnli(subparsers, prog: str = "headless xnli", hidden: bool = False) -> None:
    shown = {} if hidden else {"help": "fine-tune an encoder on XNLI (cross-lingual transfer or per language)"}
    xnli = subparsers.add_parser(
        "xnli", **shown, prog=prog,
        description="Fine-tune a Hugging Face encoder directory on XNLI and write xnli.json + xnli.md + xnli.png.")
    xnli.add_argument("model_dir", type=Path, metavar="MODEL_DIR")
    xnli.add_argument("--data", type=Path, default=None, metavar="DIR",
                      help="dev-<lang>.tsv files (split by line: first half fine-tunes, last half "
                           "evaluates; with train-<lang>.tsv beside them, those fine-tune and all of dev "
                           "evaluates) or the XNLI-1.0 xnli.dev.tsv + xnli.test.tsv (default: "
                           "$HEADLESS_SHARED_DATA/xnli, else the facebook/xnli hub dataset)")
    add_alias(xnli, "--data-dir", to="--data", dest="data", type=Path)
    xnli.add_argument("--mode", default="transfer", metavar="MODE[,MODE]",
                      help="transfer: fine-tune on English, evaluate every language; target: "
                           "fine-tune and evaluate within each language; all (translate-train-all): "
                           "fine-tune once on every language's items, evaluate every language; "
                           "both: transfer,target (default: transfer)")
    xnli.add_argument("--languages", help="comma-separated language codes (default: all found)")
    xnli.add_argument("--train-language", default="en", help="source language of transfer mode")
    xnli.add_argument("--hub-train", action="store_true",
                      help="fine-tune on the facebook/xnli train splits (MultiNLI and its machine "
                           "translations, ~393k pairs per language: the paper's protocol) and evaluate on "
                           "its validation splits; fetched once into ~/.cache/headless/eval-data/xnli-train. "
                           "Use --train-limit to fine-tune on a subset")
    _common(xnli, batch_help="default 128 (the paper's)", epochs_help="default 10",
            lr_help="default 2e-5")
    xnli.set_defaults(func=_xnli)


def _setup_logging(quiet: bool) -> None:
    """Our progress lines on stderr; other libraries' logging is left as they configure it."""
    logger = logging.getLogger("headless.eval")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("headless: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _output(args, model_dir: Path) -> Path:
    from headless.cli.options import results_dir

    return results_dir(args.output, model_dir)


def _glue(args: argparse.Namespace) -> int:
    from headless.eval.glue import compare_glue

    _setup_logging(args.quiet)
    if args.target[0] == "compare" and not Path("compare").is_dir():
        if len(args.target) != 3:
            raise HeadlessError("usage: headless glue compare A.json B.json")
        print(compare_glue(args.target[1], args.target[2], args.output), end="")
        return 0
    if len(args.target) != 1:
        raise HeadlessError("headless glue takes one MODEL_DIR (or: compare A.json B.json)")
    model_dir = Path(args.target[0])
    return _run_task("glue", model_dir, args, tasks=_split(args.tasks), recipe=args.recipe,
                     data_dir=args.data)


def _xnli(args: argparse.Namespace) -> int:
    _setup_logging(args.quiet)
    return _run_task("xnli", args.model_dir, args, data_dir=args.data, mode=args.mode,
                     languages=_split(args.languages), train_language=args.train_language,
                     hub_train=args.hub_train)


def _run_task(name: str, model_dir: Path, args: argparse.Namespace, **options) -> int:
    """A fine-tuning task of the registry (headless.eval.tasks) with the options both commands share."""
    from headless.eval.tasks import get_task

    task = get_task(name)
    result = task.run(model_dir, seeds=args.seeds, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      max_seq_len=args.max_seq_len, max_train_examples=args.train_limit,
                      max_eval_examples=args.limit, device=args.device,
                      bf16=check_precision(args, ("fp32", "bf16")) == "bf16",
                      output_dir=_output(args, model_dir), progress=not args.quiet, workers=args.workers,
                      **options)
    print(task.render(result), end="")
    return 0
