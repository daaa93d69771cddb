"""What `run` shows while trials train, and `status` at a terminal."""

from __future__ import annotations

import io
import os
import re
import sys
import time
from pathlib import Path

from autoraysearch.cli import main
from autoraysearch.views.live_view import (
    LiveView,
    TrialProgress,
    TrialRow,
    rich_table,
    format_seconds,
    iteration_of,
    plain_lines,
    read_progress,
    trial_rows,
    watching,
    current_watch,
)
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log
from autoraysearch.campaign.settings import CampaignSettings, dump_settings
from helpers import EXAMPLE_MODEL, make_repo, wait_until

OUTPUT = """\
loading digits
epoch=1/20 train_loss=1.20 val_acc=0.5012 elapsed_s=4.0
epoch=2/20 train_loss=0.70 val_acc=0.7400 elapsed_s=8.1
epoch=3/20 train_loss=0.41 val_acc=0.8123 elapsed_s=12.0
Traceback (most recent call last): a line that is not progress
"""


def test_the_last_progress_line_gives_epoch_metric_and_time_left():
    progress = read_progress(OUTPUT, "val_acc")
    assert progress == TrialProgress(epoch=3, epochs=20, value=0.8123, elapsed_s=12.0)
    assert progress.seconds_left() == 68.0  # 17 epochs at 4 s each
    assert read_progress(OUTPUT, "val_loss") is None  # another metric's lines are not this trial's progress
    assert read_progress("loading digits\n", "val_acc") is None


def test_a_time_budget_or_no_elapsed_time_leaves_the_time_left_unknown():
    budget = read_progress("epoch=4 train_loss=0.3 val_acc=0.9 elapsed_s=20.5\n", "val_acc")
    assert (budget.epoch, budget.epochs, budget.seconds_left()) == (4, None, None)
    quiet = read_progress("epoch=2/5 val_acc=0.9\n", "val_acc")
    assert quiet.elapsed_s is None and quiet.seconds_left() is None
    assert read_progress("epoch=5/5 val_acc=0.9 elapsed_s=50\n", "val_acc").seconds_left() == 0.0


def test_plain_lines_name_the_iteration_each_trial_and_the_best():
    rows = trial_rows_for({"3a": OUTPUT, "3b": "loading digits\n"})
    lines = plain_lines(rows, "val_acc", "best val_acc=0.95 from iteration 2 (abc1234)")
    assert lines[0] == "trial 3a (iteration 3): epoch 3/20 val_acc=0.8123, 12s trained, about 1m08s left"
    assert lines[1].startswith("trial 3b (iteration 3): running ") and lines[1].endswith("no epoch finished yet")
    assert lines[-1] == "best val_acc=0.95 from iteration 2 (abc1234)"
    assert iteration_of("12b-seed2") == "12" and format_seconds(3725) == "1h02m"


def trial_rows_for(outputs: dict[str, str]):
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"live-view-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    logs = {}
    for label, text in outputs.items():
        (folder / f"{label}.log").write_text(text)
        logs[label] = folder / f"{label}.log"
    with watching(logs, "val_acc"):
        return trial_rows(current_watch(), time.monotonic())


def test_elapsed_never_jumps_back_and_the_best_line_stays_one_line():
    from rich.console import Console

    best = "best val_acc=0.95 from iteration 2 (abc1234); 1 kept of 2 experiments; noise σ=0.01 from 2 seeds"

    def drawn(row: TrialRow) -> str:
        out = io.StringIO()
        Console(file=out, width=120).print(rich_table([row], "val_acc", best))
        return out.getvalue()

    before = drawn(TrialRow("5", None, waited_s=5.0))
    # train.py's own clock starts late (data loading): the view keeps counting from when the wait began.
    after = drawn(TrialRow("5", TrialProgress(1, 20, 0.5, elapsed_s=0.4), waited_s=6.0))
    assert "│ 5     │     - │       - │      5s │    ? │" in before
    assert "│ 5     │  1/20 │  0.5000 │      6s │   8s │" in after
    assert best in after.splitlines()  # under the table, on one line, not wrapped to the table's width


def test_a_log_left_by_an_earlier_run_or_on_another_machine_shows_no_progress(tmp_path: Path):
    stale = tmp_path / "4.log"
    stale.write_text(OUTPUT)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    with watching({"4": stale, "4b": None, "4c": tmp_path / "not-yet.log"}, "val_acc"):
        rows = trial_rows(current_watch(), time.monotonic())
    assert [(r.label, r.progress) for r in rows] == [("4", None), ("4b", None), ("4c", None)]
    assert current_watch() is None  # the loop stopped waiting


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def set_up(path: Path, rows: list[ResultRow]) -> Path:
    make_repo(path, {"model.py": EXAMPLE_MODEL.read_text(), "train.py": "print('val_acc=0.5')\n",
                     "autoraysearch.toml": dump_settings(CampaignSettings(generated=False))})
    (path / "autoraysearch-results.tsv").write_text(format_log(ResultsLog(True, tuple(rows))))
    return path


BASELINE = ResultRow("0", "baseline", 0.5, 0.0, "baseline", "initial state")
KEEP = ResultRow("1", "abc1234", 0.95, 0.45, "keep", "features[0] Conv2d 16 -> 32 channels")


def test_the_live_view_draws_a_table_at_a_terminal_and_plain_lines_elsewhere(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("autoraysearch.views.live_view.REFRESH_S", 0.1)
    exp = set_up(tmp_path / "exp", [BASELINE, KEEP])
    (exp / "2a.log").write_text(OUTPUT)

    terminal = Terminal()
    shown = ("iteration 2: 2 trials running", "2a", "3/20", "0.8123", "12s", "1m08s", "2b",
             "best val_acc=0.95 from iteration 1 (abc1234)")
    view = LiveView(exp, terminal).start()
    with watching({"2a": exp / "2a.log", "2b": None}, "val_acc"):
        wait_until(lambda: all(text in terminal.getvalue() for text in shown), 30)
    view.stop()
    drawn = terminal.getvalue()
    for text in shown:
        assert text in drawn, text

    log = io.StringIO()
    (exp / "2a.log").write_text(OUTPUT)  # written during this wait, as a running trial's log is
    view = LiveView(exp, log, plain_every_s=0.3).start()
    with watching({"2a": exp / "2a.log"}, "val_acc"):
        wait_until(lambda: "trial 2a (iteration 2)" in log.getvalue(), 30)
    view.stop()
    printed = log.getvalue().splitlines()
    assert "\x1b" not in log.getvalue()  # no terminal codes in a file
    assert "trial 2a (iteration 2): epoch 3/20 val_acc=0.8123, 12s trained, about 1m08s left" in printed
    assert printed[-1].startswith("best val_acc=0.95 from iteration 1 (abc1234)")


class BrokenTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError("the terminal went away")


def test_a_view_that_cannot_draw_never_disturbs_the_loop(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("autoraysearch.views.live_view.REFRESH_S", 0.1)
    exp = set_up(tmp_path / "exp", [BASELINE])
    (exp / "1.log").write_text(OUTPUT)
    view = LiveView(exp, BrokenTerminal()).start()
    started = time.monotonic()
    with watching({"1": exp / "1.log"}, "val_acc"):
        time.sleep(0.8)
    view.stop()
    assert time.monotonic() - started < 5 and not view._thread.is_alive()


def test_status_at_a_terminal_is_a_table_with_the_same_lines(tmp_path: Path, monkeypatch, capsys):
    exp = set_up(tmp_path / "exp", [BASELINE, KEEP])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["status", str(exp)]) == 0
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # without its colours
    assert "┃ iteration" in out and "features[0] Conv2d 16 -> 32 channels" in out  # rich's box, the whole description
    assert "best val_acc=0.95 from iteration 1 (abc1234)" in out
    assert "no campaign branch yet" in out and "no run is active" in out
    assert "metric val_acc (higher is better), ideator mutate" in out

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert main(["status", str(exp)]) == 0
    plain = capsys.readouterr().out
    assert "┃" not in plain and "\x1b" not in plain and "best val_acc=0.95 from iteration 1" in plain
