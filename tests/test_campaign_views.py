"""What a reader sees of a campaign, computed without Prefect: keys, names, table cells, log lines, when to republish."""

from __future__ import annotations

from autoraysearch.views.artifacts import (CELL_LINE_CHARS, EMPTY, _Published, needs_republishing, result_headline,
                                          results_table, short, table_artifact)
from autoraysearch.views.identity import artifact_key, campaign_id, run_name, slug
from autoraysearch.campaign.experiment import Candidate, Ideas, TrialResult, Verdict
from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.campaign.results_log import ResultRow, ResultsLog
from autoraysearch.views.run_states import parallel_state_name, state_name, verdict_state
from autoraysearch.views.step_logs import candidate_line, proposal_lines, verdict_line
from autoraysearch.tasks.log import result_row


def row(iteration, status, metric, delta=None, commit="-", description="x", **extra) -> ResultRow:
    return ResultRow(iteration=iteration, commit=commit, metric=metric, delta=delta, status=status,
                     description=description, extra={k: str(v) for k, v in extra.items()})


LOG = ResultsLog(True, (
    row("0", "baseline", 0.8521, 0.0, "baseline", "initial state", seeds=3, std=0.004),
    row("1", "keep", 0.9387, 0.0866, "8fee841", "features[0] Conv2d kernel_size 3 -> 5, padding 1 -> 2 and more words"),
    row("2", "discard", 0.9387, 0.0, description="- starts with a dash"),
    row("3", "crash", None),
))


def test_keys_and_names_differ_per_experiment_folder_and_follow_prefect_key_rules(tmp_path):
    a, b = tmp_path / "one" / "Digits Exp", tmp_path / "two" / "Digits Exp"
    assert artifact_key(a, "autoraysearch/2026-11-30", "results").startswith("digits-exp-2026-11-30-")
    assert artifact_key(a, "autoraysearch/2026-11-30", "results") != artifact_key(b, "autoraysearch/2026-11-30", "results")
    assert artifact_key(a, "autoraysearch/t1", "plot") != artifact_key(a, "autoraysearch/t2", "plot")
    for key in (artifact_key(a, "autoraysearch/Ünïcode_tag.2", "best-diff"), campaign_id(b, "")):
        assert key == slug(key) and set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert run_name(a, "autoraysearch/2026-11-30") == "Digits Exp/2026-11-30"


def test_the_table_formats_every_number_one_way_and_no_cell_is_a_lone_dash():
    table = results_table(LOG)
    assert [r["delta"] for r in table] == [EMPTY, "+0.0866", "±0", EMPTY]
    assert [r["metric"] for r in table] == ["0.8521", "0.9387", "0.9387", EMPTY]
    assert table[2]["commit"] == EMPTY and table[0]["seeds"] == "3" and table[1]["seeds"] == EMPTY
    assert all(cell.strip() != "-" for r in table for cell in r.values())
    assert table[1]["description"] == LOG.rows[1].description  # short enough to show whole
    reason = "(pruned at epoch 1/2: val_acc=0.4100, best had 0.8000 there)"
    cut = short("features[0] Conv2d kernel_size 3 -> 5, padding 1 -> 2 and a great many more words " + reason)
    assert len(cut) <= 90 and cut.endswith("… " + reason)  # the change is cut, never the reason
    assert [r["needed"] for r in results_table(ResultsLog(True, (row("4", "discard", 0.9, 0.01, needed="+0.0518"),)))] \
        == ["> +0.0518"]
    assert result_headline(LOG, "val_acc") == "best val_acc=0.9387 (+0.0866) after 3 experiments"
    # The UI's table renders cells as markdown and never wraps them: no block quote, descriptions on short lines.
    long = row("5", "discard", 0.9, 0.01, needed="+0.0518", description="dropout add: classifier[1] Linear gets "
               "Dropout(0.1) before it (screen 0.8217, 3 seeds 0.8041 ± 0.0511: not confirmed)")
    shown = table_artifact(ResultsLog(True, (long,)))[0]
    assert shown["needed"] == "\\> +0.0518" and shown["metric"] == "0.9"
    lines = shown["description"].split("  \n")
    assert len(lines) > 1 and all(len(line) <= CELL_LINE_CHARS for line in lines)
    assert " ".join(lines) == results_table(ResultsLog(True, (long,)))[0]["description"]


def test_table_diff_and_plot_are_republished_only_when_something_that_matters_changed():
    published = _Published(at=100.0, kept=1, statuses=frozenset({"baseline", "keep", "discard", "crash"}), rows=4)
    more = lambda *rows: ResultsLog(True, LOG.rows + rows)
    assert not needs_republishing(published, LOG, 101.0, final=False)  # nothing new
    assert not needs_republishing(published, more(row("4", "discard", 0.9)), 101.0, final=False)
    assert needs_republishing(published, more(row("4", "keep", 0.95)), 101.0, final=False)
    assert needs_republishing(published, more(row("4", "timeout", None)), 101.0, final=False)  # a new kind of failure
    assert needs_republishing(published, more(row("4", "discard", 0.9)), 100.0 + 300, final=False)  # minutes later
    assert needs_republishing(published, LOG, 101.0, final=True)
    assert needs_republishing(_Published(), LOG, 0.0, final=False)  # a flow run's first publication


def test_ideate_logs_each_proposal_with_its_diff_and_decide_logs_the_verdict_against_the_best():
    base = "import torch\nclass Model:\n    act = 'relu'\n"
    ideas = Ideas(candidates=[Candidate("4a", "relu -> gelu", base.replace("relu", "gelu"), "f1")],
                  rejected=[("edit train.py", "only model.py may change")])
    lines = proposal_lines(ideas, base)
    assert lines[0] == "proposal 4a: relu -> gelu (model.py +1 −1 lines: -    act = 'relu' | +    act = 'gelu')"
    assert lines[1] == "rejected: edit train.py: only model.py may change"

    bar = Bar(best_runs=(0.90, 0.91, 0.92), noise=Noise(sigma=0.01, dof=2, samples=3))
    result = TrialResult(label="4a", status="ok", metric=0.95, seconds=1.0, runs=(0.94, 0.95, 0.96))
    verdict = Verdict(status="keep", delta=0.04, best_metric=0.95, best_sha="1a2b3c4d5e")
    line = verdict_line(result, verdict, bar, "val_acc", "1a2b3c4d5e")
    assert line.startswith("4a keep: val_acc=0.95 over 3 seeds (paired +0.04 against the best at the same seeds; a keep needs > ")
    assert line.endswith("; best val_acc=0.95 at 1a2b3c4")
    crashed = TrialResult(label="5", status="crash", metric=None, seconds=1.0, error="Traceback\nValueError: boom")
    line = verdict_line(crashed, Verdict("crash", None, 0.95, "1a2b3c4"), bar, "val_acc", "1a2b3c4")
    assert line == "5 crash: no val_acc (ValueError: boom); best val_acc=0.95 at 1a2b3c4"


def test_every_verdict_says_what_a_keep_needed_or_why_there_was_none():
    bar = Bar(best_runs=(0.9396, 0.9396), noise=Noise(sigma=0.02, dof=4, samples=6),
              paired=Noise(sigma=0.03, dof=4, samples=6))
    result = TrialResult(label="2", status="ok", metric=0.9553, seconds=1.0, runs=(0.9553,))
    verdict = Verdict(status="discard", delta=0.0157, best_metric=0.9396, best_sha="1a2b3c4")
    line = candidate_line(result, verdict, bar, "val_acc", "wider conv")
    assert line.startswith("2 discard val_acc=0.9553 (+0.0157, a keep needs > +0.0") and line.endswith("): wider conv")
    needed = line.split("needs > ")[1].split(")")[0]
    assert float(needed) > 0.0157  # the reason it was discarded, beside the gain
    row = result_row(Candidate("2", "wider conv", "", "f00"), verdict, result, "abc1234", bar)
    assert abs(float(row.extra["needed"]) - float(needed)) < 1e-3  # the TSV's trailing `needed` column

    lower = Bar(best_runs=(0.30,), higher_is_better=False, min_delta=0.01)
    falling = TrialResult(label="3", status="ok", metric=0.295, seconds=1.0)
    assert "(-0.005, a keep needs < -0.01)" in candidate_line(falling, Verdict("discard", -0.005, 0.3, "x"), lower,
                                                             "loss", "tanh")
    pruned = TrialResult(label="4", status="pruned", metric=None, seconds=1.0,
                         error="pruned at epoch 1/2: val_acc=0.4100, best had 0.8000 there (margin 0.021)")
    line = candidate_line(pruned, Verdict("pruned", None, 0.94, "x"), bar, "val_acc", "deeper")
    assert line == "4 pruned val_acc=— (pruned at epoch 1/2: val_acc=0.4100, best had 0.8000 there (margin 0.021)): deeper"
    assert "needed" not in result_row(Candidate("4", "deeper", "", "f1"), Verdict("pruned", None, 0.94, "x"), pruned,
                                      "-", bar).extra


def test_task_runs_are_named_after_their_verdict():
    assert [state_name(s) for s in ("keep", "discard", "pruned", "crash", "timeout")] == [
        "Kept", "Discarded", "Pruned", "Crashed", "Timed out"]
    verdict = Verdict("discard", 0.01, 0.9, "x")
    state = verdict_state(verdict)
    assert state.is_completed() and state.name == "Discarded" and state.data == verdict
    keep, discard = Verdict("keep", 0.1, 0.95, "y"), Verdict("discard", 0.05, 0.95, "y")
    assert parallel_state_name({"5a": discard, "5b": keep}) == "Kept 5b"
    assert parallel_state_name({"5a": discard, "5b": discard}) == "Discarded"
    assert parallel_state_name({"5a": discard, "5b": Verdict("crash", None, 0.9, "x")}) == "Nothing kept"


def test_only_completed_task_runs_lose_their_finished_line():
    import logging

    from autoraysearch.prefect_api import QuietCompletedTaskRuns

    level = logging.getLogger("prefect.task_runs").level

    def shown(level: int, message: str, enabled: int = logging.INFO) -> bool:
        logging.getLogger("prefect.task_runs").setLevel(enabled)
        record = logging.LogRecord("prefect.task_runs", level, __file__, 1, message, None, None)
        return QuietCompletedTaskRuns().filter(record)

    try:
        assert not shown(logging.INFO, "Finished in state Kept()")
        assert shown(logging.INFO, "Finished in state Kept()", enabled=logging.DEBUG)  # at debug level, still there
        assert shown(logging.ERROR, "Finished in state Failed('Task run encountered an exception ValueError')")
        assert shown(logging.ERROR, "Task run failed with exception: ValueError - Retry 1/2 will start 1 second(s) from now")
        assert shown(logging.INFO, "4a keep: val_acc=0.95 (+0.04 against the best 0.91; a keep needs > +0.01)")
    finally:
        logging.getLogger("prefect.task_runs").setLevel(level)
