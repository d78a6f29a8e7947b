"""One command-line convention for every subcommand, on plain argparse.

* Config fields are options generated from the `headless.config` dataclasses (the one source of
  truth): `--optim.lr 1e-3`, `--optim.lr=1e-3`, `--max_steps 10` and `--max-steps 10` all mean the
  override `optim.lr=1e-3` / `max_steps=10`; `key=value` overrides are accepted anywhere, also after
  options.  `--help` lists every field with the comment that documents it in config.py.
* Every parse error is one line and exit status 2; an unknown option gets a "did you mean".

Why not jsonargparse/tyro: the dataclasses stay plain (YAML presets, `key=value` and `--resume`
checks already read them), and argparse needs only this small layer to take litgpt-style options.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import re
import sys
import typing
from typing import Any, Iterable, Literal

BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`headless pretrain: error: ...`, exit 2); subparsers inherit it.
    No abbreviations: with an option per config field, a prefix would silently pick one of several."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = super().parse_known_args(args, namespace)
        if "_parser" not in vars(ns):  # the innermost (sub)parser that parsed: for suggestions
            ns._parser = self
        return ns, extras


# transformers.TrainingArguments / run_*.py spellings -> ours, first one the command has wins: people
# arrive from the HF examples with these in their fingers, and difflib alone points them astray
HF_SPELLINGS = {
    "learning_rate": ["--optim.lr", "--lr"],
    "output_dir": ["--run-dir", "--output"],
    "logging_dir": ["--run-dir", "--output"],
    "per_device_train_batch_size": ["--batch-size"],
    "per_device_eval_batch_size": ["--batch-size"],
    "train_batch_size": ["--batch-size"],
    "num_train_epochs": ["--epochs", "--max-steps", "--tokens"],
    "max_steps": ["--max-steps", "--steps", "--tokens"],
    "warmup_steps": ["--optim.warmup-steps", "--warmup-steps"],
    "weight_decay": ["--optim.weight-decay"],
    "lr_scheduler_type": ["--optim.schedule"],
    "gradient_accumulation_steps": ["--grad-accum"],
    "max_grad_norm": ["--optim.grad-clip"],
    "bf16": ["--precision"],
    "fp16": ["--precision"],
    "torch_dtype": ["--precision"],
    "logging_steps": ["--log-every"],
    "save_steps": ["--save-every"],
    "save_total_limit": ["--keep-last"],
    "eval_steps": ["--eval-every"],
    "disable_tqdm": ["--no-progress"],
    "max_seq_length": ["--data.seq-len", "--max-seq-len", "--seq-len"],
    "train_file": ["--data"],
    "dataset_name": ["--data"],
    "data_dir": ["--data"],
    "max_train_samples": ["--train-limit", "--limit"],
    "max_eval_samples": ["--limit"],
    "resume_from_checkpoint": ["--resume"],
    "report_to": ["--report-to"],
}


def add_alias(parser: argparse.ArgumentParser, *names: str, to: str, **kwargs) -> None:
    """Old spellings of option `to` (--data-dir for --data): accepted, hidden from --help, and never
    suggested themselves (a suggestion names the current spelling)."""
    parser.add_argument(*names, help=argparse.SUPPRESS, **kwargs)
    aliases = vars(parser).setdefault("_headless_aliases", {})
    aliases.update({n: to for n in names})


def suggest(option: str, parser: argparse.ArgumentParser) -> str:
    """` (did you mean --x?)` for an HF spelling of ours, else the closest option string of `parser`, or ''."""
    name = option.split("=", 1)[0]
    aliases = getattr(parser, "_headless_aliases", {})
    for ours in HF_SPELLINGS.get(name.lstrip("-").replace("-", "_"), []):
        if ours in parser._option_string_actions:
            return f" (did you mean {aliases.get(ours, ours)}?)"
    known = [s for s in parser._option_string_actions if s.startswith("--")]
    normalised: dict[str, str] = {}
    for s in known:  # suggest the dashed spelling (--max-steps) when both exist
        key = s.replace("_", "-")
        if key not in normalised or "_" in normalised[key]:
            normalised[key] = s
    close = difflib.get_close_matches(name.replace("_", "-"), list(normalised), n=1, cutoff=0.6)
    return f" (did you mean {aliases.get(normalised[close[0]], normalised[close[0]])}?)" if close else ""


def finish(args: argparse.Namespace, extras: list[str]) -> argparse.Namespace:
    """Leftover `key=value` words become overrides; anything else is a one-line error."""
    parser = getattr(args, "_parser", None)
    for word in extras:
        if word.startswith("-") and len(word) > 1 and not _is_number(word):
            parser.error(f"unrecognized option {word.split('=', 1)[0]}{suggest(word, parser)}")
        if "=" in word and hasattr(args, "overrides"):
            args.overrides.append(word)
        else:
            parser.error(f"unexpected argument {word!r}")
    if hasattr(args, "overrides"):
        args.overrides = (list(args.overrides or []) + list(getattr(args, "pushed_overrides", None) or [])
                          + list(getattr(args, "option_overrides", None) or []))
    return args


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------------
# config fields as options


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field: doc} from the `# comment` after each field in the class source (one source of truth)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs, above = {}, []
    for line in source.splitlines():
        comment = re.match(r"^\s{4}#\s*(.+)$", line)
        if comment:  # a comment on the line(s) above a field documents it too
            above.append(comment.group(1).strip())
            continue
        field_line = re.match(r"^\s{4}(\w+)\s*:[^#\n]*?(?:#\s*(.+))?$", line)
        if field_line and not line.lstrip().startswith(("def ", "return ", "@")):
            # the lines above are one wrapped sentence; an inline comment is a clause of its own
            parts = ([" ".join(above)] if above else []) + ([field_line.group(2).strip()] if field_line.group(2) else [])
            docs[field_line.group(1)] = "; ".join(parts)
        above = []
    return {k: v for k, v in docs.items() if v}


def _describe(tp: Any) -> tuple[str, list[str] | None]:
    """(metavar, choices) of a field type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        shown = "{" + ",".join(map(str, args)) + "}"
        return (shown if len(shown) <= 24 else "CHOICE"), [str(a) for a in args]
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        inner = [a for a in args if a is not type(None)]
        return _describe(inner[0]) if len(inner) == 1 else ("VALUE", None)
    if tp is bool:
        return "BOOL", None
    return {int: "INT", float: "FLOAT", str: "STR", list: "LIST", dict: "DICT"}.get(origin or tp, "VALUE"), None


class _Override(argparse.Action):
    """Appends `key=value` to `namespace.option_overrides` (values are parsed as YAML later)."""

    def __init__(self, option_strings, dest, key: str, is_bool: bool = False, words: frozenset = frozenset(),
                 **kwargs):
        self.key, self.is_bool, self.words = key, is_bool, BOOL_WORDS | words
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "option_overrides", None) or [])
        if self.is_bool and (values is None or str(values).lower() not in self.words):
            if values is not None:  # `--compile max_steps=3`: the word after a bare flag is not its value
                namespace.pushed_overrides = [*(getattr(namespace, "pushed_overrides", None) or []), values]
            values = "true"
        items.append(f"{self.key}={values}")
        namespace.option_overrides = items


def config_fields(cls: type, prefix: str = "") -> Iterable[tuple[str, Any, Any, str, type]]:
    """(dotted key, type, default, doc, owning class) of every leaf field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from config_fields(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", tp, getattr(instance, f.name), docs.get(f.name, ""), cls


def add_config_options(parser: argparse.ArgumentParser, *, skip: Iterable[str] = (),
                       aliases: dict[str, list[str]] | None = None, cls: type | None = None) -> None:
    """One option per field of `cls` (default TrainConfig; `--optim.lr`, with `--max-steps` for
    `--max_steps`), grouped by sub-config, each with its doc and the dataclass default (a preset
    may change it)."""
    from headless.config import TrainConfig

    skip, aliases = set(skip), aliases or {}
    groups: dict[str, argparse._ArgumentGroup] = {}
    taken = set(parser._option_string_actions)
    for key, tp, default, doc, owner in config_fields(cls or TrainConfig):
        if key in skip:
            continue
        section = key.split(".")[0] if "." in key else ""
        if section not in groups:
            title = f"config: {section}.*" if section else "config: run"
            summary = (inspect.getdoc(owner) or "").split("\n\n")[0].replace("\n", " ")
            groups[section] = parser.add_argument_group(title, summary or None)
        names = [f"--{key}"]
        if "_" in key:
            names.append(f"--{key.replace('_', '-')}")
        names += [a for a in aliases.get(key, [])]
        names = [n for n in dict.fromkeys(names) if n not in taken]
        if not names:
            continue
        taken.update(names)
        metavar, choices = _describe(tp)
        is_bool = tp is bool or bool in typing.get_args(tp)  # `compile: bool | "auto"` is a flag too
        words = frozenset(str(w) for a in typing.get_args(tp) for w in typing.get_args(a))  # its other words
        if is_bool and words:
            metavar = "{true,false," + ",".join(sorted(words)) + "}"
        text = f"{doc}; " if doc else ""
        if choices and metavar == "CHOICE":
            text += f"one of {', '.join(choices)}; "
        shown = "none" if default is None else default
        if isinstance(shown, (list, dict)):
            shown = shown or ("[]" if isinstance(shown, list) else "{}")
        groups[section].add_argument(*names, action=_Override, key=key, is_bool=is_bool, words=words,
                                     dest=argparse.SUPPRESS,
                                     nargs="?" if is_bool else None, metavar=metavar,
                                     help=f"{text}default: {shown}".replace("%", "%%"),
                                     choices=None if choices is None else choices)


PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _precision(value: str) -> str:
    """fp32/bf16/fp16 (the config's words); torch's float32/bfloat16/float16 are read as the same."""
    short = {v: k for k, v in PRECISIONS.items()}.get(value, value)
    if short not in PRECISIONS and short != "auto":
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return short


def add_precision(parser: argparse.ArgumentParser, default: str = "fp32", choices=tuple(PRECISIONS),
                  help: str = "") -> None:
    """--precision, the same word on every command (and as `precision=` of the run config); the old
    --dtype / --bf16 stay as hidden aliases."""
    parser.add_argument("--precision", type=_precision, default=default, metavar="{" + ",".join(choices) + "}",
                        help=f"{help}default: {default}")
    add_alias(parser, "--dtype", to="--precision", dest="precision", type=_precision)
    add_alias(parser, "--bf16", to="--precision", dest="precision", action="store_const", const="bf16")


def check_precision(args: argparse.Namespace, choices=tuple(PRECISIONS)) -> str:
    """The parsed --precision, refused with one line where a command supports fewer."""
    from headless.errors import HeadlessError

    if args.precision not in choices:
        raise HeadlessError(f"--precision must be one of {', '.join(choices)} here, got {args.precision}")
    return args.precision


def add_progress_flag(parser: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    """The same flag on every command that draws progress bars: --no-progress, alias --quiet / -q."""
    parser.add_argument("--no-progress", "--quiet", "-q", dest="quiet", action="store_true", help=help)


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args, extras = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return finish(args, extras)


RESULTS_ENV = "HEADLESS_EVAL_RESULTS"


def results_dir(output, model_dir) -> "Path":
    """Where every evaluation writes its tables (md + json): `--output`, else
    $HEADLESS_EVAL_RESULTS (default ./eval-results) / the model directory's name."""
    import os
    from pathlib import Path

    if output:
        return Path(output)
    return Path(os.environ.get(RESULTS_ENV) or "eval-results") / (Path(model_dir).resolve().name or "model")
