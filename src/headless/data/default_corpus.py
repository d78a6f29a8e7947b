"""The embedded default corpus: the docstrings of Python's standard library.

Every install has it without a download, it is real English technical prose (a few MB), and it is
deterministic for a given Python version.  Modules are imported in a child process so that their
import-time side effects (registries, printed banners, opened windows) never touch the caller.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from headless.errors import HeadlessError

DEFAULT_CORPUS = "python-docs"

# Never imported: GUI toolkits, modules that act on import, test suites, Windows-only modules.
_SKIP_TOP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3",
    "ensurepip", "venv", "pydoc_data", "msilib", "winreg", "winsound", "msvcrt", "nt",
    "xxsubtype", "xxlimited", "distutils",
}
_MIN_CHARS = 40


def _skip(name: str) -> bool:
    top, *rest = name.split(".")
    return (top in _SKIP_TOP or top.startswith(("_", "turtle"))
            or any(p.startswith("_") or p in ("test", "tests", "idle_test") for p in rest))


def _collect() -> list[str]:
    """Runs in the child: one document per module, made of its docstrings not seen before."""
    import contextlib
    import importlib
    import inspect
    import io
    import pkgutil
    import warnings

    names: set[str] = set()
    for top in sorted(sys.stdlib_module_names):
        if _skip(top):
            continue
        names.add(top)
    modules = {}
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        queue = sorted(names)
        while queue:
            name = queue.pop(0)
            try:
                module = importlib.import_module(name)
            except BaseException:  # noqa: BLE001 - platform-specific or broken modules are skipped
                continue
            modules[name] = module
            for info in pkgutil.iter_modules(getattr(module, "__path__", None) or []):
                sub = f"{name}.{info.name}"
                if not _skip(sub) and sub not in names:
                    names.add(sub)
                    queue.append(sub)

    seen: set[str] = set()
    documents = []
    for name in sorted(modules):
        module = modules[name]
        parts = []

        def add(obj: object) -> None:
            try:
                doc = inspect.getdoc(obj)
            except Exception:  # noqa: BLE001
                return
            if doc and len(doc) >= _MIN_CHARS and doc not in seen:
                seen.add(doc)
                parts.append(doc)

        add(module)
        for attr in sorted(vars(module)):
            obj = vars(module)[attr]
            origin = getattr(obj, "__module__", None)
            # keep what the module defines or re-exports from its C accelerator (_functools, _io...)
            if attr.startswith("_") or not (origin == name or str(origin).startswith("_")):
                continue
            if inspect.isclass(obj):
                add(obj)
                for member in sorted(vars(obj)):
                    if not member.startswith("_"):
                        add(vars(obj)[member])
            elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
                add(obj)
        if parts:
            documents.append("\n\n".join(parts))
    # the language reference as shipped for help(): one document per topic
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    for key in sorted(topics):
        text = topics[key].strip()
        if len(text) >= _MIN_CHARS and text not in seen:
            seen.add(text)
            documents.append(text)
    return documents


@functools.lru_cache(maxsize=1)
def default_corpus_documents() -> list[str]:
    """The default corpus as a list of documents (cached per process; ~a few seconds the first time)."""
    proc = subprocess.run(
        [sys.executable, "-E", "-s", "-c", _CHILD.format(src=_src_dir())],
        capture_output=True, text=True, encoding="utf-8", stdin=subprocess.DEVNULL, timeout=300,
        cwd=_src_dir(), env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        raise HeadlessError(f"could not build the default corpus: {proc.stderr.strip().splitlines()[-1:]}")
    documents = json.loads(proc.stdout)
    if not documents:
        raise HeadlessError("the default corpus is empty on this Python installation")
    return documents


def _src_dir() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_CHILD = (
    "import json, sys; sys.path.insert(0, {src!r}); "
    "from headless.data.default_corpus import _collect; sys.stdout.write(json.dumps(_collect()))"
)
