"""The noise rule, checked by hand: pooled σ, the screen, the keep rule and what the log's columns hold."""

from __future__ import annotations

import math

import pytest

from autoraysearch.campaign.experiment import TrialResult
from autoraysearch.campaign.noise import (
    Bar,
    Noise,
    bar_from_log,
    is_kept,
    pooled_noise,
    seed_columns,
    t_quantile,
    worth_confirming,
)
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log, parse_log
from autoraysearch.tasks.decide import choose_winner
from autoraysearch.trials.runs import merge_runs

# The demo baseline's val_acc over seeds 0..2, as measured.
BASELINE = (0.9694, 0.9721, 0.9721)


def test_pooled_sigma_is_the_within_model_spread():
    noise = pooled_noise([(1.0, 3.0), (10.0, 12.0, 14.0), (5.0,)])
    # squares: 2 + 8 = 10 over 1 + 2 = 3 degrees of freedom; the single run adds nothing
    assert noise.dof == 3 and noise.sigma == pytest.approx(math.sqrt(10 / 3))
    assert pooled_noise([(0.97, 0.97, 0.97)]).measured is False
    assert pooled_noise([(0.9,)]) == Noise()


def test_keep_rule_by_hand():
    noise = Noise(sigma=0.006, dof=4)
    bar = Bar(best_runs=BASELINE, noise=noise)
    margin = t_quantile(4) * 0.006 * math.sqrt(1 / 3 + 1 / 3)
    assert bar.margin(3) == pytest.approx(margin)  # 2.132 × 0.006 × 0.816 ≈ 0.0104
    mean = sum(BASELINE) / 3
    assert is_kept([mean + margin + 0.001] * 3, bar)
    assert not is_kept([mean + margin - 0.001] * 3, bar)
    # A lucky single seed far above the mean is not enough on its own: the mean decides.
    assert not is_kept([0.9777, 0.9694, 0.9666], bar)


def test_lower_is_better_turns_the_gain_round():
    bar = Bar(best_runs=(1.0, 1.1, 0.9), noise=Noise(sigma=0.1, dof=2), higher_is_better=False)
    assert is_kept([0.2, 0.25, 0.3], bar)
    assert not is_kept([1.5, 1.6, 1.7], bar)


def test_min_delta_raises_the_bar_even_without_noise():
    bar = Bar(best_runs=(0.9,), noise=Noise(), min_delta=0.01)
    assert not is_kept([0.905], bar) and is_kept([0.911], bar)


def test_screen_confirms_only_runs_that_could_still_clear_the_bar():
    bar = Bar(best_runs=BASELINE, noise=Noise(sigma=0.006, dof=4))
    needed = bar.best_mean + bar.margin(3)
    assert worth_confirming(needed - 0.005, bar, seeds=3)  # less than one σ short
    assert not worth_confirming(needed - 0.007, bar, seeds=3)  # more than one σ short
    assert not worth_confirming(0.999, bar, seeds=1)  # --seeds 1: nothing to confirm
    assert not worth_confirming(0.999, Bar(best_runs=BASELINE, noise=Noise()), seeds=3)  # identical runs


def ok(label, metric, seconds=2.0):
    return TrialResult(label=label, status="ok", metric=metric, seconds=seconds)


def test_a_candidates_runs_merge_into_a_mean_and_every_second_counts():
    merged = merge_runs(ok("5", 0.98, 2.0), [ok("5-seed2", 0.96, 3.0), ok("5-seed3", 0.97, 4.0)])
    assert merged.metric == pytest.approx(0.97) and merged.runs == (0.98, 0.96, 0.97)
    assert merged.seconds == 9.0 and merged.screen == 0.98
    crashed = merge_runs(ok("5", 0.98), [ok("5-seed2", 0.96), TrialResult("5-seed3", "crash", None, 1.0, error="NaN")])
    assert crashed.status == "crash" and crashed.metric is None and "seed run 3 of 3: NaN" in crashed.error


def test_parallel_keeps_the_largest_confirmed_gain():
    bar = Bar(best_runs=BASELINE, noise=Noise(sigma=0.003, dof=4))
    a = TrialResult("5a", "ok", 0.99, 1.0, runs=(0.99, 0.99, 0.99))
    b = TrialResult("5b", "ok", 0.995, 1.0, runs=(0.995, 0.995, 0.995))
    within_noise = TrialResult("5c", "ok", 0.975, 1.0, runs=(0.975, 0.972, 0.978))
    assert choose_winner([a, within_noise, b], bar) == "5b"
    assert choose_winner([within_noise], bar) is None


def test_the_log_keeps_every_seed_and_the_bar_is_read_back_from_it():
    rows = (
        ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE)),
        ResultRow("1", "-", 0.9750, 0.0038, "discard", "x", seed_columns((0.9777, 0.9721, 0.9750))),
        ResultRow("2", "-", 0.95, -0.02, "discard", "screen only"),
    )
    log = parse_log(format_log(ResultsLog(higher_is_better=True, rows=rows)))
    assert log.rows[0].extra["seeds"] == "3" and log.rows[0].extra["runs"] == "0.9694,0.9721,0.9721"
    bar = bar_from_log(log, min_delta=0.001)
    assert bar.best_runs == BASELINE and bar.min_delta == 0.001
    assert bar.noise == pooled_noise([BASELINE, (0.9777, 0.9721, 0.9750)])


def test_status_and_report_say_the_noise():
    from autoraysearch.views.report import best_line

    rows = (ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE)),)
    line = best_line(ResultsLog(higher_is_better=True, rows=rows), "val_acc")
    assert line.endswith("noise σ = 0.0016 over 3 seed runs")
    single = (ResultRow("0", "baseline", 0.97, 0.0, "baseline", "initial state"),)
    assert "decisions use single runs" in best_line(ResultsLog(higher_is_better=True, rows=single), "val_acc")


def test_the_node_column_names_the_host_and_the_ray_node_stays_available():
    import socket

    from autoraysearch.campaign.experiment import Candidate, Verdict
    from autoraysearch.tasks.log import result_row

    result = TrialResult("4", "ok", 0.9, 3.0, node_id="a1b2c3d4e5f6", host=socket.gethostname().split(".")[0])
    row = result_row(Candidate("4", "wider", "", "f00"), Verdict("discard", -0.01, 0.91, "x"), result, "abc1234")
    assert row.extra["node"] == socket.gethostname().split(".")[0] and row.extra["node_id"] == "a1b2c3d4"
