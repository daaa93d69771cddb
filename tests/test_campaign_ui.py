"""What the Prefect UI shows for a campaign, read back from a real Prefect API: task runs, artifacts, events."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import date
from pathlib import Path

import pytest

from autoraysearch.views.artifacts import DIFF, PLOT, PROGRESS, RESULTS
from autoraysearch.views.identity import artifact_key, campaign_id
from helpers import counting_train_py, git, make_repo, results

pytestmark = pytest.mark.slow

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


def task_run_logs(client, flow_run_id, task_run_name: str) -> list[str]:
    """The messages a task run of the flow run logged, in order."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterTaskRunId

    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    ids = [r.id for r in runs if r.name == task_run_name]
    if not ids:
        return []
    return [entry.message for entry in client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=ids)))]


def flow_run_logs(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return [entry.message for entry in client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


def events(client, name: str, resource_id: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id])), limit=50,
    )
    return page.events


def test_steps_artifacts_and_events_of_a_campaign(services, example_repo: Path, trial_dir: Path, request):
    from autoraysearch.flows.setup_experiment import autoraysearch_setup
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    exp = example_repo
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)  # the suite runs at WARNING; the flow's story is logged at INFO
    request.addfinalizer(lambda: prefect_logger.setLevel(level))
    # every run scores better than the one before: each iteration keeps exactly one change
    (exp / "train.py").write_text(counting_train_py(trial_dir / "calls", later='print(f"score={0.5 + 0.1 * calls:.1f}")'))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "my own train.py")
    setup_run = autoraysearch_setup(experiment_dir=str(exp), train_py="train.py", metric="score", seeds=1, return_state=True)

    first, sequential_run = run_loop(exp, max_iterations=1, tag="ui")
    second, parallel_run = run_loop(exp, max_iterations=1, parallel=2)
    assert first.kept == second.kept == 1 and second.best_metric == pytest.approx(0.8)
    [kept] = [r.iteration for r in results(exp).rows if r.iteration.startswith("2") and r.status == "keep"]

    with get_client(sync_client=True) as client:
        # Every loop step is a task run named after its iteration (and candidate, in parallel).
        expected = {"review-start", "review-1", "ideate-1", "modify-1", "commit-1", "verify-1", "decide-1", "log-1"}
        names = poll(lambda: task_run_names(client, sequential_run), lambda n: expected <= n)
        assert expected <= names, names
        expected = {"review-2", "ideate-2", "commit-2", "verify-2a", "verify-2b", "decide-2", "log-2a", "log-2b"}
        names = poll(lambda: task_run_names(client, parallel_run), lambda n: expected <= n)
        assert expected <= names, names

        # Every artifact key is the campaign's: folder, tag and a hash of the folder's path.
        key = lambda kind, branch="autoraysearch/ui": artifact_key(exp, branch, kind)
        assert key(RESULTS).startswith("exp-ui-") and key(RESULTS).endswith("-results")
        # Set-up publishes under the keys of the campaign a plain `run` would open: today's.
        today = f"autoraysearch/{date.today().isoformat()}"
        baseline, _ = latest_artifacts(client, setup_run.state_details.flow_run_id)
        assert baseline[key(RESULTS, today)].description == \
            f"exp/{today.removeprefix('autoraysearch/')}: best score=0.5 after 0 experiments — {exp}"

        latest, every = latest_artifacts(client, parallel_run)
        assert {key(RESULTS), key(PROGRESS), key(DIFF), key(PLOT)} <= set(latest)
        # Only the iteration changed the table (the run's start and end add nothing); progress is updated in place.
        assert sum(a.key == key(RESULTS) for a in every) == 1
        assert sum(a.key == key(PROGRESS) for a in every) == 1
        assert latest[key(RESULTS)].description.startswith("exp/ui: best score=0.8 (+0.3) after 3 experiments — ")

        # The story is in the flow's logs: a line per candidate with its metric and delta, a summary per iteration.
        # (ideate-N and decide-N log each proposal and verdict from Ray workers, which the suite starts at
        # PREFECT_LOGGING_LEVEL=WARNING: their lines are checked in test_campaign_views.)
        lines = poll(lambda: flow_run_logs(client, parallel_run), lambda found: any(l.startswith("iteration 2") for l in found))
        assert any(l.startswith(f"{kept} keep score=0.8 (+0.2, a keep needs > 0)") for l in lines), lines
        assert sum(l.startswith(("iteration", "2a ", "2b ")) for l in lines) > sum("Finished in state" in l for l in lines)
        assert any(line.startswith("iteration 2: 2a ") and "1 kept in 1 iteration of this run" in line for line in lines)

        # The runs are named and tagged after the campaign; the second run of it is numbered.
        runs = [client.read_flow_run(run_id) for run_id in (sequential_run, parallel_run)]
        assert [run.name for run in runs] == ["exp/ui", "exp/ui #2"]
        assert all({"autoraysearch", "experiment:exp", "campaign:ui"} <= set(run.tags) for run in runs)

        table = latest[key(RESULTS)].data
        table = json.loads(table) if isinstance(table, str) else table
        assert [r["iteration"] for r in table] == ["0", "1", "2a", "2b"]
        assert [r["metric"] for r in table] == ["0.5", "0.6", "0.7", "0.8"]
        assert sorted(r["status"] for r in table[2:]) == ["discard", "keep"]

        progress = latest[key(PROGRESS)]
        assert progress.data == 100.0
        assert progress.description.startswith(
            "exp/ui: best score=0.8 (+0.3) after 3 experiments; finished: reached 1 iteration; 1 of 1 iteration done")

        best_sha = git(exp, "rev-parse", "--short=7", "autoraysearch/ui")
        diff = latest[key(DIFF)].data
        assert f"best score=0.8 from iteration {kept} ({best_sha})" in diff
        assert diff.count("\n- `") == 2 and "```diff\n--- model.py (baseline)\n" in diff

        plot = latest[key(PLOT)].data
        png = exp / ".autoraysearch" / "progress.png"
        assert f"Saved as `{png}`" in plot
        embedded = base64.b64decode(plot.split("data:image/png;base64,")[1].split(")")[0])
        assert embedded == png.read_bytes() and embedded.startswith(b"\x89PNG")

        # Automations can trigger on a better model and on the end of a campaign.
        resource = f"autoraysearch.campaign.{campaign_id(exp, 'autoraysearch/ui')}"
        best = poll(lambda: events(client, "autoraysearch.new-best", resource), lambda e: len(e) >= 2)
        assert sorted(e.payload["value"] for e in best) == [pytest.approx(0.6), pytest.approx(0.8)]
        assert {e.payload["commit"] for e in best} == {r["commit"] for r in table if r["status"] == "keep"}
        finished = poll(lambda: events(client, "autoraysearch.campaign-finished", resource), lambda e: len(e) >= 2)
        newest = max(finished, key=lambda e: e.occurred)
        assert newest.payload["best"] == pytest.approx(0.8) and newest.payload["kept"] == 2
        assert newest.payload["stop_reason"] == "reached 1 iteration"
        assert f"prefect.flow-run.{parallel_run}" in {r.id for r in newest.related}
        assert newest.resource["autoraysearch.metric"] == "score" and newest.resource["autoraysearch.value"] == "0.8"

        # A second experiment on the same server has keys of its own: the first one's latest table is untouched.
        other = make_repo(exp.parent / "other" / "exp", {name: (exp / name).read_text() for name in ("model.py", "train.py")})
        autoraysearch_setup(experiment_dir=str(other), train_py="train.py", metric="score", seeds=1)
        other_key = artifact_key(other, today, RESULTS)
        assert other_key != key(RESULTS, today)
        # The UI's Artifacts page lists the newest version of each key: one per experiment.
        collections = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[key(RESULTS, today), other_key])))
        assert len(collections) == 2
