"""Every trained candidate stays retrievable after rollback: its diff, result and log; shown by `show`, read by the ideator."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.memory import (
    PROMPT_DIFF_LINES,
    RememberedCandidate,
    informative_diffs,
    recall,
    remember,
)
from autoraysearch.campaign.experiment import Campaign, Candidate, ExperimentPaths, Review, TrialResult
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, append_result, read_results_log
from autoraysearch.campaign.settings import CampaignSettings
from helpers import EXAMPLE_MODEL, git, make_repo

EXAMPLE = EXAMPLE_MODEL.read_text()
ZEROED = {
    "description": "scale the logits by zero",
    "kind": "output",
    "edits": [{"search": "return self.classifier(self.features(x))",
               "replace": "return 0 * self.classifier(self.features(x))"}],
}


def campaign_in(folder: Path) -> Campaign:
    ExperimentPaths(folder).make_state_dir()
    return Campaign(experiment_dir=str(folder), branch="", settings=CampaignSettings(), trial_timeout=60)


def baseline_row(seconds: str = "5") -> ResultRow:
    return ResultRow("0", "baseline", 0.9, 0.0, "baseline", "initial state", {"candidate": "base", "seconds": seconds})


def test_the_log_step_remembers_a_discarded_candidate_with_its_diff_result_and_log(tmp_path):
    from autoraysearch.campaign.memory import show_candidate
    from autoraysearch.tasks.log import log_experiment

    campaign = campaign_in(tmp_path)
    append_result(campaign.paths.results, baseline_row(), True)
    wider = EXAMPLE.replace("nn.Linear(32 * 4 * 4, 64)", "nn.Linear(32 * 4 * 4, 128)")
    candidate = Candidate(label="1", description="widen the hidden layer", model_source=wider, fingerprint="f1")
    output = "".join(f"epoch={n} loss=0.{n}\n" for n in range(1, 31)) + "val_acc=0.85\n"
    result = TrialResult(label="1", status="ok", metric=0.85, seconds=4.2, output=output)
    row = ResultRow("1", "-", 0.85, -0.05, "discard", "widen the hidden layer", {"candidate": "f1", "seconds": "4.2"})

    log_experiment(campaign, row, result, candidate=candidate, base_source=EXAMPLE)

    remembered = recall(campaign.paths, "1")
    assert remembered.status == "discard" and remembered.metric == 0.85 and remembered.delta == -0.05
    assert "-            nn.Linear(32 * 4 * 4, 64),\n+            nn.Linear(32 * 4 * 4, 128),\n" in remembered.diff
    assert remembered.diff.startswith("--- a/model.py\n+++ b/model.py\n")
    folder = campaign.paths.state_dir / "candidates" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["diff.patch", "result.json"]  # the log is not copied
    assert json.loads((folder / "result.json").read_text())["seconds"] == 4.2

    shown = show_candidate(campaign.paths, read_results_log(campaign.paths.results, True), "1", "val_acc")
    assert shown.startswith("1 discard: widen the hidden layer\nval_acc=0.85 (delta -0.05")
    assert "+            nn.Linear(32 * 4 * 4, 128)," in shown
    assert shown.rstrip().endswith("epoch=30 loss=0.30\nval_acc=0.85")
    assert "epoch=10 " not in shown  # only the tail of the log


def test_a_candidate_of_an_earlier_campaign_under_the_same_label_is_not_shown_as_this_ones(tmp_path):
    from autoraysearch.campaign.memory import recall_for_row

    paths = campaign_in(tmp_path).paths
    remember(paths, RememberedCandidate("3", "discard", 0.5, -0.1, "old idea", fingerprint="old", diff="-a\n+b\n"))
    row = ResultRow("3", "-", 0.7, -0.01, "discard", "new idea", {"candidate": "new"})
    assert recall_for_row(paths, row) is None
    assert recall_for_row(paths, ResultRow("3", "-", 0.5, -0.1, "discard", "old idea", {"candidate": "old"})) is not None


def test_the_prompt_holds_the_last_keeps_and_closest_misses_with_their_diffs(tmp_path):
    from autoraysearch.ideators.llm.prompt import build_prompt

    paths = campaign_in(tmp_path).paths
    rows = [baseline_row()]
    deltas = {"1": 0.02, "2": -0.30, "3": -0.01, "4": 0.01, "5": -0.002, "6": -0.2, "7": -0.05, "8": 0.01, "9": 0.003}
    for label, delta in deltas.items():
        status = "keep" if delta > 0 else "discard"
        rows.append(ResultRow(label, "abc1234" if status == "keep" else "-", 0.9 + delta, delta, status,
                              f"change {label}", {"candidate": f"c{label}"}))
        long_tail = "".join(f"+        line{n}\n" for n in range(60)) if label == "5" else ""
        remember(paths, RememberedCandidate(label, status, 0.9 + delta, delta, f"change {label}", fingerprint=f"c{label}",
                                            diff=f"--- a/model.py\n+++ b/model.py\n@@ -1 +1 @@\n-old{label}\n+new{label}\n{long_tail}"))
    log = ResultsLog(True, tuple(rows))

    chosen = informative_diffs(paths, log)
    labels = [summary.split()[0] for summary, _ in chosen]
    assert labels == ["3", "4", "5", "7", "8", "9"]  # keeps 4, 8, 9; misses 5, 3, 7 (closest first); in order
    assert all(len(diff.splitlines()) <= PROMPT_DIFF_LINES for _, diff in chosen)
    assert chosen[2][1].splitlines()[-1].startswith("... (")

    review = Review(model_source=EXAMPLE, train_source="", git_log=(), best_metric=0.91, best_sha="f" * 40,
                    tried=frozenset(), past_diffs=chosen)
    prompt = build_prompt(review, CampaignSettings(), 1)
    assert "## What past changes looked like" in prompt
    assert "- 7 discard 0.85 (delta -0.05): change 7\n```diff\n--- a/model.py\n+++ b/model.py\n@@ -1 +1 @@\n-old7\n+new7\n```" in prompt
    assert "+new2" not in prompt and "+new1\n" not in prompt  # far misses and old keeps stay out

    empty = build_prompt(Review(model_source=EXAMPLE, train_source="", git_log=(), best_metric=None, best_sha="f" * 40,
                                tried=frozenset()), CampaignSettings(), 1)
    assert "What past changes looked like" not in empty


def test_show_names_the_nearest_labels_for_an_unknown_one(tmp_path, capsys):
    from autoraysearch.cli import main

    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE, "autoraysearch.toml": ""})
    append_result(exp / "autoraysearch-results.tsv", baseline_row(), True)
    for label in ("1", "2a", "2b", "3"):
        append_result(exp / "autoraysearch-results.tsv",
                      ResultRow(label, "-", 0.8, -0.1, "discard", f"change {label}", {"candidate": label}), True)
    assert main(["show", "7", str(exp)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("has no candidate labelled '7'; the nearest are 3, 2a, 2b.")
    assert len(err.splitlines()) == 1


def test_default_timeout_follows_the_successful_trials_with_a_small_floor():
    from autoraysearch.campaign.opening import default_trial_timeout

    def log(*rows):
        return ResultsLog(True, (baseline_row("5"), *rows))

    assert default_trial_timeout(log()) == 60.0  # a 5-second baseline no longer gets ten minutes
    assert default_trial_timeout(log(ResultRow("1", "-", 0.8, -0.1, "discard", "x", {"seconds": "40"}))) == 120.0
    # Failures and stops say nothing about how long a trial takes; a mean over 3 seeds counts one run.
    assert default_trial_timeout(log(
        ResultRow("1", "-", None, None, "timeout", "x", {"seconds": "900"}),
        ResultRow("2", "abc", 0.95, 0.05, "keep", "y", {"seconds": "90", "seeds": "3"}),
    )) == 90.0
    assert default_trial_timeout(ResultsLog(True, ())) == 600.0  # nothing measured yet


def test_make_trial_follows_the_results_log_unless_a_timeout_was_given(tmp_path):
    from dataclasses import replace

    from autoraysearch.trials.runs import make_trial

    campaign = replace(campaign_in(tmp_path), trial_timeout=None)
    candidate = Candidate(label="1", description="x", model_source=EXAMPLE, fingerprint="c1")
    append_result(campaign.paths.results, baseline_row("10"), True)
    assert make_trial(campaign, candidate, "").timeout == 60.0
    append_result(campaign.paths.results, ResultRow("1", "abc", 0.95, 0.05, "keep", "x", {"seconds": "50"}), True)
    assert make_trial(campaign, candidate, "").timeout == 150.0
    assert make_trial(replace(campaign, trial_timeout=7), candidate, "").timeout == 7


# ---- real campaigns ----

@pytest.mark.slow
def test_show_prints_a_discarded_candidates_diff_and_log_after_its_rollback(services, example_repo, tmp_path, capsys):
    from autoraysearch.cli import main
    from helpers import loop, results, setup

    exp = example_repo
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""\
        import json, sys
        sys.stdin.read()
        print(json.dumps({{"candidates": [{json.dumps(ZEROED)}]}}))
    """))
    setup(exp, epochs=1)
    best = git(exp, "rev-parse", "HEAD")
    loop(exp, max_iterations=1, ideator="command", llm_command=f"{sys.executable} {agent}")

    row = results(exp).rows[1]
    assert (row.iteration, row.status, row.commit) == ("1", "discard", "-")
    # Rolled back: the branch and model.py are the best again, yet the candidate's change is still there to read.
    assert git(exp, "rev-parse", "HEAD") == best
    assert "0 * self.classifier" not in (exp / "model.py").read_text()
    diff = (exp / ".autoraysearch" / "candidates" / "1" / "diff.patch").read_text()
    assert "-        return self.classifier(self.features(x))\n+        return 0 * self.classifier(self.features(x))\n" in diff
    patched = tmp_path / "patched"
    patched.mkdir()
    (patched / "model.py").write_text((exp / "model.py").read_text())
    (patched / "change.patch").write_text(diff)
    git(patched, "apply", "change.patch")  # the diff is a real patch against the best
    assert "0 * self.classifier" in (patched / "model.py").read_text()

    capsys.readouterr()
    assert main(["show", "1", str(exp)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("1 discard: scale the logits by zero\nval_acc=")
    assert "+        return 0 * self.classifier(self.features(x))" in shown
    assert "epoch=1" in shown.split("last 20 lines of")[1]


@pytest.mark.slow
def test_a_trial_slower_than_the_campaigns_trials_times_out_without_an_explicit_limit(
    services, example_repo, tmp_path, monkeypatch,
):
    """The relative rule kills a trial long before the old ten-minute floor (its floor lowered to keep the test short)."""
    import autoraysearch.campaign.opening
    from helpers import loop, results, setup

    monkeypatch.setattr(autoraysearch.campaign.opening, "MIN_TRIAL_TIMEOUT", 3.0)
    exp = example_repo
    sleep_file = tmp_path / "sleep"
    (exp / "train.py").write_text(textwrap.dedent(f"""\
        import os, time


        def load_model():  # never called: the trial's behaviour comes from {str(sleep_file)!r}
            from model import Model


        if os.path.exists({str(sleep_file)!r}):
            time.sleep(float(open({str(sleep_file)!r}).read()))
        print("val_acc=0.5")
    """))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py that sleeps as told")
    setup(exp, train_py="train.py", trial_timeout=None)  # the relative rule, not a fixed limit
    baseline_seconds = float(results(exp).baseline.extra["seconds"])
    limit = max(3.0, 3 * baseline_seconds)
    sleep_file.write_text(str(limit + 10))  # slower than the rule allows, far below the old 600 s

    loop(exp, max_iterations=1)
    row = results(exp).rows[1]
    assert row.status == "timeout"
    assert row.description.endswith(f"(timeout: killed after the trial timeout of {limit:g} s)")
    assert float(row.extra["seconds"]) < limit + 10
