"""LLM ideators against real HTTP servers on 127.0.0.1 (OpenAI and Anthropic wire formats) and a real command."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
import time
import traceback
from pathlib import Path

import pytest
from llm_answers import DROPOUT, DROPOUT_SOURCE, EXAMPLE, SHAPE_ERROR, WIDER, WIDER_SOURCE, answer
from llm_servers import ScriptedServer, anthropic_reply, error_reply, openai_reply

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import Review
from autoraysearch.ideators.llm.answers import parse_answer, review_answer, size_limit
from autoraysearch.ideators.llm.clients import LLMAuthError, LLMUnavailable
from autoraysearch.ideators.llm.ideator import LLMConfig, propose_with_llm, resolve_api_key
from autoraysearch.ideators.llm.prompt import build_prompt
from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.campaign.settings import CampaignSettings

SENTINEL = "sk-SENTINEL-4f1c9e2a7b30d58e"
SETTINGS = CampaignSettings(
    goal="reach 0.97 validation accuracy on digits", model_kwargs={"num_classes": 10}, input_shape=[1, 8, 8]
)


def make_review(*tried_sources: str) -> Review:
    return Review(
        model_source=EXAMPLE,
        train_source="# train.py (read-only)\n",
        git_log=(
            "1a2b3c4 autoraysearch 2: widen the first conv from 16 to 32 channels",
            "5d6e7f8 autoraysearch setup: train.py and campaign settings",
            "9a8b7c6 initial",
        ),
        best_metric=0.9216,
        best_sha="1a2b3c4",
        tried=frozenset({fingerprint(EXAMPLE), *map(fingerprint, tried_sources)}),
        recent=(
            "0 baseline 0.8552 initial state (28a2dc3)",
            "1 discard 0.8401 raise the classifier dropout from 0.25 to 0.5",
            "2 keep 0.9216 widen the first conv from 16 to 32 channels",
            "3 crash - replace MaxPool2d with a stride-2 conv "
            "(crash: RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x128 and 512x64))",
        ),
    )


def openai_config(server: ScriptedServer, **overrides) -> LLMConfig:
    return LLMConfig(kind="openai", model="gpt-test", base_url=server.url + "/v1", retry_base_delay_s=0.01, **overrides)


def anthropic_config(server: ScriptedServer, **overrides) -> LLMConfig:
    return LLMConfig(kind="anthropic", model="claude-test", base_url=server.url, retry_base_delay_s=0.01, **overrides)


def user_messages(server: ScriptedServer, request: int) -> list[str]:
    return [m["content"] for m in server.requests[request].body["messages"] if m["role"] == "user"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy may divert requests to 127.0.0.1, and no real key of this machine takes part."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# ---- the prompt and the answer format (pure) ----


def test_prompt_holds_goal_metric_model_history_and_format():
    prompt = build_prompt(make_review(), SETTINGS, 1)
    for expected in (
        "reach 0.97 validation accuracy on digits", "`val_acc`", "higher is better", "val_acc=0.9216",
        EXAMPLE.strip(), "5 epochs per candidate", "[1, 8, 8]", "Model(num_classes=10)",
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x128 and 512x64)",  # a crash's error
        "1a2b3c4 autoraysearch 2: widen the first conv",  # the git log
        "- raise the classifier dropout from 0.25 to 0.5\n",  # a discard, in the tried list
        "- replace MaxPool2d with a stride-2 conv\n",  # a crash, in the tried list without its error
        "exactly one change", '{"candidates": [', '"search"', '"model_py"', "model.py only",
    ):
        assert expected in prompt, expected
    assert fingerprint(EXAMPLE) not in prompt  # fingerprints mean nothing to an LLM

    parallel = build_prompt(make_review(), SETTINGS, 3)
    assert "exactly 3 changes" in parallel and "must differ in kind" in parallel


@pytest.mark.parametrize(
    "text",
    [
        answer(DROPOUT),
        "Here is my proposal.\n```json\n" + answer(DROPOUT) + "\n```\nIt should regularise less.",
        "```\n" + json.dumps(DROPOUT, indent=2) + "\n```",  # a bare object for one candidate, unlabeled fence
        "Sure! " + json.dumps([DROPOUT]) + " Good luck.",
        answer(DROPOUT).replace("\\n", "\n"),  # raw newlines inside strings
    ],
    ids=["plain", "fenced-with-prose", "bare-object", "list-in-prose", "raw-newlines"],
)
def test_usual_wrappers_around_the_json_are_tolerated(text):
    review = review_answer(text, EXAMPLE, make_review().tried)
    assert [a.source for a in review.accepted] == [DROPOUT_SOURCE], review.rejected


@pytest.mark.parametrize(
    "candidate, reason",
    [
        ({**DROPOUT, "path": "train.py"}, "only model.py may change; this candidate names 'train.py'"),
        ({**WIDER, "file": "../x.py"}, "only model.py may change; this candidate names '../x.py'"),
        ({**DROPOUT, "train_py": "print(1)"}, "only model.py may change; this candidate also writes train.py"),
        ({**DROPOUT, "files": {"train.py": "x"}}, "only model.py may change"),
        ({"description": "d", "edits": [{"path": "/etc/x.py", "search": "a", "replace": "b"}]}, "only model.py may change"),
        ({**DROPOUT, "edits": [{"search": "nn.Dropout(0.5)", "replace": "x"}]}, "does not occur in model.py"),
        ({**DROPOUT, "edits": [{"search": "nn.ReLU(),", "replace": "nn.GELU(),"}]}, "occurs 3 times in model.py"),
        ({**DROPOUT, "edits": [{"search": "class Model", "replace": "class Net"}]}, "has no `Model`"),
        ({**WIDER, "model_py": "class Model(:\n"}, "does not parse"),
        ({**WIDER, "model_py": EXAMPLE + "# a comment\n"}, "does not change model.py's code"),
        ({**WIDER, "model_py": EXAMPLE + "#" * 200_001}, "more than the limit"),
        # far under the 200 KB cap, but past the limit a small model.py grows to (see size_limit)
        ({**WIDER, "model_py": WIDER_SOURCE + "#" * 20_000}, "more than the limit of 20,000"),
        ({"edits": DROPOUT["edits"]}, '"description"'),
        ({**DROPOUT, "model_py": WIDER_SOURCE}, 'either "model_py"'),
        ({**DROPOUT, "edits": []}, '"edits" must be a non-empty list'),
        ({**DROPOUT, "edits": DROPOUT["edits"][0]}, '"edits" must be a non-empty list'),
        ({**DROPOUT, "edits": ["nn.Dropout(0.1)"]}, 'edit 1 must be an object with string "search" and "replace"'),
        ({**DROPOUT, "edits": [*DROPOUT["edits"], {"search": "nn.ReLU()"}]}, 'edit 2 must be an object with string'),
        ({**DROPOUT, "edits": [{"search": "nn.Dropout(0.25)", "replace": 0.1}]}, "edit 1 must be an object with string"),
        ({**DROPOUT, "edits": [{"search": "", "replace": "x = 1\n"}]}, 'edit 1 has an empty "search"'),
        # each search occurs once in model.py, but the first edit already replaced the second's text
        ({**DROPOUT, "edits": [*DROPOUT["edits"], {"search": "Dropout(0.25)", "replace": "Dropout(0.3)"}]},
         "edit 2 overlaps an earlier edit; combine them into one"),
    ],
    ids=["path-train", "parent-path", "train_py-key", "files", "edit-path", "no-match", "3-matches",
         "no-Model", "syntax", "unchanged", "too-big", "grown-too-much", "no-description", "both-forms",
         "edits-empty", "edits-not-a-list", "edit-not-an-object", "edit-without-replace", "edit-not-a-string",
         "empty-search", "overlapping-edits"],
)
def test_bad_proposals_are_rejected_with_their_reason(candidate, reason):
    review = review_answer(answer(candidate), EXAMPLE, make_review().tried)
    assert not review.accepted
    assert reason in review.rejected[0][1], review.rejected


@pytest.mark.parametrize(
    "text, reason",
    [
        (json.dumps({"candidates": DROPOUT}), '"candidates" must be a JSON list of objects'),
        (json.dumps({"candidates": "lower the dropout"}), '"candidates" must be a JSON list of objects'),
        (json.dumps({"candidates": [DROPOUT, "lower the dropout"]}), "candidate 2 is not a JSON object"),
        (json.dumps({"candidates": []}), "the answer proposes no candidates"),
    ],
    ids=["candidates-object", "candidates-string", "candidate-not-an-object", "no-candidates"],
)
def test_a_malformed_answer_is_rejected_whole(text, reason):
    """Even the well-formed candidate of such an answer is not taken: the LLM is asked to answer again."""
    review = review_answer(text, EXAMPLE, make_review().tried)
    assert (review.accepted, review.rejected, review.proposals) == ((), (("answer", reason),), 0)


def test_the_size_limit_grows_with_the_current_model_py():
    """Five times the current file, never under 20 KB (room for one new block) nor over the 200 KB cap."""
    assert [size_limit("x" * n) for n in (1_000, 10_000, 50_000)] == [20_000, 50_000, 200_000]
    current = EXAMPLE + "# notes\n" * 1_150  # about 10 KB: its limit is 5x, 50 KB
    limit = size_limit(current)
    wider = current.replace("nn.Linear(32 * 4 * 4, 64)", "nn.Linear(32 * 4 * 4, 128)").replace(
        "nn.Linear(64, num_classes)", "nn.Linear(128, num_classes)")
    fits = wider + "#" * (limit - len(wider) - 1) + "\n"
    grown = fits + "#\n"
    review = review_answer(answer({**WIDER, "model_py": fits}, {**WIDER, "model_py": grown}), current, ())
    assert [a.source for a in review.accepted] == [fits]
    assert review.rejected == ((WIDER["description"], f"the new model.py is {limit + 2:,} bytes, more than the limit of "
                                                      f"{limit:,}; propose a smaller change"),)


def test_model_py_path_and_duplicates_within_an_answer():
    same = {**WIDER, "description": "the same, in other words", "path": "./model.py"}
    review = review_answer(answer({**WIDER, "path": "model.py"}, same), EXAMPLE, make_review().tried)
    assert [a.source for a in review.accepted] == [WIDER_SOURCE]
    assert review.rejected == (("the same, in other words", "this is the same model.py as proposal 1 of this answer"),)
    assert parse_answer(answer(WIDER, DROPOUT))[1]["kind"] == "regularisation"


# ---- whole calls against real servers ----


def test_openai_good_answer_becomes_a_preflighted_candidate():
    with ScriptedServer([openai_reply(answer(DROPOUT), prompt_tokens=1234, completion_tokens=56)]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")
    [candidate] = ideas.candidates
    assert (candidate.label, candidate.description, candidate.kind) == ("4", DROPOUT["description"], "regularisation")
    assert candidate.model_source == DROPOUT_SOURCE and candidate.fingerprint == fingerprint(DROPOUT_SOURCE)
    assert ideas.rejected == [] and ideas.usage == {"input_tokens": 1234, "output_tokens": 56}
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "gpt-test"
    assert "reach 0.97 validation accuracy" in request.body["messages"][0]["content"]


def test_anthropic_whole_file_answer():
    script = [anthropic_reply(answer(WIDER), input_tokens=2000, output_tokens=700)]
    with ScriptedServer(script) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], anthropic_config(server), api_key="sk-ant-test")
    assert [c.model_source for c in ideas.candidates] == [WIDER_SOURCE]
    assert ideas.usage == {"input_tokens": 2000, "output_tokens": 700}
    [request] = server.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body["model"] == "claude-test" and request.body["max_tokens"] == 8192


def test_answer_in_code_fences_with_prose():
    text = "I suggest less dropout; the model underfits.\n\n```json\n" + answer(DROPOUT) + "\n```\n\nLet me know!"
    with ScriptedServer([openai_reply(text)]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")
    assert [c.model_source for c in ideas.candidates] == [DROPOUT_SOURCE]


def test_broken_json_is_sent_back_with_the_reason_and_repaired():
    broken = '{"candidates": [{"description": "lower dropout", "edits": [{"search": "nn.Dropout(0.25)" "replace": '
    with ScriptedServer([openai_reply(broken), openai_reply(answer(DROPOUT))]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")
    assert [c.model_source for c in ideas.candidates] == [DROPOUT_SOURCE]
    assert ideas.rejected == [("answer", "the answer is not valid JSON (Expecting ',' delimiter: line 1 column 90); "
                                         "answer with one JSON object as described")]
    assert len(server.requests) == 2 and ideas.usage == {"input_tokens": 200, "output_tokens": 40}
    second = server.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == broken  # the same conversation goes on
    assert "not valid JSON (Expecting ',' delimiter: line 1 column 90)" in second[2]["content"]


def test_an_answer_that_edits_train_py_is_rejected_and_retried_boundedly():
    bad = answer({**DROPOUT, "path": "train.py"})
    with ScriptedServer([openai_reply(bad), openai_reply(bad)]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server, max_repairs=1), api_key="sk-test")
    assert ideas.candidates == []
    reason = "only model.py may change; this candidate names 'train.py'"
    assert ideas.rejected == [(DROPOUT["description"], reason)] * 2
    assert len(server.requests) == 2 and reason in user_messages(server, 1)[-1]


def test_an_answer_with_a_parent_path_is_rejected():
    with ScriptedServer([anthropic_reply(answer({**WIDER, "path": "../x.py"}))]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], anthropic_config(server, max_repairs=0), api_key="k-test")
    assert ideas.candidates == []
    assert ideas.rejected == [(WIDER["description"], "only model.py may change; this candidate names '../x.py'")]


def test_a_change_already_tried_is_rejected():
    with ScriptedServer([openai_reply(answer(DROPOUT))]) as server:
        ideas = propose_with_llm(make_review(DROPOUT_SOURCE), SETTINGS, ["4"], openai_config(server, max_repairs=0),
                                 api_key="sk-test")
    assert ideas.candidates == []
    assert ideas.rejected == [(DROPOUT["description"],
                               "this exact model.py was already tried in this campaign; propose a different change")]


def test_429_and_503_are_retried():
    script = [
        error_reply(429, "rate limited", {"Retry-After": "0"}),
        error_reply(503, "overloaded"),  # no Retry-After: exponential backoff from retry_base_delay_s
        openai_reply(answer(DROPOUT)),
    ]
    with ScriptedServer(script) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")
    assert [c.model_source for c in ideas.candidates] == [DROPOUT_SOURCE]
    assert len(server.requests) == 3


def test_retries_end_after_four_attempts():
    with ScriptedServer([error_reply(500, "boom")] * 5) as server:
        with pytest.raises(LLMUnavailable) as caught:
            propose_with_llm(make_review(), SETTINGS, ["4"], anthropic_config(server), api_key="k-test")
    assert len(server.requests) == 4
    assert str(caught.value) == f"the Anthropic endpoint at {server.url} answered 500 4 times in a row; try again later."


def test_401_is_one_sentence_without_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    script = [error_reply(401, f"Incorrect API key provided: {SENTINEL}")]  # OpenAI echoes (part of) the key
    with ScriptedServer(script) as server:
        with pytest.raises(LLMAuthError) as caught:
            propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server))
    message = str(caught.value)
    assert message == (f"the OpenAI-compatible endpoint at {server.url}/v1 rejected the API key (401); "
                       "check OPENAI_API_KEY.")
    assert SENTINEL not in "".join(traceback.format_exception(caught.value))
    assert len(server.requests) == 1  # never retried


def test_other_client_errors_quote_the_server():
    with ScriptedServer([error_reply(404, "The model `gpt-test` does not exist")]) as server:
        with pytest.raises(AutoraysearchError, match=r"refused the request \(404: The model `gpt-test` does not exist\)"):
            propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")


def test_connection_refused_is_one_sentence():
    with ScriptedServer([]) as server:
        url = server.url  # the port is free again once the server is closed
    config = LLMConfig(kind="openai", model="m", base_url=url + "/v1")
    with pytest.raises(LLMUnavailable) as caught:
        propose_with_llm(make_review(), SETTINGS, ["4"], config, api_key="sk-test")
    assert str(caught.value) == (f"cannot connect to the OpenAI-compatible endpoint at {url}/v1 (connection refused); "
                                 "check that it is running and the base URL is right.")


def test_missing_key_and_bad_settings_are_one_sentence():
    with pytest.raises(AutoraysearchError) as caught:
        propose_with_llm(make_review(), SETTINGS, ["4"], LLMConfig(kind="openai", model="gpt-4.1"))
    assert str(caught.value) == "OPENAI_API_KEY is not set; export it or pass --api-key-block NAME."
    with pytest.raises(AutoraysearchError, match="MY_KEY is not set"):
        propose_with_llm(make_review(), SETTINGS, ["4"], LLMConfig(kind="anthropic", model="c", api_key_env="MY_KEY"))
    with pytest.raises(AutoraysearchError, match="needs a model name, such as gpt-4.1"):
        propose_with_llm(make_review(), SETTINGS, ["4"], LLMConfig(kind="openai"), api_key="k")
    with pytest.raises(AutoraysearchError, match="kind 'gemini' is unknown"):
        propose_with_llm(make_review(), SETTINGS, ["4"], LLMConfig(kind="gemini"), api_key="k")


def test_resolve_api_key_from_the_environment(monkeypatch):
    config = LLMConfig(kind="anthropic", model="c")
    assert resolve_api_key(config, None) is None
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k-env")
    assert resolve_api_key(config, None) == "k-env"
    assert resolve_api_key(LLMConfig(kind="command", command="x"), None) is None


@pytest.mark.slow  # starts the session's Prefect API (about 25 s) when no other test has
def test_resolve_api_key_from_a_prefect_secret_block(prefect_api):
    from prefect.blocks.system import Secret

    Secret(value=SENTINEL).save("autoraysearch-test-llm-key", overwrite=True)
    config = LLMConfig(kind="openai", model="m")
    assert resolve_api_key(config, "autoraysearch-test-llm-key") == SENTINEL
    with pytest.raises(AutoraysearchError, match=r"^the Prefect Secret block 'no-such-block' cannot be loaded \(ValueError"):
        resolve_api_key(config, "no-such-block")


def test_truncated_answer_asks_for_edits():
    cut = answer(WIDER)[:300]
    with ScriptedServer([anthropic_reply(cut, stop="max_tokens")]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], anthropic_config(server, max_repairs=0), api_key="k")
    assert ideas.rejected == [("answer", "the answer was cut off at the token limit; propose the change as short "
                                         'search/replace "edits" instead of the whole file')]


# ---- the command ideator ----

FAKE_AGENT = textwrap.dedent(
    """
    import json, os, sys
    prompt = sys.stdin.read()
    leaked = [name for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_LLM_KEY") if name in os.environ]
    if leaked:
        sys.exit("secrets in my environment: " + ", ".join(leaked))
    if os.listdir("."):
        sys.exit("my working directory is not empty")
    if "--- your previous answer ---" not in prompt:
        print("I am thinking about dropout... no JSON here")
    else:
        print(json.dumps({"candidates": [CANDIDATE]}))
    """
)


def test_command_ideator_reads_stdin_and_gets_no_secrets(tmp_path, monkeypatch):
    script = tmp_path / "agent.py"
    script.write_text(FAKE_AGENT.replace("CANDIDATE", repr(DROPOUT)))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_LLM_KEY"):
        monkeypatch.setenv(name, SENTINEL)
    config = LLMConfig(kind="command", command=f"{sys.executable} {script}", api_key_env="MY_LLM_KEY")
    ideas = propose_with_llm(make_review(), SETTINGS, ["4"], config)
    assert [c.model_source for c in ideas.candidates] == [DROPOUT_SOURCE]
    assert ideas.rejected[0][0] == "answer" and "holds no JSON object" in ideas.rejected[0][1]
    assert ideas.usage == {"input_tokens": 0, "output_tokens": 0}


def test_command_ideator_failure_is_one_rejection_not_an_error(tmp_path):
    script = tmp_path / "agent.py"
    script.write_text("import sys\nsys.stderr.write('starting\\nError: not logged in\\n')\nsys.exit(3)\n")
    config = LLMConfig(kind="command", command=f"{sys.executable} {script}")
    ideas = propose_with_llm(make_review(), SETTINGS, ["4"], config)
    assert ideas.candidates == []
    assert ideas.rejected == [
        ("no answer", f"the ideator command `{config.command}` failed with exit code 3 (Error: not logged in).")
    ]
    missing = LLMConfig(kind="command", command="no-such-agent-xyz -p")
    [(_, reason)] = propose_with_llm(make_review(), SETTINGS, ["4"], missing).rejected
    assert "cannot be started" in reason and "install it or fix the command" in reason


def test_command_ideator_timeout_kills_its_whole_process_group(tmp_path):
    child_pid = tmp_path / "child.pid"
    script = tmp_path / "agent.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen(['sleep', '60'])\nopen({str(child_pid)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    config = LLMConfig(kind="command", command=f"{sys.executable} {script}", timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"did not answer within 1.5 s"):
        propose_with_llm(make_review(), SETTINGS, ["4"], config)
    assert time.monotonic() - started < 10
    pid = int(child_pid.read_text())
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] in "ZX"  # gone, or a zombie awaiting init


def test_retry_after_and_backoff():
    from autoraysearch.ideators.llm.clients import RetryPolicy, retry_after_seconds

    assert retry_after_seconds("0") == 0 and retry_after_seconds("2.5") == 2.5 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past
    assert retry_after_seconds("soon") is None
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=3)
    assert [policy.delay(n, None) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 3]
    assert policy.delay(1, 120) == 3  # a server's wish is capped


# ---- pre-flight inside the loop ----


def test_shape_error_is_caught_by_preflight_quickly():
    with ScriptedServer([openai_reply(answer(SHAPE_ERROR))]) as server:
        started = time.monotonic()
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server, max_repairs=0), api_key="sk-test")
        seconds = time.monotonic() - started
    print(f"\nLLM call + pre-flight of a candidate with a shape error: {seconds:.2f} s")
    assert ideas.candidates == []
    assert ideas.rejected == [(SHAPE_ERROR["description"],
                               "pre-flight: RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x512 and 256x64) "
                               "(in the forward pass on a batch of 2)")]
    assert seconds < 15


def test_parallel_preflight_failure_goes_back_to_the_llm():
    first = answer(DROPOUT, SHAPE_ERROR)
    with ScriptedServer([openai_reply(first), openai_reply(answer(WIDER))]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["5a", "5b"], openai_config(server), api_key="sk-test")
    assert [(c.label, c.kind, c.model_source) for c in ideas.candidates] == [
        ("5a", "regularisation", DROPOUT_SOURCE), ("5b", "width", WIDER_SOURCE)]
    assert [r[1].split(":")[0] for r in ideas.rejected] == ["pre-flight"]
    prompt, repair = user_messages(server, 1)
    assert "exactly 2 changes" in prompt and "must differ in kind" in prompt
    assert "mat1 and mat2 shapes cannot be multiplied" in repair
    assert "Propose 1 new change" in repair and DROPOUT["description"] in repair  # accepted one listed


def test_a_failed_repair_turn_keeps_the_candidates_in_hand():
    """The endpoint goes down after a first answer with one usable candidate: that one goes on, with the reason."""
    down = [error_reply(503, "overloaded", {"Retry-After": "0"})] * 4  # every attempt of the repair turn
    with ScriptedServer([openai_reply(answer(DROPOUT, SHAPE_ERROR), 300, 40), *down]) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["5a", "5b"], openai_config(server), api_key="sk-test")
    assert [(c.label, c.model_source) for c in ideas.candidates] == [("5a", DROPOUT_SOURCE)]
    assert len(server.requests) == 5 and "mat1 and mat2 shapes" in user_messages(server, 1)[-1]
    assert [r[1].split(":")[0] for r in ideas.rejected] == ["pre-flight", "the repair turn failed"]
    assert ideas.rejected[-1] == ("answer", f"the repair turn failed: the OpenAI-compatible endpoint at {server.url}/v1 "
                                            "answered 503 4 times in a row; try again later.")
    assert ideas.usage == {"input_tokens": 300, "output_tokens": 40}


def test_a_failed_repair_turn_with_nothing_in_hand_is_an_outage():
    """No candidate to go on with: the outage is raised, for the ideate step to wait out, not an empty iteration."""
    down = [error_reply(503, "overloaded", {"Retry-After": "0"})] * 4
    with ScriptedServer([openai_reply("no JSON here"), *down]) as server:
        with pytest.raises(LLMUnavailable, match="answered 503 4 times in a row"):
            propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server), api_key="sk-test")
    assert len(server.requests) == 5


# ---- secrets ----


def test_sentinel_key_never_leaks(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    script = [openai_reply("not json at all"), openai_reply(answer(DROPOUT)), error_reply(401, f"bad key {SENTINEL}")]
    with ScriptedServer(script) as server:
        ideas = propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server))
        with pytest.raises(AutoraysearchError) as caught:
            propose_with_llm(make_review(), SETTINGS, ["4"], openai_config(server))
    assert len(ideas.candidates) == 1  # the whole path ran: answer, rejection, repair, pre-flight
    assert server.requests[0].headers["authorization"] == f"Bearer {SENTINEL}"  # the key was used...
    sent = [json.dumps(r.body) for r in server.requests]
    places = {
        "logs": caplog.text,
        "log records": " ".join(repr(r.__dict__) for r in caplog.records),
        "ideas": repr(ideas),
        "prompts": " ".join(sent),
        "exception": "".join(traceback.format_exception(caught.value)),
    }
    for where, text in places.items():
        assert SENTINEL not in text, where  # ...and appears nowhere else
    assert caplog.records, "nothing was logged, so the check above proves little"


@pytest.mark.parametrize("dataset, phrase", [
    ("digits", "scikit-learn's digits"),
    ("fashionmnist", "Fashion-MNIST (28x28 grey-scale images of clothing, 10 classes)"),
    ("cifar100", "CIFAR-100 (32x32 colour images, 100 classes)"),
    ("npz:data/arrays.npz", "arrays X_train, y_train, X_val, y_val from data/arrays.npz"),
    ("custom", "the user's own data module data.py (read-only)"),
])
def test_the_prompt_names_the_dataset_train_py_uses(dataset, phrase):
    settings = SETTINGS.model_copy(update={"dataset": dataset, "data_module": "data.py" if dataset == "custom" else None})
    assert f"dataset: {phrase}" in build_prompt(make_review(), settings, 1)


def test_an_endpoint_that_trickles_its_answer_is_cut_off_at_the_total_timeout():
    import socket
    import threading
    import time as clock

    from autoraysearch.ideators.llm.clients import LLMUnavailable, OpenAIChat, RetryPolicy

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        # Headers, then one byte of body every 0.2 s: no single read ever waits long, so only a total deadline ends it.
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(150):  # 30 s at most: the server stops by itself
                if stop.is_set():
                    return
                try:
                    connection.sendall(b" ")
                except OSError:
                    return
                clock.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    chat = OpenAIChat(f"http://127.0.0.1:{server.getsockname()[1]}/v1", "m", None, "OPENAI_API_KEY", 1.5, RetryPolicy())
    started = clock.monotonic()
    try:
        with pytest.raises(LLMUnavailable, match="did not answer within 1.5 s"):
            chat.complete([{"role": "user", "content": "hi"}])
    finally:
        stop.set()
        server.close()
    assert clock.monotonic() - started < 5
