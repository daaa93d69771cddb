"""A campaign with a deadline or an hours limit ends on time, even in the middle of a long trial."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autoraysearch.campaign.stopping import StopConditions
from helpers import git, hanging_experiment, is_running, loop, results, wait_until

START = datetime(2026, 1, 1, 22, 0)


def test_the_stop_time_is_the_earliest_of_the_deadline_and_the_hours():
    assert StopConditions().stop_time(START) is None
    assert StopConditions(max_iterations=3).stop_time(START) is None
    deadline = START + timedelta(hours=9)
    assert StopConditions(deadline=deadline).stop_time(START) == deadline
    assert StopConditions(deadline=deadline, max_hours=2).stop_time(START) == START + timedelta(hours=2)
    assert StopConditions(deadline=deadline, max_hours=10).stop_time(START) == deadline


@pytest.mark.slow
def test_a_trial_running_at_the_stop_time_is_stopped_and_the_branch_left_on_its_best(
    services, example_repo: Path, trial_dir: Path
):
    exp = example_repo
    pids = trial_dir / "pids"
    best = hanging_experiment(exp, trial_dir, pids)

    # 30 s: time for the first candidate's trial to start on a busy machine; it would hang for ten minutes
    started = datetime.now()
    run = loop(exp, max_hours=30 / 3600)
    took = (datetime.now() - started).total_seconds()

    assert pids.exists(), "the limit came before the trial started: nothing was running at the stop time"
    assert run.stop_reason == f"ran for {30 / 3600:g} hours"
    assert 30 <= took < 150
    rows = results(exp).rows
    assert [r.status for r in rows] == ["baseline", "stopped"]
    assert "the campaign's time limit" in rows[1].description
    assert git(exp, "rev-parse", "HEAD") == best and run.best_sha == best
    assert git(exp, "status", "--porcelain", "model.py") == ""
    trial_pids = list(map(int, pids.read_text().split()))
    # the trial's supervisor may still be finishing its kill
    assert wait_until(lambda: not any(map(is_running, trial_pids)), 60), trial_pids
