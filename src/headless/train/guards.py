"""Guards of the loop: the non-finite-step guard and the stop signals.

Each is a small stateful object the loop consults once per step without a host sync (the
non-finite guard reads back on log and save steps).
"""

from __future__ import annotations

import signal

import torch

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


class UniqueRoomGuard:
    """Stops the run when a micro-batch had more unique targets than CWT's "bounded" path has room
    for (`objective.unique_bound`).  Inside a captured graph nothing can branch: that micro-batch's
    loss is NaN (so its step is skipped, like any non-finite step) and its count is kept here on
    the device; `check` (log and save steps) reads it and raises one line naming the key.  With
    no bound (null: room for min(vocab, rows)) nothing can overflow and the guard does nothing."""

    def __init__(self, device: torch.device, unique_bound):
        self.unique_bound = unique_bound
        self.worst = torch.zeros((), dtype=torch.int64, device=device) if unique_bound is not None else None

    def record(self, overflow) -> None:
        if self.worst is not None and overflow is not None:
            torch.maximum(self.worst, overflow, out=self.worst)

    def check(self, step: int, all_reduce=lambda t, op="max": t) -> None:
        worst = 0 if self.worst is None else int(all_reduce(self.worst.clone(), op="max"))
        if worst:
            raise room_error(step, worst, self.unique_bound, "a micro-batch",
                             " (such steps were skipped)", "; a resume may change it")


def room_error(step: int, worst: int, bound, which: str, skipped: str = "", resume: str = "") -> HeadlessError:
    """The one line that stops a run whose micro-batch (training or validation) had more unique
    targets than CWT's "bounded" room holds."""
    return HeadlessError(f"step {step}: {which} had {worst:,} unique targets, more than objective.unique_bound="
                         f"{bound} leaves room for{skipped}; set objective.unique_bound={worst} or more "
                         f"(null: always enough{resume})")


class StepGuards:
    """The loop's per-step checks as one part: the unique-room guard, then the non-finite guard
    (the room's overflow is the cause of a NaN step, so it speaks first)."""

    def __init__(self, device: torch.device, counters: dict, config, step: int):
        self.non_finite = NonFiniteGuard(device, counters, config.max_nan_skips, step)
        self.room = UniqueRoomGuard(device, config.objective.unique_bound)

    def record(self, out, step_number: int) -> None:
        self.non_finite.record(out.bad, step_number)
        self.room.record(out.result.unique_overflow)

    def check(self, step: int, logger, all_reduce) -> None:
        self.room.check(step, all_reduce)
        self.non_finite.check(step, logger)  # may raise HeadlessError("training diverged ...")
