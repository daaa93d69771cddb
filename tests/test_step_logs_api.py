"""What the Prefect UI's logs show for a real run: training progress in verify-N, the verdict in decide-N."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import setup

pytestmark = pytest.mark.slow


def task_run_logs(flow_run_name: str) -> dict[str, list[str]]:
    """Each task run's log messages of the newest flow run with this name, as the API holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name])),
                                      sort=FlowRunSort.START_TIME_DESC, limit=1)
        names = {t.id: t.name for t in client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))}
        by_task: dict[str, list[str]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # logs reach the API in batches
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            by_task = {}
            for entry in logs:
                by_task.setdefault(names.get(entry.task_run_id, "flow"), []).append(entry.message)
            verify = by_task.get("verify-1", [])
            if any("val_acc=" in m and not m.startswith("epoch=") for m in verify) and by_task.get("decide-1"):
                break
            time.sleep(1)
        return by_task


def test_verify_logs_training_progress_and_decide_logs_the_verdict(services, example_repo: Path):
    from prefect.settings import PREFECT_API_URL

    exp = example_repo
    setup(exp, epochs=2)
    # A batch interval longer than the run: every line the steps say must be sent by the steps themselves,
    # since a Ray worker is stopped at the end of the campaign with whatever it still holds.
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_LEVEL": "INFO",
           "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "600"}
    run = subprocess.run([sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1",
                          "--tag", "logs"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    logs = task_run_logs(f"{exp.name}/logs")
    verify = logs.get("verify-1", [])
    assert [m for m in verify if m.startswith("epoch=")], verify  # the progress lines of the trial
    assert any("val_acc=" in m and not m.startswith("epoch=") for m in verify), verify  # and its metric
    decide = " ".join(logs.get("decide-1", []))
    assert "val_acc" in decide and ("keep" in decide or "discard" in decide or "pruned" in decide), decide
    ideate = " ".join(logs.get("ideate-1", []))
    assert ideate, logs.keys()  # the proposal
    # Prefect's "Finished in state Completed()" per step is gone; the flow's own end still says how it ended.
    steps = [m for name, lines in logs.items() if name != "flow" for m in lines]
    assert not [m for m in steps if m.startswith("Finished in state")], logs
    assert any(m.startswith("Finished in state") for m in logs.get("flow", [])), logs.get("flow")
