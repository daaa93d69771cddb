"""Ctrl-C and SIGTERM stop a running campaign cleanly: no trial process survives, the branch is on its best."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import read_results_log
from helpers import git, hanging_experiment, is_running, wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_a_run_kills_the_trial_and_leaves_the_best_commit(how, services, example_repo: Path, trial_dir: Path):
    from prefect.settings import PREFECT_API_URL

    exp = example_repo
    pids = trial_dir / "pids"
    best = hanging_experiment(exp, trial_dir, pids)

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cli = subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        assert wait_until(pids.exists, 180), "the trial never started"
        if how == "ctrl-c":
            os.killpg(cli.pid, signal.SIGINT)  # a terminal signals the whole foreground group
        else:
            cli.send_signal(signal.SIGTERM)  # `kill PID`, systemd, a scheduler
        output, _ = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, output
    assert "stopped; the campaign branch is on its best commit" in output

    trial_pids = list(map(int, pids.read_text().split()))
    # the trial's supervisor may still be finishing its kill
    assert wait_until(lambda: not any(map(is_running, trial_pids)), 60), trial_pids

    assert git(exp, "rev-parse", "HEAD") == best
    assert git(exp, "branch", "--show-current").startswith("autoraysearch/")
    assert git(exp, "status", "--porcelain", "model.py") == ""
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert [r.status for r in rows] == ["baseline", "stopped"]
    assert not (exp / ".autoraysearch" / "run.lock").exists()
