"""Metrics are thin wrappers over scikit-learn/scipy: check the wiring, and the balanced CE by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("scipy")  # headless.eval needs it; collect (skipped) without it
pytest.importorskip("sklearn")  # headless.eval needs it; collect (skipped) without it
from scipy import stats
from sklearn import metrics as skm

from headless.errors import HeadlessError
from headless.eval import metrics
from headless.eval.classification import parse_seeds, summarize


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert metrics.accuracy(preds, labels) == pytest.approx(skm.accuracy_score(labels, preds))
    assert metrics.matthews(preds, labels) == pytest.approx(skm.matthews_corrcoef(labels, preds))
    assert metrics.f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, pos_label=1))
    three = rng.integers(0, 3, 50)
    assert metrics.accuracy(three, labels) == pytest.approx(skm.accuracy_score(labels, three))


def test_f1_is_of_the_positive_class():
    labels, preds = [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 1, 1]
    assert metrics.f1(preds, labels) == pytest.approx(skm.f1_score(labels, preds, pos_label=1))
    assert metrics.f1(preds, labels) != pytest.approx(skm.f1_score(labels, preds, pos_label=0))
    mrpc = metrics.classification_metrics("f1_accuracy", preds, labels)
    assert mrpc["main"] == pytest.approx((mrpc["f1"] + mrpc["accuracy"]) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 5, 40)
    x = y + rng.normal(0, 1.5, 40)
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    stsb = metrics.classification_metrics("correlation", x, y)
    assert set(stsb) == {"pearson", "spearman", "main"}
    assert stsb["main"] == pytest.approx((stsb["pearson"] + stsb["spearman"]) / 2)


def test_constant_predictions_give_zero_not_nan():
    assert metrics.pearson([1.0, 1.0, 1.0], [0.0, 2.0, 5.0]) == 0.0
    assert metrics.matthews([1, 1, 1], [0, 1, 0]) == 0.0


def test_balanced_cross_entropy_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 2, 0])
    logp = torch.log_softmax(logits.detach(), -1)
    ell = [-logp[i, y].item() for i, y in enumerate(labels.tolist())]
    # paper: sum_c L_c / w_c with w_c = n_c / N; ours divides by N
    n = len(ell)
    paper = sum(ell[i] for i in (0, 1, 2, 4)) / (4 / n) + ell[3] / (1 / n)
    value = metrics.balanced_cross_entropy(logits, labels)
    assert value.item() == pytest.approx(paper / n, rel=1e-6)
    assert value.item() == pytest.approx((ell[0] + ell[1] + ell[2] + ell[4]) / 4 + ell[3], rel=1e-6)
    value.backward()
    assert logits.grad is not None and logits.grad[3].abs().sum() > 0


def test_balanced_cross_entropy_on_a_balanced_batch_is_classes_times_ce():
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    assert metrics.balanced_cross_entropy(logits, labels).item() == pytest.approx(
        2 * F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_summarize_and_seeds():
    s = summarize([0.5, 0.7, 0.6])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    assert summarize([0.4])["std"] == 0.0 and not math.isnan(summarize([0.4])["mean"])
    assert parse_seeds("0, 1,2") == [0, 1, 2] and parse_seeds(3) == [3]
    for bad in ("a,b", "1,1", ""):
        with pytest.raises(HeadlessError):
            parse_seeds(bad)
