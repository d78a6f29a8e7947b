"""Paired bootstrap of the twins' difference on the same evaluation examples.

The report's ± is over fine-tuning seeds only, but the evaluation sets are samples too: RTE's
shared dev half has 139 examples, so one example moves its accuracy by 0.7 points. Both twins are
scored on the same examples, so the resampling is paired. Each replicate draws the same examples,
with replacement, for both twins within every evaluation set, and each twin's seeds with
replacement. The replicate's headline score is the mean over the metric's groups (GLUE tasks, or
XNLI languages of one protocol) of the mean over the drawn seeds; a group's evaluation sets are
averaged first, as GLUE does with MNLI's two. The 2.5 and 97.5 percentiles of the difference give
its 95 % interval (the percentile bootstrap, paired over examples as is usual for comparing two
systems on one test set: Koehn 2004; Berg-Kirkpatrick et al. 2012).

The metrics are computed for all replicates at once. They are vectorised forms of
`headless.eval.metrics` (scikit-learn / scipy), which stay the source of every reported score; the
tests hold the two equal.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

DEFAULT_REPLICATES = 1000


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(axis=1) / denom
    return np.where(denom > 0, r, 0.0)  # constant input: "no correlation", as metrics._corr


def _mcc(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """scikit-learn's multiclass Matthews correlation, per row."""
    classes = np.union1d(np.unique(p), np.unique(y))
    n = p.shape[1]
    t = np.stack([(y == k).sum(axis=1) for k in classes], axis=1).astype(float)
    q = np.stack([(p == k).sum(axis=1) for k in classes], axis=1).astype(float)
    correct = (p == y).sum(axis=1).astype(float)
    cov_pt = correct * n - (t * q).sum(axis=1)
    denom = np.sqrt((n * n - (q * q).sum(axis=1)) * (n * n - (t * t).sum(axis=1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov_pt / denom, 0.0)


def batch_main(kind: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The "main" value of `metrics.classification_metrics(kind, ...)` for every row of preds/labels [R, n]."""
    if kind in ("accuracy", "f1_accuracy"):
        acc = (preds == labels).mean(axis=1)
        if kind == "accuracy":
            return acc
        tp = ((preds == 1) & (labels == 1)).sum(axis=1)
        wrong = ((preds == 1) != (labels == 1)).sum(axis=1)  # false positives + false negatives
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(2 * tp + wrong > 0, 2 * tp / (2 * tp + wrong), 0.0)
        return (f1 + acc) / 2
    if kind == "matthews":
        return _mcc(preds, labels)
    if kind == "correlation":
        pearson = _rowwise_pearson(preds, labels)
        spearman = _rowwise_pearson(stats.rankdata(preds, axis=1), stats.rankdata(labels, axis=1))
        return (pearson + spearman) / 2
    raise ValueError(f"unknown metric set {kind!r}")


def _twin_scores(entry: dict, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per replicate: the mean over drawn seeds of the metric on the drawn examples."""
    labels = np.asarray(entry["labels"], dtype=float)[idx]
    per_seed = np.stack([batch_main(entry["metric"], np.asarray(s, dtype=float)[idx], labels)
                         for s in entry["seeds"]], axis=1)  # [R, seeds]
    pick = rng.integers(0, per_seed.shape[1], size=per_seed.shape)
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def paired_bootstrap(headless: dict[str, dict], vanilla: dict[str, dict], groups: list[str], *,
                     higher_is_better: bool = True, replicates: int = DEFAULT_REPLICATES,
                     seed: int = 0) -> dict | None:
    """95 % interval of headless − vanilla (in points, ×100) of the mean over `groups`.

    headless / vanilla: {entry: {"group", "metric", "labels", "seeds"}} of the twins' final
    checkpoints (`reproduce.evaluate.Predictions`). None when a group is missing from either twin
    or the twins were scored on different examples (nothing to pair)."""
    entries = sorted(e for e, v in headless.items() if v["group"] in groups)
    if not entries or {headless[e]["group"] for e in entries} != set(groups):
        return None
    if any(e not in vanilla or list(vanilla[e]["labels"]) != list(headless[e]["labels"])
           or not headless[e]["seeds"] or not vanilla[e]["seeds"] for e in entries):
        return None
    rng = np.random.default_rng(seed)
    per_group = {g: [] for g in groups}
    for e in entries:
        idx = rng.integers(0, len(headless[e]["labels"]), size=(replicates, len(headless[e]["labels"])))
        per_group[headless[e]["group"]].append(_twin_scores(headless[e], idx, rng) - _twin_scores(vanilla[e], idx, rng))
    diffs = 100 * np.mean([np.mean(parts, axis=0) for parts in per_group.values()], axis=0)
    low, high = np.percentile(diffs, [2.5, 97.5])
    better = diffs > 0 if higher_is_better else diffs < 0
    return {"low": float(low), "high": float(high), "headless_better": float(better.mean()),
            "replicates": replicates, "examples": sum(len(headless[e]["labels"]) for e in entries),
            "seeds": {"headless": min(len(headless[e]["seeds"]) for e in entries),
                      "vanilla": min(len(vanilla[e]["seeds"]) for e in entries)}}
