"""`autoraysearch status` at a terminal: the results as a rich table, then the campaign's state."""

from __future__ import annotations

from typing import TextIO

from autoraysearch.views.report import best_line, needed_cell
from autoraysearch.campaign.results_log import ResultsLog
from autoraysearch.views.step_logs import fmt

STATUS_STYLES = {"keep": "green", "baseline": "cyan", "discard": "dim", "crash": "red", "timeout": "red",
                 "pruned": "yellow", "stopped": "yellow"}


def results_table(log: ResultsLog, metric: str, last: int | None = None):
    """The results log as a rich Table, newest rows last, the best row in bold."""
    from rich.table import Table

    rows = log.rows[-last:] if last else log.rows
    best = log.best()
    table = Table(title="results", title_justify="left")
    for name, justify in (("iteration", "right"), ("commit", "left"), (metric, "right"), ("delta", "right"),
                          ("needed", "right"), ("status", "left"), ("description", "left")):
        table.add_column(name, justify=justify, overflow="fold" if name == "description" else "ellipsis")
    if last and len(log.rows) > last:
        table.caption = f"{len(log.rows) - last} earlier rows in the results log"
    for row in rows:
        delta = "0" if row.status == "baseline" else fmt(row.delta, signed=True)
        status = f"[{STATUS_STYLES.get(row.status, '')}]{row.status}[/]" if row.status in STATUS_STYLES else row.status
        table.add_row(row.iteration, row.commit, fmt(row.metric), delta, needed_cell(row.extra.get("needed", "")),
                      status, row.description, style="bold" if row is best else None)
    return table


def print_status(log: ResultsLog, settings, lines: list[str], stream: TextIO) -> None:
    """The table, the best line, and each line of the campaign's state, through rich."""
    from rich.console import Console

    console = Console(file=stream, highlight=False)
    console.print(results_table(log, settings.metric))
    for line in [best_line(log, settings.metric, settings), *lines]:
        console.print(line, markup=False, soft_wrap=True)  # whole lines, as a pasted status should be
