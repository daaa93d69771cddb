"""What the results log teaches the ideator: which kinds of change, in which direction, have helped.

Every trained row's description names its arms (see arms). A row's gain is paired where the log
allows: its per-seed runs against the runs of the best it was tried on, seed by seed, which cancels
most of the seed noise; otherwise its logged delta. Gains are scaled by their typical size, so the
scores mean the same on any metric. The whole log counts, so credit carries across keeps. An arm's
value is a shrunk mean gain plus an exploration bonus (few trials, more bonus), less its crashes
and, from the trials' seconds, how much slower it trains; shrinking starts low unless the goal asks
for a smaller or faster model.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import fmean, median
from typing import Iterable

from autoraysearch.ideators.mutate.arms import SHRINKING, Arm, arms, parts

# Words in a campaign's goal that ask for a smaller or faster model.
SMALLER_WORDS = ("small", "fast", "light", "tiny", "compact", "latency", "fewer param", "edge", "mobile", "quick")
EXPLORATION = 0.6  # weight of the bonus for arms tried little
SHRINK_PRIOR = -1.0  # where shrinking starts when the goal does not ask for it
CRASH_WEIGHT = 1.5
SLOWER_WEIGHT = 0.3  # per doubling of an arm's trial seconds over the baseline's
NEAR_MISSES = 4  # best discards whose changes are tried together
NEAR_MISS_HISTORY = 6  # trained candidates needed before any discard counts as a near miss

TRAINED = ("keep", "discard", "pruned")


@dataclass(frozen=True)
class Outcome:
    """One trained or crashed candidate, as the ideator learns from it."""

    description: str
    gain: float | None  # improvement over the best it was tried on (positive is better); None for a crash
    seconds: float | None


@dataclass
class Learner:
    """Arm statistics from a campaign's results log and the value of each arm."""

    outcomes: list[Outcome] = field(default_factory=list)
    smaller_wanted: bool = False
    baseline_seconds: float | None = None

    @classmethod
    def from_rows(cls, rows: Iterable, higher_is_better: bool = True, goal: str = "") -> "Learner":
        """What a results log's rows teach; rows are ResultRow-like (iteration, status, metric, delta, description, extra)."""
        rows = [row for row in rows if getattr(row, "raw", None) is None]
        sign = 1.0 if higher_is_better else -1.0
        bests = [(_number(r.iteration), r) for r in rows if r.status in ("baseline", "keep") and r.metric is not None]
        baseline = next((r for r in rows if r.status == "baseline"), None)
        outcomes = []
        for row in rows:
            if row.status == "crash":
                outcomes.append(Outcome(row.description, None, None))
            elif row.status in TRAINED and (row.metric is not None or row.delta is not None):
                best = _best_before(bests, _number(row.iteration))
                outcomes.append(Outcome(row.description, _gain(row, best, sign), _seconds(row)))
        wanted = any(word in goal.lower() for word in SMALLER_WORDS)
        return cls(outcomes, wanted, _seconds(baseline) if baseline is not None else None)

    def value(self, arm: Arm) -> float:
        """How promising a (kind, direction) is: prior, shrunk mean scaled gain, exploration, crashes, slowness."""
        stats = self._stats.get(arm)
        prior = self._prior(arm)
        trials = len(stats.gains) if stats else 0
        crashes = stats.crashes if stats else 0
        total = sum(len(s.gains) + s.crashes for s in self._stats.values())
        mean = sum(stats.gains) / (trials + 1) if stats else 0.0  # one imaginary trial at zero gain
        bonus = EXPLORATION * math.sqrt(math.log(total + 2) / (trials + crashes + 1))
        crash_share = crashes / (trials + crashes + 1)
        slower = 0.0
        if stats and stats.seconds and self.baseline_seconds:
            slower = max(0.0, math.log2(fmean(stats.seconds) / self.baseline_seconds))
        return prior + 2.0 * mean + bonus - CRASH_WEIGHT * crash_share - SLOWER_WEIGHT * slower

    def _prior(self, arm: Arm) -> float:
        if arm in SHRINKING:
            return 0.5 if self.smaller_wanted else SHRINK_PRIOR
        if self.smaller_wanted and arm[1] in ("up", "add") and arm[0] in ("width", "depth", "layer", "heads"):
            return -0.5
        return 0.0

    def near_misses(self) -> list[str]:
        """The single-edit descriptions of the best discards, best first: changes worth trying together."""
        measured = [o for o in self.outcomes if o.gain is not None]
        if len(measured) < NEAR_MISS_HISTORY:
            return []  # too few results to tell a near miss from the noise
        discards = [o for o in measured if o.gain <= 0 and arms(o.description)]
        discards.sort(key=lambda o: -o.gain)
        found: list[str] = []
        for outcome in discards[:NEAR_MISSES]:
            found += [part for part in parts(outcome.description) if part not in found]
        return found

    @property
    def _stats(self) -> dict[Arm, "_ArmStats"]:
        cached = getattr(self, "_cached_stats", None)
        if cached is not None:
            return cached
        scale = self.scale
        stats: dict[Arm, _ArmStats] = defaultdict(_ArmStats)
        for outcome in self.outcomes:
            for arm in set(arms(outcome.description)):
                entry = stats[arm]
                if outcome.gain is None:
                    entry.crashes += 1
                else:
                    entry.gains.append(max(-3.0, min(3.0, outcome.gain / scale)))
                    if outcome.seconds:
                        entry.seconds.append(outcome.seconds)
        self._cached_stats = dict(stats)
        return self._cached_stats

    @property
    def scale(self) -> float:
        """The typical size of a gain in this campaign, so that values compare across metrics."""
        sizes = [abs(o.gain) for o in self.outcomes if o.gain]
        return max(median(sizes), 1e-6) if sizes else 1.0


@dataclass
class _ArmStats:
    gains: list[float] = field(default_factory=list)
    crashes: int = 0
    seconds: list[float] = field(default_factory=list)


def _number(label: str) -> int:
    match = re.match(r"\d+", label or "")
    return int(match.group()) if match else -1


def _best_before(bests: list, number: int):
    """The best row the candidate of iteration `number` was tried on: the last keep or baseline before it."""
    earlier = [row for n, row in bests if n < number] or [row for _, row in bests[:1]]
    return earlier[-1] if earlier else None


def _runs(row) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in row.extra.get("runs", "").split(",") if x.strip())
    except ValueError:
        return ()


def _gain(row, best, sign: float) -> float | None:
    """The row's improvement over `best`: paired seed by seed when both have runs, else the logged delta."""
    mine, theirs = _runs(row), _runs(best) if best is not None else ()
    if mine and theirs:
        common = min(len(mine), len(theirs))
        return sign * fmean(a - b for a, b in zip(mine[:common], theirs[:common]))
    if row.delta is not None:
        return sign * row.delta
    if best is not None and row.metric is not None and best.metric is not None:
        return sign * (row.metric - best.metric)
    return None


def _seconds(row) -> float | None:
    try:
        return float(row.extra.get("seconds", "")) or None
    except (TypeError, ValueError):
        return None
