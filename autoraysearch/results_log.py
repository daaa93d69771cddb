"""The results log: a tab-separated record of every experiment of a campaign."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoraysearch.errors import AutoraysearchError
from autoraysearch.settings import write_atomically

COLUMNS = ("iteration", "commit", "metric", "delta", "status", "description")
EXTRA_COLUMNS = ("candidate", "seconds", "node", "tokens")
# Statuses whose metric counts towards the best so far.
BEST_STATUSES = ("baseline", "keep")


@dataclass(frozen=True)
class ResultRow:
    """One experiment: its iteration label, commit, metric, change against the best, and verdict."""

    iteration: str
    commit: str
    metric: float | None
    delta: float | None
    status: str
    description: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultsLog:
    """All rows of a campaign and the direction its metric improves in."""

    higher_is_better: bool
    rows: tuple[ResultRow, ...] = ()

    def with_row(self, row: ResultRow) -> "ResultsLog":
        return replace(self, rows=self.rows + (row,))

    @property
    def baseline(self) -> ResultRow | None:
        return next((r for r in self.rows if r.status == "baseline"), None)

    def best(self) -> ResultRow | None:
        """The baseline or kept row with the best metric."""
        scored = [r for r in self.rows if r.status in BEST_STATUSES and r.metric is not None]
        if not scored:
            return None
        pick = max if self.higher_is_better else min
        return pick(scored, key=lambda r: r.metric)

    def next_iteration(self) -> int:
        """The number the next iteration gets: one more than the highest so far."""
        numbers = [int(m.group()) for r in self.rows if (m := re.match(r"\d+", r.iteration))]
        return max(numbers, default=-1) + 1

    def tried_candidates(self) -> set[str]:
        return {r.extra["candidate"] for r in self.rows if r.extra.get("candidate")}


def clean_text(text: str) -> str:
    """A description that cannot break the format: no tabs or line breaks, no runs of spaces."""
    return " ".join(text.split())


def format_number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    text = f"{value:+.6g}" if signed else f"{value:.6g}"
    return text


def format_log(log: ResultsLog) -> str:
    """The whole file's text."""
    direction = "higher_is_better" if log.higher_is_better else "lower_is_better"
    lines = [f"# metric_direction: {direction}", "\t".join(COLUMNS + EXTRA_COLUMNS)]
    for row in log.rows:
        cells = [
            clean_text(row.iteration),
            clean_text(row.commit) or "-",
            format_number(row.metric),
            "0.0" if row.status == "baseline" else format_number(row.delta, signed=True),
            clean_text(row.status),
            clean_text(row.description),
        ] + [clean_text(row.extra.get(name, "")) for name in EXTRA_COLUMNS]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def parse_log(text: str, source: str = "results log") -> ResultsLog:
    """Read a results log's text, tolerating extra columns after the six of the format."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# metric_direction:"):
        raise AutoraysearchError(
            f"{source} does not start with '# metric_direction: ...'; restore it or move it away."
        )
    direction = lines[0].split(":", 1)[1].strip()
    if direction not in ("higher_is_better", "lower_is_better"):
        raise AutoraysearchError(f"{source} names an unknown metric direction {direction!r}.")
    header = lines[1].split("\t") if len(lines) > 1 else list(COLUMNS)
    if tuple(header[: len(COLUMNS)]) != COLUMNS:
        raise AutoraysearchError(f"{source} has an unexpected header; it must start with {' '.join(COLUMNS)}.")
    rows = []
    for number, line in enumerate(lines[2:], start=3):
        cells = line.split("\t")
        if len(cells) < len(COLUMNS):
            raise AutoraysearchError(f"{source} line {number} has {len(cells)} columns, expected at least 6.")
        values = dict(zip(header, cells))
        rows.append(
            ResultRow(
                iteration=values["iteration"],
                commit=values["commit"],
                metric=_parse_number(values["metric"]),
                delta=_parse_number(values["delta"]),
                status=values["status"],
                description=values["description"],
                extra={k: v for k, v in values.items() if k not in COLUMNS and v},
            )
        )
    return ResultsLog(higher_is_better=direction == "higher_is_better", rows=tuple(rows))


def _parse_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_results_log(path: Path, higher_is_better: bool) -> ResultsLog:
    """The log at path, or an empty one when the campaign has no results yet."""
    if not path.exists():
        return ResultsLog(higher_is_better=higher_is_better)
    log = parse_log(path.read_text(), source=str(path))
    if log.higher_is_better != higher_is_better:
        raise AutoraysearchError(
            f"{path} was written for the opposite metric direction; "
            "move it away or set `direction` in autoraysearch.toml to match."
        )
    return log


def append_result(path: Path, row: ResultRow, higher_is_better: bool) -> ResultsLog:
    """Add one row, rewriting the file atomically so it is never half-written."""
    log = read_results_log(path, higher_is_better).with_row(row)
    write_atomically(path, format_log(log))
    return log
