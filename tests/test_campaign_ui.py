"""What the Prefect UI shows for a campaign, read back from a real Prefect API: task runs, artifacts, events."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from autoraysearch.artifacts import DIFF_KEY, PLOT_KEY, PROGRESS_KEY, RESULTS_KEY
from conftest import git

pytestmark = pytest.mark.slow

# Every candidate scores better than the one before: each iteration keeps exactly one change.
IMPROVING_TRAIN_PY = '''
import os


def load_model():  # never called: the score comes from the counter, not the model
    from model import Model

# Parallel trials start together: each claims the next number by creating its file, atomically.
CALLS = {calls!r}
calls = 0
while True:
    try:
        os.close(os.open(os.path.join(CALLS, str(calls)), os.O_CREAT | os.O_EXCL))
        break
    except FileExistsError:
        calls += 1
print(f"score={{0.5 + 0.1 * calls:.1f}}")
'''


def run_loop(experiment: Path, **options):
    from autoraysearch.flows.loop import autoraysearch_loop

    state = autoraysearch_loop(experiment_dir=str(experiment), return_state=True, **options)
    return state.result(), state.state_details.flow_run_id


def poll(read, ready, timeout: float = 60.0):
    """Task runs and events reach the API a moment after they happen: ask until they are there."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def task_run_names(client, flow_run_id) -> set[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name for r in runs}


def latest_artifacts(client, flow_run_id) -> dict:
    """The newest version of each key this flow run created (what the UI's Artifacts page shows)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import ArtifactSort

    artifacts = client.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), sort=ArtifactSort.CREATED_DESC,
    )
    latest: dict = {}
    for artifact in artifacts:
        latest.setdefault(artifact.key, artifact)
    return latest, artifacts


def events(client, name: str, resource_id: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])), limit=50,
    )
    return page.events


def test_steps_artifacts_and_events_of_a_campaign(services, example_repo: Path, trial_dir: Path):
    from autoraysearch.flows.setup_experiment import autoraysearch_setup
    from prefect.client.orchestration import get_client

    exp = example_repo
    (trial_dir / "calls").mkdir()
    (exp / "train.py").write_text(IMPROVING_TRAIN_PY.format(calls=str(trial_dir / "calls")))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "my own train.py")
    setup_run = autoraysearch_setup(experiment_dir=str(exp), train_py="train.py", metric="score", seeds=1, return_state=True)

    first, sequential_run = run_loop(exp, max_iterations=1, tag="ui")
    second, parallel_run = run_loop(exp, max_iterations=1, parallel=2)
    assert first.kept == second.kept == 1 and second.best_metric == pytest.approx(0.8)

    with get_client(sync_client=True) as client:
        # Every loop step is a task run named after its iteration (and candidate, in parallel).
        expected = {"review-start", "review-1", "ideate-1", "modify-1", "commit-1", "verify-1", "decide-1", "log-1"}
        names = poll(lambda: task_run_names(client, sequential_run), lambda n: expected <= n)
        assert expected <= names, names
        expected = {"review-2", "ideate-2", "commit-2", "verify-2a", "verify-2b", "decide-2", "log-2a", "log-2b"}
        names = poll(lambda: task_run_names(client, parallel_run), lambda n: expected <= n)
        assert expected <= names, names

        baseline, _ = latest_artifacts(client, setup_run.state_details.flow_run_id)
        assert baseline[RESULTS_KEY].description == f"Set-up in {exp}: best score=0.5 from the baseline"

        latest, every = latest_artifacts(client, parallel_run)
        assert {RESULTS_KEY, PROGRESS_KEY, DIFF_KEY, PLOT_KEY} <= set(latest)
        assert sum(a.key == RESULTS_KEY for a in every) >= 3  # at the start, after the iteration, at the end

        table = latest[RESULTS_KEY].data
        table = json.loads(table) if isinstance(table, str) else table
        assert [r["iteration"] for r in table] == ["0", "1", "2a", "2b"]
        assert [r["metric"] for r in table] == ["0.5", "0.6", "0.7", "0.8"]
        assert sorted(r["status"] for r in table[2:]) == ["discard", "keep"]

        progress = latest[PROGRESS_KEY]
        assert progress.data == 100.0
        assert progress.description.startswith("finished: reached 1 iterations; 1 of 1 iterations done")

        best_sha = git(exp, "rev-parse", "--short=7", "autoraysearch/ui")
        diff = latest[DIFF_KEY].data
        assert f"best score=0.8 from iteration 2b ({best_sha})" in diff or f"from iteration 2a ({best_sha})" in diff
        assert diff.count("\n- `") == 2 and "```diff\n--- model.py (baseline)\n" in diff

        plot = latest[PLOT_KEY].data
        png = exp / ".autoraysearch" / "progress.png"
        assert f"Saved as `{png}`" in plot
        embedded = base64.b64decode(plot.split("data:image/png;base64,")[1].split(")")[0])
        assert embedded == png.read_bytes() and embedded.startswith(b"\x89PNG")

        # Automations can trigger on a better model and on the end of a campaign.
        resource = "autoraysearch.campaign.autoraysearch/ui"
        best = poll(lambda: events(client, "autoraysearch.new-best", resource), lambda e: len(e) >= 2)
        assert sorted(e.payload["value"] for e in best) == [pytest.approx(0.6), pytest.approx(0.8)]
        assert {e.payload["commit"] for e in best} == {r["commit"] for r in table if r["status"] == "keep"}
        finished = poll(lambda: events(client, "autoraysearch.campaign-finished", resource), lambda e: len(e) >= 2)
        newest = max(finished, key=lambda e: e.occurred)
        assert newest.payload["best"] == pytest.approx(0.8) and newest.payload["kept"] == 2
        assert newest.payload["stop_reason"] == "reached 1 iterations"
        assert f"prefect.flow-run.{parallel_run}" in {r.id for r in newest.related}
