"""The `headless` command.  Each subcommand lives in its own module of this package, parses its
arguments and calls one library function; nothing here does real work.

Conventions shared by every command (headless.cli.options): config fields as `--optim.lr 1e-3`
or `optim.lr=1e-3` in any order, `--no-progress` (alias `--quiet`, `-q`), one-line errors with a
"did you mean" for unknown options, exit status 2 for any bad input.

A command module exposes `register(subparsers)`, which adds its parser(s) and sets `func` to a
callable taking the parsed `argparse.Namespace` and returning an exit status (or None for 0).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from headless.errors import HeadlessError

# Order = order in `headless --help`.  A module that is missing is skipped, so that a partial
# install (or a command still being written) never breaks the others.
COMMAND_MODULES = [
    "headless.cli.data",       # prepare, tokenizer train
    "headless.cli.train",      # pretrain, finetune-head
    "headless.cli.export",     # export
    "headless.cli.eval",       # eval lambada/zeroshot, glue, xnli, analyze
    "headless.cli.classify",   # glue, xnli (encoder fine-tuning)
    "headless.cli.bench",      # bench
    "headless.cli.reproduce",  # reproduce, report
]


def build_parser() -> argparse.ArgumentParser:
    from headless.cli.options import Parser

    parser = Parser(
        prog="headless",
        description="Pretrain headless language models with Contrastive Weight Tying (CWT).",
    )
    from headless import __version__

    from headless.provenance import source_fingerprint

    parser.add_argument("--version", action="version",
                        version=f"headless {__version__} (source {source_fingerprint()})")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from headless.cli.options import parse

    parser = build_parser()
    args = parse(parser, argv)  # one-line errors, "did you mean", key=value anywhere (cli/options.py)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = args.func(args)
    except HeadlessError as err:
        print(f"headless: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # an interrupted run: 128 + the signal
    except KeyboardInterrupt:
        print("headless: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)
