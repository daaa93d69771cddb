"""Decisions that survive seed noise: the campaign's noise floor, the screen, and the keep rule.

The rule, which a reader can check by hand from the results log:

* Noise. Every model trained with several seeds (the baseline at setup, each confirmed candidate)
  contributes its per-seed values (the `runs` column). The noise σ is their pooled standard
  deviation: sqrt(Σ (x − mean of its row)² / Σ (n − 1)) over those rows, with Σ (n − 1) degrees of
  freedom.
* Screen. A candidate is first trained once, with the campaign's first seed. It is trained with the
  other K − 1 seeds only if that one run could still clear the bar below: it lies no more than one σ
  short of it (better than mean_best + bar − σ).
* Keep. A candidate is kept when mean_candidate − mean_best > max(min_delta, t × σ × sqrt(1/n_c + 1/n_b)),
  t being Student's one-sided 95 % quantile for the pooled degrees of freedom (a pooled-variance t-test),
  and the sign turned round for a metric where lower is better.
* With one seed (K = 1), or when the K baseline runs were identical (a train.py that ignores the
  seed), there is no noise to measure: a candidate is kept when its single run beats the best by more
  than min_delta, as a greedy search would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Sequence

CONFIDENCE = 0.95
IDENTICAL = 1e-9  # a spread below this is rounding error: the runs were identical


@dataclass(frozen=True)
class Noise:
    """The campaign's seed noise: pooled standard deviation and its degrees of freedom (0: unknown)."""

    sigma: float = 0.0
    dof: int = 0
    samples: int = 0  # runs it was measured from

    @property
    def measured(self) -> bool:
        return self.dof > 0 and self.sigma > IDENTICAL

    def describe(self) -> str:
        if not self.measured:
            return "noise not measured: decisions use single runs"
        return f"noise σ = {self.sigma:.2g} over {self.samples} seed runs"


@dataclass(frozen=True)
class Bar:
    """What a candidate must beat: the best model's runs, the noise, the user's minimum gain and direction."""

    best_runs: tuple[float, ...] = ()
    noise: Noise = Noise()
    higher_is_better: bool = True
    min_delta: float = 0.0

    @property
    def best_mean(self) -> float:
        return fmean(self.best_runs)

    def gain(self, value: float) -> float:
        """How much better than the best's mean `value` is (positive: better), whatever the direction."""
        return (value - self.best_mean) if self.higher_is_better else (self.best_mean - value)

    def margin(self, candidate_runs: int) -> float:
        """The gain a mean over `candidate_runs` seeds must exceed to be kept."""
        if not self.noise.measured:
            return self.min_delta
        spread = self.noise.sigma * math.sqrt(1 / candidate_runs + 1 / len(self.best_runs))
        return max(self.min_delta, t_quantile(self.noise.dof) * spread)


def pooled_noise(groups: Iterable[Sequence[float]]) -> Noise:
    """The pooled standard deviation of several models' per-seed values (groups of one add nothing)."""
    squares, dof, samples = 0.0, 0, 0
    for runs in groups:
        if len(runs) < 2:
            continue
        mean = fmean(runs)
        squares += sum((x - mean) ** 2 for x in runs)
        dof += len(runs) - 1
        samples += len(runs)
    return Noise(sigma=math.sqrt(squares / dof), dof=dof, samples=samples) if dof else Noise()


def t_quantile(dof: int, confidence: float = CONFIDENCE) -> float:
    """Student's t quantile (one-sided) for `dof` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(confidence, dof))


def worth_confirming(screen: float, bar: Bar, seeds: int) -> bool:
    """Whether a single screen run could still be a keep once all `seeds` have run (see the module docstring)."""
    if seeds <= 1 or not bar.noise.measured:
        return False
    return bar.gain(screen) > bar.margin(seeds) - bar.noise.sigma


def is_kept(runs: Sequence[float], bar: Bar) -> bool:
    """The keep rule: the mean beats the best's by more than the noise (and min_delta) allows."""
    if not runs:
        return False
    return bar.gain(fmean(runs)) > bar.margin(len(runs))


def spread(runs: Sequence[float]) -> float:
    """The sample standard deviation of one model's runs (0 for a single run)."""
    if len(runs) < 2:
        return 0.0
    mean = fmean(runs)
    return math.sqrt(sum((x - mean) ** 2 for x in runs) / (len(runs) - 1))


def format_runs(runs: Sequence[float]) -> str:
    """The `runs` column: every seed's value, comma-separated."""
    return ",".join(f"{x:.6g}" for x in runs)


def parse_runs(cell: str) -> tuple[float, ...]:
    """The `runs` column back as numbers; an unreadable cell counts as no runs."""
    try:
        return tuple(float(x) for x in cell.split(",") if x.strip())
    except ValueError:
        return ()


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


def campaign_noise(rows) -> Noise:
    """The noise measured so far: every multi-seed row of the log, pooled."""
    return pooled_noise(runs_of(r) for r in rows if r.status in NOISE_STATUSES)


def bar_from_log(log, min_delta: float = 0.0) -> Bar:
    """What the next candidate must beat, as the results log says."""
    best = log.best()
    runs = runs_of(best) if best is not None else ()
    return Bar(best_runs=runs, noise=campaign_noise(log.rows), higher_is_better=log.higher_is_better,
               min_delta=min_delta)


def seed_columns(runs: Sequence[float]) -> dict[str, str]:
    """The seeds/std/runs cells of a row whose metric is the mean of several runs (none for a single run)."""
    if len(runs) < 2:
        return {}
    return {"seeds": str(len(runs)), "std": f"{spread(runs):.4g}", "runs": format_runs(runs)}
