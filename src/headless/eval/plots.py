"""The figures people look for next to a results table: bars with error bars (one model, per task or
language, mean ± std over seeds) and forest plots (differences B − A with their 95 % intervals).
Both are written atomically next to the JSON they draw; matplotlib (a dependency) draws them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Optional, Sequence


def _figure(rows: int, width: float = 7.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, 1.2 + 0.38 * max(rows, 1)))


def _save(plt, fig, path: Path, metadata: Optional[dict] = None) -> Path:
    from headless.files import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata=metadata))
    plt.close(fig)
    return path


def bar_plot(groups: Sequence[str], series: dict[str, Sequence[Optional[dict]]], path: str | Path, *,
             title: str, ylabel: str = "score (points)") -> Path:
    """One bar per group and series, height = mean, error bar = std over seeds (× 100: points);
    `series` maps a label (a model, an XNLI mode) to one `summarize()` dict (or None) per group."""
    import numpy as np

    plt, fig, ax = _figure(0, width=max(6.0, 0.9 * len(groups) * max(len(series), 1) + 2))
    fig.set_figheight(4.2)
    x = np.arange(len(groups))
    width = 0.8 / max(len(series), 1)
    for i, (label, scores) in enumerate(series.items()):
        means = [100 * s["mean"] if s else np.nan for s in scores]
        stds = [100 * s["std"] if s else 0.0 for s in scores]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set(ylabel=ylabel, title=title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, Path(path))


def forest_plot(rows: Sequence[tuple[str, float, Optional[float], Optional[float]]], path: str | Path, *,
                title: str, xlabel: str) -> Path:
    """One line per (label, difference, low, high): the difference as a dot, its 95 % interval as a
    whisker (none when unknown), 0 as a dashed line; the first row on top."""
    return forest_panels([(title, xlabel, rows)], path)


def forest_panels(panels: Sequence[tuple[str, str, Sequence[tuple]]], path: str | Path, *,
                  metadata: Optional[dict] = None, width: float = 7.0) -> Path:
    """Forest plots stacked, one panel per (title, xlabel, rows): differences in different units
    (points, nats) each get their own x-axis.  `metadata`: PNG text chunks (e.g. the plotted numbers,
    so that a test can tell a committed plot from a stale one without comparing pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = max((str(r[0]).count("\n") + 1 for _, _, rows in panels for r in rows), default=1)
    heights = [1.2 + 0.38 * lines * max(len(rows), 1) for _, _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (title, xlabel, rows) in zip(axes[:, 0], panels):
        ys = list(range(len(rows)))[::-1]
        for y, (label, delta, low, high) in zip(ys, rows):
            ok = low is not None and high is not None
            ax.errorbar([delta], [y], xerr=[[delta - low], [high - delta]] if ok else None, fmt="o",
                        color="C0" if not ok or low > 0 or high < 0 else "0.4", capsize=4)
        ax.axvline(0, color="k", linestyle="--", linewidth=0.8)
        ax.set_yticks(ys, [r[0] for r in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set(xlabel=xlabel, title=textwrap.fill(title, 55))  # long metric names stay in the panel
        ax.grid(axis="x", alpha=0.3)
    return _save(plt, fig, Path(path), metadata)
