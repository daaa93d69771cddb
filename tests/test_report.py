"""The campaign's views without Prefect: the progress plot, the progress line, the best diff, `autoraysearch report`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autoraysearch.views.artifacts import EMPTY, TABLE_EXTRAS, best_diff_markdown, campaign_progress, publish_campaign_artifacts, results_table
from autoraysearch.cli import main
from autoraysearch.views.events import finished_payload, new_best_payload
from autoraysearch.campaign.experiment import Campaign
from autoraysearch.views.progress_plot import progress_figure, progress_points
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.results_log import COLUMNS, ResultRow, ResultsLog, format_log
from autoraysearch.campaign.settings import CampaignSettings, dump_settings
from autoraysearch.campaign.stopping import Progress, StopConditions
from helpers import EXAMPLE_MODEL, git, make_repo


def row(iteration, metric, status, description="", commit="-"):
    delta = 0.0 if status == "baseline" else None if metric is None else metric - 0.8
    return ResultRow(iteration, commit, metric, delta, status, description)


LOG = ResultsLog(True, (
    row("0", 0.80, "baseline", "initial state"),
    row("1", 0.85, "keep", "wider first conv", "aaaaaaa"),
    row("2", None, "crash", "deeper (crash: boom)"),
    row("3a", 0.83, "discard", "tanh"),
    row("3b", 0.90, "keep", "dropout 0.25 -> 0.1", "bbbbbbb"),
    row("4", 0.88, "discard", "kernel 5"),
))


def test_plot_has_a_dot_per_experiment_a_monotone_best_line_and_labelled_keeps():
    points = progress_points(LOG)
    assert [x for x, _, _ in points.scored] == [0, 1, 3, 4, 5] and points.failed == (2,)
    assert [y for _, y in points.best] == [0.80, 0.85, 0.85, 0.85, 0.90, 0.90]

    ax = progress_figure(LOG, "val_acc").axes[0]
    dots, crosses = ax.collections
    assert len(dots.get_offsets()) == 5 and len(crosses.get_offsets()) == 1
    [best_line] = ax.lines
    ys = list(best_line.get_ydata())
    assert ys == sorted(ys) and ys[-1] == 0.90
    assert [t.get_text() for t in ax.texts] == ["1: wider first conv", "3b: dropout 0.25 -> 0.1"]
    assert ax.get_title() == "val_acc: best 0.9 after 5 experiments"


def test_plot_draws_the_keep_bar_each_candidate_had_and_pruned_ones_where_they_stopped():
    rows = (
        row("0", 0.80, "baseline"),
        ResultRow("1", "-", 0.83, 0.03, "discard", "wider", {"needed": "+0.05"}),
        ResultRow("2", "-", None, None, "pruned",
                  "deeper (pruned at epoch 1/2: val_acc=0.4100, best had 0.8000 there (margin 0.021))", {}),
        ResultRow("3", "-", None, None, "crash", "tanh (crash: boom)", {}),
        ResultRow("4", "-", 0.62, -0.18, "pruned",  # stopped between seeds: its metric is its seeds' mean
                  "narrower (stopped after 2 of 8 seeds: paired gain -0.18, a 0.0% chance to be kept after all 8)", {}),
    )
    points = progress_points(ResultsLog(True, rows))
    assert points.bars == ((1, pytest.approx(0.85)),)  # above the discarded 0.83: why it was dropped
    assert points.pruned == ((2, 0.41), (4, 0.62)) and points.failed == (3,)
    assert [x for x, _, _ in points.scored] == [0, 1]  # a pruned run is a triangle, never an experiment's dot
    ax = progress_figure(ResultsLog(True, rows), "val_acc").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "pruned (at its last epoch, or its seeds' mean)" in labels and "keep bar (best + the gain a keep needed)" in labels
    assert not any("σ" in label for label in labels)  # the band no longer stands for the rule


def test_many_kept_changes_are_labelled_by_iteration_only():
    keeps = [row(str(i), 0.8 + i / 100, "keep", f"change {i}", "c") for i in range(1, 14)]
    points = progress_points(ResultsLog(True, (row("0", 0.8, "baseline"), *keeps)))
    assert [label for _, _, label in points.kept] == [str(i) for i in range(1, 14)]


def test_plot_of_a_lower_is_better_campaign_has_a_falling_best_line():
    log = ResultsLog(False, (row("0", 2.0, "baseline"), row("1", 1.5, "keep", "x"), row("2", 1.8, "discard")))
    ys = list(progress_figure(log, "val_loss").axes[0].lines[0].get_ydata())
    assert ys == [2.0, 1.5, 1.5]


def test_progress_follows_the_stop_condition_nearest_to_holding():
    now = datetime(2026, 11, 27, 1, 0)
    progress = Progress(iterations=3, started=now - timedelta(hours=3), best=0.9, iterations_since_keep=0)
    assert campaign_progress(progress, StopConditions(max_iterations=10), now) == (30.0, "3 of 10 iterations done")
    percent, line = campaign_progress(progress, StopConditions(deadline=now + timedelta(hours=6)), now)
    assert percent == 33.3 and "6h 00m left to the deadline 07:00" in line
    percent, line = campaign_progress(progress, StopConditions(max_iterations=4, max_hours=12), now)
    assert percent == 75.0 and "9h 00m left of 12 hours" in line
    assert campaign_progress(progress, None, now) == (0.0, "3 iterations done in this run; no stop condition: runs until cancelled")
    assert campaign_progress(progress, StopConditions(max_iterations=10), now, "reached the target 0.9") == (
        100.0, "finished: reached the target 0.9; 3 of 10 iterations done")


def test_results_table_and_event_payloads_follow_the_log():
    table = results_table(LOG)
    assert [r["iteration"] for r in table] == ["0", "1", "2", "3a", "3b", "4"]
    # the TSV's first columns in its order, with the delta a keep needed beside the delta
    assert list(table[2]) == ["iteration", "commit", "metric", "delta", "needed", "status", "description", *TABLE_EXTRAS]
    # an empty cell is a dash that markdown never turns into a list bullet
    assert [table[2][c] for c in COLUMNS] == ["2", EMPTY, EMPTY, EMPTY, "crash", "deeper (crash: boom)"]
    best = new_best_payload(LOG, "val_acc")
    assert (best["value"], best["previous"], best["iteration"], best["commit"]) == (0.90, 0.85, "3b", "bbbbbbb")
    assert new_best_payload(ResultsLog(True, LOG.rows[:1]), "val_acc") is None
    done = finished_payload(LOG, "val_acc", "reached 4 iterations")
    assert (done["best"], done["baseline"], done["experiments"], done["kept"]) == (0.90, 0.80, 5, 2)


def test_best_diff_is_the_kept_changes_against_the_baseline(tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": "width = 16\ndepth = 2\n"})
    (exp / "model.py").write_text("width = 32\ndepth = 2\n")
    git(exp, "commit", "-qam", "wider")
    first = git(exp, "rev-parse", "--short=7", "HEAD")
    (exp / "model.py").write_text("width = 32\ndepth = 3\n")
    git(exp, "commit", "-qam", "deeper")
    second = git(exp, "rev-parse", "--short=7", "HEAD")
    log = ResultsLog(True, (row("0", 0.8, "baseline"), row("1", 0.85, "keep", "wider", first),
                            row("2", 0.8, "discard", "tanh"), row("3", 0.9, "keep", "deeper", second)))
    text = best_diff_markdown(ExperimentRepo(exp), log, "model.py", "val_acc")
    assert "best val_acc=0.9 from iteration 3" in text
    assert f"- `1` {first} val_acc=0.85" in text and f"- `3` {second} val_acc=0.9" in text
    diff = text.split("```diff\n")[1]
    assert "-width = 16\n" in diff and "+width = 32\n" in diff and "-depth = 2\n" in diff and "+depth = 3\n" in diff
    baseline_only = best_diff_markdown(ExperimentRepo(exp), ResultsLog(True, log.rows[:1]), "model.py", "val_acc")
    assert "the best model is the baseline" in baseline_only and "```diff" not in baseline_only


def reported_experiment(path: Path) -> Path:
    make_repo(path, {"model.py": EXAMPLE_MODEL.read_text(), "train.py": "from model import Model\n",
                     "autoraysearch.toml": dump_settings(CampaignSettings(generated=False))})
    (path / "autoraysearch-results.tsv").write_text(format_log(LOG))
    return path


def test_report_prints_the_table_and_writes_the_plot(tmp_path: Path, capsys):
    exp = reported_experiment(tmp_path / "exp")
    assert main(["report", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "dropout 0.25 -> 0.1" in out and "best val_acc=0.9 from iteration 3b (bbbbbbb); 2 kept of 5" in out
    png = exp / ".autoraysearch" / "progress.png"
    assert f"progress plot written to {png}" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    assert git(exp, "status", "--porcelain") == "?? autoraysearch-results.tsv"  # the plot never shows in git

    elsewhere = tmp_path / "plots" / "campaign.png"
    assert main(["report", str(exp), "--plot", str(elsewhere)]) == 0
    assert elsewhere.read_bytes().startswith(b"\x89PNG")


def test_report_before_setup_is_refused(tmp_path: Path, capsys):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    assert main(["report", str(exp)]) == 1
    assert "autoraysearch.toml does not exist" in capsys.readouterr().err


def test_an_artifact_failure_is_only_a_warning(tmp_path: Path):
    exp = reported_experiment(tmp_path / "exp")
    (exp / "autoraysearch-results.tsv").write_text("not a results log\n")
    campaign = Campaign(experiment_dir=str(exp), branch="autoraysearch/x", settings=CampaignSettings(), trial_timeout=60)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("autoraysearch").addHandler(handler)
    try:
        publish_campaign_artifacts(campaign)
    finally:
        logging.getLogger("autoraysearch").removeHandler(handler)
    [warning] = [r.getMessage() for r in records]
    assert "could not publish the campaign's artifacts" in warning and "does not start with '# metric_direction" in warning
