"""After any crash the results log is the truth: the branch is put back on the log's best and every candidate gets a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autoraysearch.campaign.opening import open_campaign
from autoraysearch.campaign.experiment import Candidate, ExperimentPaths
from autoraysearch.campaign.resume import write_pending
from autoraysearch.campaign.results_log import read_results_log
from helpers import counting_train_py, git, hang, make_repo, wait_until

MODEL = "import torch.nn as nn\n\n\nclass Model(nn.Linear):\n    def __init__(self):\n        super().__init__({width}, 2)\n"
TRAIN = "from model import Model\nprint('val_acc=0.5')\n"
BRANCH = "autoraysearch/t"
LOG_HEADER = "# metric_direction: higher_is_better\niteration\tcommit\tmetric\tdelta\tstatus\tdescription\n"


def campaign_repo(tmp_path: Path, rows: str = "0\tbaseline\t0.5\t0.0\tbaseline\tinitial state\n") -> Path:
    """A set-up experiment on its campaign branch, with the baseline logged (no training needed)."""
    exp = make_repo(tmp_path / "exp", {
        "model.py": MODEL.format(width=4), "train.py": TRAIN,
        "autoraysearch.toml": 'generated = false\nepochs = 1\n', ".gitignore": "autoraysearch-results.tsv\n.autoraysearch/\n",
    })
    git(exp, "checkout", "-q", "-b", BRANCH)
    (exp / "autoraysearch-results.tsv").write_text(LOG_HEADER + rows)
    return exp


def commit_candidate(exp: Path, label: str, width: int, description: str = "widen") -> str:
    (exp / "model.py").write_text(MODEL.format(width=width))
    git(exp, "commit", "-q", "-am", f"autoraysearch {label}: {description} to {width}")
    return git(exp, "rev-parse", "HEAD")


def resume(exp: Path) -> list[str]:
    said: list[str] = []
    with open_campaign(exp, tag="t", say=said.append):
        pass
    return said


def rows(exp: Path):
    return read_results_log(exp / "autoraysearch-results.tsv", True).rows


def test_an_unlogged_candidate_on_the_branch_is_rolled_back_and_logged_as_stopped(tmp_path: Path):
    exp = campaign_repo(tmp_path)
    baseline = git(exp, "rev-parse", "HEAD")
    candidate = commit_candidate(exp, "1", 8)

    said = resume(exp)

    assert git(exp, "rev-parse", BRANCH) == baseline
    assert (exp / "model.py").read_text() == MODEL.format(width=4)
    assert any(candidate[:7] in line and "does not account for it" in line for line in said), said
    [row] = [r for r in rows(exp) if r.iteration == "1"]
    assert row.status == "stopped" and "interrupted by a crash of the previous run" in row.description
    assert resume(exp) == []  # nothing left to put right


def test_the_branch_goes_back_to_the_last_kept_commit_not_to_the_tip(tmp_path: Path):
    exp = campaign_repo(tmp_path)
    kept = commit_candidate(exp, "1", 8)
    with open(exp / "autoraysearch-results.tsv", "a") as log:
        log.write(f"1\t{kept[:7]}\t0.6\t+0.1\tkeep\twiden to 8\n")
    commit_candidate(exp, "2", 16)
    commit_candidate(exp, "3", 32)  # two candidates a crash left behind

    resume(exp)

    assert git(exp, "rev-parse", BRANCH) == kept
    assert [(r.iteration, r.status) for r in rows(exp)] == [("0", "baseline"), ("1", "keep"), ("2", "stopped"), ("3", "stopped")]


def test_a_candidate_already_rolled_back_but_never_logged_gets_its_row_from_the_journal(tmp_path: Path):
    exp = campaign_repo(tmp_path)
    baseline = git(exp, "rev-parse", "HEAD")
    paths = ExperimentPaths(exp)
    paths.make_state_dir()
    write_pending(paths, [Candidate("4a", "add dropout", "x", "abc"), Candidate("4b", "use GELU", "y", "def")])
    with open(exp / "autoraysearch-results.tsv", "a") as log:  # 4a was logged, then the run died
        log.write("4a\t-\t0.4\t-0.1\tdiscard\tadd dropout\n")

    resume(exp)

    assert git(exp, "rev-parse", BRANCH) == baseline
    assert [(r.iteration, r.status) for r in rows(exp)][1:] == [("4a", "discard"), ("4b", "stopped")]
    assert rows(exp)[-1].extra["candidate"] == "def"
    assert not (paths.state_dir / "pending.json").exists()


def test_a_candidate_written_but_never_committed_is_put_back(tmp_path: Path):
    from autoraysearch.campaign.model_source import fingerprint

    exp = campaign_repo(tmp_path)
    (exp / ".autoraysearch").mkdir()
    (exp / ".autoraysearch" / "campaign.json").write_text('{"branch": "%s"}\n' % BRANCH)
    source = MODEL.format(width=64)
    write_pending(ExperimentPaths(exp), [Candidate("1", "widen to 64", source, fingerprint(source))])
    (exp / "model.py").write_text(source)  # modify ran, commit never did

    said = resume(exp)

    assert (exp / "model.py").read_text() == MODEL.format(width=4)
    assert git(exp, "status", "--porcelain", "model.py") == ""
    assert any("never committed" in line for line in said)
    assert [(r.iteration, r.status) for r in rows(exp)][1:] == [("1", "stopped")]


def test_a_users_own_model_change_is_never_rolled_back(tmp_path: Path):
    exp = campaign_repo(tmp_path)
    (exp / "model.py").write_text(MODEL.format(width=6))
    git(exp, "commit", "-q", "-am", "my own change")
    mine = git(exp, "rev-parse", "HEAD")

    resume(exp)

    assert git(exp, "rev-parse", BRANCH) == mine


def test_leftover_candidate_branches_and_a_dead_lock_are_cleaned_and_said(tmp_path: Path):
    exp = campaign_repo(tmp_path)
    git(exp, "branch", f"{BRANCH}-exp/5a")
    git(exp, "branch", f"{BRANCH}-exp/5b")
    git(exp, "branch", "my-feature")
    (exp / ".autoraysearch").mkdir()
    (exp / ".autoraysearch" / "run.lock").write_text('{"pid": 999999999, "host": "%s", "started": "x"}' % os.uname().nodename)

    said = resume(exp)

    branches = git(exp, "branch", "--format=%(refname:short)").split()
    assert sorted(branches) == sorted(["main", BRANCH, "my-feature"])
    assert any("leftover candidate branch" in line for line in said)
    assert any("lock of an earlier run" in line for line in said)


# ---- a real campaign killed with SIGKILL, then resumed ----

POST_COMMIT_KILL = "#!/bin/sh\nkill -9 $(cat {cli_pid})\n"


def start_run(exp: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1", "--trial-timeout", "120"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after commit", "during verify"])
def test_sigkill_at_any_step_then_resume_leaves_the_branch_on_the_logs_best(
    when, services, example_repo, tmp_path, trial_dir
):
    from helpers import setup

    exp = example_repo
    pid_file, cli_pid = trial_dir / "trial.pid", tmp_path / "cli.pid"
    # the baseline scores 0.5; during verify, the first candidate hangs until killed; every other run scores 0.4
    first = hang(pid_file, child=False) if when == "during verify" else 'print("val_acc=0.4")'
    (exp / "train.py").write_text(counting_train_py(trial_dir / "calls", 'print("val_acc=0.5")', first,
                                                    later='print("val_acc=0.4")'))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py")
    setup(exp, train_py="train.py")
    hook = exp / ".git" / "hooks" / "post-commit"
    if when == "after commit":  # the first candidate's commit kills the run, as a lost machine would
        hook.write_text(POST_COMMIT_KILL.format(cli_pid=cli_pid))
        hook.chmod(0o755)
    cli = start_run(exp)
    cli_pid.write_text(str(cli.pid))
    if when == "during verify":
        assert wait_until(pid_file.exists, 240), "the trial never started"
        os.kill(cli.pid, signal.SIGKILL)
    cli.wait(240)
    hook.unlink(missing_ok=True)
    branch = git(exp, "branch", "--show-current")
    killed_at = git(exp, "rev-parse", branch)
    assert git(exp, "log", "-1", "--format=%s", killed_at).startswith("autoraysearch 1:")  # the crash left it there
    best = git(exp, "rev-parse", f"{killed_at}~1")

    resumed = start_run(exp)
    output, _ = resumed.communicate(timeout=300)

    assert resumed.returncode == 0, output
    assert "does not account for it" in output
    log = read_results_log(exp / "autoraysearch-results.tsv", True)
    assert [(r.iteration, r.status) for r in log.rows] == [("0", "baseline"), ("1", "stopped"), ("2", "discard")]
    assert "best val_acc=0.5" in output
    assert git(exp, "rev-parse", branch) == best
    assert git(exp, "status", "--porcelain", "model.py") == ""
