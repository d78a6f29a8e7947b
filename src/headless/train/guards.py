"""Guards of the loop: the time budget, the non-finite-step guard and the stop signals.

Each is a small stateful object the loop consults once per step without a host sync (the time
budget syncs once per calibration window and around saves, the non-finite guard reads back on log and save steps).
"""

from __future__ import annotations

import signal
import time
from typing import NamedTuple

import torch

from headless.config import TrainConfig
from headless.errors import HeadlessError


class TrainingInterrupted(HeadlessError):
    """SIGTERM / SIGINT arrived: a checkpoint was saved, the run can be resumed.  The CLI exits
    with 128 + the signal number (143 for SIGTERM, 130 for SIGINT), as shells do."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Turns SIGTERM (what clusters send before they kill) and SIGINT into a flag that the loop
    reads at the end of a step: it then saves a checkpoint and stops.  Only in the main thread
    (Python delivers signals there); a second signal of either kind gives up at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def interrupted(self, step: int, run_dir) -> TrainingInterrupted:
        name = signal.Signals(self.received).name if self.received else "a signal"
        return TrainingInterrupted(f"stopped by {name} at step {step}; checkpoint saved, continue with "
                                   f"`headless pretrain --run-dir {run_dir} --resume`", self.received)

    def agreed(self, world_size: int, all_reduce, device, check: bool) -> bool:
        """Whether to stop now.  One process: the flag, every step.  Several: on `check` steps
        (log/save steps, which synchronise anyway) the ranks agree, so all stop at the same step."""
        if world_size == 1:
            return self.received is not None
        if not check:
            return False
        flag = torch.tensor(float(self.received or 0), device=device)
        signum = int(all_reduce(flag, op="max"))
        if signum and self.received is None:
            self.received = signum
        return bool(signum)


class Plan(NamedTuple):
    """A (new) max_steps for the loop, and the line it logs."""

    max_steps: int
    message: str


class TimeBudget:
    """Turns `time_budget_s` into max_steps from the measured steady-state seconds per step.

    Steps 1..skip are untimed (compilation).  Then windows of `calibration_steps` steps are timed
    between device synchronisations up to the end of warm-up (the last step whose learning rate
    does not depend on max_steps), and the median of the last three windows gives the first plan:
    the calibration is as late as the schedule allows.  Stopping at the first three windows that
    agree was not enough: the first few hundred MLM steps ran up to twice as slow as the rest on
    the H200 once, steadily, so early windows agreed and were still slow (vanilla bert-small got
    half its budget).  Calibration stops earlier only when the budget would be spent before
    warm-up ends.  `calibration_spread` records how far the three windows were apart.

    Even at warm-up's end, 20-step windows were 5-30 % off the run's own step time (the H200,
    three studies), so max_steps is planned once more at `calibration_replan` of the first plan
    (before the first checkpoint fraction), from every step timed since the calibration: a few
    thousand steps.  The cosine's length moves with it; at a fifth of the run that changes the
    learning rate by about 2 % for a 10 % longer or shorter plan.  max_steps = min(config.max_steps,
    budget / seconds per step): config.max_steps is a cap.  Under several ranks every measurement
    is the slowest rank's, so that every rank stops at the same step.

    The whole tail is timed (checkpoint saves and validation excluded, at their own
    synchronisations), so the summary shows the seconds per step actually spent next to the
    planned ones: `measured_s_per_step`.
    """

    def __init__(self, config: TrainConfig, counters: dict, device: torch.device, step: int,
                 world_size: int = 1, all_reduce=None):
        self.budget, self.device, self.counters = config.time_budget_s, device, counters
        # several ranks: each window's time is the slowest rank's, so all fix the same max_steps
        self.world_size, self.all_reduce = world_size, all_reduce
        self.window, self.tolerance = config.calibration_steps, config.calibration_tolerance
        self.start_at, self.limit = config.calibration_skip, config.optim.warmup_steps
        self.cap = config.max_steps
        self.pending = self.budget is not None and "resolved_max_steps" not in counters
        self.replan_fraction, self.fractions = config.calibration_replan, list(config.checkpoint_fractions)
        self.replan_min = 5 * self.window  # steps timed before a re-plan improves on the calibration
        # the schedule's length is the plan's unless the config set its own (a resume reads the plan back)
        length = config.optim.schedule_steps
        self.schedule_follows = length is None or length == counters.get("resolved_max_steps")
        self.t0, self.windows = None, []
        # the tail measurement: from calibration's end (or a resume's first steps) to the last step
        self.tail_from = None if self.pending or self.budget is None else step + config.calibration_skip
        self.tail_t0, self.paused_s, self.paused_at = None, 0.0, 0.0

    def _now(self, sync: bool = True) -> float:
        if sync and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def observe(self, step: int) -> Plan | None:
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
        return Plan(resolved, message)

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
        return Plan(resolved, f"step {step}: {per_step * 1e3:.1f} ms per step over the {timed} steps since the "
                              f"{since}; max_steps planned again: {resolved} (was {before})")

    def pause(self):
        """Enter a stretch that is not training (a checkpoint save, validation)."""
        if self.tail_t0 is not None:
            self.paused_at = self._now()

    def unpause(self):
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

    def fix_length(self, config: TrainConfig, max_steps: int) -> TrainConfig:
        """The planned max_steps, and the schedule's length with it unless the config set one."""
        import dataclasses

        optim = config.optim
        if self.schedule_follows:
            optim = dataclasses.replace(optim, schedule_steps=max_steps)
        return dataclasses.replace(config, max_steps=max_steps, optim=optim)

    def keep_steps(self, config: TrainConfig) -> frozenset[int]:
        """The steps of `checkpoint_fractions`, once max_steps is final (with a time budget, none
        before the step at which it became final)."""
        if self.pending:
            return frozenset()
        first = self.counters.get("replanned_at", self.counters.get("calibrated_at", self.start_at + self.window)) \
            if self.budget is not None else 1
        return frozenset(max(first, round(f * config.max_steps)) for f in config.checkpoint_fractions)


class NonFiniteGuard:
    """Counts the steps skipped for a non-finite loss or gradient, on the device.

    `record` (every step) only queues device ops; `check` (log and save steps, and the last step)
    reads the count back, updates counters["nan_skips"] (an int, as checkpoints and the summary
    store it), logs the skips since the last check and raises once there are more than
    `max_skips`.  So a diverged run is stopped at the next log or save step, not at the step that
    went bad; the skipped steps in between changed nothing (see `skip_if_nonfinite`).
    """

    def __init__(self, device: torch.device, counters: dict, max_skips: int, step: int):
        self.counters, self.max_skips = counters, max_skips
        self.base = int(counters["nan_skips"])  # skips of the run before a resume
        self.last_check = step
        self.count = torch.zeros((), dtype=torch.int64, device=device)  # skips since this process started
        self.last_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based step, 0: none

    def record(self, bad: torch.Tensor, step_number: int) -> None:
        self.count += bad
        self.last_bad = torch.maximum(self.last_bad, bad * step_number)

    def check(self, step: int, logger) -> None:
        count, last_bad = torch.stack([self.count, self.last_bad]).tolist()
        total = self.base + count
        new = total - self.counters["nan_skips"]
        self.counters["nan_skips"] = total
        since, self.last_check = self.last_check, step
        if new <= 0:
            return
        if logger:
            logger.write(f"step {step}: {new} step(s) with a non-finite loss/gradient skipped in steps "
                         f"{since + 1}-{step}, the last at step {last_bad} ({total}/{self.max_skips})")
        if total > self.max_skips:
            raise HeadlessError(f"training diverged: {total} non-finite steps (last at step {last_bad}); "
                                "lower optim.lr or check the data")
