"""Early stopping's rule, its line watcher and the trial-process hook it rides on; no Ray, no Prefect."""

from __future__ import annotations

import sys
import textwrap

import pytest

from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.campaign.pruning import (
    FALLBACK_FRACTION, PRUNE_SIGMAS, CurveWatch, PruneRule, epoch_noise, margins_for, parse_progress, read_curve,
    rule_for,
)
from autoraysearch.trials.process import run_in_directory

REFERENCE = (0.50, 0.80, 0.90, 0.93, 0.95, 0.96)


def lines(values, epochs=6, metric="val_acc"):
    return [f"epoch={n}/{epochs} train_loss=0.5 {metric}={v:.4f} elapsed_s={n}.0" for n, v in enumerate(values, 1)]


def first_stop(rule, values, metric="val_acc"):
    """The epoch at which the watch stops the run, or None when it runs to the end."""
    watch = CurveWatch(rule, metric)
    for n, line in enumerate(lines(values, metric=metric), 1):
        if watch.see(line):
            return n, watch.reason
    return None


def test_progress_lines_are_read_by_metric_name_and_anything_else_is_ignored():
    assert parse_progress("epoch=3/20 train_loss=0.41 val_acc=0.8123 elapsed_s=12.0", "val_acc").value == 0.8123
    point = parse_progress("epoch=4 train_loss=0.41 val_loss=1e-2 elapsed_s=12.0", "val_loss")
    assert (point.epoch, point.epochs, point.value) == (4, None, 0.01)
    for line in ("val_acc=0.9", "epoch=3/20 train_loss=0.41", "epoch=3/20 my_val_acc=0.8", "epoch=2/6 val_acc=nan"):
        assert parse_progress(line, "val_acc") is None
    text = "\n".join(["loading", *lines([0.5, 0.8, 0.9]), "epoch=5/6 val_acc=0.99", "val_acc=0.9000"])
    assert read_curve(text, "val_acc") == (0.5, 0.8, 0.9)  # epoch 5 does not follow 3


def test_margin_comes_from_the_campaign_noise_epoch_by_epoch_with_a_fixed_fallback():
    # two models, three seeds each: at epoch 1 they spread by 0.02, at epoch 2 by 0.01, later not at all
    groups = [[(0.50, 0.80, 0.9), (0.52, 0.81, 0.9), (0.54, 0.82, 0.9)], [(0.60, 0.85), (0.62, 0.86), (0.64, 0.87)]]
    sigmas = epoch_noise(groups)
    assert sigmas == pytest.approx((0.02, 0.01, 0.0))
    final = Noise(sigma=0.005, dof=4, samples=6)
    k = PRUNE_SIGMAS * 2 ** 0.5
    assert margins_for((0.5, 0.8, 0.9), final, sigmas) == pytest.approx((k * 0.02, k * 0.01, k * 0.005))
    assert margins_for((0.5, 0.8, 0.96), Noise(), ()) == pytest.approx((FALLBACK_FRACTION * 0.96,) * 3)
    assert rule_for((), Bar()) is None


def test_a_run_clearly_behind_is_stopped_at_a_third_of_its_epochs_and_not_before():
    rule = PruneRule(reference=REFERENCE, margins=(0.05,))
    stop = first_stop(rule, [0.1] * 6)
    assert stop == (2, "pruned at epoch 2/6: val_acc=0.1000, best had 0.8000 there (margin 0.05)")
    assert first_stop(rule, [0.0, 0.78, 0.89, 0.94, 0.95, 0.97]) is None  # within the margin: runs on
    assert first_stop(rule, [0.9, 0.70, 0.90, 0.93, 0.95, 0.96]) is None  # its 0.9 at epoch 1 still counts
    assert first_stop(rule, [0.0, 0.0, 0.0, 0.0]) == (2, stop[1].replace("0.1000", "0.0000"))


def test_the_best_value_so_far_counts_so_one_bad_epoch_never_kills():
    rule = PruneRule(reference=REFERENCE, margins=(0.05,))
    assert first_stop(rule, [0.5, 0.87, 0.80, 0.95, 0.96, 0.97]) is None  # epoch 3 dipped, but 0.87 was seen


def test_direction_matters_for_lower_is_better_metrics():
    losses = (2.0, 1.0, 0.6, 0.5, 0.45, 0.4)
    rule = PruneRule(reference=losses, margins=(0.1,), higher_is_better=False)
    assert first_stop(rule, [2.0, 1.5, 1.4, 1.3, 1.2, 1.1], metric="val_loss")[0] == 2
    assert first_stop(rule, [1.0, 0.5, 0.3, 0.2, 0.2, 0.1], metric="val_loss") is None  # lower is ahead


def test_without_a_rule_or_past_the_reference_nothing_is_pruned():
    assert first_stop(None, [0.0] * 6) is None
    short = PruneRule(reference=(0.5,), margins=(0.05,))
    assert first_stop(short, [0.0] * 6) is None  # epoch 2 and later: the reference says nothing there


def test_run_in_directory_hands_lines_to_the_caller_and_stops_when_asked(tmp_path):
    script = textwrap.dedent("""
        import time
        for n in range(1, 200):
            print(f"epoch={n}/200 val_acc=0.1", flush=True)
            time.sleep(0.1)
        print("val_acc=0.1")
    """)
    seen = []
    stopped = run_in_directory({"train.py": script}, [sys.executable, "train.py"], timeout=60,
                               scratch_root=tmp_path, on_line=lambda line: seen.append(line) or len(seen) >= 3)
    assert stopped.stopped_early and not stopped.timed_out and stopped.returncode is None
    assert stopped.seconds < 10
    assert seen[:3] == ["epoch=1/200 val_acc=0.1", "epoch=2/200 val_acc=0.1", "epoch=3/200 val_acc=0.1"]

    quick = "print('epoch=1/1 val_acc=0.5')\nprint('val_acc=0.5')\n"
    seen.clear()
    finished = run_in_directory({"train.py": quick}, [sys.executable, "train.py"], timeout=60, scratch_root=tmp_path,
                                on_line=seen.append)
    # every line reached the callback, the metric line too, however soon the run ended
    assert seen == ["epoch=1/1 val_acc=0.5", "val_acc=0.5"]
    assert finished.returncode == 0 and not finished.stopped_early and seen[-1] == "val_acc=0.5"


def test_the_last_epoch_is_never_pruned_there_is_nothing_left_to_save():
    rule = PruneRule(reference=REFERENCE, margins=(0.05,), min_fraction=1.0)
    assert first_stop(rule, [0.0] * 6) is None


def test_once_past_screens_show_how_gaps_carry_a_run_that_cannot_clear_the_bar_is_stopped_early():
    from autoraysearch.campaign.pruning import MIN_FIT, fit_gap, screen_gaps

    bar = Bar(best_runs=(0.96,), paired=Noise(sigma=0.01, dof=10))
    # Past screens against the best's curve: a gap at any epoch ends as half that gap at the end.
    history = [(tuple(r + g for r in REFERENCE[:-1]) + (REFERENCE[-1] + g / 2,), REFERENCE)
               for g in (-0.2, -0.1, -0.05, 0.0, 0.02, 0.04)]
    fit = fit_gap(screen_gaps(history, True)[0])
    assert fit.slope == pytest.approx(0.5) and fit.intercept == pytest.approx(0.0) and fit.screens == 6
    rule = rule_for(REFERENCE, bar, history=history)
    # 0.1 behind at epoch 1 predicts a final gap of −0.05: no chance of a positive screen; stopped at once,
    # and the stop says what the line predicted rather than a margin.
    epoch, reason = first_stop(rule, [r - 0.1 for r in REFERENCE])
    assert epoch == 1 and reason == ("pruned at epoch 1/6: val_acc=0.4000, best had 0.5000 there (past screens predict "
                                     f"it ends 0.0500 worse than the best; a screen needs {bar.screen_bar():.4f} better)")
    # A run level with the best could still pass its screen: it runs to the end.
    assert first_stop(rule, REFERENCE) is None
    # With fewer past screens than MIN_FIT, only the cautious rule applies: nothing before a third of the epochs.
    cautious = rule_for(REFERENCE, bar, history=history[: MIN_FIT - 1])
    assert first_stop(cautious, [r - 0.1 for r in REFERENCE])[0] == 2


def test_a_pruned_or_short_screen_teaches_the_prediction_nothing():
    from autoraysearch.campaign.pruning import screen_gaps

    assert screen_gaps([((0.5, 0.6), REFERENCE), ((), REFERENCE)], True) == []


def test_screens_stopped_in_a_row_are_counted_since_the_last_one_that_ran_to_its_end():
    from autoraysearch.campaign.pruning import stopped_in_a_row

    assert stopped_in_a_row([]) == 0
    assert stopped_in_a_row(["baseline", "pruned", "keep", "pruned", "crash", "pruned", "confirmed"]) == 2
    assert stopped_in_a_row(["baseline", "pruned", "discard"]) == 0


# Five screens that ran to the end: a gap g at any epoch ended near g less 0.01 (final = 0.8 g − 0.01, ±0.011).
BEHIND = [tuple(r + g for r in REFERENCE[:-1]) + (REFERENCE[-1] + g - 0.01 + e,)
          for g, e in zip((-0.02, -0.01, 0.0, 0.01, 0.02), (0.01, -0.01, 0.0, 0.01, -0.01))]


def test_after_enough_stopped_screens_in_a_row_the_line_is_loosened_so_it_meets_a_fresh_screen():
    from autoraysearch.campaign.pruning import EXPLORE_AFTER

    bar = Bar(best_runs=(0.96,), paired=Noise(sigma=0.01, dof=10))
    history = [(curve, REFERENCE) for curve in BEHIND]
    level = list(REFERENCE)
    # The line predicts a run level with the best ends 0.01 behind, half a prediction error short of the
    # screen's bar: it is stopped at its first epoch. Had every screen after it been stopped, the line
    # would never meet a fresh screen.
    epoch, reason = first_stop(rule_for(REFERENCE, bar, history=history, stopped=EXPLORE_AFTER - 1), level)
    assert epoch == 1 and "past screens predict it ends 0.0100 worse than the best" in reason
    # Once EXPLORE_AFTER were stopped in a row, the next stop needs EXPLORE_Z prediction errors: a run level
    # with the best runs to the end; one far behind is still stopped.
    exploring = rule_for(REFERENCE, bar, history=history, stopped=EXPLORE_AFTER)
    assert first_stop(exploring, level) is None and exploring.exploring  # the loop says so in its log
    assert not rule_for(REFERENCE, bar, history=history[:1], stopped=EXPLORE_AFTER).exploring  # no fit to explore from
    assert first_stop(exploring, [r - 0.05 for r in REFERENCE])[0] == 1


# A young GRU campaign (digits, 5 epochs; real curves): its first three screens, each kept far ahead of its
# best, then a screen level with the new best (0.5042, 0.7604, …) and one far behind (0.3315, 0.5432, …).
GRU_BASELINE = (0.2981, 0.3565, 0.5348, 0.5738, 0.4401)
GRU_KEEPS = [(0.3315, 0.5487, 0.6574, 0.7326, 0.7883), (0.3649, 0.6323, 0.7521, 0.7883, 0.8162),
             (0.5153, 0.7604, 0.8357, 0.8886, 0.8969)]


def gru_stop(values):
    """The epoch the GRU campaign's rule after its three keeps stops a 5-epoch run at, or None."""
    history = list(zip(GRU_KEEPS, [GRU_BASELINE, *GRU_KEEPS[:-1]]))
    bar = Bar(best_runs=(0.8969, 0.9304), noise=Noise(sigma=0.031, dof=6), paired=Noise(sigma=0.053, dof=6))
    rule = rule_for(GRU_KEEPS[-1], bar, (0.055, 0.031, 0.031, 0.019, 0.015), history)
    watch = CurveWatch(rule, "val_acc")
    return next((e for e, v in enumerate(values, 1) if watch.see(f"epoch={e}/5 val_acc={v}")), None)


def test_a_line_through_a_few_screens_far_ahead_does_not_extrapolate_to_stop_a_run_level_with_the_best(monkeypatch):
    from autoraysearch.campaign import pruning

    level, far_behind = (0.5042, 0.7604, 0.83, 0.88, 0.89), (0.3315, 0.5432, 0.6, 0.65, 0.7)
    assert gru_stop(level) is None and gru_stop(far_behind) == 2
    # Without the prior line, the three keeps' line (slope 3 at epoch 2) predicted the level run ends 0.26
    # behind, and stopped it.
    monkeypatch.setattr(pruning, "PRIOR_SCREENS", 0)
    assert gru_stop(level) == 2


def test_the_loop_reads_the_stopped_screens_in_a_row_from_its_results_log(tmp_path):
    import json

    from autoraysearch.campaign.experiment import Campaign
    from autoraysearch.campaign.pruning import EXPLORE_AFTER
    from autoraysearch.campaign.reference_curves import rule_from_log
    from autoraysearch.campaign.results_log import ResultRow, ResultsLog
    from autoraysearch.campaign.settings import CampaignSettings

    campaign = Campaign(experiment_dir=str(tmp_path), branch="autoraysearch/x", settings=CampaignSettings(),
                        trial_timeout=None)
    campaign.paths.make_state_dir()
    for label, curve in [("baseline", REFERENCE), *((str(i), c) for i, c in enumerate(BEHIND, 1))]:
        campaign.paths.trial_curve(label).write_text(json.dumps(list(curve)))
    rows = [ResultRow("0", "abc", REFERENCE[-1], None, "baseline", "baseline")]
    rows += [ResultRow(str(i), "-", c[-1], c[-1] - REFERENCE[-1], "discard", "x") for i, c in enumerate(BEHIND, 1)]
    bar = Bar(best_runs=(0.96,), paired=Noise(sigma=0.01, dof=10))

    def rule_after(stops: int):
        pruned = [ResultRow(str(len(BEHIND) + 1 + i), "-", None, None, "pruned", "x") for i in range(stops)]
        return rule_from_log(campaign, ResultsLog(rows=tuple(rows + pruned), higher_is_better=True), bar)

    assert first_stop(rule_after(EXPLORE_AFTER - 1), list(REFERENCE))[0] == 1
    assert first_stop(rule_after(EXPLORE_AFTER), list(REFERENCE)) is None
