"""LLM ideators inside real campaigns: scripted HTTP servers on 127.0.0.1, a real command, real 1-epoch trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from llm_answers import DROPOUT, SHAPE_ERROR, WIDER, answer
from llm_servers import ScriptedServer, anthropic_reply, error_reply, openai_reply

from autoraysearch.campaign.results_log import read_results_log
from helpers import git

pytestmark = pytest.mark.slow

SENTINEL = "sk-SENTINEL-campaign-9d27c4e1b08f"
EDITS_TRAIN_PY = {"description": "train for longer", "path": "train.py", "model_py": "EPOCHS = 50\n"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy may divert requests to 127.0.0.1, and no real key of this machine takes part."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def setup(experiment: Path, **options):
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    return autoraysearch_setup(experiment_dir=str(experiment), epochs=1, seeds=1, **options)


def loop_state(experiment: Path, **options):
    from autoraysearch.flows.loop import autoraysearch_loop

    return autoraysearch_loop(experiment_dir=str(experiment), return_state=True, **options)


def rows(experiment: Path):
    return read_results_log(experiment / "autoraysearch-results.tsv", True).rows


def prefect_records(flow_run_id) -> dict[str, str]:
    """Everything the Prefect API holds about a flow run, as text: logs, task runs, artifacts, the run itself."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 15
        logs = []
        while time.monotonic() < deadline and not logs:  # logs reach the API in batches
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            time.sleep(0.5)
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return {
            "logs": "\n".join(entry.message for entry in logs),
            "flow run": client.read_flow_run(flow_run_id).model_dump_json(),
            "task runs": json.dumps([t.model_dump(mode="json") for t in client.read_task_runs(flow_run_filter=runs)]),
            "artifacts": json.dumps([a.model_dump(mode="json") for a in client.read_artifacts(flow_run_filter=runs)]),
        }


def files_containing(root: Path, secret: str) -> list[str]:
    """Every file under root whose bytes hold the secret."""
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_openai_campaign_keeps_rejects_preflights_retries_and_never_leaks_the_key(services, example_repo, monkeypatch):
    exp = example_repo
    setup(exp)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    script = [
        # iteration 1: a good answer, trained for real
        openai_reply(answer(DROPOUT), 1000, 50),
        # iteration 2: prose and fences around an answer that edits train.py; then a shape error that only
        # pre-flight can see; then a change already tried (or no longer applicable): nothing left to train
        openai_reply("Sure! Here is my idea:\n```json\n" + answer(EDITS_TRAIN_PY) + "\n```\nGood luck.", 200, 30),
        openai_reply(answer(SHAPE_ERROR), 300, 40),
        openai_reply(answer(DROPOUT), 400, 50),
        # iteration 3: the endpoint is overloaded once, then answers
        error_reply(429, "slow down", {"Retry-After": "0"}),
        openai_reply(answer(WIDER), 500, 60),
    ]
    with ScriptedServer(script) as server:
        state = loop_state(
            exp, max_iterations=3, ideator="openai", llm_model="gpt-test", llm_base_url=server.url + "/v1",
            goal="reach 0.97 validation accuracy",
        )
    summary = state.result()
    assert summary.iterations == 3
    assert len(server.requests) == 6
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {SENTINEL}"}
    first_prompt = server.requests[0].body["messages"][0]["content"]
    assert "reach 0.97 validation accuracy" in first_prompt and "nn.Dropout(0.25)" in first_prompt

    log = rows(exp)
    assert [r.iteration for r in log] == ["0", "1", "2.1", "3"]
    one, crash, three = log[1], log[2], log[3]
    assert one.status in ("keep", "discard") and one.metric is not None
    assert one.description.startswith(DROPOUT["description"]) and one.extra["tokens"] == "1000+50"
    assert crash.status == "crash" and crash.metric is None and crash.extra["tokens"] == "900+120"
    assert "pre-flight: RuntimeError: mat1 and mat2 shapes cannot be multiplied" in crash.description
    assert three.status in ("keep", "discard") and three.extra["tokens"] == "500+60"
    assert not (exp / ".autoraysearch" / "logs" / "2.1.log").exists()  # it never took a trial slot
    repair = [m["content"] for m in server.requests[2].body["messages"] if m["role"] == "user"][-1]
    assert "only model.py may change" in repair

    branch = summary.branch
    assert git(exp, "diff", "--name-only", "main", branch) in ("", "model.py")  # train.py never changed
    history = git(exp, "log", "-p", "--all")
    assert SENTINEL not in history
    assert files_containing(exp, SENTINEL) == []
    for where, text in prefect_records(state.state_details.flow_run_id).items():
        assert SENTINEL not in text, where


def test_command_ideator_runs_a_parallel_iteration(services, example_repo, tmp_path):
    exp = example_repo
    setup(exp)
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""\
        import json, sys
        prompt = sys.stdin.read()
        assert "exactly 2 changes" in prompt, prompt[:200]
        print("Thinking... done.")
        print(json.dumps({{"candidates": {json.dumps([DROPOUT, WIDER])}}}))
    """))
    summary = loop_state(
        exp, max_iterations=1, parallel=2, cpus_per_trial=1, ideator="command",
        llm_command=f"{sys.executable} {agent}",
    ).result()
    assert summary.iterations == 1
    log = rows(exp)
    assert [(r.iteration, r.description.split(" (")[0]) for r in log[1:]] == [
        ("1a", DROPOUT["description"]), ("1b", WIDER["description"])]
    assert all(r.status in ("keep", "discard") and r.metric is not None for r in log[1:])
    assert "tokens" not in log[1].extra  # a command reports no token counts


def test_cli_anthropic_campaign_leaves_no_trace_of_the_key(services, example_repo, tmp_path):
    """Every file the campaign wrote, the Prefect database it logged to, and its output: no key anywhere."""
    exp = example_repo
    setup(exp)
    prefect_home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_HOME"))}
    env.update(ANTHROPIC_API_KEY=SENTINEL, PREFECT_HOME=str(prefect_home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", RAY_USAGE_STATS_ENABLED="0")
    env.pop("PREFECT_API_URL", None)
    with ScriptedServer([anthropic_reply(answer(DROPOUT), 700, 70)]) as server:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1",
             "--ideator", "anthropic", "--model", "claude-test", "--base-url", server.url, "--goal", "fewer errors"],
            env=env, capture_output=True, text=True, timeout=300,
        )
    print(f"\nCLI campaign with the anthropic ideator: {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.requests[0].headers["x-api-key"] == SENTINEL
    assert rows(exp)[1].extra["tokens"] == "700+70"
    assert SENTINEL not in done.stdout + done.stderr
    assert files_containing(exp, SENTINEL) == []
    assert list(prefect_home.rglob("*.db")), "the local Prefect server kept no database to check"
    assert files_containing(prefect_home, SENTINEL) == []


def test_cli_refuses_an_llm_ideator_without_its_key_or_model(example_repo):
    exp = example_repo
    (exp / "autoraysearch.toml").write_text('model_kwargs = {"num_classes" = 10}\n')
    (exp / "train.py").write_text("print('val_acc=0.5')\n")
    (exp / "autoraysearch-results.tsv").write_text(
        "# metric_direction: higher_is_better\niteration\tcommit\tmetric\tdelta\tstatus\tdescription\n"
        "0\tbaseline\t0.5\t0.0\tbaseline\tinitial\n"
    )
    git(exp, "add", "autoraysearch.toml", "train.py")
    git(exp, "commit", "-q", "-m", "settings")
    base = [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1"]
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    cases = {
        ("--ideator", "openai", "--model", "gpt-4.1"): "OPENAI_API_KEY is not set; export it or pass --api-key-block NAME.",
        ("--ideator", "anthropic"): "the anthropic ideator needs a model name, such as claude-sonnet-4-5.",
        ("--ideator", "command"): "the command ideator needs a command that reads stdin, such as 'claude -p'.",
    }
    for flags, sentence in cases.items():
        done = subprocess.run(base + list(flags), env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stderr.strip()) == (1, f"autoraysearch: {sentence}"), flags
