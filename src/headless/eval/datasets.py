"""Where evaluation data comes from, in one order for every command:

1. the path given on the command line (`--data` / `--data-dir`);
2. `$HEADLESS_SHARED_DATA/<relative path>`: an absolute path to a folder laid out like the project's
   `../shared/data` (lambada/, zeroshot/, xnli/, glue/, enwiki/), never resolved against the
   current directory;
3. the standard Hugging Face hub dataset (needs a connection, or the `datasets` cache; when the hub
   cannot be reached only the cache is read, so an offline machine gets the error at once).

When none of them works, the error names all three.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from headless.errors import HeadlessError
from headless.files import atomic_write

ENV_VAR = "HEADLESS_SHARED_DATA"


def shared_data_root() -> Optional[Path]:
    """$HEADLESS_SHARED_DATA as a Path, or None when unset; a relative value is refused."""
    value = os.environ.get(ENV_VAR)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_absolute():
        raise HeadlessError(f"{ENV_VAR}={value} must be an absolute path (a folder laid out like ../shared/data)")
    return root


def shared_path(relative: str | os.PathLike) -> Optional[Path]:
    """$HEADLESS_SHARED_DATA/relative when the variable is set and the path exists, else None."""
    root = shared_data_root()
    if root is None:
        return None
    path = root / relative
    return path if path.exists() else None


def resolve(explicit, relative: str | os.PathLike, *, flag: str, what: str, hub: Optional[str] = None,
            from_hub: Optional[Callable[[], Path]] = None) -> Path:
    """The data path of one evaluation: `explicit`, else $HEADLESS_SHARED_DATA/relative, else
    `from_hub()` (a local file materialised from the hub dataset `hub`)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            raise HeadlessError(f"{what}: {path} not found")
        return path
    path = shared_path(relative)
    if path is not None:
        return path
    hub_error = ""
    if from_hub is not None:
        try:
            return from_hub()
        except HeadlessError:
            raise
        except Exception as err:  # offline, dataset missing from the cache, ...
            hub_error = f" ({type(err).__name__})"
    root = os.environ.get(ENV_VAR)
    where = f"{ENV_VAR}={root} has no {relative}" if root else f"{ENV_VAR} is not set"
    hub_part = f", or go online for the hub dataset {hub}{hub_error}" if hub else ""
    raise HeadlessError(f"{what}: no data found; pass {flag} PATH, or set {ENV_VAR} to an absolute folder "
                        f"laid out like ../shared/data with {relative} ({where}){hub_part}")


def hub_cache_dir() -> Path:
    base = os.environ.get("HEADLESS_CACHE") or Path.home() / ".cache" / "headless"
    return Path(base) / "eval-data"


def write_jsonl_atomic(path: Path, rows) -> Path:
    """Write rows as JSON lines to `path` atomically (nothing half-written is left)."""
    import json

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    atomic_write(path, write)
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within `timeout` seconds (False when
    HF_HUB_OFFLINE is set).  Without this check an offline machine spends half a minute in the
    hub client's retries before the error that says where else data can come from."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)), timeout).close()
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# the hub datasets, converted once to the jsonl layouts the readers take (cached under HEADLESS_CACHE)


def _load_hub(name: str, config: Optional[str], split: str):
    """A hub dataset split; when the hub cannot be reached, only the `datasets` cache is read, so
    that an offline machine fails at once (or loads what it cached) instead of retrying."""
    import datasets

    if datasets.config.HF_HUB_OFFLINE or hub_reachable():
        return datasets.load_dataset(name, config, split=split)
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(name, config, split=split)
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def load_hub_split(name: str, config: Optional[str], split: str):
    """`_load_hub` for the task modules (tests replace `_load_hub` to play the hub)."""
    return _load_hub(name, config, split)


def _zeroshot_rows(task: str, ds):
    for row in ds:
        if task == "boolq":  # lm-eval: "{{passage}}\nQuestion: {{question}}?\nAnswer:"
            yield {"query": f"Passage: {row['passage']}\nQuestion: {row['question']}?",
                   "choices": ["no", "yes"], "gold": int(row["label"])}
        elif task == "piqa":
            yield {"query": f"Question: {row['goal']}", "choices": [row["sol1"], row["sol2"]], "gold": int(row["label"])}
        elif task == "arc_easy":
            labels = list(row["choices"]["label"])
            yield {"query": f"Question: {row['question']}", "choices": list(row["choices"]["text"]),
                   "gold": labels.index(row["answerKey"])}
        elif task == "pubmedqa":
            context = " ".join(row["context"]["contexts"])
            yield {"context": f"Context: {context}\nQuestion: {row['question']}\nA. yes\nB. no\nC. maybe\nAnswer: ",
                   "continuation": row["final_decision"]}


HUB_ZEROSHOT = {  # task: (hub name, config, split): the sets lm-eval's tasks of the same name read
    "boolq": ("super_glue", "boolq", "validation"),
    "piqa": ("baber/piqa", None, "validation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "pubmedqa": ("qiaojin/PubMedQA", "pqa_labeled", "train"),
}
HUB_LAMBADA = ("EleutherAI/lambada_openai", "default", "test")


def lambada_from_hub() -> Path:
    path = hub_cache_dir() / "lambada_openai_test.jsonl"
    if not path.is_file():
        ds = _load_hub(*HUB_LAMBADA)
        write_jsonl_atomic(path, ({"text": row["text"]} for row in ds))
    return path


def zeroshot_from_hub(task: str) -> Path:
    path = hub_cache_dir() / f"zeroshot-{task}.jsonl"
    if not path.is_file():
        ds = _load_hub(*HUB_ZEROSHOT[task])
        write_jsonl_atomic(path, _zeroshot_rows(task, ds))
    return path


HUB_XNLI = "facebook/xnli"
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XNLI_LABELS = ("entailment", "neutral", "contradiction")


def xnli_from_hub(languages=None, train_languages=()) -> Path:
    """dev-<lang>.tsv files (premise, hypothesis, label) from the hub's XNLI validation splits;
    for `train_languages`, also train-<lang>.tsv from its train splits (MultiNLI, machine-translated:
    the paper's fine-tuning data, about 393k pairs per language)."""
    root = hub_cache_dir() / ("xnli-train" if train_languages else "xnli")  # apart: train files change the layout
    clean = lambda text: " ".join(str(text).split())  # noqa: E731 (no tabs or newlines in a TSV cell)
    wanted = list(languages or XNLI_LANGUAGES)
    files = [("dev", "validation", lang) for lang in wanted] + [("train", "train", lang) for lang in train_languages]
    for prefix, split, lang in files:
        path = root / f"{prefix}-{lang}.tsv"
        if path.is_file():
            continue
        ds = _load_hub(HUB_XNLI, lang, split)
        atomic_write(path, "".join(f"{clean(row['premise'])}\t{clean(row['hypothesis'])}\t"
                                   f"{XNLI_LABELS[int(row['label'])]}\n" for row in ds))
    return root
