"""SIGTERM and Ctrl-C stop a campaign within seconds in every step, not only while a trial trains."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import EXAMPLE_MODEL, git, is_running, setup

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 15.0

# The agent writes its pid, then either hangs itself or proposes a model.py whose import hangs (the pre-flight).
AGENT = """\
import json, os, sys, time
sys.stdin.read()
if {hang_here!r}:
    open({pid_file!r}, "w").write(str(os.getpid()))
    time.sleep(600)
print(json.dumps({{"candidates": [{{"description": "sleep at import", "kind": "other", "model_py": {model!r}}}]}}))
"""
SLOW_IMPORT = "import os, time\nopen({pid_file!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"


# Each signal and each step once: the signal becomes the same stop whatever the step, and every step
# is waited on the same way whatever the signal, so the two other pairs would repeat these.
@pytest.mark.parametrize("how, step", [(signal.SIGTERM, "ideate"), (signal.SIGINT, "pre-flight")],
                         ids=["SIGTERM-ideate", "SIGINT-pre-flight"])
def test_a_stop_in_ideate_or_pre_flight_is_clean_and_quick(
    step, how, services, example_repo: Path, tmp_path: Path, trial_dir: Path
):
    from prefect.settings import PREFECT_API_URL

    exp = example_repo
    setup(exp, epochs=1)
    best = git(exp, "rev-parse", "HEAD")
    pid_file = trial_dir / "hung.pid"  # written by the agent, or by the pre-flight of the model it proposes
    model = SLOW_IMPORT.format(pid_file=str(pid_file)) + EXAMPLE_MODEL.read_text()
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT.format(hang_here=step == "ideate", pid_file=str(pid_file), model=model))
    cli = subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--ideator", "command",
         "--command", f"{sys.executable} {agent}", "--trial-timeout", "60"],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (pid_file.exists() and pid_file.read_text()):
            assert cli.poll() is None, cli.communicate()[0]
            assert time.monotonic() < deadline, "the hung step never started"
            time.sleep(0.2)
        hung = int(pid_file.read_text())
        signalled = time.monotonic()
        cli.send_signal(how)
        output, _ = cli.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 130, output
    assert took < STOP_WITHIN_S, f"took {took:.1f} s to stop:\n{output}"
    assert "Traceback" not in output, output
    assert "stopped; the campaign branch is on its best commit" in output
    assert not (exp / ".autoraysearch" / "run.lock").exists()
    branch = git(exp, "branch", "--show-current")
    assert git(exp, "rev-parse", branch) == best
    assert git(exp, "status", "--porcelain", "model.py") == ""
    deadline = time.monotonic() + 10
    while is_running(hung) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_running(hung), f"the hung {step} process {hung} outlived the run"
