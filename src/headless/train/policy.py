"""The loop's plug-in point: policies that watch the steps and may change the run's length.

The loop knows only this protocol, not what a policy is for (the time budget of
`headless.train.budget` is one).  A policy is also a checkpoint part: its state is saved with the
checkpoint it belongs to, so a resume continues the plan of that checkpoint or, without one,
plans from scratch; never a mix of a killed attempt's plan and a new one.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional


class Plan(NamedTuple):
    """A new max_steps for the loop, the schedule's new length (None: leave the schedule alone),
    and the line it logs."""

    max_steps: int
    schedule_steps: Optional[int]
    message: str


class Policy:
    """No-op defaults; `name` is the policy's checkpoint part (in state.json)."""

    name = "policy"

    def max_steps(self, max_steps: int) -> int:
        """The run's length given the restored state (a plan made before a resume)."""
        return max_steps

    def on_step_end(self, step: int) -> Optional[Plan]:
        return None

    def pause(self) -> None:
        """Entering a stretch that is not training (validation, a checkpoint save)."""

    def resume(self) -> None:
        """Back to training."""

    def keep_steps(self, max_steps: int) -> frozenset:
        """Checkpoints never pruned (the points of a learning curve)."""
        return frozenset()

    def finish(self, step: int) -> Optional[str]:
        """At the last step: a line to log, if any."""
        return None

    def summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@contextlib.contextmanager
def paused(policies):
    for policy in policies:
        policy.pause()
    try:
        yield
    finally:
        for policy in policies:
            policy.resume()


def keep_steps(policies, max_steps: int) -> frozenset:
    return frozenset().union(*(p.keep_steps(max_steps) for p in policies))
