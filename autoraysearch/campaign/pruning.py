"""Early stopping: a screen run with no realistic chance of clearing the keep bar is stopped and logged `pruned`.

The rule compares the run with the best model's curve at the same seed; a reader can check it by hand
from the training logs:

* Reference. The best model's curve: its metric after each epoch, read from the progress lines
  (`epoch=3/20 train_loss=0.41 val_acc=0.8123 elapsed_s=12.0`) that train.py's judge reported for its
  screen run, kept in .autoraysearch/logs (`baseline.curve.json` at first, then each keep's, e.g.
  `7.curve.json`; reference_curves.py reads them).
  That run used the campaign's first seed, as every screen run does, so the two curves differ by the
  candidate's change and not by the seed: the gap at epoch e is a paired gap.
* Prediction. Once MIN_FIT past screens ran to the end, the campaign's own history says how the gap
  at epoch e carries to the end: a least-squares line, final gap ≈ a + b × gap at e, with its residual
  spread s, fitted per epoch on every past screen (each against the best of its time, at the same seed).
  The line starts from a prior, "the gap carries to the end as it is" (final gap = gap at e), worth
  PRIOR_SCREENS screens a seed's noise either side of the best (at ±√2·σ_e); the campaign's screens pull
  it away from there (with no seed noise measured, the line has no prior). Without it, a line through
  three screens far ahead of their best (a young campaign's big wins) extrapolated to stop runs level
  with the best, even runs ahead of it.
* Check. A screen run is stopped after epoch e (any e before the last) when even its best value so far
  predicts a final gap more than STOP_Z prediction errors below the screen's bar (noise.py): it cannot
  realistically earn the paired seeds a keep needs. An epoch whose line is flat (b ≤ 0) stops nothing.
* Exploration. A stopped screen never reaches the history, so a line fitted on a few poor screens could
  stop every screen after them and never be corrected: after EXPLORE_AFTER screens stopped in a row, the
  next ones are stopped only EXPLORE_Z prediction errors below the bar, until one runs to the end and the
  line is fitted again with it.
* Before MIN_FIT screens: the cautious rule of "clearly behind": after a third of the epochs, behind the
  reference by more than PRUNE_SIGMAS × √2 × σ_e, σ_e the campaign's seed noise at epoch e (the pooled
  spread of the seed curves of every multi-seed row, never less than the noise of final values); with no
  noise measured, FALLBACK_FRACTION (5 %) of the best's final value, at least FALLBACK_FLOOR.
* Never pruned: confirmation runs (the other seeds of a promising screen), the baseline, a run whose
  train.py prints no such lines or whose best's log has none, epochs beyond the reference curve, and
  every run when early stopping is off (`autoraysearch run --no-early-stop`, setting early_stop).

A pruned run's seconds are what it used; its row says where it stopped and its last value.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, replace

from autoraysearch.campaign.noise import IDENTICAL, Bar, Noise


MIN_FRACTION = 1 / 3  # share of the epochs a run trains before it may be pruned
PRUNE_SIGMAS = 3.0  # standard deviations of the difference of two single runs
FALLBACK_FRACTION = 0.05  # the margin without measured noise, as a share of the reference's value
FALLBACK_FLOOR = 1e-3  # ... and at least this, for a reference value near 0
NOISE_ROWS = 20  # the latest multi-seed rows whose curves measure the per-epoch noise
MIN_FIT = 3  # past screens run to the end before their fitted prediction may stop a run
PRIOR_SCREENS = 2  # the weight of the prior line (the gap carries as it is), in screens (see Prediction)
STOP_Z = 0.5  # prediction errors below the screen's bar before a run is stopped (about a 31 % chance of passing the screen left, less of a keep)
EXPLORE_AFTER = 5  # screens stopped in a row, after which the next are held to a looser line (see Exploration)
EXPLORE_Z = 1.5  # ... stopped only this many prediction errors below the bar (about a 7 % chance of passing the screen left)
RAN_TO_THE_END = ("baseline", "keep", "discard")  # results-log rows whose screen run trained every epoch
_EPOCH = re.compile(r"^\s*epoch=(\d+)(?:/(\d+))?(?:\s|$)")
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf)"


@dataclass(frozen=True)
class EpochPoint:
    """One progress line: the epoch, the epochs planned (None with a time budget), and the metric then."""

    epoch: int
    epochs: int | None
    value: float


@dataclass(frozen=True)
class PruneRule:
    """What a screen run is held against: the best's curve, the margin, and which way is better."""

    reference: tuple[float, ...]  # the best model's metric after epoch 1, 2, …
    margins: tuple[float, ...]  # how far behind the reference a run may fall at epoch 1, 2, … (the last for later ones)
    higher_is_better: bool = True
    min_fraction: float = MIN_FRACTION
    exploring: bool = False  # the looser line of EXPLORE_Z after EXPLORE_AFTER stops in a row
    fits: tuple[GapFit | None, ...] = ()  # a fitted rule's line per epoch, which its stop message quotes
    screen_bar: float = 0.0  # ... and the screen's bar those lines are held to

    def margin(self, epoch: int) -> float:
        return self.margins[min(epoch, len(self.margins)) - 1]

    def budget(self, point: EpochPoint) -> int:
        """The epochs the run will train: what its line says, else as many as the best trained."""
        return point.epochs or len(self.reference)

    def may_prune_at(self, point: EpochPoint) -> bool:
        """Whether the run has trained enough, has epochs left to save, and the reference reaches this far."""
        budget = self.budget(point)
        return self.min_fraction * budget <= point.epoch < budget and point.epoch <= len(self.reference)

    def behind(self, value: float, epoch: int) -> bool:
        """Whether `value` is worse than the reference at `epoch` by more than the margin."""
        gap = self.reference[epoch - 1] - value
        return (gap if self.higher_is_better else -gap) > self.margin(epoch)


def parse_progress(line: str, metric: str) -> EpochPoint | None:
    """The epoch and metric of a progress line such as `epoch=3/20 … val_acc=0.8123 …`; None for other lines."""
    match = _EPOCH.match(line)
    if match is None:
        return None
    found = re.search(rf"(?:^|\s){re.escape(metric)}={_NUMBER}(?:\s|$)", line)
    if found is None:
        return None
    value = float(found.group(1))
    epoch, epochs = int(match.group(1)), int(match.group(2)) if match.group(2) else None
    if not math.isfinite(value) or epoch < 1:
        return None
    return EpochPoint(epoch=epoch, epochs=epochs, value=value)


def read_curve(text: str, metric: str) -> tuple[float, ...]:
    """The metric after each epoch, from epoch 1 on for as long as the epochs follow each other."""
    values: dict[int, float] = {}
    for line in text.splitlines():
        point = parse_progress(line, metric)
        if point is not None:
            values.setdefault(point.epoch, point.value)
    curve = []
    while len(curve) + 1 in values:
        curve.append(values[len(curve) + 1])
    return tuple(curve)


def epoch_noise(groups: list[list[tuple[float, ...]]]) -> tuple[float, ...]:
    """Per epoch, the pooled standard deviation of several models' seed curves (groups of one add nothing)."""
    sigmas = []
    for epoch in itertools.count():
        squares, dof = 0.0, 0
        for curves in groups:
            values = [curve[epoch] for curve in curves if len(curve) > epoch]
            if len(values) >= 2:
                mean = sum(values) / len(values)
                squares += sum((x - mean) ** 2 for x in values)
                dof += len(values) - 1
        if not dof:
            return tuple(sigmas)
        sigmas.append(math.sqrt(squares / dof))
    raise AssertionError("unreachable")


def epoch_sigma(noise: Noise, sigmas: tuple[float, ...], epoch: int) -> float:
    """The seed noise of one run at `epoch` (0-based): the per-epoch spread, never less than the final values'."""
    return max(noise.sigma if noise.measured else 0.0, sigmas[epoch] if epoch < len(sigmas) else 0.0)


def margins_for(reference: tuple[float, ...], noise: Noise, sigmas: tuple[float, ...] = ()) -> tuple[float, ...]:
    """How far behind the reference a run must be, epoch by epoch, to be pruned (see the module docstring)."""
    margins = []
    for epoch in range(len(reference)):
        sigma = epoch_sigma(noise, sigmas, epoch)
        if sigma > IDENTICAL:
            margins.append(PRUNE_SIGMAS * math.sqrt(2) * sigma)
        else:
            margins.append(max(FALLBACK_FLOOR, FALLBACK_FRACTION * abs(reference[-1])))
    return tuple(margins)


@dataclass(frozen=True)
class GapFit:
    """Final paired gap ≈ intercept + slope × the gap at one epoch, with the residual spread, over `screens` screens."""

    intercept: float
    slope: float
    residual: float
    screens: int

    def margin(self, screen_bar: float, z: float = STOP_Z) -> float:
        """How far behind the reference a run may be at this epoch before it cannot realistically clear the bar:
        where the line's prediction is z prediction errors below it."""
        if self.slope <= IDENTICAL:
            return math.inf
        error = self.residual * math.sqrt(1 + 1 / self.screens)
        return (self.intercept + z * error - screen_bar) / self.slope


def fit_gap(pairs: list[tuple[float, float]], spread: float = 0.0) -> GapFit | None:
    """The least-squares line through (gap at an epoch, final gap) and PRIOR_SCREENS prior points on the line
    final = gap at ±`spread` (none when it is 0); None with fewer than MIN_FIT screens."""
    if len(pairs) < MIN_FIT:
        return None
    if spread > IDENTICAL:
        pairs = pairs + [(d, d) for d in itertools.islice(itertools.cycle((-spread, spread)), PRIOR_SCREENS)]
    n = len(pairs)
    mean_x = sum(x for x, _ in pairs) / n
    mean_y = sum(y for _, y in pairs) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in pairs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in pairs) / sxx if sxx > IDENTICAL else 0.0
    intercept = mean_y - slope * mean_x
    squares = sum((y - intercept - slope * x) ** 2 for x, y in pairs)
    return GapFit(intercept, slope, math.sqrt(squares / (n - 2)), n)


def screen_gaps(history: list[tuple[tuple[float, ...], tuple[float, ...]]], higher_is_better: bool) -> list[list[tuple[float, float]]]:
    """Per epoch, (gap then, final gap) of every past screen that ran to the end beside its best's curve."""
    sign = 1.0 if higher_is_better else -1.0
    per_epoch: list[list[tuple[float, float]]] = []
    for curve, reference in history:
        if len(curve) < 2 or len(curve) != len(reference):
            continue
        final = sign * (curve[-1] - reference[-1])
        for e in range(len(curve) - 1):
            while len(per_epoch) <= e:
                per_epoch.append([])
            per_epoch[e].append((sign * (curve[e] - reference[e]), final))
    return per_epoch


def fitted_rule(reference: tuple[float, ...], bar: Bar, history, sigmas: tuple[float, ...] = (),
                z: float = STOP_Z) -> PruneRule | None:
    """The keep-bar rule: stop where the predicted final gap is z prediction errors below the screen's bar;
    None before MIN_FIT screens. `sigmas`, the per-epoch seed noise, spread the prior's points."""
    gaps = screen_gaps(history, bar.higher_is_better)
    fits = [fit_gap(pairs, math.sqrt(2) * epoch_sigma(bar.noise, sigmas, e)) for e, pairs in enumerate(gaps)]
    if not reference or not any(fits):
        return None
    margins = tuple(fits[e].margin(bar.screen_bar(), z) if e < len(fits) and fits[e] else math.inf
                    for e in range(len(reference)))
    return PruneRule(reference=reference, margins=margins, higher_is_better=bar.higher_is_better, min_fraction=0.0,
                     fits=tuple(fits), screen_bar=bar.screen_bar())


def stopped_in_a_row(statuses) -> int:
    """Screens stopped between epochs (`pruned` rows) since the last one that ran to its end; other rows
    (crashes, confirmations, rollbacks) neither count nor end the run."""
    count = 0
    for status in reversed(list(statuses)):
        if status in RAN_TO_THE_END:
            break
        count += status == "pruned"
    return count


def rule_for(reference: tuple[float, ...], bar: Bar, sigmas: tuple[float, ...] = (), history=(),
             stopped: int = 0) -> PruneRule | None:
    """The rule against the best's curve: fitted on past screens once there are enough, else the cautious one;
    the fitted line loosened to EXPLORE_Z once `stopped` screens stopped in a row reach EXPLORE_AFTER."""
    if not reference:
        return None
    exploring = stopped >= EXPLORE_AFTER
    fitted = fitted_rule(reference, bar, list(history), sigmas, EXPLORE_Z if exploring else STOP_Z)
    if fitted is not None:
        return replace(fitted, exploring=exploring)
    return PruneRule(reference=reference, margins=margins_for(reference, bar.noise, sigmas),
                     higher_is_better=bar.higher_is_better)


class CurveWatch:
    """Follows one run's progress lines and says when it falls clearly behind the rule's reference."""

    def __init__(self, rule: PruneRule | None, metric: str):
        self.rule = rule
        self.metric = metric
        self.last: EpochPoint | None = None
        self.best_so_far: float | None = None
        self.reason = ""  # why it was pruned, once it was

    def see(self, line: str) -> bool:
        """Take one stdout line; True when the run should be stopped now."""
        point = parse_progress(line, self.metric)
        if point is None:
            return False
        self.last = point
        if self.best_so_far is None:
            self.best_so_far = point.value
        else:
            pick = max if (self.rule is None or self.rule.higher_is_better) else min
            self.best_so_far = pick(self.best_so_far, point.value)
        rule = self.rule
        if rule is None or self.reason or not rule.may_prune_at(point) or not rule.behind(self.best_so_far, point.epoch):
            return False
        self.reason = pruned_reason(point, rule, self.metric, self.best_so_far)
        return True


def pruned_reason(point: EpochPoint, rule: PruneRule, metric: str, best_so_far: float | None = None) -> str:
    """'pruned at epoch 2/6: val_acc=0.1000, best had 0.9200 there (margin 0.021)'; a fitted rule says what its
    line predicts instead: '… there (past screens predict it ends 0.0062 worse than the best; a screen needs 0.0020 better)'."""
    reference = rule.reference[point.epoch - 1]
    head = f"pruned at epoch {point.epoch}/{rule.budget(point)}: {metric}={point.value:.4f}, best had {reference:.4f} there"
    fit = rule.fits[point.epoch - 1] if point.epoch <= len(rule.fits) else None
    if fit is None:
        return f"{head} (margin {rule.margin(point.epoch):.2g})"
    value = point.value if best_so_far is None else best_so_far
    ends = fit.intercept + fit.slope * (value - reference if rule.higher_is_better else reference - value)
    return (f"{head} (past screens predict it ends {abs(ends):.4f} {'better' if ends >= 0 else 'worse'} than the best; "
            f"a screen needs {rule.screen_bar:.4f} better)")
