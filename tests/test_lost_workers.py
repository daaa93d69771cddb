"""A Ray worker lost under a loop step: a step safe to repeat runs again, any other ends Crashed, never Running."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import ray.cloudpickle
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from autoraysearch.cluster import (
    REPEATABLE_STEP_RETRIES,
    CampaignTaskRunner,
    infrastructure_fault,
    lost_worker_retries,
    on_repo_node,
)
from autoraysearch.errors import AutoraysearchError
from autoraysearch.tasks.commit import commit
from autoraysearch.tasks.decide import decide
from autoraysearch.tasks.log import log
from autoraysearch.tasks.modify import modify
from autoraysearch.tasks.review import review

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/


def next_attempt(counter: str) -> int:
    done = int(Path(counter).read_text()) if os.path.exists(counter) else 0
    Path(counter).write_text(str(done + 1))
    return done


@task(name="reads-the-repo", cache_policy=NO_CACHE, retries=REPEATABLE_STEP_RETRIES,
      retry_condition_fn=infrastructure_fault)
def repeatable_step(counter: str) -> str:
    if next_attempt(counter) == 0:
        os._exit(1)  # the Ray worker process dies under the step, as when its node is lost
    return "read"


@task(name="moves-a-branch", cache_policy=NO_CACHE, retries=0)
def unrepeatable_step(counter: str) -> str:
    next_attempt(counter)
    time.sleep(3)  # long enough for its Running state to reach the server, as any real step's does
    os._exit(1)


@flow(task_runner=CampaignTaskRunner())
def run_step(repeatable: bool, counter: str) -> tuple[str, str]:
    step = repeatable_step if repeatable else unrepeatable_step
    with on_repo_node(None):
        future = step.submit(counter)
    try:
        return future.result(), str(future.task_run_id)
    except Exception as exc:
        return f"lost: {type(exc).__name__}", str(future.task_run_id)


def final_task_run_state(task_run_id: str, wait_s: float = 30) -> str:
    """The task run's state once final; task run states reach the server as events, a moment late."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                state = client.read_task_run(task_run_id).state
            except ObjectNotFound:
                state = None
            if (state is not None and state.is_final()) or time.monotonic() > deadline:
                return state.type.value if state else "MISSING"
            time.sleep(0.5)


@pytest.mark.slow
def test_a_step_safe_to_repeat_runs_again_on_a_new_worker(services, tmp_path: Path):
    counter = str(tmp_path / "attempts")
    value, task_run_id = run_step(True, counter)
    assert value == "read"
    assert Path(counter).read_text() == "2"
    assert final_task_run_state(task_run_id) == "COMPLETED"


@pytest.mark.slow
def test_a_step_not_safe_to_repeat_ends_crashed_and_stops_there(services, tmp_path: Path):
    counter = str(tmp_path / "attempts")
    value, task_run_id = run_step(False, counter)
    assert value.startswith("lost: ")
    assert Path(counter).read_text() == "1"  # Ray's default would have run it four times
    assert final_task_run_state(task_run_id) == "CRASHED"


def test_only_reads_and_whole_file_writes_are_repeated():
    assert lost_worker_retries(review.retries) == lost_worker_retries(modify.retries) == REPEATABLE_STEP_RETRIES
    assert lost_worker_retries(commit.retries) == lost_worker_retries(decide.retries) == 0
    assert lost_worker_retries(log.retries) == 0  # a repeated append would log a row twice


def test_infrastructure_faults_are_retried_and_mistakes_are_not():
    assert infrastructure_fault(None, None, Failed(data=OSError("disk hiccup")))
    assert infrastructure_fault(None, None, Failed(data=ConnectionError("reset by peer")))
    assert not infrastructure_fault(None, None, Failed(data=AutoraysearchError("model.py has no Model")))
