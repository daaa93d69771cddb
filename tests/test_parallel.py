"""Parallel mode on the real thing: N candidates per iteration, trained at once on Ray."""

from __future__ import annotations

import json
from datetime import datetime, timezone
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate.rules import propose_mutations
from helpers import git, is_running, loop, results, setup

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def test_three_candidates_per_iteration_keep_at_most_one(services, example_repo: Path):
    exp = example_repo
    setup(exp, epochs=1, cpus_per_trial=0.5)
    setup_sha = git(exp, "rev-parse", "HEAD")

    run = loop(exp, max_iterations=2, parallel=3, tag="par")
    rows = results(exp).rows
    assert [r.iteration for r in rows] == ["0", "1a", "1b", "1c", "2a", "2b", "2c"]
    base = setup_sha
    for number in ("1", "2"):
        iteration = [r for r in rows if r.iteration.startswith(number)]
        statuses = [r.status for r in iteration]
        assert statuses.count("keep") <= 1
        assert set(statuses) <= {"keep", "discard", "crash"}
        # The kind of change each candidate is: the rule that built its model.py from the best one.
        kind_of = {fingerprint(m.source): m.kind for m in propose_mutations(git(exp, "show", f"{base}:model.py"))}
        kinds = [kind_of.get(r.extra["candidate"]) for r in iteration]
        assert None not in kinds and len(set(kinds)) == 3, kinds  # three directions, not three sizes of one layer
        base = next((r.commit for r in iteration if r.status == "keep"), base)
    assert len({r.extra["candidate"] for r in rows}) == 7  # every candidate a different model

    on_branch = git(exp, "rev-list", "--reverse", f"{setup_sha}..autoraysearch/par").split()
    assert [sha[:7] for sha in on_branch] == [r.commit for r in rows if r.status == "keep"]
    assert git(exp, "rev-parse", "HEAD") == run.best_sha
    assert git(exp, "branch", "--list", "*-exp/*") == ""  # no candidate branch left
    assert git(exp, "worktree", "list").count("\n") == 0  # no worktree either
    assert git(exp, "status", "--porcelain", "model.py") == ""


def ray_worker_above(pid: int) -> int:
    """The Ray worker process that runs the trial process `pid` (through the trial's supervisors)."""
    while pid > 1:
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):  # Ray titles its workers ray::TASK
            return pid
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError("no Ray worker above the trial")


def kill_the_ray_worker_once_recorded(record: Path, stop: threading.Event) -> None:
    """SIGKILL the Ray worker under trouble_train.py's lost-worker run, as when its node is lost."""
    while not stop.is_set():
        try:
            trial = int(record.read_text())
        except (FileNotFoundError, ValueError):  # not written yet, or half written
            time.sleep(0.1)
            continue
        os.kill(ray_worker_above(trial), signal.SIGKILL)
        return


def test_one_bad_candidate_never_spoils_the_others(services, example_repo: Path, trial_dir: Path):
    exp = example_repo
    slots, pids = trial_dir / "slots", trial_dir / "pids"
    slots.mkdir()
    pids.mkdir()
    (exp / "train.py").write_text((HERE / "trouble_train.py").read_text()
                                  .replace("SLOTS_DIR", str(slots)).replace("PIDS_DIR", str(pids)))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "a train.py whose candidates misbehave")
    setup(exp, train_py="train.py", cpus_per_trial=0.25)
    base = git(exp, "rev-parse", "HEAD")

    started = datetime.now(timezone.utc)
    stop = threading.Event()
    killer = threading.Thread(target=kill_the_ray_worker_once_recorded, args=(pids / "lost-worker", stop), daemon=True)
    killer.start()
    try:
        run = loop(exp, max_iterations=1, parallel=4, trial_timeout=8)
    finally:
        stop.set()
        killer.join()
    rows = {r.iteration: r for r in results(exp).rows}
    statuses = sorted(r.status for label, r in rows.items() if label != "0")
    assert statuses == ["crash", "crash", "keep", "timeout"], rows
    kept = next(r for r in rows.values() if r.status == "keep")
    assert kept.metric == 0.9 and run.best_metric == 0.9
    assert git(exp, "rev-parse", "HEAD") == run.best_sha != base
    assert any("boom" in r.description for r in rows.values())
    assert any("the Ray task running the trial failed" in r.description for r in rows.values())

    for record in pids.iterdir():  # every process a misbehaving trial started is gone
        for pid in map(int, record.read_text().split()):
            assert not is_running(pid), record.name

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    names = TaskRunFilter(name=TaskRunFilterName(any_=["verify-1a", "verify-1b", "verify-1c", "verify-1d"]))
    with get_client(sync_client=True) as client:
        for _ in range(120):  # task runs reach the server as events: give the last ones up to a minute
            # by name on the server: an unfiltered read returns only the first page of a busy session's runs
            verify_runs = [t for t in client.read_task_runs(task_run_filter=names) if t.created >= started]
            if len(verify_runs) == 4 and all(t.state.is_final() for t in verify_runs):
                break
            time.sleep(0.5)
    assert sorted(t.name for t in verify_runs) == ["verify-1a", "verify-1b", "verify-1c", "verify-1d"]
    assert all(t.state.is_final() for t in verify_runs), [(t.name, t.state.type) for t in verify_runs]


def test_simulated_multi_node_cluster_places_and_packs_trials(prefect_api, tmp_path: Path, trial_dir: Path):
    """Head plus two worker nodes with one (fake) GPU each, in a process of its own."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, str(HERE / "cluster_scenario.py"), str(tmp_path), str(trial_dir)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert report["review_node"] == report["driver_node"]
    trial_nodes = report["trial_nodes"]
    assert len(trial_nodes) == 4
    assert set(trial_nodes) == set(report["gpu_nodes"]) and report["driver_node"] not in trial_nodes
    assert sorted(trial_nodes.count(n) for n in set(trial_nodes)) == [2, 2]  # two half-GPU trials per node
    assert report["max_concurrent"] >= 3  # packed: trials ran side by side, not one GPU at a time

    oom = report["oom_rows"]
    assert sorted(r["status"] for r in oom) == ["discard", "keep"]
    assert all("retried on a whole GPU after running out of memory at 0.5 GPU" in r["description"] for r in oom)
    assert "no node of the Ray cluster has that much" in report["too_big"]
