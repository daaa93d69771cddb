"""Opt-in stop conditions: the loop runs forever unless one of these is asked for."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoraysearch.errors import AutoraysearchError


@dataclass(frozen=True)
class Progress:
    """What the loop has done in this run, as the stop conditions see it."""

    iterations: int
    started: datetime
    best: float | None
    iterations_since_keep: int


@dataclass(frozen=True)
class StopConditions:
    max_iterations: int | None = None
    deadline: datetime | None = None
    max_hours: float | None = None
    target: float | None = None
    patience: int | None = None

    def stop_time(self, started: datetime) -> datetime | None:
        """When a time-based condition (the deadline, the hours) holds: running trials are stopped then."""
        times = [t for t in (self.deadline, started + timedelta(hours=self.max_hours) if self.max_hours else None) if t]
        return min(times, default=None)

    def reason_to_stop(self, progress: Progress, now: datetime, higher_is_better: bool) -> str | None:
        """Why the campaign should stop now, or None to go on."""
        if self.max_iterations is not None and progress.iterations >= self.max_iterations:
            return f"reached {self.max_iterations} iteration{'s' * (self.max_iterations != 1)}"
        if self.deadline is not None and now >= self.deadline:
            return f"reached the deadline {self.deadline:%Y-%m-%d %H:%M}"
        if self.max_hours is not None and now - progress.started >= timedelta(hours=self.max_hours):
            return f"ran for {self.max_hours:g} hours"
        if self.target is not None and progress.best is not None:
            reached = progress.best >= self.target if higher_is_better else progress.best <= self.target
            if reached:
                return f"reached the target {self.target:g} (best {progress.best:.4g})"
        if self.patience is not None and progress.iterations_since_keep >= self.patience:
            return f"no improvement in {self.patience} iteration{'s' * (self.patience != 1)}"
        return None


def parse_deadline(text: str, now: datetime) -> datetime:
    """`HH:MM` on the local clock: the next time the clock shows it (tomorrow if already past)."""
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise AutoraysearchError(f"deadline {text!r} is not a time of day; write it as HH:MM, e.g. 07:00.")
    moment = now.replace(hour=int(match.group(1)), minute=int(match.group(2)), second=0, microsecond=0)
    return moment if moment > now else moment + timedelta(days=1)


def validate(conditions: StopConditions) -> StopConditions:
    """Reject values that could never make sense, in one sentence each naming the flag and what it allows."""
    if conditions.max_iterations is not None and conditions.max_iterations < 1:
        raise AutoraysearchError(f"--max-iterations {conditions.max_iterations} is not valid: it must be 1 or more.")
    if conditions.max_hours is not None and not (math.isfinite(conditions.max_hours) and conditions.max_hours > 0):
        raise AutoraysearchError(
            f"--max-hours {conditions.max_hours:g} is not valid: it must be a positive, finite number of hours."
        )
    if conditions.target is not None and not math.isfinite(conditions.target):
        raise AutoraysearchError(f"--target {conditions.target:g} is not valid: it must be a finite number.")
    if conditions.patience is not None and conditions.patience < 1:
        raise AutoraysearchError(f"--patience {conditions.patience} is not valid: it must be 1 or more iterations.")
    return conditions
