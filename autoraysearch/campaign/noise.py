"""Decisions that survive seed noise: paired comparisons, a robust noise estimate, and a sequential keep rule.

The rule, which a reader can check by hand from the results log:

* Pairing. Seed i of every model is the campaign's seed + i − 1, and train.py seeds the init, the data
  order and dropout from it, so the candidate at seed s and the best at seed s share their luck. A
  comparison is the per-seed difference d_s = candidate_s − best_s (turned round where lower is better);
  the `diffs` column of a row lists them, `gain` is their mean and `interval` its 90 % interval.
* Noise. σ_d, the spread of one paired difference, is pooled over the campaign's comparisons (rows with
  two or more differences), starting from a prior: twice the variance of the baseline's seed runs (two
  independent runs differ by that much), worth the baseline's degrees of freedom. Pooling is robust: in
  log order, each comparison's variance counts at most CAP times the pooled variance before it, so one
  candidate whose runs are wild (or wrecked on purpose) can move σ_d by a bounded factor, never set it.
  The per-run σ shown by status and used by early stopping is pooled the same way over the rows' runs.
* Screen. A candidate is trained once, at the campaign's seed. Only a screen whose difference beats
  SCREEN_Z × σ_d (and min_delta) gets more seeds; the first extra seed comes at once.
* Keep. With n ≥ 2 differences, the candidate is kept when their mean beats KEEP_Z × σ_d / √n (and
  min_delta); it gets another seed (up to the campaign's seeds) while the mean is within one standard
  error of that bar; otherwise it is discarded. KEEP_Z is set for few false keeps among keeps (at most
  10 %), not for a 5 % error on every comparison: most proposals that pass a screen are real.
* With one seed (K = 1), or when the baseline's runs were identical (a train.py that ignores the seed),
  there is no noise to measure: a candidate is kept when its single run beats the best's run at the same
  seed by more than min_delta, as a greedy search would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Sequence

IDENTICAL = 1e-9  # a spread below this is rounding error: the runs were identical
SCREEN_Z = 0.0  # a screen passes when its paired difference beats this many σ_d (0: any gain at the same seed)
KEEP_Z = 1.0  # the paired mean must beat this many standard errors σ_d/√n
CONFIRM_SEEDS = 2  # seeds a candidate has before it can be kept
CAP = 4.0  # a comparison's variance counts at most this many times the pooled variance before it
OWN_SPREAD = 2.0  # a candidate whose paired differences spread more than this many σ_d is judged by its own spread
INTERVAL_Z = 1.645  # the `interval` column: a 90 % interval of the paired gain


@dataclass(frozen=True)
class Noise:
    """A pooled standard deviation and its degrees of freedom (0: unknown)."""

    sigma: float = 0.0
    dof: float = 0
    samples: int = 0  # values it was measured from

    @property
    def measured(self) -> bool:
        return self.dof > 0 and self.sigma > IDENTICAL

    def describe(self) -> str:
        if not self.measured:
            return "noise not measured: decisions use single runs"
        return f"noise σ = {self.sigma:.2g} over {self.samples} seed runs"


@dataclass(frozen=True)
class Bar:
    """What a candidate must beat: the best's runs by seed, the noise, the user's minimum gain and direction."""

    best_runs: tuple[float, ...] = ()  # the best model at seed, seed + 1, …
    noise: Noise = Noise()  # σ of one run (shown to the user, used by early stopping)
    higher_is_better: bool = True
    min_delta: float = 0.0
    paired: Noise = Noise()  # σ_d of one paired difference: what decisions use

    @property
    def best_mean(self) -> float:
        return fmean(self.best_runs)

    @property
    def measured(self) -> bool:
        return self.paired.measured

    def gain(self, value: float) -> float:
        """How much better than the best's mean `value` is (positive: better), whatever the direction."""
        return (value - self.best_mean) if self.higher_is_better else (self.best_mean - value)

    def differences(self, runs: Sequence[float]) -> tuple[float, ...]:
        """The paired gains: the candidate at each seed minus the best at the same seed."""
        sign = 1.0 if self.higher_is_better else -1.0
        return tuple(sign * (c - b) for c, b in zip(runs, self.best_runs))

    def margin(self, seeds: int) -> float:
        """The paired mean gain over `seeds` seeds that is kept."""
        if not self.measured:
            return self.min_delta
        return max(self.min_delta, KEEP_Z * self.paired.sigma / math.sqrt(max(seeds, 1)))

    def margin_for(self, differences: Sequence[float]) -> float:
        """The margin for these paired differences: the pooled one, or the candidate's own spread's when that is far larger.

        One candidate cannot move the pooled σ_d much (CAP), so it must not profit from it either: a
        model whose runs disagree wildly (one that wrecks some seeds) is kept only if its mean beats
        its own standard error.
        """
        n = len(differences)
        own = spread(differences)
        if self.measured and n >= 2 and own > OWN_SPREAD * self.paired.sigma:
            return max(self.margin(n), KEEP_Z * own / math.sqrt(n))
        return self.margin(n)

    def screen_bar(self) -> float:
        return max(self.min_delta, SCREEN_Z * self.paired.sigma) if self.measured else self.min_delta

    def interval(self, differences: Sequence[float]) -> tuple[float, float]:
        """The paired gain and the half width of its 90 % interval (0 without measured noise)."""
        half = INTERVAL_Z * self.paired.sigma / math.sqrt(len(differences)) if self.measured else 0.0
        return fmean(differences), half


def robust_pool(groups: Iterable[Sequence[float]], prior: Noise = Noise()) -> Noise:
    """Pool the spread of several groups, in order, each group's variance capped at CAP × the pool before it.

    Groups of one add nothing. The prior (if measured) starts the pool; without one, the first group
    with a spread does, uncapped.
    """
    squares = prior.sigma ** 2 * prior.dof if prior.measured else 0.0
    dof = prior.dof if prior.measured else 0
    samples = prior.samples if prior.measured else 0
    for values in groups:
        if len(values) < 2:
            continue
        mean = fmean(values)
        variance = sum((x - mean) ** 2 for x in values) / (len(values) - 1)
        if dof and squares > 0:
            variance = min(variance, CAP * squares / dof)
        squares += variance * (len(values) - 1)
        dof += len(values) - 1
        samples += len(values)
    return Noise(sigma=math.sqrt(squares / dof), dof=dof, samples=samples) if dof else Noise()


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise:
    """The per-run noise of several models' seed runs, the first (the baseline) anchoring the rest."""
    return robust_pool(groups)


def paired_prior(baseline_runs: Sequence[float]) -> Noise:
    """What σ_d is before any comparison: two independent runs of the baseline differ by √2 σ."""
    noise = robust_pool([baseline_runs])
    if not noise.measured:
        return Noise()
    return Noise(sigma=math.sqrt(2) * noise.sigma, dof=noise.dof, samples=0)


def screen_passes(difference: float, bar: Bar) -> bool:
    """Whether one paired difference (the screen) earns the candidate more seeds."""
    return difference > bar.screen_bar()


def next_step(differences: Sequence[float], bar: Bar, max_seeds: int) -> str:
    """'keep', 'discard' or 'more' (train another paired seed) after these paired differences."""
    n = len(differences)
    if n == 0:
        return "discard"
    if not bar.measured or max_seeds <= 1:
        return "keep" if fmean(differences) > bar.min_delta else "discard"
    if n == 1:
        return "more" if screen_passes(differences[0], bar) else "discard"
    mean, margin = fmean(differences), bar.margin_for(differences)
    if n >= CONFIRM_SEEDS and mean > margin:
        return "keep"
    if n < max_seeds and mean + bar.paired.sigma / math.sqrt(n) > margin:
        return "more"
    return "discard"


def worth_confirming(screen: float, bar: Bar, seeds: int) -> bool:
    """Whether a single screen run earns more seeds (see the module docstring)."""
    if seeds <= 1 or not bar.measured or not bar.best_runs:
        return False
    return screen_passes(bar.differences([screen])[0], bar)


def is_kept(runs: Sequence[float], bar: Bar) -> bool:
    """The keep rule on a candidate's runs, paired with the best's runs at the same seeds."""
    differences = bar.differences(runs)
    if not differences:
        return False
    if not bar.measured:
        return differences[0] > bar.min_delta if len(runs) == 1 else fmean(differences) > bar.min_delta
    return len(differences) >= CONFIRM_SEEDS and fmean(differences) > bar.margin_for(differences)


def spread(runs: Sequence[float]) -> float:
    """The sample standard deviation of one model's runs (0 for a single run)."""
    if len(runs) < 2:
        return 0.0
    mean = fmean(runs)
    return math.sqrt(sum((x - mean) ** 2 for x in runs) / (len(runs) - 1))


def format_runs(runs: Sequence[float]) -> str:
    """The `runs` and `diffs` columns: every seed's value, comma-separated."""
    return ",".join(repr(float(x)) for x in runs)  # full precision: the TSV is where numbers are kept


def parse_runs(cell: str) -> tuple[float, ...]:
    """The `runs` column back as numbers; an unreadable cell counts as no runs."""
    try:
        values = tuple(float(x) for x in cell.split(",") if x.strip())
    except ValueError:
        return ()
    return values if all(math.isfinite(x) for x in values) else ()


def summary(runs: Sequence[float]) -> str:
    """'3 seeds 0.9712 ± 0.004' for a row's description."""
    return f"{len(runs)} seeds {fmean(runs):.4f} ± {spread(runs):.3g}"


# ---- read from the results log ----

NOISE_STATUSES = ("baseline", "keep", "discard")  # rows whose runs are clean measurements of one model


def runs_of(row) -> tuple[float, ...]:
    """A results-log row's per-seed values (its `runs` column), or its single metric."""
    runs = parse_runs(row.extra.get("runs", ""))
    if runs:
        return runs
    return (row.metric,) if row.metric is not None else ()


def ordered_for_noise(rows) -> list:
    """The rows that measure noise, the baseline first: it is the user's own model, the anchor of the pool."""
    measured = [r for r in rows if r.status in NOISE_STATUSES]
    return sorted(measured, key=lambda r: r.status != "baseline")


def campaign_noise(rows) -> Noise:
    """The per-run noise measured so far: every multi-seed row of the log, pooled robustly."""
    return pooled_noise(runs_of(r) for r in ordered_for_noise(rows))


def campaign_paired_noise(rows) -> Noise:
    """σ_d: the baseline's prior, then every row's paired differences (`diffs`), pooled robustly."""
    ordered = ordered_for_noise(rows)
    baseline = next((runs_of(r) for r in ordered if r.status == "baseline"), ())
    return robust_pool((parse_runs(r.extra.get("diffs", "")) for r in ordered), prior=paired_prior(baseline))


def bar_from_log(log, min_delta: float = 0.0) -> Bar:
    """What the next candidate must beat, as the results log says."""
    best = log.best()
    runs = runs_of(best) if best is not None else ()
    return Bar(best_runs=runs, noise=campaign_noise(log.rows), higher_is_better=log.higher_is_better,
               min_delta=min_delta, paired=campaign_paired_noise(log.rows))


def seed_columns(runs: Sequence[float]) -> dict[str, str]:
    """The seeds/std/runs cells of a row whose metric is the mean of several runs (none for a single run)."""
    if len(runs) < 2:
        return {}
    return {"seeds": str(len(runs)), "std": f"{spread(runs):.4g}", "runs": format_runs(runs)}


def paired_columns(runs: Sequence[float], bar: Bar) -> dict[str, str]:
    """The diffs/gain/interval cells of a compared row: per-seed paired gains, their mean and its 90 % half width."""
    differences = bar.differences(runs)
    if not differences:
        return {}
    gain, half = bar.interval(differences)
    return {"diffs": format_runs(differences), "gain": f"{gain:+.4g}", "interval": f"±{half:.2g}" if half else ""}
