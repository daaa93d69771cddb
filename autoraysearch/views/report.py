"""Plain-text views of a campaign for the terminal."""

from __future__ import annotations

from autoraysearch.campaign.noise import bar_from_log
from autoraysearch.campaign.results_log import ResultsLog
from autoraysearch.views.step_logs import beyond, fmt

DESCRIPTION_WIDTH = 120  # the last column: a longer one wraps at the terminal's edge, and its reason is kept
HEADER = ("iteration", "commit", "metric", "delta", "needed", "status", "description")


def needed_cell(text: str) -> str:
    """The results log's `needed` cell as people read it: `> +0.0518`; empty when nothing was needed."""
    try:
        return beyond(float(text))
    except ValueError:
        return ""


def format_table(log: ResultsLog, last: int | None = None) -> str:
    """The results log as an aligned table, newest rows last; each delta beside the one a keep needed."""
    from autoraysearch.views.artifacts import short

    rows = log.rows[-last:] if last else log.rows
    cells = [list(HEADER)] + [
        [
            r.iteration,
            r.commit,
            fmt(r.metric).replace("—", "-"),
            "0" if r.status == "baseline" else fmt(r.delta, signed=True).replace("—", "-"),
            needed_cell(r.extra.get("needed", "")),
            r.status,
            short(r.description, DESCRIPTION_WIDTH),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if last and len(log.rows) > last:
        lines.insert(1, f"... {len(log.rows) - last} earlier rows in the results log")
    return "\n".join(lines)


def best_line(log: ResultsLog, metric: str, settings=None) -> str:
    """The best, how many kept, the noise and what the next keep needs (as the next decision sees them: `settings`'
    minimum gain and seeds_in_one_run, when given)."""
    best = log.best()
    if best is None:
        return "no baseline yet"
    where = "the baseline" if best.status == "baseline" else f"iteration {best.iteration} ({best.commit})"
    kept = sum(r.status == "keep" for r in log.rows)
    experiments = len(log.experiments())
    bar = bar_from_log(log, settings.min_delta, settings.seeds_together) if settings else bar_from_log(log)
    learned = f"; {bar.prior.describe()}" if bar.prior.screens else ""
    confidence = f"; the next keep needs a {bar.keep_confidence:.0%} chance of a true gain" if kept and bar.measured else ""
    return (f"best {metric}={fmt(best.metric)} from {where}; {kept} kept of {experiments} "
            f"experiment{'s' * (experiments != 1)}; {bar.noise.describe()}{learned}{confidence}")
