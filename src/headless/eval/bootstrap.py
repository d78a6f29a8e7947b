"""Paired bootstrap of two models' difference on the same evaluation examples.

A ± over fine-tuning seeds leaves out that the evaluation sets are samples too: RTE's shared dev
half has 139 examples, so one example moves its accuracy by 0.7 points. Two models (the twins of
`headless report`, the two files of `headless glue compare`) are scored on the same examples, so
the resampling is paired. Each replicate draws the same examples, with replacement, for both
models within every evaluation set, and each model's seeds with replacement (once per group: one
fine-tuning run scores all of a group's sets). The replicate's score is the mean over the groups
(GLUE tasks, XNLI languages of one protocol, LAMBADA) of the mean over the drawn seeds; a group's
evaluation sets are averaged first, as GLUE does with MNLI's two. The 2.5 and 97.5 percentiles of
the difference give its 95 % interval (the percentile bootstrap, paired over examples as is usual
for comparing two systems on one test set: Koehn 2004; Berg-Kirkpatrick et al. 2012).

The metrics are computed for all replicates at once. They are vectorised forms of
`headless.eval.metrics` (scikit-learn / scipy), which stay the source of every reported score; the
tests hold the two equal.
"""

from __future__ import annotations

from collections.abc import Callable

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
    """The "main" value of `metrics.classification_metrics(kind, ...)` for every row of preds/labels
    [R, n]; "mean" is the mean of per-example values (held-out cross-entropy per sequence)."""
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
    if kind == "mean":  # per-example values (a sequence's cross-entropy): their mean, labels unused
        return preds.mean(axis=1)
    if kind == "correlation":
        pearson = _rowwise_pearson(preds, labels)
        spearman = _rowwise_pearson(stats.rankdata(preds, axis=1), stats.rankdata(labels, axis=1))
        return (pearson + spearman) / 2
    raise ValueError(f"unknown metric set {kind!r}")


def _seed_averaged(entry: dict, idx: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Per replicate: the mean over the drawn seeds `pick` [R, seeds] of the metric on the drawn
    examples `idx` [R, n]."""
    labels = np.asarray(entry["labels"], dtype=float)[idx]
    per_seed = np.stack([batch_main(entry["metric"], np.asarray(s, dtype=float)[idx], labels)
                         for s in entry["seeds"]], axis=1)  # [R, seeds]
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def paired_bootstrap(first: dict[str, dict], second: dict[str, dict], groups: list[str], *,
                     higher_is_better: bool = True, replicates: int = DEFAULT_REPLICATES,
                     seed: int = 0, scale: float = 100.0,
                     run_of: Callable[[str], str] | None = None) -> dict | None:
    """95 % interval of first − second (× `scale`: 100 gives points of a [0, 1] metric, 1 keeps
    nats) of the mean over `groups`, and `ahead`, the share of replicates in which `first` is
    better.

    first / second: {entry: {"group", "metric", "labels", "seeds": [[prediction per example] per
    seed]}}, e.g. two models' dev predictions (`glue.glue_predictions`,
    `reproduce.evaluate.Predictions`). None when a group is missing from either or they were scored
    on different examples (nothing to pair).

    run_of: the fine-tuning run that scored a group (default: its own). Groups of one run share
    each replicate's seed draw: XNLI's transfer and translate-train-all fine-tune once and score
    15 languages, and drawing their seeds apart would average away the run's own spread."""
    entries = sorted(e for e, v in first.items() if v["group"] in groups)
    if not entries or {first[e]["group"] for e in entries} != set(groups):
        return None
    if any(e not in second or list(second[e]["labels"]) != list(first[e]["labels"])
           or not first[e]["seeds"] or not second[e]["seeds"] for e in entries):
        return None
    if any(len({len(m[e]["seeds"]) for e in entries if m[e]["group"] == g}) > 1 for m in (first, second)
           for g in groups):
        return None  # a group's evaluation sets come from the same fine-tuning runs, so the same seeds
    rng = np.random.default_rng(seed)
    per_group = {g: [] for g in groups}
    run_of = run_of or (lambda group: group)
    picks = {}  # (which, run) -> seeds drawn: one fine-tuning run scores all of its groups' sets
    for e in entries:
        g = first[e]["group"]
        run = run_of(g)
        for which, m in ((0, first), (1, second)):
            if (which, run) not in picks:
                picks[which, run] = rng.integers(0, len(m[e]["seeds"]), size=(replicates, len(m[e]["seeds"])))
            if picks[which, run].shape[1] != len(m[e]["seeds"]):
                return None  # groups said to share a run with different numbers of seeds
        idx = rng.integers(0, len(first[e]["labels"]), size=(replicates, len(first[e]["labels"])))
        per_group[g].append(_seed_averaged(first[e], idx, picks[0, run]) - _seed_averaged(second[e], idx, picks[1, run]))
    diffs = scale * np.mean([np.mean(parts, axis=0) for parts in per_group.values()], axis=0)
    low, high = np.percentile(diffs, [2.5, 97.5])
    better = diffs > 0 if higher_is_better else diffs < 0
    return {"low": float(low), "high": float(high), "ahead": float(better.mean()),
            "replicates": replicates, "examples": sum(len(first[e]["labels"]) for e in entries),
            "seeds": [min(len(first[e]["seeds"]) for e in entries),
                      min(len(second[e]["seeds"]) for e in entries)]}
