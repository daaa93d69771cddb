"""What a reader sees of a campaign, computed without Prefect: keys, names, table cells, log lines, when to republish."""

from __future__ import annotations

from autoraysearch.views.artifacts import EMPTY, _Published, needs_republishing, result_headline, results_table
from autoraysearch.views.identity import artifact_key, campaign_id, run_name, slug
from autoraysearch.campaign.experiment import Candidate, Ideas, TrialResult, Verdict
from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.campaign.results_log import ResultRow, ResultsLog
from autoraysearch.views.step_logs import proposal_lines, verdict_line


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
    assert len(table[1]["description"]) <= 60 and table[1]["description"].endswith("…")
    assert result_headline(LOG, "val_acc") == "best val_acc=0.9387 (+0.0866) after 3 experiments"


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
