"""Bad input is refused before anything starts, in one sentence, with no traceback, and loses nothing."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from autoraysearch.cli import _with_services as real_with_services
from autoraysearch.cli import main
from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import Ideas
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, append_result, format_log, read_results_log
from autoraysearch.campaign.settings import CampaignSettings, dump_settings
from autoraysearch.tasks.log import dropped_rows
from helpers import EXAMPLE_MODEL, git, make_repo

EXAMPLE = EXAMPLE_MODEL.read_text()


def ready_experiment(path: Path, settings: str | None = None) -> Path:
    """A folder that looks set up: committed model.py, train.py and settings, and a baseline row."""
    make_repo(path, {
        "model.py": EXAMPLE,
        "train.py": "from model import Model\nprint('val_acc=0.5')\n",
        "autoraysearch.toml": settings if settings is not None else dump_settings(CampaignSettings(generated=False)),
    })
    baseline = ResultRow("0", "baseline", 0.5, 0.0, "baseline", "initial state")
    (path / "autoraysearch-results.tsv").write_text(format_log(ResultsLog(True, (baseline,))))
    return path


@pytest.fixture
def no_services(monkeypatch):
    """Starting Ray or Prefect fails the test: every refusal here must come before them."""
    def started(*args, **kwargs):
        raise AssertionError("Ray and Prefect were started before the input was checked")

    monkeypatch.setattr("autoraysearch.cli._with_services", started)
    monkeypatch.setattr("autoraysearch.prefect_api.local_prefect_api", started)
    monkeypatch.setattr("autoraysearch.cluster.ray_session", started)


def refusal(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err  # one sentence
    return err


# 1, 5. Every option of run, setup and demo is checked before services start, naming the flag and its range.

RUN_REFUSALS = {
    ("--parallel", "0"): "--parallel 0 is not valid: it must be between 1 and 26.",
    ("--parallel", "1000"): "--parallel 1000 is not valid: it must be between 1 and 26.",
    ("--max-iterations", "-3"): "--max-iterations -3 is not valid: it must be 1 or more.",
    ("--patience", "0"): "--patience 0 is not valid: it must be 1 or more iterations.",
    ("--max-hours", "0"): "--max-hours 0 is not valid: it must be a positive, finite number of hours.",
    ("--max-hours", "inf"): "--max-hours inf is not valid: it must be a positive, finite number of hours.",
    ("--target", "nan"): "--target nan is not valid: it must be a finite number.",
    ("--trial-timeout", "-5"): "--trial-timeout -5 is not valid: it must be greater than 0.",
    ("--cpus-per-trial", "0"): "--cpus-per-trial 0 is not valid: it must be greater than 0.",
    ("--gpus-per-trial", "-1"): "--gpus-per-trial -1 is not valid: it must be greater than or equal to 0.",
    ("--gpus-per-trial", "1.5"): "--gpus-per-trial 1.5 cannot be split into whole GPUs for DDP: use a fraction up to 1 or a whole number.",
    ("--deadline", "25:00"): "deadline '25:00' is not a time of day",
}


@pytest.mark.parametrize("flag,value", list(RUN_REFUSALS))
def test_run_refuses_each_out_of_range_option_before_services(flag, value, tmp_path, capsys, no_services):
    exp = ready_experiment(tmp_path / "exp")
    assert RUN_REFUSALS[flag, value] in refusal(capsys, "run", str(exp), flag, value)
    assert git(exp, "branch", "--list", "autoraysearch/*") == ""  # no campaign branch, no commit


def test_run_refuses_a_tag_git_cannot_name_a_branch(tmp_path, capsys, no_services):
    exp = ready_experiment(tmp_path / "exp")
    message = refusal(capsys, "run", str(exp), "--tag", "bad..tag~")
    assert "--tag 'bad..tag~' does not make a valid git branch name" in message
    assert "commit or stash" not in message
    assert git(exp, "branch", "--list", "autoraysearch/*") == ""


SETUP_REFUSALS = {
    ("--cpus-per-trial", "-1"): "--cpus-per-trial -1 is not valid: it must be greater than 0.",
    ("--gpus-per-trial", "-1"): "--gpus-per-trial -1 is not valid: it must be greater than or equal to 0.",
    ("--trial-timeout", "-5"): "--trial-timeout -5 is not valid: it must be greater than 0.",
    ("--epochs", "0"): "--epochs 0 is not valid: it must be greater than or equal to 1.",
    ("--time-budget", "0"): "--time-budget 0 is not valid: it must be greater than 0.",
    ("--batch-size", "0"): "--batch-size 0 is not valid: it must be 1 or more.",
    ("--learning-rate", "-0.1"): "--learning-rate -0.1 is not valid: it must be a positive, finite number.",
    ("--seed", "-1"): "--seed -1 is not valid: it must be greater than or equal to 0.",
}


@pytest.mark.parametrize("flag,value", list(SETUP_REFUSALS))
def test_setup_refuses_each_out_of_range_option_before_services(flag, value, example_repo, capsys, no_services):
    assert SETUP_REFUSALS[flag, value] in refusal(capsys, "setup", str(example_repo / "model.py"), flag, value)
    assert not (example_repo / "autoraysearch.toml").exists()


@pytest.mark.parametrize("flag,value", [("--iterations", "0"), ("--epochs", "-2")])
def test_demo_refuses_out_of_range_options_and_creates_nothing(flag, value, tmp_path, capsys, no_services):
    target = tmp_path / "demo"
    assert f"{flag} {value} is not valid" in refusal(capsys, "demo", str(target), flag, value)
    assert not target.exists()


# 2, 3. The settings' own rules hold for autoraysearch.toml, the CLI and deployment parameters alike.

def test_settings_refuse_negative_resources_and_timeouts():
    for bad in ({"cpus_per_trial": -1}, {"cpus_per_trial": 0}, {"gpus_per_trial": -1}, {"gpus_per_trial": 2.5},
                {"trial_timeout": -5}, {"epochs": 0}, {"llm_timeout": float("inf")}):
        with pytest.raises(ValidationError):
            CampaignSettings(**bad)
    assert CampaignSettings(gpus_per_trial=0.25).gpus_per_trial == 0.25
    assert CampaignSettings(gpus_per_trial=4).gpus_per_trial == 4


def test_deployment_parameter_overrides_are_checked_like_the_toml():
    from autoraysearch.campaign.opening import with_overrides

    with pytest.raises(AutoraysearchError, match="gpus_per_trial"):
        with_overrides(CampaignSettings(), {"gpus_per_trial": -1})


@pytest.mark.parametrize("line,sentence", [
    ("cpus_per_trial = -1", "autoraysearch.toml: cpus_per_trial = -1 is not valid (must be greater than 0); "
                            "fix it or run setup again."),
    ("trial_timeout = -5", "autoraysearch.toml: trial_timeout = -5 is not valid (must be greater than 0); "
                           "fix it or run setup again."),
    ("cpu_per_trial = 2", "autoraysearch.toml: cpu_per_trial is not a setting autoraysearch knows "
                          "(did you mean cpus_per_trial"),
])
def test_a_bad_toml_value_or_key_is_named(line, sentence, tmp_path, capsys, no_services):
    exp = ready_experiment(tmp_path / "exp", settings=f'generated = false\n{line}\n')
    message = refusal(capsys, "run", str(exp))
    assert sentence in message and "validation error" not in message
    assert (exp / "autoraysearch.toml").read_text().endswith(f"{line}\n")  # left for the user to fix


# 4. A configured Prefect API that nobody answers at.

def test_a_dead_prefect_api_url_is_one_sentence(tmp_path):
    exp = ready_experiment(tmp_path / "exp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nobody listens there
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert f"no Prefect server answers at PREFECT_API_URL=http://127.0.0.1:{port}/api" in err
    assert "unset PREFECT_API_URL" in err


# 6. The user's model gets the candidates' pre-flight before the baseline trains.

def test_setup_names_a_wrong_output_shape_before_training(tmp_path, capsys, no_services):
    five_outputs = EXAMPLE.replace("def __init__(self, num_classes: int = 10):", "def __init__(self):").replace(
        "nn.Linear(64, num_classes)", "nn.Linear(64, 5)")
    exp = make_repo(tmp_path / "exp", {"model.py": five_outputs})
    message = refusal(capsys, "setup", str(exp / "model.py"), "--epochs", "1")
    assert "model.py fails the pre-flight check on digits inputs: output shape is (2, 5)" in message
    assert "expected (2, 10)" in message
    assert not (exp / "train.py").exists() and not (exp / "autoraysearch.toml").exists()


# 7. Prefect's traceback of our own refusal stays out of the terminal; other errors keep theirs.

def test_prefect_logs_no_traceback_for_a_refusal_inside_a_flow(prefect_api):
    from prefect import flow

    from autoraysearch.prefect_api import hide_refusal_tracebacks

    @flow
    def refuses(error: str):
        raise AutoraysearchError("you asked for something impossible.") if error == "ours" else ValueError("a bug")

    class Kept(logging.Handler):  # stands for the API's handler: the Prefect UI keeps every traceback
        def __init__(self):
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record):
            self.lines.append(logging.Formatter().format(record))

    terminal = io.StringIO()
    root = logging.getLogger()
    root.addHandler(handler := logging.StreamHandler(terminal))
    root.addHandler(kept := Kept())
    try:
        with hide_refusal_tracebacks():
            with pytest.raises(AutoraysearchError):
                refuses("ours")
            assert "Traceback" not in terminal.getvalue(), terminal.getvalue()
            with pytest.raises(ValueError):
                refuses("bug")
        # A bug is one line at the terminal (the CLI adds its sentence and writes the traceback to a file) ...
        assert "ValueError('a bug')" in terminal.getvalue() and "Traceback" not in terminal.getvalue()
        # ... and keeps its traceback where the run's logs are kept.
        assert any("Traceback" in line and "a bug" in line for line in kept.lines)
    finally:
        root.removeHandler(handler)
        root.removeHandler(kept)


# 8. A failing ideator command is a logged row, and the loop goes on.

@pytest.mark.slow
def test_a_failing_ideator_command_is_logged_and_the_loop_goes_on(services, tmp_path, capsys):
    exp = ready_experiment(tmp_path / "exp")
    code = main(["run", str(exp), "--ideator", "command", "--command", "sh -c 'echo no credits >&2; exit 3'",
                 "--max-iterations", "2"])
    assert code == 0, capsys.readouterr().err
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert [(r.iteration, r.status) for r in rows] == [("0", "baseline"), ("1.1", "rejected"), ("2.1", "rejected")]
    assert "exit code 3 (no credits)" in rows[1].description


# 9. A model.py deleted from the working tree but still in git.

def test_run_with_model_py_deleted_but_committed_says_git_restore(tmp_path, capsys, no_services):
    exp = ready_experiment(tmp_path / "exp")
    (exp / "model.py").unlink()
    message = refusal(capsys, "run", str(exp))
    assert "`git restore model.py`" in message and "autoraysearch setup" not in message


# 10. Escape sequences and control characters from an LLM never reach the log or the terminal.

def test_escape_sequences_in_a_description_are_stripped(tmp_path):
    from autoraysearch.ideators.llm.answers import review_answer

    nasty = "\x1b[31mwiden\x1b[0m the layer\x07 \x1b]0;pwned\x07now\u202e\x00"
    answer = json.dumps({"candidates": [{"description": nasty, "edits": [
        {"search": "nn.Dropout(0.25)", "replace": "nn.Dropout(0.1)"}]}]})
    [accepted] = review_answer(answer, EXAMPLE, []).accepted
    assert accepted.description == "widen the layer now"
    path = tmp_path / "results.tsv"
    append_result(path, ResultRow("1", "-", None, None, "rejected", nasty), True)
    text = path.read_text()
    assert "\x1b" not in text and "\x07" not in text and "\x00" not in text and "\u202e" not in text
    assert "widen the layer now" in text


# 11. A hand-edited row is kept exactly as written, and ignored for decisions.

def test_a_hand_edited_row_is_kept_verbatim_and_ignored_for_decisions(tmp_path):
    path = tmp_path / "results.tsv"
    edited = "2\tabc1234\t0.99 (rerun)\t+0.4?\tkeep\tmy note on this one"
    path.write_text(
        "# metric_direction: higher_is_better\niteration\tcommit\tmetric\tdelta\tstatus\tdescription\n"
        "0\tbaseline\t0.5\t0.0\tbaseline\tinitial state\n"
        f"{edited}\n"
    )
    log = read_results_log(path, True)
    assert log.best().iteration == "0"  # the unreadable keep is not the best
    append_result(path, ResultRow("3", "-", 0.4, -0.1, "discard", "another try"), True)
    lines = path.read_text().splitlines()
    assert lines[3] == edited
    assert lines[4].startswith("3\t-\t0.4\t-0.1\tdiscard\tanother try")


# 12. Many rejections in one slot: every distinct reason is on the row.

def test_a_rejected_row_carries_every_distinct_reason():
    rejected = [("answer", "holds no JSON object"), ("add a layer", "it changes train.py"),
                ("answer", "holds no JSON object"), ("answer", "holds no JSON object"), ("answer", "too long")]
    [row] = dropped_rows(Ideas(candidates=[], rejected=rejected), 7, 1)
    assert row.iteration == "7.1" and row.status == "rejected"
    assert row.description == (
        "5 answers rejected: holds no JSON object (x3); add a layer: it changes train.py; too long"
    )
    long = [("answer", f"reason {n} " + "x" * 150) for n in range(20)]
    [row] = dropped_rows(Ideas(candidates=[], rejected=long), 7, 1)
    assert len(row.description) <= 600 and row.description.startswith("20 answers rejected: reason 0")


# 13. A temp folder too long for a local Ray's sockets.

def test_a_long_tmpdir_is_refused_before_ray_starts(tmp_path, capsys, monkeypatch, no_services):
    exp = ready_experiment(tmp_path / "exp")
    monkeypatch.setattr("autoraysearch.cli._with_services", real_with_services)  # up to Prefect
    long_tmp = tmp_path / ("t" * 60)
    long_tmp.mkdir()
    for name in ("RAY_TMPDIR", "RAY_ADDRESS", "AUTORAYSEARCH_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(long_tmp))
    message = refusal(capsys, "run", str(exp), "--max-iterations", "1")
    assert f"the temporary folder {long_tmp} is too long for a local Ray's sockets" in message
    assert "set a shorter TMPDIR or RAY_TMPDIR" in message

