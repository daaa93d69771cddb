"""The deployments of prefect.yaml, for real: a Prefect server, the process work pool, a worker, Ray, training.

Everything runs as a user would run it, as subprocesses pointed at a server of this module's own
(`prefect server start` on a free port of 127.0.0.1, a Prefect home in a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from autoraysearch.views.identity import artifact_key
from autoraysearch.campaign.results_log import read_results_log
from helpers import git, hanging_experiment, is_running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SERVER_START_S = 180
RUN_TIMEOUT_S = 300

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Services:
    """The module's Prefect server and worker, and how to run the prefect CLI against them."""

    def __init__(self, home: Path, logs: Path):
        self.api_url = f"http://127.0.0.1:{free_port()}/api"
        self.logs = logs
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick scheduled runs up at once
            "PREFECT_LOGGING_LEVEL": "INFO",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("AUTORAYSEARCH_RAY_ADDRESS", None)
        self.env.pop("RAY_ADDRESS", None)
        self.daemons: list[subprocess.Popen] = []
        self.timings: dict[str, float] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """A long-running prefect command in a session of its own, its output in logs/NAME.log."""
        out = open(self.logs / f"{name}.log", "w")
        proc = subprocess.Popen(["prefect", *args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.daemons.append(proc)
        return proc

    def prefect(self, name: str, *args: str, cwd: Path = ROOT, timeout: float = RUN_TIMEOUT_S) -> str:
        """Run a prefect command to its end; its output, which must report success."""
        started = time.monotonic()
        result = subprocess.run(["prefect", *args], env=self.env, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
        self.timings[name] = round(time.monotonic() - started, 1)
        output = result.stdout + result.stderr
        (self.logs / f"{name}.log").write_text(output)
        assert result.returncode == 0, output[-3000:]
        return output

    def api(self, method: str, path: str, **kwargs) -> object:
        response = httpx.request(method, self.api_url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def wait_healthy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not start: " + self.log_tail("server")
            time.sleep(0.5)

    def log_tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def flow_run_state(self, flow_run_id: str) -> str:
        return self.api("GET", f"/flow_runs/{flow_run_id}")["state"]["type"]

    def task_runs(self, flow_run_id: str) -> list[dict]:
        return self.api("POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}})

    def artifact(self, flow_run_id: str, key: str) -> str:
        """The newest version of the artifact KEY that the flow run wrote."""
        found = self.api("POST", "/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [key]}}, "sort": "CREATED_DESC",
        })
        assert found, f"flow run {flow_run_id} wrote no artifact {key}"
        return found[0]["data"]

    def finished_event(self, experiment_dir: str, timeout: float = 15.0) -> dict:
        """The payload of the campaign-finished event of the campaign in experiment_dir.

        Read again for a while: the server stores the events it receives in batches.
        """
        deadline = time.monotonic() + timeout
        while True:
            events = self.api("POST", "/events/filter", json={
                "filter": {"event": {"name": ["autoraysearch.campaign-finished"]}}, "limit": 50,
            })["events"]
            mine = [e for e in events if e["resource"].get("autoraysearch.experiment-dir") == experiment_dir]
            if mine:
                return mine[0]["payload"]
            assert time.monotonic() < deadline, "no autoraysearch.campaign-finished event for " + experiment_dir
            time.sleep(0.5)

    def processes(self) -> list[int]:
        """Live processes started for this module's server, besides the server and worker themselves."""
        mine = {p.pid for p in self.daemons}
        marker = f"PREFECT_API_URL={self.api_url}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in mine or int(entry) == os.getpid():
                continue
            try:
                if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") and is_running(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        """Kill everything started here, daemons last, whatever state a failed test left."""
        for pid in self.processes() + [p.pid for p in self.daemons]:
            try:
                group = os.getpgid(pid)
                if group != os.getpgrp():
                    os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.daemons:
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A Prefect server, the work pool and every deployment of prefect.yaml, and a process worker."""
    logs = tmp_path_factory.mktemp("logs")
    services = Services(tmp_path_factory.mktemp("prefect-home"), logs)
    try:
        started = time.monotonic()
        services.start("server", "server", "start", "--host", "127.0.0.1", "--port",
                       services.api_url.split(":")[-1].split("/")[0])
        services.wait_healthy(SERVER_START_S)
        services.timings["server start"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        result = subprocess.run([str(ROOT / "deployments" / "deploy.sh")], env=services.env, capture_output=True,
                                text=True, timeout=RUN_TIMEOUT_S)
        services.timings["deployments/deploy.sh"] = round(time.monotonic() - started, 1)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        deployments = services.api("POST", "/deployments/filter", json={})
        assert {d["name"] for d in deployments} == {"loop", "overnight", "setup", "plan"}
        services.start("worker", "worker", "start", "--pool", "autoraysearch", "--type", "process")
        yield services
    finally:
        services.stop()
        print("\nstep times (s):", json.dumps(services.timings))


def read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def flow_run_id(output: str) -> str:
    return re.search(r"UUID: ([0-9a-f-]{36})", output).group(1)


def test_setup_and_loop_deployments_run_a_campaign(deployed: Services, example_repo: Path):
    exp = example_repo
    out = deployed.prefect("setup run", "deployment", "run", "autoraysearch-setup/setup", "-p", f"experiment_dir={exp}",
                           "-p", "epochs=1", "-p", "seeds=1", "--watch", "--watch-interval", "1")
    assert "Completed" in out
    setup_sha = git(exp, "rev-parse", "HEAD")

    out = deployed.prefect("loop run", "deployment", "run", "autoraysearch-loop/loop", "-p", f"experiment_dir={exp}",
                           "-p", "max_iterations=2", "--watch", "--watch-interval", "1")
    assert "Completed" in out, out[-3000:]

    log = read_results_log(exp / "autoraysearch-results.tsv", True)
    assert [r.iteration for r in log.rows] == ["0", "1", "2"]
    assert all(r.status in {"keep", "discard", "crash"} for r in log.rows[1:])
    branch = f"autoraysearch/{date.today().isoformat()}"
    assert git(exp, "branch", "--show-current") == branch
    kept = [r.commit for r in log.rows if r.status == "keep"]
    on_branch = git(exp, "rev-list", "--reverse", f"{setup_sha}..{branch}").split()
    assert [sha[:7] for sha in on_branch] == kept
    assert git(exp, "status", "--porcelain", "model.py") == ""
    started = time.monotonic()
    while deployed.processes() and time.monotonic() - started < 30:
        time.sleep(0.5)
    assert not deployed.processes(), "the finished run left processes behind"

    run_id = flow_run_id(out)
    names = {t["name"] for t in deployed.task_runs(run_id)}
    assert {"review-1", "ideate-1", "verify-1", "decide-1", "log-1", "verify-2"} <= names
    final = deployed.artifact(run_id, artifact_key(exp, branch, "final"))
    assert f"# Campaign {branch}: reached 2 iterations" in final
    assert "| 2 |" in final
    for kind in ("results", "progress", "best-diff", "plot"):
        assert deployed.artifact(run_id, artifact_key(exp, branch, kind)) is not None


def test_cancelling_a_deployment_run_stops_the_campaign_cleanly(
    deployed: Services, services, example_repo: Path, trial_dir: Path
):
    exp = example_repo
    pids = trial_dir / "pids"
    pids.mkdir()  # a file per hanging trial
    best = hanging_experiment(exp, trial_dir, pids)  # the setup deployment has its own test; this one is the loop's

    out = deployed.prefect("loop start", "deployment", "run", "autoraysearch-loop/loop", "-p", f"experiment_dir={exp}",
                           "-p", "parallel=2")
    run_id = flow_run_id(out)
    started = time.monotonic()
    while len(list(pids.iterdir())) < 2:
        assert time.monotonic() - started < RUN_TIMEOUT_S, "the trials never started: " + deployed.log_tail("worker")
        assert deployed.flow_run_state(run_id) in {"SCHEDULED", "PENDING", "RUNNING"}, deployed.log_tail("worker")
        time.sleep(0.5)
    deployed.timings["loop start until both trials run"] = round(time.monotonic() - started, 1)

    started = time.monotonic()
    deployed.prefect("flow-run cancel", "flow-run", "cancel", run_id)
    while (state := deployed.flow_run_state(run_id)) != "CANCELLED":
        assert state in {"RUNNING", "CANCELLING"}, f"the cancelled run ended as {state}"
        assert time.monotonic() - started < 90, "the run is still cancelling after 90 s"
        time.sleep(0.5)
    deployed.timings["cancel until Cancelled"] = round(time.monotonic() - started, 1)

    # Every process of the run is gone: the flow, its local Ray, the trials and their children.
    trial_pids = [int(p) for f in pids.iterdir() for p in f.read_text().split()]
    while (left := deployed.processes()) and time.monotonic() - started < 120:
        time.sleep(0.5)
    deployed.timings["cancel until no process left"] = round(time.monotonic() - started, 1)
    assert not left, [Path(f"/proc/{p}/cmdline").read_bytes()[:100] for p in left if Path(f"/proc/{p}").exists()]
    assert not any(is_running(pid) for pid in trial_pids)
    scratch = [d for d in Path(tempfile.gettempdir()).glob("autoraysearch-trial-*") if str(pids) in read(d / "train.py")]
    assert not scratch, "the cancelled trials' scratch folders were left behind"

    # The repository is on the best commit, no candidate branch is left, the log accounts for both candidates.
    assert git(exp, "rev-parse", "HEAD") == best
    assert git(exp, "branch", "--show-current").startswith("autoraysearch/")
    assert git(exp, "branch", "--list", "*-exp/*") == ""
    assert git(exp, "status", "--porcelain", "model.py") == ""
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert [(r.iteration, r.status) for r in rows] == [("0", "baseline"), ("1a", "stopped"), ("1b", "stopped")]
    assert not (exp / ".autoraysearch" / "run.lock").exists()

    # No task run is left Running, and the UI's last word says what happened.
    states = {t["name"]: t["state"]["type"] for t in deployed.task_runs(run_id)}
    assert states["verify-1a"] in {"CRASHED", "CANCELLED", "FAILED"} and states["verify-1b"] in {"CRASHED", "CANCELLED", "FAILED"}
    assert not [name for name, state in states.items() if state in {"RUNNING", "PENDING"}]
    final = deployed.artifact(run_id, artifact_key(exp, git(exp, "branch", "--show-current"), "final"))
    assert ": cancelled" in final and "logged as `stopped`: 1a, 1b" in final
    assert deployed.finished_event(str(exp))["stop_reason"] == "cancelled"
