"""Plain-text views of a campaign for the terminal."""

from __future__ import annotations

from autoraysearch.campaign.noise import campaign_noise
from autoraysearch.campaign.results_log import COLUMNS, ResultsLog, format_number

DESCRIPTION_WIDTH = 70


def format_table(log: ResultsLog, last: int | None = None) -> str:
    """The results log as an aligned table, newest rows last."""
    rows = log.rows[-last:] if last else log.rows
    cells = [list(COLUMNS)] + [
        [
            r.iteration,
            r.commit,
            format_number(r.metric),
            "0.0" if r.status == "baseline" else format_number(r.delta, signed=True),
            r.status,
            _shorten(r.description),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if last and len(log.rows) > last:
        lines.insert(1, f"... {len(log.rows) - last} earlier rows in the results log")
    return "\n".join(lines)


def _shorten(text: str) -> str:
    return text if len(text) <= DESCRIPTION_WIDTH else text[: DESCRIPTION_WIDTH - 1] + "…"


def best_line(log: ResultsLog, metric: str) -> str:
    best = log.best()
    if best is None:
        return "no baseline yet"
    where = "the baseline" if best.status == "baseline" else f"iteration {best.iteration} ({best.commit})"
    kept = sum(r.status == "keep" for r in log.rows)
    experiments = sum(r.status != "baseline" for r in log.rows)
    noise = campaign_noise(log.rows)
    return (f"best {metric}={format_number(best.metric)} from {where}; {kept} kept of {experiments} experiments; "
            f"{noise.describe()}")
