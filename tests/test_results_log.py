from pathlib import Path

import pytest

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.results_log import (
    COLUMNS,
    EXTRA_COLUMNS,
    ResultRow,
    ResultsLog,
    append_result,
    format_log,
    parse_log,
    read_results_log,
)

SPEC_EXAMPLE = (
    "# metric_direction: higher_is_better\n"
    "iteration\tcommit\tmetric\tdelta\tstatus\tdescription\n"
    "0\tbaseline\t0.8728\t0.0\tbaseline\tinitial state\n"
    "1\ta1b2c3d\t0.8810\t+0.008\tkeep\tincrease conv channels 64->128 in first block\n"
    "2\t-\t0.8690\t-0.004\tdiscard\tadd extra ResBlock (underfits in 20 epochs)\n"
)


def row(iteration, metric, status, description="x", delta=None, commit="-", **extra):
    return ResultRow(iteration, commit, metric, delta, status, description, extra)


def test_reads_the_format_of_the_specification():
    log = parse_log(SPEC_EXAMPLE)
    assert log.higher_is_better
    assert [r.status for r in log.rows] == ["baseline", "keep", "discard"]
    assert log.rows[1].metric == pytest.approx(0.881)
    assert log.best().iteration == "1"
    assert log.next_iteration() == 3


def test_descriptions_with_tabs_and_newlines_do_not_break_the_format(tmp_path: Path):
    path = tmp_path / "results.tsv"
    append_result(path, row("0", 0.5, "baseline", commit="baseline"), True)
    append_result(path, row("1", 0.6, "keep", "widen\tconv1\nfrom 16\r\nto 32", delta=0.1, commit="abc1234"), True)
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    assert all(len(line.split("\t")) == len(COLUMNS + EXTRA_COLUMNS) for line in lines[1:])
    back = read_results_log(path, True)
    assert back.rows[1].description == "widen conv1 from 16 to 32"
    assert back.rows[1].delta == pytest.approx(0.1)


def test_round_trip_keeps_rows_extra_columns_and_signs():
    log = ResultsLog(True, (row("0", 0.87, "baseline", delta=0.0, commit="baseline", candidate="abc", seconds="3.2"),
                            row("1", None, "crash", "boom", candidate="def"),
                            row("2", 0.86, "discard", delta=-0.01)))
    text = format_log(log)
    assert "\t-0.01\tdiscard" in text
    assert "1\t-\t-\t-\tcrash" in text
    assert parse_log(text) == log


def test_the_log_keeps_full_precision_and_people_read_four_digits():
    from autoraysearch.campaign.memory import summary_line
    from autoraysearch.campaign.noise import parse_runs, seed_columns

    runs = (0.9396666666666667, 0.9423333333333334, 0.9371)
    kept = row("1", 0.9396666666666667, "keep", delta=-0.0176666666666667, commit="abc1234", **seed_columns(runs))
    text = format_log(ResultsLog(True, (kept,)))
    assert "\t0.9396666666666667\t-0.0176666666666667\t" in text
    back = parse_log(text).rows[0]
    assert (back.metric, back.delta) == (kept.metric, kept.delta)
    assert parse_runs(back.extra["runs"]) == runs
    assert summary_line(back).startswith("1 keep 0.9397 (delta -0.01767)")


def test_parallel_labels_share_iteration_numbers():
    log = ResultsLog(True, (row("0", 0.5, "baseline"), row("5a", 0.4, "discard"), row("5b", 0.6, "keep")))
    assert log.next_iteration() == 6
    assert log.best().iteration == "5b"


def test_best_is_the_latest_keep_and_ignores_discards():
    rows = (row("0", 1.0, "baseline"), row("1", 0.5, "discard"), row("2", 0.8, "keep"), row("3", 0.2, "discard"))
    assert ResultsLog(False, rows).best().iteration == "2"
    # A keep won its paired comparison: its mean over its own seeds may still read lower than the baseline's.
    assert ResultsLog(True, rows).best().iteration == "2"
    assert ResultsLog(True, rows[:2]).best().iteration == "0"


def test_missing_log_is_empty_and_wrong_direction_is_refused(tmp_path: Path):
    path = tmp_path / "results.tsv"
    assert read_results_log(path, True).rows == ()
    path.write_text(SPEC_EXAMPLE)
    with pytest.raises(AutoraysearchError, match="opposite metric direction"):
        read_results_log(path, False)


@pytest.mark.parametrize("text, message", [
    ("iteration\tcommit\n", "does not start with"),
    ("# metric_direction: sideways\n", "unknown metric direction"),
    ("# metric_direction: higher_is_better\nit\tcommit\tmetric\tdelta\tstatus\tdescription\n", "unexpected header"),
    (SPEC_EXAMPLE + "3\tonly-two\n", "line 6 has 2 columns"),
])
def test_damaged_logs_get_one_clear_sentence(text, message):
    with pytest.raises(AutoraysearchError, match=message):
        parse_log(text)


def test_terminal_text_keeps_lines_and_drops_what_would_drive_the_terminal():
    from autoraysearch.campaign.results_log import terminal_text

    raw = "epoch 1\n\x1b[2J\x1b[31mcleared\x1b[0m\tcol\x07\x1b]0;new title\x07\rback\u202eevil"
    assert terminal_text(raw) == "epoch 1\ncleared\tcol??back?evil"
