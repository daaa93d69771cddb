"""Stopping a run of several seeds once it can no longer be kept, as its judge reports each seed.

Where a candidate's seeds train in one run (seeds_in_one_run), train.py's judge reports each seed's
metric as that seed ends (`seed=3 val_acc=0.9712` on its channel). Each is paired with the best's run at
the same seed, and once HOPELESS_AFTER are in, the run is stopped when its chance to end kept
(noise.chance_to_keep: the campaign's law of gains and σ_d, its remaining seeds still to come) is below
HOPELESS. It is logged `pruned`, with the seeds it trained as its runs (their paired differences enter σ_d
and the law of what proposals gain like any candidate's), and its row says where it stopped.

Never stopped: the baseline, the best's seeds, path confirmations, a run of a user's own train.py (its
lines are not trusted), and every run when early stopping is off (`autoraysearch run --no-early-stop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

from autoraysearch.campaign.metric import parse_metric, seed_line
from autoraysearch.campaign.noise import HOPELESS, HOPELESS_AFTER, Bar, chance_to_keep


@dataclass(frozen=True)
class SeedStop:
    """What a run of several seeds is held against: the bar (the best's runs at the same seeds) and its seed count."""

    bar: Bar
    seeds: int

    def hopeless(self, runs: tuple[float, ...]) -> str:
        """Why the run should stop after these seeds' values, or "" while it may still be kept."""
        differences = self.bar.differences(runs)
        k = len(runs)
        if len(differences) < k or k < HOPELESS_AFTER or k >= self.seeds:
            return ""  # a seed the best lacks cannot be paired; the last seed has nothing left to save
        chance = chance_to_keep(differences, self.bar, self.seeds)
        if chance >= HOPELESS:
            return ""
        return (f"stopped after {k} of {self.seeds} seeds: paired gain {fmean(differences):+.4g}, "
                f"a {chance:.1%} chance to be kept after all {self.seeds}")


def seed_stop_for(bar: Bar, seeds: int, early_stop: bool) -> SeedStop | None:
    """The stop rule for a candidate's run of `seeds` seeds; None where nothing can be told early."""
    if not early_stop or not bar.measured or seeds <= HOPELESS_AFTER or not bar.best_runs:
        return None
    return SeedStop(bar=bar, seeds=seeds)


def reported_seed(line: str, metric: str) -> tuple[int, float] | None:
    """(seed, value) of a judge's `seed=3 val_acc=0.9712` line; None for any other line (its progress lines too)."""
    try:
        said = seed_line(line)
        return None if said is None else (said[0], parse_metric(said[1], metric))
    except ValueError:
        return None


class SeedWatch:
    """Follows one run's seed lines and says when it has no realistic chance of being kept."""

    def __init__(self, stop: SeedStop | None, metric: str):
        self.stop = stop
        self.metric = metric
        self.runs: tuple[float, ...] = ()
        self.reason = ""  # why it was stopped, once it was

    def see(self, line: str) -> bool:
        """Take one channel line; True when the run should be stopped now."""
        if self.stop is None or self.reason:
            return False
        said = reported_seed(line, self.metric)
        if said is None:
            return False
        self.runs += (said[1],)
        self.reason = self.stop.hopeless(self.runs)
        return bool(self.reason)
