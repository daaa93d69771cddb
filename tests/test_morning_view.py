"""The morning after, read back from a real Prefect API: verdicts on the timeline, names and tags per
experiment, one artifact version per change, events that say what happened."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from autoraysearch.views.artifacts import DIFF, PLOT, PROGRESS, RESULTS
from autoraysearch.views.ending import FINAL
from autoraysearch.views.identity import artifact_key, campaign_id, expected_branch
from helpers import counting_train_py, git, make_repo, setup

pytestmark = pytest.mark.slow


def poll(read, ready, timeout: float = 60.0):
    """Task runs and events reach the API a moment after they happen: ask until they are there."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def scored_experiment(path: Path, trial_dir: Path, *scores: float) -> Path:
    """An experiment whose n-th training run scores scores[n] (the baseline first), then 0.1."""
    exp = make_repo(path, {"model.py": (Path(__file__).parents[1] / "examples" / "digits" / "model.py").read_text()})
    runs = [f'print("score={s}")' for s in scores]
    (exp / "train.py").write_text(counting_train_py(trial_dir / path.name, *runs, later='print("score=0.1")'))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "my own train.py")
    return exp


def run_loop(experiment: Path, **options):
    from autoraysearch.flows.loop import autoraysearch_loop

    state = autoraysearch_loop(experiment_dir=str(experiment), return_state=True, **options)
    return state.state_details.flow_run_id


def task_runs(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return {r.name: r for r in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))}


def versions(client, key: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC)


def test_a_mornings_runs_read_back_from_the_api(services, tmp_path: Path, trial_dir: Path, request):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)  # the suite runs at WARNING; the runs' first lines are logged at INFO
    request.addfinalizer(lambda: prefect_logger.setLevel(level))

    alpha = scored_experiment(tmp_path / "alpha", trial_dir, 0.5, 0.6, 0.55)
    beta = scored_experiment(tmp_path / "beta", trial_dir, 0.5)
    alpha_setup = setup(alpha, train_py="train.py", metric="score", return_state=True).state_details.flow_run_id
    beta_setup = setup(beta, train_py="train.py", metric="score", return_state=True).state_details.flow_run_id
    branch = expected_branch(alpha, None)
    first = run_loop(alpha, max_iterations=2)  # 1 keeps 0.6, 2 discards 0.55
    second = run_loop(alpha, max_iterations=1)  # the same campaign again, the same day

    with get_client(sync_client=True) as client:
        # The verdict is the state's name: the timeline shows which candidate was kept without opening a run.
        runs = poll(lambda: task_runs(client, first), lambda r: {"decide-1", "decide-2", "log-2"} <= set(r))
        assert runs["decide-1"].state.name == "Kept" and runs["decide-1"].state.is_completed()
        assert runs["decide-2"].state.name == "Discarded" and runs["log-2"].state.name == "Discarded"

        # Names and tags tell experiments and runs apart.
        today = branch.removeprefix("autoraysearch/")
        names = {run_id: client.read_flow_run(run_id) for run_id in (alpha_setup, beta_setup, first, second)}
        assert names[first].name == f"alpha/{today}" and names[second].name == f"alpha/{today} #2"
        assert names[alpha_setup].name == "alpha/set-up" and names[beta_setup].name == "beta/set-up"
        assert {"autoraysearch", "experiment:alpha", f"campaign:{today}"} <= set(names[first].tags)
        assert "experiment:beta" in names[beta_setup].tags and "experiment:alpha" not in names[beta_setup].tags
        setup_lines = [entry.message for entry in client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[beta_setup])))]
        assert any("beta/set-up" in line for line in setup_lines[:2]), setup_lines[:2]  # named from its first line

        # One set of artifacts per campaign, set-up's included; a new version only when the content changed.
        key = lambda kind: artifact_key(alpha, branch, kind)
        every = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="alpha-")))
        assert {a.key for a in every} == {key(kind) for kind in (RESULTS, PROGRESS, DIFF, PLOT, FINAL)}
        results = versions(client, key(RESULTS))
        # the baseline, after 1, after 2, after 3: the runs' starts and ends added nothing new
        assert len(results) == 4, [a.data for a in results]
        for kind in (RESULTS, DIFF, PLOT):
            data = [json.dumps(a.data) if not isinstance(a.data, str) else a.data for a in versions(client, key(kind))]
            assert len(data) == len(set(data)), kind
        assert len(versions(client, key(PROGRESS))) == 3  # one per run, updated in place; set-up's says it is done
        setup_progress = versions(client, key(PROGRESS))[-1]
        assert setup_progress.data == 100.0 and "set-up complete" in setup_progress.description
        newest = results[0]
        assert newest.description.startswith(f"alpha/{today}: best score=0.6 (+0.1) after 3 experiments")
        table = json.loads(newest.data) if isinstance(newest.data, str) else newest.data
        # `\>`: the UI renders each cell as markdown, where a bare `>` would start a block quote
        assert [(r["iteration"], r["status"], r["needed"]) for r in table[1:3]] == [("1", "keep", "\\> 0"),
                                                                                    ("2", "discard", "\\> 0")]

        # The event card shows what happened: its resource's name and the related numbers.
        resource = f"autoraysearch.campaign.{campaign_id(alpha, branch)}"
        finished = poll(lambda: client.read_events(EventFilter(
            event=EventNameFilter(name=["autoraysearch.campaign-finished"]), resource=EventResourceFilter(id=[resource])),
            limit=10).events, lambda e: len(e) >= 2)
        event = max(finished, key=lambda e: e.occurred)
        assert event.resource["prefect.resource.name"] == f"alpha/{today}: reached 1 iteration; best score=0.6"
        related = {r["prefect.resource.role"]: r.id for r in event.related}  # the card shows their ids
        assert related["autoraysearch-best"] == "best score=0.6"
        assert related["autoraysearch-stop-reason"] == "stopped: reached 1 iteration"
        assert "flow-run" in related  # and the run it came from
