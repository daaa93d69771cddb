"""A campaign with a deadline or an hours limit ends on time, even in the middle of a long trial."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autoraysearch.campaign.stopping import StopConditions
from conftest import git
from test_interrupt import HANGING_TRAIN_PY, wait_for
from helpers import is_running, loop, results, setup

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
    (exp / "train.py").write_text(HANGING_TRAIN_PY.format(counter=str(trial_dir / "calls"), pids=str(pids)))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py that hangs for every candidate")
    setup(exp, train_py="train.py")
    best = git(exp, "rev-parse", "HEAD")

    started = datetime.now()
    run = loop(exp, max_hours=20 / 3600)  # 20 s; the first candidate's trial hangs for ten minutes
    took = (datetime.now() - started).total_seconds()

    assert run.stop_reason == f"ran for {20 / 3600:g} hours"
    assert took < 60
    rows = results(exp).rows
    assert [r.status for r in rows] == ["baseline", "stopped"]
    assert "the campaign's time limit" in rows[1].description
    assert git(exp, "rev-parse", "HEAD") == best and run.best_sha == best
    assert git(exp, "status", "--porcelain", "model.py") == ""
    wait_for(pids, 1)
    trial_pid, grandchild_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 10  # the trial's supervisor may still be finishing its kill
    while (is_running(trial_pid) or is_running(grandchild_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_running(trial_pid) and not is_running(grandchild_pid)
