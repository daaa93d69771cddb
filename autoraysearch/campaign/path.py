"""The campaign's path, confirmed: the best against the last confirmed point on fresh paired seeds.

Every CONFIRM_EVERY keeps, and when a campaign ends, the best model and the last point that held (the
baseline at first) are both trained with CONFIRM_SEEDS seeds no decision has used (a candidate's
first-run seeds where seeds train in one run: there they cost little). Their paired gain
is logged as a `confirmed` row (commit: the best's), or, when it is not positive, as a `rollback` row
(commit: the point that held), and the branch goes back there. The confirmed gain of the campaign is
the sum of its confirmed stretches, with the 90 % interval of that sum; `report` and the final
summary state it. These rows never enter a keep decision: their seeds are not the campaign's.

Where seeds train in one run, a run's start-up is most of its cost, so a model that will be the next
point is trained ahead at the next confirmation's seeds in a run it has anyway: the baseline in setup's
run of its seeds, a best that holds in its confirmation's run. Those values (the `ahead` cell of that
row) are held out of every decision until that confirmation, which then trains the best alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Sequence

from autoraysearch.campaign.noise import Bar, paired_columns, parse_runs
from autoraysearch.campaign.results_log import PATH_STATUSES

CONFIRM_EVERY = 3  # keeps between two confirmations of the path
CONFIRM_SEEDS = 3  # fresh paired seeds per confirmation, with a run per seed
FRESH_OFFSET = 500  # fresh seeds start at the campaign's seed + this (+ FRESH_STRIDE per confirmation so far)
FRESH_STRIDE = 32  # the most seeds one confirmation may use (settings allow at most 32 seeds)
# The time kept for a path confirmation before the stop time, in a first run's time: its two runs go at once but
# share the nodes, and each step adds its overhead (on two CPU cores, two runs of about 11 s took 16 s together).
CONFIRMATION_FIRST_RUNS = 2


@dataclass(frozen=True)
class PathPoint:
    """A point of the path: the results-log row it is, and its commit (None: the baseline's)."""

    label: str
    commit: str | None


def last_confirmed(rows) -> PathPoint:
    """The last point that held: the latest confirmed or rolled-back-to commit, else the baseline."""
    for row in reversed(rows):
        if row.status in PATH_STATUSES:
            return PathPoint(row.iteration, None if row.commit == "baseline" else row.commit)
    return PathPoint("baseline", None)


def keeps_since_confirmed(rows) -> int:
    """Keeps logged after the last confirmation row."""
    count = 0
    for row in reversed(rows):
        if row.status in PATH_STATUSES:
            break
        count += row.status == "keep"
    return count


def fresh_seeds(campaign_seed: int, rows, count: int = CONFIRM_SEEDS) -> list[int]:
    """The `count` seeds of the next confirmation: never a seed any decision or earlier confirmation used."""
    done = sum(r.status in PATH_STATUSES for r in rows)
    first = campaign_seed + FRESH_OFFSET + FRESH_STRIDE * done
    return list(range(first, first + min(count, FRESH_STRIDE)))


def next_fresh_seeds(campaign_seed: int, rows, count: int) -> list[int]:
    """The seeds of the confirmation after the next one: those a best that holds is trained at ahead."""
    return [seed + FRESH_STRIDE for seed in fresh_seeds(campaign_seed, rows, count)]


def runs_ahead(rows, count: int) -> tuple[float, ...] | None:
    """The last point that held at the next confirmation's `count` seeds, if it was trained there ahead; else None.

    Only the row that made the point counts (the latest path row, or the baseline before any): an older
    row's values are at an earlier confirmation's seeds.
    """
    row = next((r for r in reversed(rows) if r.status in PATH_STATUSES), None)
    if row is None:
        row = next((r for r in rows if r.status == "baseline" and r.readable), None)
    runs = parse_runs(row.extra.get("ahead", "")) if row is not None else ()
    return runs if len(runs) == count else None


def verdict(best_runs: Sequence[float], point_runs: Sequence[float], bar: Bar) -> tuple[str, dict[str, str]]:
    """('confirmed' or 'rollback', the diffs/gain/interval cells) of the best against the last point that held."""
    point = Bar(best_runs=tuple(point_runs), higher_is_better=bar.higher_is_better, paired=bar.paired)
    differences = point.differences(best_runs)
    status = "confirmed" if differences and fmean(differences) > 0 else "rollback"
    return status, paired_columns(best_runs, point)


def confirmed_gain(rows) -> tuple[float, float, int] | None:
    """The campaign's confirmed gain: the sum of its confirmed stretches, the 90 % half width, how many; None if none."""
    stretches = [r for r in rows if r.status == "confirmed" and r.extra.get("gain")]
    if not stretches:
        return None
    gain = sum(float(r.extra["gain"]) for r in stretches)
    half = math.sqrt(sum(float(r.extra.get("interval", "±0").lstrip("±") or 0) ** 2 for r in stretches))
    return gain, half, len(stretches)


def describe_confirmed(rows) -> str:
    """'confirmed gain +0.0123 ±0.004 over 2 stretches on fresh seeds', or that nothing is confirmed yet."""
    found = confirmed_gain(rows)
    if found is None:
        return "no gain confirmed on fresh seeds yet"
    gain, half, n = found
    return f"confirmed gain {gain:+.4g} ±{half:.2g} (90 %) over {n} stretch{'es' * (n != 1)} on fresh seeds"
