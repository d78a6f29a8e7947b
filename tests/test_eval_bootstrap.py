"""The report's paired bootstrap: vectorised metrics equal headless.eval.metrics, and the interval
behaves (identical twins, a clear winner, unpaired inputs refused)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")  # headless.eval.metrics needs it; collect (skipped) without it
pytest.importorskip("sklearn")

from headless.eval.metrics import classification_metrics  # noqa: E402
from headless.eval.bootstrap import batch_main, paired_bootstrap  # noqa: E402


@pytest.mark.parametrize("kind", ["accuracy", "f1_accuracy", "matthews", "correlation"])
def test_vectorised_metrics_equal_the_reported_ones(kind):
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        if kind == "correlation":  # STS-B-like values with ties (a bootstrap draws duplicates)
            labels = rng.integers(0, 11, 30) / 2
            preds = np.round(labels + rng.normal(0, 1.5, 30), 1)
        else:
            classes = 3 if kind in ("accuracy", "matthews") else 2
            labels = rng.integers(0, classes, 30)
            preds = np.where(rng.random(30) < 0.6, labels, rng.integers(0, classes, 30))
        rows.append((preds, labels))
    rows.append((np.zeros(30), rows[0][1]))  # a constant prediction: correlations and MCC give 0
    rows.append((np.ones(30), np.ones(30)))  # a constant label too
    preds, labels = (np.stack(x).astype(float) for x in zip(*rows))
    got = batch_main(kind, preds, labels)
    want = [classification_metrics(kind, list(p), list(y))["main"] for p, y in rows]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def _twin(labels, seeds, group="rte", metric="accuracy", name=None):
    return {name or f"{group}/dev": {"group": group, "metric": metric, "labels": list(labels),
                                     "seeds": [list(s) for s in seeds]}}


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    noisy = [np.where(rng.random(300) < 0.7, labels, 1 - labels) for _ in range(3)]
    one = paired_bootstrap(_twin(labels, noisy[:1]), _twin(labels, noisy[:1]), ["rte"], replicates=200)
    assert one["low"] == one["high"] == 0 and one["ahead"] == 0  # one identical seed: no difference
    same = paired_bootstrap(_twin(labels, noisy), _twin(labels, noisy), ["rte"], replicates=200)
    assert same["low"] < 0 < same["high"]  # the same seeds, drawn apart for each twin: the seed noise
    assert same["examples"] == 300 and same["seeds"] == [3, 3]
    perfect = [labels] * 3
    clear = paired_bootstrap(_twin(labels, perfect), _twin(labels, noisy), ["rte"], replicates=200)
    assert 20 < clear["low"] < clear["high"] < 40 and clear["ahead"] == 1
    lower = paired_bootstrap(_twin(labels, perfect), _twin(labels, noisy), ["rte"], replicates=200,
                             higher_is_better=False)
    assert lower["ahead"] == 0 and lower["low"] == clear["low"]  # the same draws, read the other way
    # pairing: twins that differ on 6 of 300 examples are told apart far more tightly than their
    # accuracies' own sampling spread (about ±5 points here)
    # (one seed each, so that only the examples vary)
    close = [np.where(np.arange(300) < 6, labels, noisy[0])]
    paired = paired_bootstrap(_twin(labels, close), _twin(labels, noisy[:1]), ["rte"], replicates=400)
    assert 0 <= paired["low"] < paired["high"] < 3
    # nothing to pair: other examples, or a group that one twin lacks
    assert paired_bootstrap(_twin(labels, noisy), _twin(1 - labels, noisy), ["rte"]) is None
    assert paired_bootstrap(_twin(labels, noisy), _twin(labels, noisy), ["rte", "cola"]) is None


def test_per_example_values_and_a_lower_is_better_metric_in_their_own_units():
    """Held-out cross-entropy: per-sequence values ("mean"), nats kept (scale 1), lower is better."""
    ce_a, ce_b = np.full(50, 3.9), np.full(50, 4.0)
    a = _twin(np.zeros(50), [ce_a], "heldout", "mean")
    b = _twin(np.zeros(50), [ce_b], "heldout", "mean")
    out = paired_bootstrap(a, b, ["heldout"], higher_is_better=False, scale=1.0, replicates=50)
    assert out["low"] == pytest.approx(-0.1) and out["high"] == pytest.approx(-0.1) and out["ahead"] == 1


def test_groups_average_their_evaluation_sets_first():
    """MNLI-like: a group with two dev sets counts once in the average, like GLUE's."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 100)
    good, bad = [y] * 2, [1 - y] * 2
    head = {**_twin(y, good, "mnli", name="mnli/m"), **_twin(y, good, "mnli", name="mnli/mm"),
            **_twin(y, good, "rte")}
    van = {**_twin(y, bad, "mnli", name="mnli/m"), **_twin(y, bad, "mnli", name="mnli/mm"), **_twin(y, good, "rte")}
    out = paired_bootstrap(head, van, ["mnli", "rte"], replicates=50)
    assert out["low"] == out["high"] == pytest.approx(50.0)  # (100 + 0) / 2 groups, not (100 + 100 + 0) / 3


def test_groups_of_one_fine_tuning_run_share_its_seed_draw():
    """XNLI translate-train-all: one fine-tuning run per seed scores every language. Seed 0 gets
    German right and French wrong, seed 1 the reverse: every draw of whole runs averages 50, while
    seeds drawn apart per language would invent replicates where one seed's luck counts twice."""
    n = 40
    y = np.ones(n)
    head = {**_twin(y, [y, 0 * y], "all/de", name="all/de"), **_twin(y, [0 * y, y], "all/fr", name="all/fr")}
    van = {**_twin(y, [y], "all/de", name="all/de"), **_twin(y, [y], "all/fr", name="all/fr")}
    shared = paired_bootstrap(head, van, ["all/de", "all/fr"], replicates=200, run_of=lambda g: g.split("/")[0])
    assert shared["low"] == shared["high"] == pytest.approx(-50.0)
    apart = paired_bootstrap(head, van, ["all/de", "all/fr"], replicates=200)
    assert apart["low"] < -50 < apart["high"]
    # one run's groups must have the same seeds
    uneven = {**head, **_twin(y, [y], "all/fr", name="all/fr")}
    assert paired_bootstrap(uneven, van, ["all/de", "all/fr"], run_of=lambda g: "all") is None
