"""What `autoraysearch run` shows while trials train: each trial's epoch, metric, time spent and left.

The loop says which trials it is waiting for (`watching`); a `LiveView` thread in the CLI reads their
progress lines (`epoch=3/20 train_loss=0.41 val_acc=0.8123 elapsed_s=12.0`) from the logs on this
machine and redraws a table (rich) at a terminal, or prints plain lines every 30 s elsewhere. The view
never touches the loop: the loop only sets which trials run, and a view that fails to draw is silent.

The table shares the terminal with the campaign's log lines: while it is drawn, every log handler
writing to that terminal writes through the table's console, which prints each line above the table
instead of letting the next redraw overwrite it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

from autoraysearch.campaign.pruning import parse_progress

REFRESH_S = 1.0  # how often a terminal's table is redrawn
PLAIN_EVERY_S = 30.0  # how often plain lines are printed when stdout is not a terminal
TAIL_BYTES = 16_384  # the end of a log that is read for its last progress line
_ELAPSED = re.compile(r"(?:^|\s)elapsed_s=(\d+(?:\.\d*)?)(?:\s|$)")


@dataclass(frozen=True)
class TrialProgress:
    """A trial's latest progress line: epoch k of N (N None with a time budget), the metric, seconds trained."""

    epoch: int
    epochs: int | None
    value: float
    elapsed_s: float | None

    def seconds_left(self) -> float | None:
        """The seconds its remaining epochs take at the pace so far; None when N or the time is unknown."""
        if self.epochs is None or self.elapsed_s is None:
            return None
        return max(0.0, self.elapsed_s * (self.epochs - self.epoch) / self.epoch)


def read_progress(text: str, metric: str) -> TrialProgress | None:
    """The last progress line of a trial's output; None before its first epoch ends."""
    for line in reversed(text.splitlines()):
        point = parse_progress(line, metric)
        if point is None:
            continue
        elapsed = _ELAPSED.search(line)
        return TrialProgress(point.epoch, point.epochs, point.value, float(elapsed.group(1)) if elapsed else None)
    return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# ---- what the loop is waiting for ----


@dataclass(frozen=True)
class Watch:
    """The trials the loop waits for: label -> log file on this machine (None: none here), since when."""

    logs: dict[str, Path | None]
    metric: str
    started: float  # time.monotonic()
    since: float  # time.time(): a log not written since is an earlier run's


_watch: Watch | None = None


@contextmanager
def watching(logs: dict[str, Path | None], metric: str) -> Iterator[None]:
    """Tell any live view that these trials are running, for as long as the block lasts."""
    global _watch
    _watch = Watch(dict(logs), metric, time.monotonic(), time.time())
    try:
        yield
    finally:
        _watch = None


def watching_trials(trials: dict) -> AbstractContextManager[None]:
    """`watching` for the loop's `Trial`s: their log files, and the metric they report."""
    metric = next(iter(trials.values())).metric if trials else ""
    return watching({label: Path(t.log_path) if t.log_path else None for label, t in trials.items()}, metric)


def current_watch() -> Watch | None:
    return _watch


# ---- one view of the trials ----


@dataclass(frozen=True)
class TrialRow:
    label: str
    progress: TrialProgress | None
    waited_s: float  # since the loop started waiting for it


def trial_rows(watch: Watch, now: float) -> list[TrialRow]:
    """Each watched trial with its latest progress (None: no line yet, or its log is on another machine)."""
    return [TrialRow(label, _progress_in(path, watch), now - watch.started) for label, path in watch.logs.items()]


def _progress_in(path: Path | None, watch: Watch) -> TrialProgress | None:
    if path is None:
        return None
    try:
        if path.stat().st_mtime < watch.since - 1:
            return None
        with open(path, "rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - TAIL_BYTES))
            return read_progress(log.read().decode("utf-8", "replace"), watch.metric)
    except OSError:
        return None


def iteration_of(label: str) -> str:
    """The iteration a trial label belongs to: 5 for 5, 5a and 5a-seed2."""
    match = re.match(r"\d+", label)
    return match.group(0) if match else label


def plain_lines(rows: list[TrialRow], metric: str, best: str) -> list[str]:
    """The view as plain text, one line per trial and the best so far."""
    lines = []
    for row in rows:
        p = row.progress
        if p is None:
            lines.append(f"trial {row.label} (iteration {iteration_of(row.label)}): running {format_seconds(row.waited_s)}, "
                         "no epoch finished yet")
            continue
        of = f"/{p.epochs}" if p.epochs else ""
        lines.append(f"trial {row.label} (iteration {iteration_of(row.label)}): epoch {p.epoch}{of} "
                     f"{metric}={p.value:.4f}, {format_seconds(p.elapsed_s)} trained, "
                     f"about {format_seconds(p.seconds_left())} left")
    lines.append(best)
    return lines


def rich_table(rows: list[TrialRow], metric: str, best: str):
    """The trials as a table, then the best line under it (a whole line: a caption would wrap to the table's width)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    iterations = sorted({iteration_of(r.label) for r in rows}, key=lambda i: (len(i), i))
    table = Table(title=f"iteration {', '.join(iterations)}: {len(rows)} trial{'s' * (len(rows) != 1)} running",
                  title_justify="left")
    for name, justify in (("trial", "left"), ("epoch", "right"), (metric, "right"), ("elapsed", "right"),
                          ("left", "right")):
        table.add_column(name, justify=justify)
    for row in rows:
        # elapsed is the time since the loop started waiting, whether or not an epoch ended: it never jumps back.
        p = row.progress
        if p is None:
            table.add_row(row.label, "-", "-", format_seconds(row.waited_s), "?")
        else:
            table.add_row(row.label, f"{p.epoch}/{p.epochs}" if p.epochs else str(p.epoch), f"{p.value:.4f}",
                          format_seconds(row.waited_s), format_seconds(p.seconds_left()))
    return Group(table, Text(best, no_wrap=False))


# ---- the thread that draws it ----


class LiveView:
    """Draws the watched trials while a campaign runs; start() and stop() around the loop."""

    def __init__(self, experiment_dir: Path, stream: TextIO | None = None, plain_every_s: float = PLAIN_EVERY_S):
        self.experiment_dir = Path(experiment_dir)
        self.stream = stream or sys.stdout
        self.plain_every_s = plain_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoraysearch-live-view", daemon=True)
        self._live = None
        self._rerouted: list[_Rerouted] = []

    def start(self) -> LiveView:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._close_live()

    def _run(self) -> None:
        terminal = _is_terminal(self.stream)
        last_plain = None
        while not self._stop.wait(REFRESH_S):
            try:
                watch = current_watch()
                if watch is None:
                    self._close_live()
                    last_plain = None
                    continue
                rows = trial_rows(watch, time.monotonic())
                best = self._best_line(watch.metric)
                if terminal:
                    self._draw(rich_table(rows, watch.metric, best))
                elif last_plain is None:
                    last_plain = time.monotonic()  # the first lines only after a while: short trials stay quiet
                elif time.monotonic() - last_plain >= self.plain_every_s:
                    last_plain = time.monotonic()
                    print("\n".join(plain_lines(rows, watch.metric, best)), file=self.stream, flush=True)
            except Exception:  # the view must never disturb the campaign
                pass

    def _draw(self, table) -> None:
        if self._live is None:
            from rich.console import Console
            from rich.live import Live

            ours = self.stream is sys.stdout  # print() goes above the table too, but only on our own stdout
            live = Live(table, console=Console(file=self.stream), refresh_per_second=2, transient=True,
                        redirect_stdout=ours, redirect_stderr=ours and _same_terminal(sys.stderr, self.stream))
            self._rerouted = reroute_log_handlers(live.console, self.stream)  # before the first draw
            live.start()
            self._live = live
        else:
            self._live.update(table)

    def _close_live(self) -> None:
        live, self._live = self._live, None
        rerouted, self._rerouted = self._rerouted, []
        restore_log_handlers(rerouted)  # first: a line logged from now on goes straight to the terminal
        if live is not None:
            try:
                live.stop()
            except Exception:
                pass

    def _best_line(self, metric: str) -> str:
        from autoraysearch.views.report import best_line
        from autoraysearch.campaign.results_log import read_results_log
        from autoraysearch.campaign.settings import RESULTS_FILE, load_settings

        try:
            settings = load_settings(self.experiment_dir)
            return best_line(read_results_log(self.experiment_dir / RESULTS_FILE, settings.higher_is_better), metric,
                             settings)
        except Exception:
            return "best: not readable yet"


# ---- log lines above the table ----


@dataclass
class _Rerouted:
    """A log handler writing through the table's console, and the stream it wrote to before."""

    handler: logging.StreamHandler
    stream: TextIO
    proxy: TextIO


def terminal_log_handlers(terminal: TextIO) -> list[logging.StreamHandler]:
    """The log handlers of this process that write to the same terminal as `terminal`."""
    loggers = [logging.getLogger()] + [
        logger for logger in list(logging.Logger.manager.loggerDict.values()) if isinstance(logger, logging.Logger)
    ]
    found: list[logging.StreamHandler] = []
    for logger in loggers:
        for handler in list(logger.handlers):
            if (isinstance(handler, logging.StreamHandler) and handler not in found
                    and _same_terminal(handler.stream, terminal)):
                found.append(handler)
    return found


class AboveTable(io.TextIOBase):
    """A stream whose whole lines the live table's console prints above the table (colours kept)."""

    def __init__(self, console, terminal: TextIO):
        super().__init__()
        self._console = console
        self._terminal = terminal
        self._partial = ""

    def write(self, text: str) -> int:
        from rich.text import Text

        *lines, self._partial = (self._partial + text).split("\n")
        if lines:
            self._console.print(Text("\n").join(Text.from_ansi(line) for line in lines), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self.write("\n")

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._terminal.fileno()


def reroute_log_handlers(console, terminal: TextIO) -> list[_Rerouted]:
    """Make the terminal's log handlers print through `console`, whose live table then stays below their lines."""
    rerouted = []
    for handler in terminal_log_handlers(terminal):
        proxy = AboveTable(console, handler.stream)
        rerouted.append(_Rerouted(handler, handler.stream, proxy))
        _set_stream(handler, proxy)
    return rerouted


def restore_log_handlers(rerouted: list[_Rerouted]) -> None:
    for entry in rerouted:
        try:
            _set_stream(entry.handler, entry.stream)
            entry.proxy.flush()  # a line still without its newline
        except Exception:
            pass


def _set_stream(handler: logging.StreamHandler, stream: TextIO) -> None:
    """Point the handler (and a rich handler's own console, as Prefect's has) at stream, between two records."""
    handler.acquire()
    try:
        handler.stream = stream
        console = getattr(handler, "console", None)
        if console is not None and hasattr(console, "file"):
            console.file = stream
    finally:
        handler.release()


def _same_terminal(stream: TextIO | None, terminal: TextIO) -> bool:
    """Whether stream shows on the terminal: the same object, or a file descriptor on the same tty device."""
    if stream is None or not _is_terminal(stream):
        return False
    if stream is terminal:
        return True
    try:
        return os.fstat(stream.fileno()).st_rdev == os.fstat(terminal.fileno()).st_rdev
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def live_view(experiment_dir: Path, stream: TextIO | None = None) -> Iterator[LiveView]:
    view = LiveView(experiment_dir, stream).start()
    try:
        yield view
    finally:
        view.stop()
