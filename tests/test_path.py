"""Confirming the path on fresh seeds: the verdict, the rollback it leads to, and the confirmed gain reported."""

from __future__ import annotations

import pytest

from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.campaign.path import (
    CONFIRM_SEEDS, FRESH_OFFSET, FRESH_STRIDE, confirmed_gain, describe_confirmed, fresh_seeds, keeps_since_confirmed,
    last_confirmed, verdict,
)
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log, parse_log


def row(iteration, status, metric=0.9, commit="-", **extra):
    return ResultRow(iteration, commit, metric, 0.0, status, "x", {k: str(v) for k, v in extra.items()})


def test_a_path_that_holds_is_confirmed_and_one_that_does_not_is_rolled_back():
    bar = Bar(paired=Noise(sigma=0.004, dof=20))
    status, cells = verdict((0.95, 0.96, 0.955), (0.94, 0.945, 0.95), bar)
    assert status == "confirmed" and cells["gain"] == "+0.01" and cells["interval"] == "±0.0038"
    status, cells = verdict((0.94, 0.945, 0.95), (0.95, 0.96, 0.955), bar)
    assert status == "rollback" and float(cells["gain"]) < 0


def test_the_best_goes_back_to_the_point_a_rollback_names():
    rows = (row("0", "baseline", 0.90, "baseline"), row("1", "keep", 0.92, "aaa1111"), row("2", "keep", 0.93, "bbb2222"),
            row("3", "keep", 0.935, "ccc3333"))
    log = ResultsLog(True, rows)
    assert log.best().iteration == "3" and keeps_since_confirmed(rows) == 3 and last_confirmed(rows).commit is None
    rolled = ResultsLog(True, rows + (row("3.path", "rollback", 0.92, "aaa1111", gain="-0.002"),))
    assert rolled.best().iteration == "1" and last_confirmed(rolled.rows).commit == "aaa1111"
    to_baseline = ResultsLog(True, rows + (row("3.path", "rollback", 0.90, "0000000", gain="-0.01"),))
    assert to_baseline.best().status == "baseline"
    # Later keeps build on the point rolled back to, and count towards the next confirmation.
    later = ResultsLog(True, rolled.rows + (row("4", "keep", 0.94, "ddd4444"),))
    assert later.best().iteration == "4" and keeps_since_confirmed(later.rows) == 1


def test_each_confirmation_uses_seeds_nothing_else_used():
    rows = [row("0", "baseline"), row("3.path", "confirmed", commit="ccc3333", gain="+0.01", interval="±0.004")]
    assert fresh_seeds(7, rows[:1]) == list(range(7 + FRESH_OFFSET, 7 + FRESH_OFFSET + CONFIRM_SEEDS))
    assert fresh_seeds(7, rows)[0] == 7 + FRESH_OFFSET + FRESH_STRIDE
    # With seeds in one run a confirmation takes a first run's worth (8 of 24): still apart from the next one's.
    assert fresh_seeds(7, rows[:1], 8)[-1] < fresh_seeds(7, rows, 8)[0] and len(fresh_seeds(7, rows, 8)) == 8
    assert max(fresh_seeds(7, rows, 8)) < 7 + FRESH_OFFSET + 2 * FRESH_STRIDE


def test_the_confirmed_gain_adds_up_the_stretches_that_held():
    rows = [row("0", "baseline"), row("3.path", "confirmed", commit="c", gain="+0.01", interval="±0.003"),
            row("6.path", "rollback", commit="c", gain="-0.002", interval="±0.003"),
            row("9.path", "confirmed", commit="f", gain="+0.02", interval="±0.004")]
    gain, half, n = confirmed_gain(rows)
    assert gain == pytest.approx(0.03) and half == pytest.approx(0.005) and n == 2
    assert describe_confirmed(rows) == "confirmed gain +0.03 ±0.005 (90 %) over 2 stretches on fresh seeds"
    assert describe_confirmed(rows[:1]) == "no gain confirmed on fresh seeds yet"
    # The rows survive the results log's format, their paired cells at the end.
    log = parse_log(format_log(ResultsLog(True, tuple(rows))))
    assert confirmed_gain(log.rows) == confirmed_gain(rows)
