"""Lazy package attributes (PEP 562): `import headless` must not import torch."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for a package whose public names live in submodules: each name is
    imported from `exports[name]` on first use and then cached in the package's `namespace`."""
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return names + [n for n in namespace.get("__all__", []) if n not in exports]

    return __getattr__, __dir__
