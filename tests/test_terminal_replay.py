"""A campaign's terminal, replayed through a terminal emulator: the live table never eats a log line."""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import pyte

from autoraysearch.views.live_view import LiveView, watching
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log
from autoraysearch.campaign.settings import CampaignSettings, dump_settings
from helpers import EXAMPLE_MODEL, make_repo, wait_until

COLUMNS, ROWS = 100, 30


class Terminal(io.StringIO):
    """What a terminal receives, byte for byte, to be replayed in pyte."""

    def isatty(self) -> bool:
        return True


def screen_text(recorded: str) -> list[str]:
    """Every line the user can still read: the screen and what scrolled off its top."""
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
    pyte.Stream(screen).feed(recorded.replace("\n", "\r\n"))  # a tty's output translates \n to \r\n
    scrolled = ["".join(line[x].data for x in range(COLUMNS)).rstrip() for line in screen.history.top]
    return scrolled + [line.rstrip() for line in screen.display]


def experiment(path: Path) -> Path:
    make_repo(path, {"model.py": EXAMPLE_MODEL.read_text(), "train.py": "print('val_acc=0.5')\n",
                     "autoraysearch.toml": dump_settings(CampaignSettings(generated=False))})
    rows = (ResultRow("0", "baseline", 0.5, 0.0, "baseline", "initial state"),
            ResultRow("1", "abc1234", 0.95, 0.45, "keep", "features[0] Conv2d 16 -> 32 channels"))
    (path / "autoraysearch-results.tsv").write_text(format_log(ResultsLog(True, rows)))
    return path


def test_every_log_line_survives_the_live_tables_redraws(tmp_path: Path, monkeypatch):
    from prefect.logging.handlers import PrefectConsoleHandler

    monkeypatch.setenv("COLUMNS", str(COLUMNS))
    monkeypatch.setenv("LINES", str(ROWS))
    monkeypatch.setattr("autoraysearch.views.live_view.REFRESH_S", 0.05)
    exp = experiment(tmp_path / "exp")
    terminal = Terminal()
    # Prefect's own console handler, writing to the same terminal as the table, as in `autoraysearch run`.
    handler = PrefectConsoleHandler(stream=terminal)
    handler.setFormatter(logging.Formatter("%(asctime)s | INFO | %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("autoraysearch.replay")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lines = []
    view = LiveView(exp, terminal).start()
    try:
        for iteration in (2, 3, 4):
            trial_log = exp / f"{iteration}.log"
            trial_log.write_text("")
            with watching({str(iteration): trial_log}, "val_acc"):
                assert wait_until(lambda: f"iteration {iteration}: 1 trial running" in terminal.getvalue(), 20)
                for epoch in range(1, 4):
                    with open(trial_log, "a") as out:
                        out.write(f"epoch={epoch}/3 val_acc=0.{epoch}{iteration} elapsed_s={epoch * 2}.0\n")
                    lines.append(f"{iteration}-{epoch} verify-{iteration}: epoch={epoch}/3 val_acc=0.{epoch}{iteration}")
                    logger.info(lines[-1])
                    time.sleep(0.15)  # the table is redrawn between the lines
                lines.append(f"{iteration} pruned val_acc=— (pruned at epoch 1/3: val_acc=0.13, the best had 0.8 there)")
                logger.info(lines[-1])
                time.sleep(0.15)
            lines.append(f"iteration {iteration}: pruned; best val_acc=0.95 at abc1234")
            logger.info(lines[-1])
            time.sleep(0.15)
    finally:
        view.stop()
        logger.removeHandler(handler)
    lines.append("stopping: reached 3 iterations; best val_acc=0.95 at abc1234")
    logger.addHandler(handler)
    logger.info(lines[-1])
    logger.removeHandler(handler)

    shown = screen_text(terminal.getvalue())
    for line in lines:
        assert sum(line in row for row in shown) == 1, f"{line!r} is not on the screen once:\n" + "\n".join(shown)
    # The table went away with the trials: nothing of it is left above or below the log lines.
    assert not any("trial running" in row or "┃" in row or "┏" in row for row in shown), "\n".join(shown)
    assert [row for row in shown if row][-1].endswith(lines[-1])  # the last thing on the screen is the last line
