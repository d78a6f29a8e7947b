"""Fit a preset to a prepared dataset: what a preset says is a default, what the user says is law.

A preset's `data.seq_len` and `model.max_position_embeddings` are defaults: with `data.path` set,
the dataset's sequence length wins and a model built from shape fields (no `init_from`) gets enough
positions for it.  A value the user wrote (override or `--config` file) is never changed: when it
contradicts the data, the error names the exact override that fixes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from headless.errors import HeadlessError


def dataset_seq_len(path: str | Path) -> int | None:
    """The `seq_len` of a prepared dataset's manifest (None when `path` holds none)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return int(json.loads(manifest.read_text(encoding="utf-8"))["seq_len"])
    except (ValueError, KeyError, TypeError):
        return None


def _get(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fit_to_dataset(data: dict, user: dict) -> dict:
    """`data` = the merged config dict (preset <- file <- overrides); `user` = the part the user
    wrote (file <- overrides).  Returns `data` with seq_len / positions fitted to `data.path`."""
    path = _get(data, "data.path")
    seq_len = dataset_seq_len(path) if path else None
    if seq_len is None:
        return data
    user_seq = _get(user, "data.seq_len")
    if user_seq is not None and user_seq != seq_len:
        raise HeadlessError(f"data.seq_len={user_seq} but {path} holds {seq_len}-token sequences; drop "
                            f"data.seq_len (it follows the data), or prepare the data again with "
                            f"`headless prepare --seq-len {user_seq}`")
    out = {**data, "data": {**(data.get("data") or {}), "seq_len": seq_len}}
    model = dict(out.get("model") or {})
    if model.get("init_from"):
        return out
    positions = model.get("max_position_embeddings")
    if positions is None or positions >= seq_len:
        return out
    if _get(user, "model.max_position_embeddings") is not None:
        raise HeadlessError(f"{path} holds {seq_len}-token sequences but model.max_position_embeddings="
                            f"{positions}; set model.max_position_embeddings={seq_len}, or prepare the "
                            f"data with `headless prepare --seq-len {positions}`")
    model["max_position_embeddings"] = seq_len  # the preset's value was only a default
    out["model"] = model
    return out
