"""Write docs/reference/config.md: every config field with its type, default and the comment that
documents it in headless/config.py (the one source of truth; tests/test_docs.py checks the page is
current).  Usage: python scripts/config_reference.py [--check]"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

from headless.cli.options import _describe, field_docs
from headless.config import TrainConfig

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "config.md"
HEAD = """# Config fields

Every field of `TrainConfig` (`headless pretrain`; a YAML file, `--preset`, `key=value` and
`--key value` all set them), generated from the comments in `src/headless/config.py` by
`python scripts/config_reference.py`. Nested fields are dotted: `optim.lr=1e-3`, `--optim.lr 1e-3`.
How to use them: [training](../guide/training.md); study settings of `headless reproduce`:
`headless reproduce STUDY --show-config`.
"""


def _default(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value not in ("", [], {}) else f"`{value!r}`"


def _kind(tp) -> str:
    """A field's type as a reader writes it: choices joined by |, `bool | auto` spelled out."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is not typing.Literal and len(args) > 1:
        return " \\| ".join(_kind(a) for a in args)
    metavar, choices = _describe(tp)
    return " \\| ".join(choices) if choices else metavar.lower()


def _table(cls: type, prefix: str, hints: dict) -> list[str]:
    docs = field_docs(cls)
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        doc = docs.get(f.name, "").replace("|", "/").replace("<", "&lt;")
        rows.append(f"| `{prefix}{f.name}` | {_kind(hints[f.name])} | {_default(f)} | {doc} |")
    return rows


def page() -> str:
    hints = typing.get_type_hints(TrainConfig)
    out = [HEAD, "## The run", "", *_table(TrainConfig, "", hints), ""]
    for f in dataclasses.fields(TrainConfig):
        cls = hints[f.name]
        if dataclasses.is_dataclass(cls):
            doc = " ".join((cls.__doc__ or "").split("\n\n")[0].split())
            out += [f"## `{f.name}.`", "", doc, "", *_table(cls, f"{f.name}.", typing.get_type_hints(cls)), ""]
    return "\n".join(out)


if __name__ == "__main__":
    text = page()
    if "--check" in sys.argv:
        sys.exit(0 if PAGE.read_text(encoding="utf-8") == text else f"{PAGE} is stale: run python {sys.argv[0]}")
    PAGE.write_text(text, encoding="utf-8")
    print(f"written: {PAGE}")
