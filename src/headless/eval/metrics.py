"""Downstream metrics and the paper's balanced cross-entropy.

The metrics are thin wrappers over scikit-learn / scipy on purpose: GLUE numbers are only
comparable when everybody computes them the same way, so we never re-implement them.
All return plain floats in [0, 1] (or [-1, 1] for correlations); tables multiply by 100.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn import metrics as skm


def accuracy(preds: Sequence, labels: Sequence) -> float:
    return float(skm.accuracy_score(labels, preds))


def f1(preds: Sequence, labels: Sequence, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC/QQP convention: 1 = paraphrase/duplicate)."""
    return float(skm.f1_score(labels, preds, pos_label=positive, average="binary", zero_division=0))


def matthews(preds: Sequence, labels: Sequence) -> float:
    """Matthews correlation (CoLA); 0 when one side is constant, as scikit-learn defines it."""
    return float(skm.matthews_corrcoef(labels, preds))


def _corr(fn, preds: Sequence, labels: Sequence) -> float:
    x, y = np.asarray(preds, dtype=float), np.asarray(labels, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0  # undefined (constant input): report "no correlation" rather than NaN
    value = float(fn(x, y)[0])
    return 0.0 if math.isnan(value) else value


def pearson(preds: Sequence, labels: Sequence) -> float:
    return _corr(stats.pearsonr, preds, labels)


def spearman(preds: Sequence, labels: Sequence) -> float:
    return _corr(stats.spearmanr, preds, labels)


# metric-set name -> function(preds, labels) -> {metric: value}; "main" is the score averaged
# into the GLUE/XNLI average (the usual GLUE convention: mean of the pair for MRPC/QQP/STS-B).
def classification_metrics(kind: str, preds: Sequence, labels: Sequence) -> dict[str, float]:
    if kind == "accuracy":
        acc = accuracy(preds, labels)
        return {"accuracy": acc, "main": acc}
    if kind == "matthews":
        mcc = matthews(preds, labels)
        return {"matthews": mcc, "accuracy": accuracy(preds, labels), "main": mcc}
    if kind == "f1_accuracy":
        acc, f = accuracy(preds, labels), f1(preds, labels)
        return {"f1": f, "accuracy": acc, "main": (f + acc) / 2}
    if kind == "correlation":
        p, s = pearson(preds, labels), spearman(preds, labels)
        return {"pearson": p, "spearman": s, "main": (p + s) / 2}
    raise ValueError(f"unknown metric set {kind!r}")


def balanced_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced cross-entropy of Godey et al. (App. E.1), normalised by the batch size.

    Paper: L = Σ_c L_c / w_c, with L_c the summed CE of the batch's examples of class c and
    w_c = n_c / N the class frequency *in this batch*.  Dividing by N gives Σ_c mean_{i∈c} ℓ_i, so
    the value does not grow with the batch size (AdamW is insensitive to a constant scale, gradient
    clipping is not).  Classes absent from the batch contribute nothing.
    """
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    per_class_sum = torch.zeros(len(classes), device=losses.device).index_add_(0, inverse, losses)
    return (per_class_sum / counts).sum()
