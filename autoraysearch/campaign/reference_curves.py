"""The curves early stopping compares with, read from a campaign's logs: its best's, its seed runs', its past screens'.

Kept apart from pruning.py, whose rules are pure functions of curves: this module knows the campaign
and its files. Each curve is what a trial's trusted progress said (trials/process.py records it from
a generated train.py's channel, tasks/log.py writes it as .autoraysearch/logs/LABEL.curve.json), never
what model code printed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from autoraysearch.campaign.experiment import Campaign
from autoraysearch.campaign.noise import NOISE_STATUSES, Bar
from autoraysearch.campaign.pruning import NOISE_ROWS, PruneRule, epoch_noise, rule_for, stopped_in_a_row


def curve_log_name(status: str, iteration: str) -> str:
    """The training log holding a results-log row's screen run: the baseline's, else the row's label."""
    return "baseline" if status == "baseline" else iteration


def logged_curve(campaign: Campaign, label: str) -> tuple[float, ...]:
    """The curve in .autoraysearch/logs/<label>.curve.json; empty when it is missing or unreadable.

    It holds what the trial's trusted progress said (a generated train.py's channel), never what the
    model code printed, so no candidate can set the reference the ones after it are stopped against.
    """
    try:
        values = json.loads(Path(campaign.paths.trial_curve(label)).read_text())
    except (OSError, ValueError):
        return ()
    if not isinstance(values, list):
        return ()
    return tuple(float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v))


def seed_curves(campaign: Campaign, row) -> list[tuple[float, ...]]:
    """The curves of a multi-seed row's runs: its screen run's log, then <label>-seed2.log …"""
    name = curve_log_name(row.status, row.iteration)
    try:
        seeds = int(row.extra.get("seeds", "") or 1)
    except ValueError:
        return []
    labels = [name, *(f"{name}-seed{n}" for n in range(2, seeds + 1))]
    return [curve for label in labels if (curve := logged_curve(campaign, label))]


def campaign_rule(campaign: Campaign, bar: Bar) -> PruneRule | None:
    """The rule for this iteration's screen runs; None when early stopping is off or the best has no curve."""
    from autoraysearch.campaign.results_log import read_results_log

    if not campaign.settings.early_stop:
        return None
    return rule_from_log(campaign, read_results_log(campaign.paths.results, campaign.settings.higher_is_better), bar)


def rule_from_log(campaign: Campaign, log, bar: Bar) -> PruneRule | None:
    """The rule a results log (as it stood at some iteration) sets: its best's curve, its rows' seed curves."""
    best = log.best()
    if best is None:
        return None
    noisy = [r for r in log.rows if r.status in NOISE_STATUSES and r.extra.get("seeds", "1") not in ("", "1")]
    sigmas = epoch_noise([seed_curves(campaign, row) for row in noisy[-NOISE_ROWS:]])
    return rule_for(logged_curve(campaign, curve_log_name(best.status, best.iteration)), bar, sigmas,
                    screen_history(campaign, log), stopped_in_a_row(row.status for row in log.rows))


def screen_history(campaign: Campaign, log) -> list[tuple[tuple[float, ...], tuple[float, ...]]]:
    """(screen curve, curve of the best it was compared with) of every past candidate, in log order."""
    history = []
    best = None
    for row in log.rows:
        if row.status == "baseline":
            best = row
        elif row.status in ("keep", "discard") and best is not None:
            history.append((logged_curve(campaign, row.iteration),
                            logged_curve(campaign, curve_log_name(best.status, best.iteration))))
            if row.status == "keep":
                best = row
    return history
