"""The time budget: a loop policy that turns seconds of training into max_steps.

Equal-GPU-time comparisons (`headless reproduce`) need it; the loop does not know it by name (it
sees a `headless.train.policy.Policy`).  Its settings are the config's `budget:` section, its plan
is a checkpoint part ("budget" in state.json), saved with the schedule it set (see
`headless.train.optim.Schedule`).
"""

from __future__ import annotations

import time

import torch

from headless.config import TrainConfig
from headless.train.policy import Plan, Policy

# what the policy saves with a checkpoint; the _SUMMARY part also goes into the run's summary
_SUMMARY = ("steady_s_per_step", "measured_s_per_step", "calibrated_at", "calibrated_s_per_step", "replanned_at",
            "calibration_spread")
_STATE = (*_SUMMARY, "resolved_max_steps", "replan_at")


class TimeBudget(Policy):
    """Turns `budget.time_s` into max_steps from the measured steady-state seconds per step.

    Steps 1..skip are untimed (compilation).  Then windows of `calibration_steps` steps are timed
    between device synchronisations up to the end of warm-up (the last step whose learning rate
    does not depend on max_steps), and the median of the last three windows gives the first plan:
    the calibration is as late as the schedule allows.  Stopping at the first three windows that
    agree was not enough: the first few hundred MLM steps can run steadily slower than the rest,
    so early windows agree and are still slow (a twin then gets a fraction of its budget).  Calibration stops earlier only when the budget would be spent before
    warm-up ends.  `calibration_spread` records how far the three windows were apart.

    Even at warm-up's end, short windows can be well off the run's own step time (measured:
    docs/guide/reproduction.md), so max_steps is planned once more at `calibration_replan` of the first plan
    (before the first checkpoint fraction), from every step timed since the calibration: a few
    thousand steps.  The cosine's length moves with it; at a fifth of the run that changes the
    learning rate by about 2 % for a 10 % longer or shorter plan.  max_steps = min(config.max_steps,
    budget / seconds per step): config.max_steps is a cap.  Under several ranks every measurement
    is the slowest rank's, so that every rank stops at the same step.

    The whole tail is timed (checkpoint saves and validation excluded, at their own
    synchronisations), so the summary shows the seconds per step actually spent next to the
    planned ones: `measured_s_per_step`.
    """

    name = "budget"

    def __init__(self, config: TrainConfig, device: torch.device, step: int = 0, world_size: int = 1,
                 all_reduce=None):
        b = config.budget
        self.budget, self.device, self.step0 = b.time_s, device, step
        # several ranks: each window's time is the slowest rank's, so all fix the same max_steps
        self.world_size, self.all_reduce = world_size, all_reduce
        self.window, self.tolerance = b.calibration_steps, b.calibration_tolerance
        self.start_at, self.limit = b.calibration_skip, config.optim.warmup_steps
        self.cap = config.max_steps
        self.replan_fraction, self.fractions = b.calibration_replan, list(b.checkpoint_fractions)
        self.replan_min = 5 * self.window  # steps timed before a re-plan improves on the calibration
        self.schedule_follows = config.optim.schedule_steps is None  # else the config's own length stays
        self.load_state_dict({})

    def load_state_dict(self, state: dict) -> None:
        """The plan of the checkpoint resumed (empty: none yet, calibrate from the start)."""
        self.counters = {k: v for k, v in (state or {}).items() if k in _STATE}
        self.pending = self.budget is not None and "resolved_max_steps" not in self.counters
        self.t0, self.windows = None, []
        # the tail measurement: from calibration's end (or a resume's first steps) to the last step
        self.tail_from = None if self.pending or self.budget is None else self.step0 + self.start_at
        self.tail_t0, self.paused_s, self.paused_at = None, 0.0, 0.0

    def state_dict(self) -> dict:
        return dict(self.counters)

    def summary(self) -> dict:
        return {"time_budget_s": self.budget, **{k: self.counters.get(k) for k in _SUMMARY}}

    def max_steps(self, max_steps: int) -> int:
        return int(self.counters.get("resolved_max_steps", max_steps)) if self.budget is not None else max_steps

    def _now(self, sync: bool = True) -> float:
        if sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_step_end(self, step: int) -> Plan | None:
        """Called after every step; returns a Plan at the steps that fix max_steps (the
        calibration, then the re-plan)."""
        if self.tail_from is not None and step == self.tail_from:
            self.tail_t0 = self._now()
        if not self.pending:
            return self._replan(step) if step == self.counters.get("replan_at") else None
        if step < self.start_at or (step - self.start_at) % self.window:
            return None
        now = self._now()
        if self.t0 is None:
            self.t0 = now
            return None
        per_step, self.t0 = self._slowest((now - self.t0) / self.window), now
        self.windows.append(per_step)
        # go on while the next window still ends within warm-up and the budget is not spent by then
        if step + self.window <= self.limit and (step + self.window) * per_step < self.budget:
            return None
        last = self.windows[-3:]
        per_step = sorted(last)[1] if len(last) == 3 else per_step  # the median of three, else the latest
        resolved = self._steps(step, per_step)
        spread = self.counters["calibration_spread"] = max(last) / min(last) - 1
        self.counters.update(steady_s_per_step=per_step, calibrated_s_per_step=per_step,
                             resolved_max_steps=resolved, calibrated_at=step)
        # the re-plan: before the first checkpoint fraction, and long enough after this step to count
        at = round(min([self.replan_fraction] + [0.8 * f for f in self.fractions]) * resolved)
        if self.replan_fraction > 0 and at >= step + self.replan_min and at < resolved:
            self.counters["replan_at"] = at
        self.pending = False
        self.tail_from, self.tail_t0 = step, now
        message = (f"step {step}: {per_step * 1e3:.1f} ms per step measured; the time budget of "
                   f"{self.budget:g} s gives max_steps={resolved}")
        if "replan_at" in self.counters:
            message += f", planned again at step {self.counters['replan_at']}"
        if spread > self.tolerance:
            message += (f" (warning: the last three timed windows differ by {100 * spread:.0f} %: the step time "
                        "was not steady yet)")
        return self._plan(resolved, message)

    def _slowest(self, per_step: float) -> float:
        if self.world_size > 1:
            per_step = float(self.all_reduce(torch.tensor(per_step, dtype=torch.float64, device=self.device), op="max"))
        return per_step

    def _steps(self, step: int, per_step: float) -> int:
        return max(step, min(self.cap, int(self.budget / per_step)))

    def _tail_s_per_step(self, step: int) -> float | None:
        if self.tail_t0 is None or step <= self.tail_from:
            return None
        return (self._now() - self.tail_t0 - self.paused_s) / (step - self.tail_from)

    def _replan(self, step: int) -> Plan | None:
        """max_steps again, from every step timed since the calibration (or since a resume's
        first steps); the plan it replaces stays in counters["calibrated_s_per_step"]."""
        del self.counters["replan_at"]
        timed = step - self.tail_from if self.tail_t0 is not None else 0
        if timed < self.replan_min:  # resumed just before the re-plan: too few steps to improve on it
            return None
        per_step = self._slowest(self._tail_s_per_step(step))
        before = int(self.counters["resolved_max_steps"])
        resolved = self._steps(step, per_step)
        self.counters.update(steady_s_per_step=per_step, resolved_max_steps=resolved, replanned_at=step)
        since = "calibration" if self.tail_from == self.counters.get("calibrated_at") else "resume"
        return self._plan(resolved, f"step {step}: {per_step * 1e3:.1f} ms per step over the {timed} steps since the "
                              f"{since}; max_steps planned again: {resolved} (was {before})")

    def _plan(self, max_steps: int, message: str) -> Plan:
        return Plan(max_steps, max_steps if self.schedule_follows else None, message)

    def pause(self):
        """Enter a stretch that is not training (a checkpoint save, validation)."""
        if self.tail_t0 is not None:
            self.paused_at = self._now()

    def resume(self):
        if self.tail_t0 is not None:
            self.paused_s += self._now(sync=False) - self.paused_at

    def finish(self, step: int) -> str | None:
        """At the last step: counters["measured_s_per_step"], the tail's seconds per step; returns a
        warning when it is off the planned figure by more than the tolerance (then the run had
        steps x measured seconds, not its budget)."""
        measured = self._tail_s_per_step(step)
        if measured is None:
            return None
        self.counters["measured_s_per_step"] = measured
        self.tail_t0 = None
        planned = self.counters.get("steady_s_per_step")
        if self.budget is None or not planned or abs(measured / planned - 1) <= self.tolerance:
            return None
        return (f"step {step}: the steps took {measured * 1e3:.1f} ms each, not the planned {planned * 1e3:.1f} ms: "
                f"this run had about {step * measured:.0f} s of steps, not the budget's {self.budget:g} s")

    def keep_steps(self, max_steps: int) -> frozenset[int]:
        """The steps of `checkpoint_fractions`, once max_steps is final (with a time budget, none
        before the step at which it became final)."""
        if self.pending:
            return frozenset()
        first = self.counters.get("replanned_at", self.counters.get("calibrated_at", self.start_at + self.window)) \
            if self.budget is not None else 1
        return frozenset(max(first, round(f * max_steps)) for f in self.fractions)
