"""The import graph follows the layers of docs/reference/architecture.md: a module imports only its own
layer and the layers before it (never a later one), so the loss cannot know the trainer and the
trainer cannot know the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "headless"

# in import order: each layer may import itself and those above it in this list
LAYERS = [
    ("base", ["__init__", "errors", "_lazy", "files", "runtime", "provenance", "param_groups", "loss_kinds",
              "architectures", "fit", "config"]),
    ("data", ["data"]),
    ("objective/loss", ["objectives", "losses"]),
    ("model", ["attention", "one_lookup", "models"]),
    ("parallel", ["train.distributed"]),
    ("checkpoints", ["train.checkpoint"]),
    ("trainer", ["train"]),
    ("export", ["export", "finetune", "model_card", "embedding_head"]),
    ("evaluation", ["eval"]),
    ("integrations", ["integrations", "demo"]),
    ("lab: bench", ["lab.bench"]),
    ("lab: reproduction", ["lab", "lab.reproduce"]),
    ("cli", ["cli", "__main__"]),
]
LIBRARY = ("errors", "_lazy", "files", "runtime", "provenance", "param_groups", "loss_kinds", "architectures", "fit", "config",
           "data", "objectives", "losses", "attention", "one_lookup", "models", "train", "export", "finetune", "model_card",
           "embedding_head", "eval",
           "integrations", "demo")


def layer_of(module: str) -> int:
    name = module.removeprefix("headless").lstrip(".") or "__init__"
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer of docs/reference/architecture.md"
    return best[0]


def imports() -> list[tuple[str, str]]:
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        module = ".".join(("headless",) + parts).removesuffix(".__init__")
        if module == "headless.__init__":
            module = "headless"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("headless"):
                package = SRC.joinpath(*node.module.split(".")[1:])
                for alias in node.names:  # `from headless.train import distributed`: the submodule
                    sub = (package / f"{alias.name}.py").is_file() or (package / alias.name).is_dir()
                    edges.append((module, f"{node.module}.{alias.name}" if sub else node.module))
            elif isinstance(node, ast.Import):
                edges += [(module, a.name) for a in node.names if a.name.startswith("headless")]
    return edges


def test_no_upward_imports():
    upward = []
    for source, target in imports():
        if source == "headless":  # the package's lazy public API names everything
            continue
        if layer_of(target) > layer_of(source):
            upward.append(f"{source} ({LAYERS[layer_of(source)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "\n".join(upward)


def _package(module: str) -> str:
    """The top-level module or subpackage a module belongs to (headless.train.loop -> train)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_private_reach_ins():
    """A `_private` name is imported only inside the module or subpackage that defines it."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        source = ".".join(("headless",) + path.relative_to(SRC).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("headless"):
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and _package(node.module) != _package(source):
                        found.append(f"{source} imports {node.module}.{alias.name}")
    assert not found, "\n".join(found)


def test_evaluation_imports_nothing_of_the_trainer():
    """Evaluation reads exported Hugging Face directories: it needs no part of the trainer (shared
    helpers such as `param_groups.decay_groups` live in the base layer)."""
    found = [f"{source} imports {target}" for source, target in imports()
             if _package(source) == "eval" and _package(target) == "train"]
    assert not found, "\n".join(found)


def _cycles(edges: list[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        if source != target:
            graph.setdefault(source, set()).add(target)
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycle_in_evaluation():
    """No two evaluation modules import each other, even lazily (inside a function)."""
    edges = [(s, t) for s, t in imports() if _package(s) == "eval" and _package(t) == "eval"]
    assert not _cycles(edges), _cycles(edges)
    assert _cycles([("a", "b"), ("b", "a")])  # the check sees a cycle


def test_the_library_knows_nothing_of_the_lab():
    """Issue #24: studies and the bench (headless.lab) sit on top of the library; no library module
    imports them, and the lab's modules are not where the library's concepts live."""
    found = [f"{source} imports {target}" for source, target in imports()
             if target.startswith("headless.lab") and _package(source) in LIBRARY]
    assert not found, "\n".join(found)
    assert not (SRC / "reproduce").exists() and not (SRC / "bench.py").exists()
