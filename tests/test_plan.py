"""The plan wizard: its questions and checks, at a terminal, and as a Prefect flow answered through the API."""

from __future__ import annotations

import io
import logging
import threading
import time
import tomllib
from pathlib import Path

import pytest

from autoraysearch.errors import AutoraysearchError
from autoraysearch.setup.wizard import (
    ask_all,
    check_budget,
    check_gpus,
    check_stop,
    launch_steps,
    loop_options,
    prepare_model,
    run_command,
    setup_options,
    setup_steps,
)
from autoraysearch.campaign.results_log import read_results_log
from helpers import EXAMPLE_MODEL, git, make_repo

NET_MODEL = EXAMPLE_MODEL.read_text().replace("class Model(nn.Module)", "class Net(nn.Module)")


class OutOfAnswers(Exception):
    """The script had no answer left for this question."""


class Script:
    """Answers questions in order, remembering what was asked and why it was asked again."""

    def __init__(self, answers: list[str]):
        self.answers = list(answers)
        self.asked: list[tuple[str, str | None]] = []

    def __call__(self, question, reason):
        self.asked.append((question.key, reason))
        if not self.answers:
            raise OutOfAnswers(question.key)
        return self.answers.pop(0)


def test_a_wrong_answer_is_asked_again_with_the_reason(tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": NET_MODEL, "notes.py": "x = 1\n"})
    (exp / "draft.py").write_text("class Model:\n    pass\n")  # never committed
    script = Script(["", "missing.py", "notes.py", "draft.py", "model.py", "Model", "", "", "", "ten", "2", ""])
    answers = ask_all(setup_steps(exp), script)
    assert [key for key, _ in script.asked] == [
        "goal", "model_py", "model_py", "model_py", "model_py", "alias", "alias", "train_py", "dataset",
        "budget", "budget", "gpus_per_trial",
    ]
    reasons = [reason for _, reason in script.asked if reason]
    assert f"{exp / 'missing.py'} does not exist; give the path of your model file." in reasons
    assert "notes.py defines no class; give the file that holds your nn.Module." in reasons
    assert any(r.startswith("draft.py has uncommitted changes; commit it") for r in reasons)
    assert any("autoraysearch trains the class named `Model` and model.py has none; answer one of Net" in r for r in reasons)
    assert any(r.startswith("'ten' is not a training budget") for r in reasons)
    assert answers == {"goal": "better validation accuracy", "model_py": "model.py", "alias": "Net", "train_py": None,
                       "dataset": "digits", "budget": {"epochs": 2}, "gpus_per_trial": None}

    prepare_model(exp, answers)
    assert (exp / "model.py").read_text().endswith("\nModel = Net\n")
    assert git(exp, "log", "-1", "--format=%s") == "autoraysearch plan: Model = Net in model.py"
    assert git(exp, "status", "--porcelain") == "?? draft.py"  # only model.py was committed
    assert setup_options(answers) == {"model_py": "model.py", "goal": "better validation accuracy",
                                      "gpus_per_trial": None, "dataset": "digits", "epochs": 2}


def test_own_train_py_asks_for_its_metric_instead_of_a_dataset(tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text(),
                                       "fit.py": "from model import Model\nprint('val_loss=1')\n"})
    script = Script(["faster convergence", "", "fit.py", "val_loss", "", "1"])
    answers = ask_all(setup_steps(exp), script)
    assert [key for key, _ in script.asked] == ["goal", "model_py", "train_py", "metric", "direction", "gpus_per_trial"]
    assert (answers["metric"], answers["direction"]) == ("val_loss", "lower")  # a loss defaults to lower
    assert setup_options(answers)["train_py"] == "fit.py"


def test_image_sets_ask_for_their_folder_and_custom_data_for_its_module(tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    script = Script(["", "", "", "imagenet", "mnist", "", "no", "yes", "", ""])
    answers = ask_all(setup_steps(exp), script)
    assert [key for key, _ in script.asked][3:] == ["dataset", "dataset", "data_dir", "download", "download", "budget",
                                                    "gpus_per_trial"]
    reasons = [reason for _, reason in script.asked if reason]
    assert reasons[0].startswith("dataset 'imagenet' is unknown: use 'digits', 'mnist'")
    assert reasons[1].startswith("train.py cannot train without the MNIST files; put train-images-idx3-ubyte.gz")
    options = setup_options(answers)
    assert (options["dataset"], options["data_dir"], options["download"]) == ("mnist", str(exp / "data"), True)

    script = Script(["", "", "", "custom", "", "loader.py"])
    with pytest.raises(OutOfAnswers, match="^data_module$"):  # still asking for the module when the script ends
        ask_all(setup_steps(exp), script)
    assert [key for key, _ in script.asked][-3:] == ["data_module"] * 3
    assert script.asked[-2][1].startswith(f"data module {exp / 'data.py'} is not an existing .py file")
    assert script.asked[-1][1].startswith(f"data module {exp / 'loader.py'} is not an existing .py file")


def test_answer_checks():
    assert check_budget("5") == {"epochs": 5} and check_budget("300s") == {"time_budget": 300.0}
    assert check_budget("10m") == {"time_budget": 600.0}
    assert check_stop("") == {} and check_stop("20") == {"max_iterations": 20} and check_stop("8h") == {"max_hours": 8.0}
    assert check_stop("07:00") == {"deadline": "07:00"}
    assert check_gpus("0.5") == 0.5 and check_gpus("2") == 2.0
    for check, text in [(check_budget, "0"), (check_budget, "1.5"), (check_stop, "25:00"), (check_stop, "0"),
                        (check_gpus, "1.5"), (check_gpus, "-1"), (check_gpus, "many")]:
        with pytest.raises(AutoraysearchError):
            check(text)
    answers = ask_all(launch_steps(), Script(["4", "07:00", "", "no"]))
    assert run_command(Path("/exp"), answers) == "autoraysearch run /exp --parallel 4 --deadline 07:00"
    answers = ask_all(launch_steps(), Script(["1", "", "gemini", "command", "", "my-agent --json", "no"]))
    assert run_command(Path("/exp"), answers) == "autoraysearch run /exp --ideator command --command 'my-agent --json'"
    answers = ask_all(launch_steps(), Script(["1", "20", "openai", "gpt-test", "http://localhost:11434/v1", "no"]))
    assert loop_options(answers) == {"parallel": 1, "max_iterations": 20, "ideator": "openai", "llm_model": "gpt-test",
                                     "llm_base_url": "http://localhost:11434/v1"}


@pytest.mark.slow
def test_plan_at_a_terminal_sets_up_and_launches(services, tmp_path: Path, monkeypatch, capfd):
    """capfd, not capsys: Prefect's console log handler may be created here and must not keep a stream that closes."""
    from autoraysearch.cli import main

    exp = make_repo(tmp_path / "exp", {"model.py": NET_MODEL})
    typed = ["nope.py", "", "", "", "", "1", "", "", "1", "", ""]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(typed) + "\n"))
    assert main(["plan", str(exp), "--goal", "digits, but better"]) == 0
    out = capfd.readouterr().out
    assert "What do you want from the model" not in out  # --goal answered it
    assert f"not accepted: {exp / 'nope.py'} does not exist; give the path of your model file." in out
    assert "model.py has no `Model`. Which class is your model?" in out and "[Net]" in out
    assert "baseline val_acc=" in out and "stopped: reached 1 iteration;" in out

    settings = tomllib.loads((exp / "autoraysearch.toml").read_text())
    assert settings["goal"] == "digits, but better" and settings["epochs"] == 1
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert [r.iteration for r in rows] == ["0", "1"]
    assert git(exp, "branch", "--show-current").startswith("autoraysearch/")
    assert "Model = Net" in git(exp, "show", "main:model.py")


def answer_plan_run(answers: list[str], worker: threading.Thread, timeout: float = 300.0) -> list[dict]:
    """Answer each pause of the running plan flow through the resume API; return what each pause showed.

    Each pause is read as the UI reads it: the markdown above the form, and the form's JSON schema.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.input.actions import read_flow_run_input

    asked, last_pause = [], None
    with get_client(sync_client=True) as client:
        for answer in answers:
            deadline = time.monotonic() + timeout
            while True:
                assert worker.is_alive(), f"the plan flow ended early, after {asked}"
                runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["autoraysearch-plan"])))
                paused = [r for r in runs if r.state and r.state.is_paused()
                          and r.state.state_details.pause_key != last_pause]
                if paused:
                    break
                assert time.monotonic() < deadline, f"no question after {asked}"
                time.sleep(0.5)
            [run] = paused
            last_pause = run.state.state_details.pause_key
            keyset = run.state.state_details.run_input_keyset
            asked.append({"description": read_flow_run_input(keyset["description"], flow_run_id=run.id),
                          "schema": read_flow_run_input(keyset["schema"], flow_run_id=run.id), "run": run.id})
            resume(client, run.id, answer)
    return asked


def run_log_lines(flow_run_id, wanted: str, timeout: float = 15.0) -> list[str]:
    """The flow run's log messages, read again until one holds `wanted`: the server stores logs in batches."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            messages = [log.message for log in logs]
            if any(wanted in m for m in messages) or time.monotonic() > deadline:
                return messages
            time.sleep(0.5)


# The user's own training script: no torch training, so the flow's questions are what this test times.
OWN_TRAIN_PY = """
import os


def load_model():
    from model import Model

COUNTER = {counter!r}
calls = int(open(COUNTER).read()) if os.path.exists(COUNTER) else 0
open(COUNTER, "w").write(str(calls + 1))
print(f"score={{0.5 + 0.1 * calls:.1f}}")
"""


def resume(client, flow_run_id, answer: str, tries: int = 5) -> None:
    """Resume with the answer; the test server's sqlite may be briefly locked on a loaded machine."""
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.flow_runs import resume_flow_run

    for attempt in range(tries):
        try:
            return resume_flow_run(flow_run_id, run_input={"answer": answer})
        except PrefectHTTPStatusError:
            if attempt == tries - 1 or not client.read_flow_run(flow_run_id).state.is_paused():
                raise
            time.sleep(1)


@pytest.mark.slow
def test_plan_flow_asks_through_paused_runs_and_launches(services, example_repo: Path, trial_dir: Path, monkeypatch,
                                                         request):
    from autoraysearch.flows.plan import autoraysearch_plan

    monkeypatch.setattr("autoraysearch.flows.plan.ANSWER_POLL_S", 1)  # answers come at once here
    run_logger = logging.getLogger("prefect.flow_runs")  # the suite logs warnings only; answers are info
    previous = run_logger.level
    run_logger.setLevel(logging.INFO)  # setLevel, not the attribute: it also clears the loggers' cached levels
    request.addfinalizer(lambda: run_logger.setLevel(previous))

    (example_repo / "train.py").write_text(OWN_TRAIN_PY.format(counter=str(trial_dir / "calls")))
    git(example_repo, "add", "train.py")
    git(example_repo, "commit", "-q", "-m", "my own train.py")
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = autoraysearch_plan(experiment_dir=str(example_repo), answer_timeout=600)
        except BaseException as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    answers = ["a higher score", "nope.py", "model.py", "train.py", "score", "", "0", "1", "1", "mutate", "yes"]
    try:
        asked = answer_plan_run(answers, worker)
    finally:
        worker.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")

    shown = [pause["description"] for pause in asked]
    assert shown[0].startswith("### What do you want from the model")
    assert shown[1].startswith("### Which file holds your model")
    assert shown[2].startswith(f"**Not accepted:** {example_repo / 'nope.py'} does not exist; give the path")
    assert "### Which file holds your model" in shown[2]
    assert shown[5].startswith("### Is a higher or a lower score better") and shown[5].endswith("Default: `higher`")
    assert shown[-1].startswith("### Start the campaign now")

    # The UI's form: one box named after the question, holding the default; "(Optional)" (the UI's
    # word for a field not required) only where an empty answer means something.
    boxes = [pause["schema"]["properties"]["answer"] for pause in asked]
    assert [box["title"] for box in boxes][:6] == ["Your goal", "Model file", "Model file", "Your own train.py",
                                                   "Metric name", "Better is (higher/lower)"]
    assert boxes[0]["default"] == "better validation accuracy" and boxes[5]["default"] == "higher"
    assert asked[0]["schema"]["required"] == ["answer"] and asked[-1]["schema"]["required"] == ["answer"]
    assert "required" not in asked[3]["schema"]  # train.py: empty asks for a generated one
    assert boxes[-1]["title"] == "Start the campaign now (yes/no)" and boxes[-1]["default"] == "yes"

    # Every accepted answer is in the run's log, a refused one is not.
    messages = run_log_lines(asked[0]["run"], "answer launch:")
    assert "answer goal: Your goal = 'a higher score'" in messages
    assert "answer direction: Better is (higher/lower) = 'higher'" in messages  # the default, taken by an empty answer
    assert "answer launch: Start the campaign now (yes/no) = 'yes'" in messages
    assert [m for m in messages if m.startswith("answer model_py:")] == ["answer model_py: Model file = 'model.py'"]

    summary = outcome["summary"]
    assert summary.launched and summary.campaign.iterations == 1
    assert summary.run_command == f"autoraysearch run {example_repo} --max-iterations 1"
    rows = read_results_log(example_repo / "autoraysearch-results.tsv", True).rows
    # Each call of the script scores 0.1 more, whatever seed it is given: the candidate is always better.
    assert [(r.iteration, r.status) for r in rows][:2] == [("0", "baseline"), ("1", "keep")]
    # The campaign's end re-checks its path on fresh seeds; this script's scores follow its calls, not the seeds.
    assert all(r.iteration.endswith(".path") for r in rows[2:])
    assert summary.baseline == rows[0].metric and rows[1].metric > rows[0].metric
    settings = tomllib.loads((example_repo / "autoraysearch.toml").read_text())
    assert (settings["goal"], settings["metric"], settings["direction"]) == ("a higher score", "score", "higher")
    assert settings["generated"] is False
