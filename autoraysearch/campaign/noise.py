"""Decisions that survive seed noise: paired comparisons, a robust noise estimate, and a sequential keep rule.

The rule, which a reader can check by hand from the results log:

* Pairing. Seed i of every model is the campaign's seed + i − 1, and train.py seeds the init, the data
  order and dropout from it, so the candidate at seed s and the best at seed s share their luck. A
  comparison is the per-seed difference d_s = candidate_s − best_s (turned round where lower is better);
  the `diffs` column of a row lists them, `gain` is their mean and `interval` its 90 % interval.
* Noise. σ_d, the spread of one paired difference, is pooled over the campaign's comparisons (rows with
  two or more differences), starting from a prior: twice the variance of the baseline's seed runs (two
  independent runs differ by that much), worth the baseline's degrees of freedom, at most PRIOR_DOF. Pooling is robust: in
  log order, each comparison's variance counts at most CAP times the pooled variance before it, so one
  candidate whose runs are wild (or wrecked on purpose) can move σ_d by a bounded factor, never set it.
  The per-run σ shown by status and used by early stopping is pooled the same way over the rows' runs.
* What proposals usually do. The true paired gains of the campaign's proposals are taken to spread
  like a normal law, mean μ and spread τ, learned from the screens of its latest PRIOR_WINDOW
  candidates (a broken model's, more than CLIP σ_d below the best, left out; a gain counted at most CLIP
  σ_d): μ is their mean and τ² their variance less
  σ_d², both shrunk toward PRIOR_WEIGHT pseudo-screens of a null-centred law of spread PRIOR_SPREAD σ_d.
  A campaign whose proposals mostly help lowers its bar; one whose proposals mostly hurt raises it. One
  candidate is one screen among many: it cannot set the law.
  Where a candidate's seeds all train in one run (seeds_in_one_run), every candidate has all its
  differences, none chosen by a screen, so the law is learned from their means, each with noise σ_d²/n.
* Keep. After n paired differences with mean m, the chance that the candidate truly gains (more than
  min_delta) is the normal posterior's: precision P = 1/τ² + n/σ_d², mean (μ/τ² + n·m/σ_d²)/P. The
  `chance` column of a compared row is that chance. A keep whose chance is c is false with chance
  1 − c, so the campaign holds its expected false keeps to FALSE_KEEP_RATE (one in ten) of its keeps: a
  candidate is kept when its chance is at least 1 − (FALSE_KEEP_RATE × (keeps + 1) − the 1 − c its
  keeps so far spent), never less than KEEP_FLOOR and never more than KEEP_CONFIDENCE (90 %, the first
  keep's bar), and its own mean is positive. Sure keeps leave room for less sure ones; keeps at the
  bar leave none. The `needed` margin is the m where the chance reaches that confidence. It needs
  CONFIRM_SEEDS differences; it gets another seed (up to the campaign's seeds) while the chance is at
  least MORE_CONFIDENCE; otherwise it is discarded.
* Screen. A candidate is trained once, at the campaign's seed. A screen whose chance of a true gain is at
  least MORE_CONFIDENCE (and beats min_delta) gets more seeds; the first extra seed comes at once.
* With one seed (K = 1), or when the baseline's runs were identical (a train.py that ignores the seed),
  there is no noise to measure: a candidate is kept when its single run beats the best's run at the same
  seed by more than min_delta, as a greedy search would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Iterable, Sequence

from autoraysearch.campaign.results_log import BEST_SEEDS

IDENTICAL = 1e-9  # a spread below this is rounding error: the runs were identical
KEEP_CONFIDENCE = 0.9  # the chance of a true gain the first keep needs: at most about one keep in ten false
FALSE_KEEP_RATE = 0.1  # the share of a campaign's keeps expected to be false, at most
KEEP_FLOOR = 0.7  # the least chance of a true gain any keep needs, however sure the keeps before it were
MORE_CONFIDENCE = 0.5  # the chance of a true gain that earns another paired seed
PRIOR_WINDOW = 12  # the latest screens that say what the campaign's proposals usually do
PRIOR_WEIGHT = 4.0  # pseudo-screens of the null-centred law those screens are shrunk toward
PRIOR_SPREAD = 2.0  # that law's spread of true gains, in σ_d
MIN_PRIOR_SPREAD = 0.25  # the learned spread never falls below this many σ_d
CLIP = 4.0  # screens further than this many σ_d below zero (broken models) are left out; above, they count as this
CONFIRM_SEEDS = 2  # seeds a candidate has before it can be kept
PRIOR_DOF = 2  # the most degrees of freedom the baseline's spread weighs in σ_d (paired_prior)
CAP = 4.0  # a comparison's variance counts at most this many times the pooled variance before it
OWN_SPREAD = 2.0  # a candidate whose paired differences spread more than this many σ_d is judged by its own spread
INTERVAL_Z = 1.645  # the `interval` column: a 90 % interval of the paired gain
HOPELESS = 0.05  # a run of seeds whose chance to end kept falls below this is stopped (chance_to_keep)
HOPELESS_AFTER = 2  # but not before this many of its seeds are in


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
class Prior:
    """What the campaign's proposals usually do: true paired gains spread like Normal(mean, spread²), in metric units.

    spread 0: not learned yet; the null-centred law of spread PRIOR_SPREAD σ_d stands in.
    """

    mean: float = 0.0
    spread: float = 0.0
    screens: int = 0

    def describe(self) -> str:
        if not self.screens:
            return "no screens yet"
        return f"proposals gain {self.mean:+.2g} ± {self.spread:.2g} (from {self.screens} screens)"


def effect_prior(screens: Sequence[float | tuple[float, int]], sigma_d: float) -> Prior:
    """The law of true paired gains behind these screens (paired differences, positive: better), shrunk toward null.

    A screen is one difference, or (the mean of n differences, n) with noise σ_d²/n.
    """
    if sigma_d <= IDENTICAL:
        return Prior()
    observed = [x if isinstance(x, tuple) else (x, 1) for x in list(screens)[-PRIOR_WINDOW:]]
    # a model that broke (far below the best) says nothing about the gains near the bar
    recent = [(min(CLIP * sigma_d, x), n) for x, n in observed if x > -CLIP * sigma_d]
    weight = len(recent) + PRIOR_WEIGHT
    mean = sum(x for x, _ in recent) / weight
    # each pseudo-screen of the null law spreads by √(PRIOR_SPREAD² + 1) σ_d around 0
    total = (sum((x - mean) ** 2 for x, _ in recent) + PRIOR_WEIGHT * (PRIOR_SPREAD ** 2 + 1) * sigma_d ** 2) / weight
    noise = (sum(sigma_d ** 2 / n for _, n in recent) + PRIOR_WEIGHT * sigma_d ** 2) / weight
    spread = math.sqrt(max(total - noise, (MIN_PRIOR_SPREAD * sigma_d) ** 2))
    return Prior(mean=mean, spread=spread, screens=len(recent))


def keep_confidence(keep_chances: Sequence[float]) -> float:
    """The chance of a true gain the next keep needs, after keeps that had these chances (see the module docstring)."""
    spent = sum(1 - c for c in keep_chances)
    allowed = FALSE_KEEP_RATE * (len(keep_chances) + 1) - spent
    return min(KEEP_CONFIDENCE, max(KEEP_FLOOR, 1 - allowed))


@dataclass(frozen=True)
class Bar:
    """What a candidate must beat: the best's runs by seed, the noise, the user's minimum gain and direction."""

    best_runs: tuple[float, ...] = ()  # the best model at seed, seed + 1, …
    noise: Noise = Noise()  # σ of one run (shown to the user, used by early stopping)
    higher_is_better: bool = True
    min_delta: float = 0.0
    paired: Noise = Noise()  # σ_d of one paired difference: what decisions use
    prior: Prior = Prior()  # what the campaign's proposals usually gain
    keep_confidence: float = KEEP_CONFIDENCE  # the chance of a true gain a keep needs now (keep_confidence())

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

    def law(self) -> tuple[float, float]:
        """The prior's mean and spread, the null-centred stand-in before any screen."""
        if self.prior.spread > 0:
            return self.prior.mean, self.prior.spread
        return 0.0, PRIOR_SPREAD * self.paired.sigma

    def chance(self, differences: Sequence[float]) -> float:
        """The posterior chance that the candidate truly gains more than min_delta, given its paired differences.

        Without measured noise a difference is all there is: 1 when it beats min_delta, else 0."""
        if not differences:
            return 0.0
        if not self.measured:
            return float(fmean(differences) > self.min_delta)
        n, sigma = len(differences), self.sigma_for(differences)
        mean, spread = self.law()
        precision = 1 / spread ** 2 + n / sigma ** 2
        centre = (mean / spread ** 2 + n * fmean(differences) / sigma ** 2) / precision
        return normal_cdf((centre - self.min_delta) * math.sqrt(precision))

    def sigma_for(self, differences: Sequence[float]) -> float:
        """σ_d, or the candidate's own spread when that is far larger.

        One candidate cannot move the pooled σ_d much (CAP), so it must not profit from it either: a
        model whose runs disagree wildly (one that wrecks some seeds) is judged by its own spread.
        """
        own = spread(differences)
        if len(differences) >= 2 and own > OWN_SPREAD * self.paired.sigma:
            return own
        return self.paired.sigma

    def needed(self, seeds: int, sigma: float | None = None, confidence: float | None = None) -> float:
        """The paired mean over `seeds` seeds at which the chance of a true gain reaches `confidence` (the keep's)."""
        sigma = self.paired.sigma if sigma is None else sigma
        confidence = self.keep_confidence if confidence is None else confidence
        n = max(seeds, 1)
        mean, spread = self.law()
        precision = 1 / spread ** 2 + n / sigma ** 2
        z = normal_quantile(confidence)
        return sigma ** 2 * (self.min_delta * precision + z * math.sqrt(precision) - mean / spread ** 2) / n

    def margin(self, seeds: int) -> float:
        """The paired mean gain over `seeds` seeds that is kept."""
        if not self.measured:
            return self.min_delta
        return max(self.min_delta, 0.0, self.needed(seeds))

    def margin_for(self, differences: Sequence[float]) -> float:
        """The margin for these paired differences (judged by their own spread when that is far larger)."""
        if not self.measured or not differences:
            return self.margin(len(differences))
        return max(self.min_delta, 0.0, self.needed(len(differences), self.sigma_for(differences)))

    def screen_bar(self) -> float:
        """The screen difference that earns more seeds."""
        if not self.measured:
            return self.min_delta
        return max(self.min_delta, 0.0, self.needed(1, confidence=MORE_CONFIDENCE))

    def interval(self, differences: Sequence[float]) -> tuple[float, float]:
        """The paired gain and the half width of its 90 % interval (0 without measured noise)."""
        half = INTERVAL_Z * self.paired.sigma / math.sqrt(len(differences)) if self.measured else 0.0
        return fmean(differences), half


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def normal_quantile(p: float) -> float:
    """The standard normal's p-quantile (bisection on the cdf: exact enough, no dependency)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if normal_cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


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
    """What σ_d is before any comparison: two independent runs of the baseline differ by √2 σ.

    Paired runs differ by less, so this only starts the pool: it weighs PRIOR_DOF degrees of freedom
    (three baseline runs' worth) however many seeds the baseline has, and comparisons soon outweigh it.
    """
    noise = robust_pool([baseline_runs])
    if not noise.measured:
        return Noise()
    return Noise(sigma=math.sqrt(2) * noise.sigma, dof=min(noise.dof, PRIOR_DOF), samples=0)


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
    if n >= CONFIRM_SEEDS and fmean(differences) > bar.margin_for(differences):
        return "keep"
    if n < max_seeds and fmean(differences) > 0 and bar.chance(differences) >= MORE_CONFIDENCE:
        return "more"
    return "discard"


def chance_to_keep(differences: Sequence[float], bar: Bar, seeds: int) -> float:
    """The chance that a run of `seeds` paired seeds, of which these differences came first, ends kept.

    The campaign's law and σ_d say where the candidate's true gain lies after these differences, and
    the rest of its differences scatter around it; the run is kept when the mean of all of them clears
    the keep margin at `seeds` seeds (Bar.margin). 1 where the noise is not measured: nothing can be told early.
    """
    k, n = len(differences), seeds
    if not bar.measured or k == 0 or k >= n:
        return 1.0
    sigma = bar.paired.sigma
    mean, spread = bar.law()
    precision = 1 / spread ** 2 + k / sigma ** 2
    centre = (mean / spread ** 2 + k * fmean(differences) / sigma ** 2) / precision
    rest = n - k
    final = (k * fmean(differences) + rest * centre) / n
    scatter = rest / n * math.sqrt(1 / precision + sigma ** 2 / rest)
    return 1 - normal_cdf((bar.margin(n) - final) / scatter)


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

# Rows whose runs are clean measurements of one model: a run pruned between seeds (seed_watch) has the runs of the
# seeds it trained; one pruned between epochs has none.
NOISE_STATUSES = ("baseline", "keep", "discard", "pruned")


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


def campaign_screens(rows, together: bool = False) -> list[float | tuple[float, int]]:
    """Every compared candidate's screen, in log order: the first of its paired differences, or with all its
    seeds in one run (`together`: no screen chose which candidates got more) the mean of all of them and their count."""
    screens = []
    for row in rows:
        if row.status in NOISE_STATUSES:
            diffs = parse_runs(row.extra.get("diffs", ""))
            if diffs:
                screens.append((fmean(diffs), len(diffs)) if together else diffs[0])
    return screens


def campaign_keep_chances(rows) -> list[float]:
    """The chance of a true gain each keep of the log had (its `chance` cell; a keep without one counts as at the first bar)."""
    chances = []
    for row in rows:
        if row.status == "keep":
            try:
                chances.append(min(1.0, max(0.0, float(row.extra.get("chance", "")))))
            except ValueError:
                chances.append(KEEP_CONFIDENCE)
    return chances


def best_runs(log) -> tuple[float, ...]:
    """The best's per-seed values: its row's, then those of the best-seeds rows logged for it since, in seed order.

    A best-seeds row extends the runs only where it starts at the next seed (its `at` cell), so a row
    for another stretch of the path, or one repeated by a resumed iteration, changes nothing.
    """
    best = log.best()
    if best is None:
        return ()
    runs = runs_of(best)
    after = log.rows[next(i for i, r in enumerate(log.rows) if r is best) + 1:]
    for row in after:
        if row.status == BEST_SEEDS and row.commit == best.commit and row.extra.get("at") == str(len(runs) + 1):
            runs += runs_of(row)
    return runs


def bar_from_log(log, min_delta: float = 0.0, together: bool = False) -> Bar:
    """What the next candidate must beat, as the results log says (`together`: the campaign's seeds_in_one_run)."""
    runs = best_runs(log)
    paired = campaign_paired_noise(log.rows)
    return Bar(best_runs=runs, noise=campaign_noise(log.rows), higher_is_better=log.higher_is_better,
               min_delta=min_delta, paired=paired, prior=effect_prior(campaign_screens(log.rows, together), paired.sigma),
               keep_confidence=keep_confidence(campaign_keep_chances(log.rows)))


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
    cells = {"diffs": format_runs(differences), "gain": f"{gain:+.4g}", "interval": f"±{half:.2g}" if half else ""}
    if bar.measured:
        cells["chance"] = f"{bar.chance(differences):.4g}"
    return cells
