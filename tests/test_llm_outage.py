"""An LLM that stays down longer than its client's retries is waited out by the loop, never failing the run."""

from __future__ import annotations

import re

import pytest

from autoraysearch.tasks.ideate import outage_wait
from helpers import loop, results, setup
from llm_answers import DROPOUT, answer
from llm_servers import ScriptedServer, error_reply, openai_reply


def test_the_waits_grow_and_never_pass_the_setting():
    assert [outage_wait(n, 300) for n in range(5)] == [10, 60, 300, 300, 300]
    assert [outage_wait(n, 30) for n in range(3)] == [10, 30, 30]


def set_outage_wait(exp, seconds: float) -> None:
    path = exp / "autoraysearch.toml"
    path.write_text(re.sub(r"(?m)^llm_outage_wait = .*$", f"llm_outage_wait = {seconds}", path.read_text()))


def overloaded(times: int) -> list:
    """`times` ideate steps' worth of 503s: the client tries four times per step."""
    return [error_reply(503, "overloaded", {"Retry-After": "0"})] * (4 * times)


@pytest.mark.slow
def test_an_outage_longer_than_the_retries_is_waited_out(services, example_repo, monkeypatch):
    exp = example_repo
    setup(exp, epochs=1)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-outage")
    set_outage_wait(exp, 1.0)
    with ScriptedServer(overloaded(2) + [openai_reply(answer(DROPOUT))]) as server:
        state = loop(exp, return_state=True, max_iterations=1, ideator="openai", llm_model="m",
                     llm_base_url=server.url + "/v1")
    assert state.is_completed(), state
    assert state.result().iterations == 1
    assert len(server.requests) == 9
    [row] = results(exp).rows[1:]
    assert row.description.startswith(DROPOUT["description"]) and row.status in ("keep", "discard")


@pytest.mark.slow
def test_an_outage_until_the_time_limit_ends_the_run_cleanly(services, example_repo, monkeypatch):
    exp = example_repo
    setup(exp, epochs=1)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-outage")
    set_outage_wait(exp, 2.0)
    with ScriptedServer(overloaded(1000)) as server:
        # 45 s: more than a first run and the confirmation a keep would need (setup's timing), so a candidate is asked for
        state = loop(exp, return_state=True, max_hours=45 / 3600, ideator="openai", llm_model="m",
                     llm_base_url=server.url + "/v1")
    assert state.is_completed(), state
    summary = state.result()
    assert summary.iterations == 0 and ("unavailable" in summary.stop_reason or "hours" in summary.stop_reason)
    assert len(server.requests) >= 8  # it kept asking
    assert [r.status for r in results(exp).rows] == ["baseline"]
