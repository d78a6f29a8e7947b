"""Has a run's training accuracy left the MLM plateau?

An MLM model first learns the unigram distribution: within a few hundred steps its accuracy climbs
to the share of the most frequent tokens (about 0.11-0.13 on Wikipedia text) and stays there until
it starts to use the context.  A headless twin can stay there for its whole budget at a learning
rate where vanilla leaves, and nothing downstream says why its scores are at chance.

The rule, on the (step, accuracy) log points of a run:
- the plateau's level is the median accuracy over the first half of `patience` steps after the
  warm-up (by then the unigram guesses are learned);
- the run left the plateau at the first later log step where the median of three consecutive points
  is at least 25 % and 0.02 above that level;
- a run that has not left it `patience` steps after the warm-up is flagged (the trainer warns once).
A run that keeps learning from the start is never flagged: its accuracy passes the margin soon after
the level is read.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Optional

REL_MARGIN = 0.25  # the rise, relative to the plateau level, that counts as leaving it
ABS_MARGIN = 0.02  # ... and in absolute accuracy (a low level's 25 % is within noise)


def plateau_exit(steps: list[int], accuracy: list[Optional[float]], warmup: int, patience: int) -> dict:
    """{"level", "left_at", "flagged", "last_step", "last_accuracy"} of one run's accuracy curve.

    `left_at` is None when the curve never rose past the margin; `flagged` is True when, in
    addition, the curve runs at least `patience` steps past the warm-up (long enough to judge);
    `level` is None when the curve is too short to read it."""
    points = [(s, a) for s, a in zip(steps, accuracy) if a is not None]
    out = {"level": None, "left_at": None, "flagged": False,
           "last_step": points[-1][0] if points else None, "last_accuracy": points[-1][1] if points else None}
    if patience <= 0:
        return out
    read_until = warmup + patience // 2
    early = [a for s, a in points if warmup < s <= read_until]
    if not early:
        return out
    level = statistics.median(early)
    out["level"] = level
    later = [(s, a) for s, a in points if s > read_until]
    threshold = max(level * (1 + REL_MARGIN), level + ABS_MARGIN)
    for i in range(len(later)):
        window = [a for _, a in later[max(0, i - 2): i + 1]]
        if len(window) == 3 and statistics.median(window) >= threshold:
            out["left_at"] = later[i][0]
            return out
    out["flagged"] = bool(points) and points[-1][0] >= warmup + patience
    return out


def plateau_text(info: dict, seconds_per_step: Optional[float] = None, unit: str = "GPU s") -> str:
    """One sentence for a report; `unit` names the seconds ("GPU s" only for a GPU's)."""
    def when(step: int) -> str:
        return f"step {step:,}" + (f" ({step * seconds_per_step:.0f} {unit})" if seconds_per_step else "")

    if info.get("level") is None:
        return "too short to judge the plateau"
    if info.get("left_at") is not None:
        return f"left the plateau (training accuracy {info['level']:.3f}) at {when(info['left_at'])}"
    return (f"**never left the plateau**: training accuracy {info['level']:.3f} on the plateau, "
            f"{info['last_accuracy']:.3f} at {when(info['last_step'])}")


@dataclass
class PlateauWatch:
    """Fed the log steps' accuracy; says once (a message) when the run is flagged, and once more if
    a flagged run leaves the plateau later (a multilingual headless twin was flagged at step 4,300
    and left at 5,200: the warning alone would have read as a run that learned nothing)."""

    warmup: int
    patience: int
    steps: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    warned: bool = False
    done: bool = False  # left the plateau (said, if it had been flagged): nothing more to watch

    def update(self, step: int, accuracy: Optional[float]) -> Optional[str]:
        if self.patience <= 0 or self.done or accuracy is None:
            return None
        self.steps.append(step)
        self.accuracy.append(accuracy)
        if step < self.warmup + self.patience:
            return None
        info = plateau_exit(self.steps, self.accuracy, self.warmup, self.patience)
        if info["left_at"] is not None:
            self.done = True
            return (f"step {step}: training accuracy {accuracy:.3f} has left its plateau ({info['level']:.3f}) "
                    f"at step {info['left_at']}, after the warning" if self.warned else None)
        if not info["flagged"] or self.warned:
            return None
        self.warned = True
        return (f"warning: step {step}: training accuracy {accuracy:.3f} has not left its plateau "
                f"({info['level']:.3f}) {self.patience} steps after the warm-up (plateau_patience). A run "
                "stuck here learns nothing its scores can show: try a lower optim.lr or a longer "
                "optim.warmup_steps (docs/guide/training.md, 'The MLM plateau'). A run that leaves it "
                "later gets a line saying when.")
