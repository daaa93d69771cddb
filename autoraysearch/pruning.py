"""Early stopping: a screen run clearly behind the best model's learning curve is stopped and logged `pruned`.

The rule is a curve comparison with a noise margin; a reader can check it by hand from the training logs:

* Reference. The best model's curve: its metric after each epoch, read from the progress lines
  (`epoch=3/20 train_loss=0.41 val_acc=0.8123 elapsed_s=12.0`) of its screen run's log in
  .autoraysearch/logs (`baseline.log` at first, then the log of each keep, e.g. `7.log` or `7b.log`).
  That run used the campaign's first seed, as every screen run does, so the two curves differ by the
  candidate's change and not by the seed.
* Check. After epoch e of E, once e ≥ E/3 and while e < E (E: the `e/E` of the lines; without it, as with a time
  budget, the length of the reference curve), a screen run is pruned when even its best value so far is
  behind the reference's value at epoch e by more than the margin. Behind means lower for a metric where
  higher is better, higher where lower is better. Its best value so far, not its last, so that one bad
  epoch never kills a run.
* Margin. PRUNE_SIGMAS × √2 × σ, σ being the campaign's seed noise (noise.py: the pooled spread of the
  baseline's K seeds at setup and of every confirmed candidate): three standard deviations of the
  difference of two single runs. When the noise is not measured (one seed, or identical runs) the margin
  is a fixed FALLBACK_FRACTION (5 %) of the best's final value (|value|), at least FALLBACK_FLOOR.
* Never pruned: confirmation runs (the other seeds of a promising screen), the baseline, a run whose
  train.py prints no such lines or whose best's log has none, epochs beyond the reference curve, and
  every run when early stopping is off (`autoraysearch run --no-early-stop`, setting early_stop).

A pruned run's seconds are what it used; its row says where it stopped and its last value. The margin
is wide on purpose: σ is the noise of final values, and a curve's early epochs are noisier.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from autoraysearch.noise import Bar, Noise

if TYPE_CHECKING:
    from autoraysearch.experiment import Campaign

MIN_FRACTION = 1 / 3  # share of the epochs a run trains before it may be pruned
PRUNE_SIGMAS = 3.0  # standard deviations of the difference of two single runs
FALLBACK_FRACTION = 0.05  # the margin without measured noise, as a share of the reference's value
FALLBACK_FLOOR = 1e-3  # ... and at least this, for a reference value near 0
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
    margin: float
    higher_is_better: bool = True
    min_fraction: float = MIN_FRACTION

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
        return (gap if self.higher_is_better else -gap) > self.margin


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


def margin_for(noise: Noise, best_final: float) -> float:
    """How far behind the reference a run must be to be pruned (see the module docstring)."""
    if noise.measured:
        return PRUNE_SIGMAS * math.sqrt(2) * noise.sigma
    return max(FALLBACK_FLOOR, FALLBACK_FRACTION * abs(best_final))


def rule_for(reference: tuple[float, ...], bar: Bar) -> PruneRule | None:
    """The rule against the best's curve; None when there is no curve to compare with."""
    if not reference:
        return None
    return PruneRule(reference=reference, margin=margin_for(bar.noise, reference[-1]), higher_is_better=bar.higher_is_better)


def curve_log_name(status: str, iteration: str) -> str:
    """The training log holding a results-log row's screen run: the baseline's, else the row's label."""
    return "baseline" if status == "baseline" else iteration


def best_curve(campaign: Campaign) -> tuple[float, ...]:
    """The current best model's curve, from its screen run's log; empty when it printed no progress lines."""
    from autoraysearch.results_log import read_results_log

    settings = campaign.settings
    best = read_results_log(campaign.paths.results, settings.higher_is_better).best()
    if best is None:
        return ()
    log_file = campaign.paths.trial_log(curve_log_name(best.status, best.iteration))
    try:
        return read_curve(Path(log_file).read_text(errors="replace"), settings.metric)
    except OSError:
        return ()


def campaign_rule(campaign: Campaign, bar: Bar) -> PruneRule | None:
    """The rule for this iteration's screen runs; None when early stopping is off or the best has no curve."""
    if not campaign.settings.early_stop:
        return None
    return rule_for(best_curve(campaign), bar)


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
        self.reason = pruned_reason(point, rule, self.metric)
        return True


def pruned_reason(point: EpochPoint, rule: PruneRule, metric: str) -> str:
    """'pruned at epoch 2/6: val_acc=0.1000, best had 0.9200 there (margin 0.021)'."""
    return (
        f"pruned at epoch {point.epoch}/{rule.budget(point)}: {metric}={point.value:.4f}, "
        f"best had {rule.reference[point.epoch - 1]:.4f} there (margin {rule.margin:.2g})"
    )
