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
from autoraysearch.tasks.verify import verify

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/


def next_attempt(counter: str) -> int:
    done = int(Path(counter).read_text()) if os.path.exists(counter) else 0
    Path(counter).write_text(str(done + 1))
    return done


def lose_the_worker_once_running() -> None:
    """Kill this Ray worker, as when its node is lost, once the API shows the step Running: a real step's
    Running state has long reached the server by the time its node goes."""
    from prefect.client.orchestration import get_client
    from prefect.context import TaskRunContext
    from prefect.exceptions import ObjectNotFound

    task_run_id = TaskRunContext.get().task_run.id
    deadline = time.monotonic() + 60
    try:
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline:
                try:
                    if client.read_task_run(task_run_id).state.is_running():
                        break
                except ObjectNotFound:  # task runs reach the server as events, a moment late
                    pass
                time.sleep(0.2)
    finally:  # even if the API errs under load: an error raised here would be retried by Prefect in this
        os._exit(1)  # same worker and counted as one more attempt than the worker losses under test


@task(name="reads-the-repo", cache_policy=NO_CACHE, retries=REPEATABLE_STEP_RETRIES,
      retry_condition_fn=infrastructure_fault)
def repeatable_step(counter: str, lost_every_time: bool = False) -> str:
    if next_attempt(counter) == 0 or lost_every_time:
        lose_the_worker_once_running()
    return "read"


@task(name="moves-a-branch", cache_policy=NO_CACHE, retries=0)
def unrepeatable_step(counter: str) -> str:
    next_attempt(counter)
    lose_the_worker_once_running()


@flow(task_runner=CampaignTaskRunner())
def run_step(repeatable: bool, counter: str, lost_every_time: bool = False) -> tuple[str, str]:
    with on_repo_node(None):
        future = repeatable_step.submit(counter, lost_every_time) if repeatable else unrepeatable_step.submit(counter)
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
def test_a_step_safe_to_repeat_is_run_again_only_as_often_as_it_allows_retries(services, tmp_path: Path):
    counter = str(tmp_path / "attempts")
    value, task_run_id = run_step(True, counter, lost_every_time=True)
    assert value.startswith("lost: ")
    assert Path(counter).read_text() == str(1 + REPEATABLE_STEP_RETRIES)  # Ray's default would have run it four times
    assert final_task_run_state(task_run_id) == "CRASHED"


@pytest.mark.slow
def test_a_step_not_safe_to_repeat_ends_crashed_and_stops_there(services, tmp_path: Path):
    counter = str(tmp_path / "attempts")
    value, task_run_id = run_step(False, counter)
    assert value.startswith("lost: ")
    assert Path(counter).read_text() == "1"  # Ray's default would have run it four times
    assert final_task_run_state(task_run_id) == "CRASHED"


def test_only_reads_and_whole_file_writes_are_repeated():
    """How often Ray runs each loop step again after losing its worker (Ray's own default is three times)."""
    steps = {"review": review, "modify": modify, "commit": commit, "decide": decide, "log": log, "verify": verify}
    assert {name: lost_worker_retries(step.retries) for name, step in steps.items()} == {
        "review": 2, "modify": 2,
        "commit": 0, "decide": 0, "verify": 0,
        "log": 0,  # a repeated append would log a row twice
    }
    assert [lost_worker_retries(n) for n in (None, -1, 0, 3)] == [0, 0, 0, 3]  # no retries declared: never repeated


def test_infrastructure_faults_are_retried_and_mistakes_are_not():
    assert infrastructure_fault(None, None, Failed(data=OSError("disk hiccup")))
    assert infrastructure_fault(None, None, Failed(data=ConnectionError("reset by peer")))
    assert not infrastructure_fault(None, None, Failed(data=AutoraysearchError("model.py has no Model")))
