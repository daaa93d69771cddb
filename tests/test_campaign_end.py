"""The closing artifact of a campaign: why it ended, where the branch is, every row."""

from __future__ import annotations

from prefect.exceptions import TerminationSignal

from autoraysearch.views.ending import final_markdown, stop_reason
from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.results_log import ResultRow, ResultsLog


def row(iteration: str, status: str, metric: float | None, commit: str = "-", description: str = "x") -> ResultRow:
    return ResultRow(iteration=iteration, commit=commit, metric=metric, delta=None, status=status,
                     description=description)


def test_a_cancelled_campaign_says_so_and_names_the_interrupted_candidates():
    log = ResultsLog(True, (
        row("0", "baseline", 0.85, "baseline", "initial state (28a2dc3)"),
        row("1", "keep", 0.92, "8fee841", "kernel 3 -> 5"),
        row("2a", "stopped", None, description="dropout | 0.1 (stopped: run interrupted)"),
        row("2b", "stopped", None),
    ))
    text = final_markdown(log, "val_acc", "autoraysearch/t1", "8fee841", "cancelled")
    assert text.startswith("# Campaign autoraysearch/t1: cancelled\n")
    assert "- best val_acc=0.92 from iteration 1 (8fee841)" in text
    assert "- branch `autoraysearch/t1` left on `8fee841`" in text
    assert "- 3 experiments, 1 kept" in text
    assert "logged as `stopped`: 2a, 2b" in text
    assert "| 2a | — | — | — | — | stopped | dropout \\| 0.1 (stopped: run interrupted) |" in text  # a | stays in its cell
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 5  # header and four rows


def test_a_campaign_that_never_beat_its_baseline_says_so():
    log = ResultsLog(False, (row("0", "baseline", 0.4, "baseline"), row("1", "discard", 0.5)))
    text = final_markdown(log, "val_loss", "autoraysearch/t2", "28a2dc3", "reached 1 iterations")
    assert "best val_loss=0.4: the baseline (no change beat it)" in text
    assert "stopped" not in text


def test_stop_reasons_in_a_users_words():
    assert stop_reason(KeyboardInterrupt()) == "interrupted"
    assert stop_reason(AutoraysearchError("no Ray cluster answers at h:1\nmore")) == "failed: no Ray cluster answers at h:1"
    assert stop_reason(TerminationSignal(15)) == "terminated (SIGTERM)"  # no cancel intent came from a runner
    assert stop_reason(SystemExit(15)) == "stopped (SystemExit)"
