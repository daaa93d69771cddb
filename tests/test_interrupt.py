"""Ctrl-C and SIGTERM stop a running campaign cleanly: no trial process survives, the branch is on its best."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import read_results_log
from conftest import git
from helpers import is_running, setup

pytestmark = pytest.mark.slow

HANGING_TRAIN_PY = '''
import os, subprocess, sys, time


def load_model():  # never called: the trial's behaviour comes from the counter
    from model import Model


calls = int(open({counter!r}).read()) if os.path.exists({counter!r}) else 0
open({counter!r}, "w").write(str(calls + 1))
if calls == 0:
    print("val_acc=0.5")
else:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open({pids!r}, "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(600)
'''


def wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_a_run_kills_the_trial_and_leaves_the_best_commit(how, services, example_repo: Path, trial_dir: Path):
    from prefect.settings import PREFECT_API_URL

    exp = example_repo
    pids = trial_dir / "pids"
    (exp / "train.py").write_text(HANGING_TRAIN_PY.format(counter=str(trial_dir / "calls"), pids=str(pids)))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py that hangs for every candidate")
    setup(exp, train_py="train.py")
    best = git(exp, "rev-parse", "HEAD")

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cli = subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        wait_for(pids, 180)
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

    trial_pid, grandchild_pid = map(int, pids.read_text().split())
    deadline = time.monotonic() + 10  # the trial's supervisor may still be finishing its kill
    while (is_running(trial_pid) or is_running(grandchild_pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_running(trial_pid) and not is_running(grandchild_pid)

    assert git(exp, "rev-parse", "HEAD") == best
    assert git(exp, "branch", "--show-current").startswith("autoraysearch/")
    assert git(exp, "status", "--porcelain", "model.py") == ""
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert [r.status for r in rows] == ["baseline", "stopped"]
    assert not (exp / ".autoraysearch" / "run.lock").exists()
