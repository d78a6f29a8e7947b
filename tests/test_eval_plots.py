"""Issue #27 item 10: the figures next to the tables: GLUE / XNLI bars with error bars, a forest plot
for `glue compare`, on the synthetic fixtures (no ../shared needed)."""

from __future__ import annotations

import json

import pytest

from headless.cli import main

FAST = ["--epochs", "1", "--batch-size", "8", "--train-limit", "16", "--limit", "12", "--device", "cpu",
        "--no-progress"]


@pytest.fixture(scope="module")
def encoder(fixture_tokenizers, tmp_path_factory):
    from tiny_models import tiny_encoder

    return tiny_encoder(tmp_path_factory.mktemp("enc"), fixture_tokenizers["wordpiece"])


def _bars(monkeypatch):
    """What the bar plot was asked to draw: {title: (groups, series)}."""
    import headless.eval.plots as plots

    drawn, real = {}, plots.bar_plot

    def spy(groups, series, path, **kw):
        drawn[path.name] = (list(groups), {k: list(v) for k, v in series.items()})
        return real(groups, series, path, **kw)

    monkeypatch.setattr(plots, "bar_plot", spy)
    return drawn


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_glue_writes_bars_with_error_bars_and_compare_a_forest_plot(encoder, fixture_data, tmp_path, monkeypatch):
    import headless.eval.plots as plots

    drawn = _bars(monkeypatch)
    common = ["--data", str(fixture_data["glue"]), "--tasks", "rte,sst2", *FAST]
    assert main(["eval", "glue", str(encoder), *common, "--seeds", "0,1", "--output", str(tmp_path / "a")]) == 0
    assert _is_png(tmp_path / "a" / "glue.png")
    groups, series = drawn["glue.png"]
    a = json.loads((tmp_path / "a" / "glue.json").read_text())
    assert groups == ["RTE", "SST-2", "Average"]
    (scores,) = series.values()
    assert scores == [a["tasks"]["rte"]["main"], a["tasks"]["sst2"]["main"], a["average"]]  # mean and std

    forests = {}
    real = plots.forest_plot
    monkeypatch.setattr(plots, "forest_plot", lambda rows, path, **kw: forests.setdefault(path.name, rows)
                        and real(rows, path, **kw))
    assert main(["eval", "glue", str(encoder), *common, "--seeds", "3", "--output", str(tmp_path / "b")]) == 0
    assert main(["eval", "glue", "compare", str(tmp_path / "a" / "glue.json"), str(tmp_path / "b" / "glue.json"),
                 "--output", str(tmp_path / "cmp")]) == 0
    assert _is_png(tmp_path / "cmp" / "glue-compare.png")
    rows = forests["glue-compare.png"]
    assert [r[0] for r in rows] == ["RTE", "SST-2", "Average"]
    b = json.loads((tmp_path / "b" / "glue.json").read_text())
    for (label, delta, low, high), key in zip(rows, ["rte", "sst2"]):
        assert delta == pytest.approx(100 * (b["tasks"][key]["main"]["mean"] - a["tasks"][key]["main"]["mean"]))
        assert low <= high  # both carry dev predictions: a paired bootstrap interval per task


def test_xnli_writes_bars_per_language_and_mode(encoder, fixture_data, tmp_path, monkeypatch):
    drawn = _bars(monkeypatch)
    assert main(["eval", "xnli", str(encoder), "--data", str(fixture_data["xnli"]), "--languages", "en,fr",
                 "--mode", "both", *FAST, "--output", str(tmp_path)]) == 0
    assert _is_png(tmp_path / "xnli.png")
    groups, series = drawn["xnli.png"]
    saved = json.loads((tmp_path / "xnli.json").read_text())
    assert groups == ["en", "fr", "Average"] and list(series) == ["transfer", "target"]
    assert series["target"][1] == saved["modes"]["target"]["languages"]["fr"]


def test_forest_plot_draws_unknown_intervals_as_dots(tmp_path):
    from headless.eval.plots import forest_plot

    path = forest_plot([("a", 1.0, -0.5, 2.0), ("b", -1.0, None, None)], tmp_path / "f.png", title="t", xlabel="x")
    assert _is_png(path)
