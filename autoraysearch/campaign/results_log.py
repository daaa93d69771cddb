"""The results log: a tab-separated record of every experiment of a campaign."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.settings import write_atomically

COLUMNS = ("iteration", "commit", "metric", "delta", "status", "description")
# seeds/std/runs: how many seeds the metric (their mean) is over, their spread and each seed's value.
# node: the host that trained it; node_id: its Ray node, for `ray` commands.
# needed: the delta a keep needed against the best when it was judged (the reason beside `delta`).
# diffs/gain/interval: the paired comparison with the best (per-seed gains, their mean, its 90 % half width).
# chance: the chance that it truly gains, as the keep rule put it (a keep's spends the campaign's false-keep budget).
# at: on a best-seeds row, the number (from 1) of the campaign's seed its first run is at.
# ahead: on the baseline or a confirmed row, its values at the next path confirmation's seeds (campaign.path),
# trained ahead and held out of every decision until then.
# start_up/per_seed: on the baseline, what one of its runs took to start, and each seed to train and evaluate
# (medians over setup's first runs, where train.py's judge timed its seeds): what a run of k seeds costs.
EXTRA_COLUMNS = ("candidate", "seconds", "node", "tokens", "seeds", "std", "runs", "node_id", "needed", "diffs", "gain",
                 "interval", "chance", "at", "ahead", "start_up", "per_seed")
NODE_ID_CHARS = 8  # enough to tell nodes apart; `ray list nodes` matches on a prefix


def node_columns(host: str | None, node_id: str | None) -> dict[str, str]:
    """The node/node_id cells of a row: where its trial trained."""
    return {"node": host or "", "node_id": (node_id or "")[:NODE_ID_CHARS]}


def timing_columns(timing: tuple[float, float] | None) -> dict[str, str]:
    """The start_up/per_seed cells of the baseline's row: (start-up, seconds per seed), or nothing unmeasured."""
    if timing is None:
        return {}
    return {"start_up": f"{timing[0]:.4g}", "per_seed": f"{timing[1]:.4g}"}  # a tiny model's seed takes a millisecond


def run_timing(row: ResultRow | None) -> tuple[float, float] | None:
    """What the row says one of its runs took to start and each seed to train (timing_columns); None where it does not."""
    if row is None:
        return None
    try:
        start_up, per_seed = float(row.extra.get("start_up", "")), float(row.extra.get("per_seed", ""))
    except ValueError:
        return None
    if not (math.isfinite(start_up) and math.isfinite(per_seed)) or min(start_up, per_seed) < 0 or start_up + per_seed <= 0:
        return None
    return start_up, per_seed


# Statuses whose metric counts towards the best so far.
BEST_STATUSES = ("baseline", "keep")
# The best trained at paired seeds it lacked, for a comparison: its `runs` extend the best's row from seed
# number `at` on, so no later comparison trains them again. Not an experiment.
BEST_SEEDS = "best-seeds"
# A path confirmation's verdict (campaign.path): the best against the last point that held. Not an experiment.
PATH_STATUSES = ("confirmed", "rollback")
# Terminal escape sequences: CSI (colours, cursor moves), OSC (titles, links) and two-character escapes.
# Bidirectional overrides make a terminal show text in another order than it is stored.
_BIDI_CONTROLS = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


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
    # The line as read, for a hand-edited row whose metric or delta cannot be read: it is written back
    # exactly as it was (never "corrected" to '-') and takes no part in decisions.
    raw: str | None = None

    @property
    def readable(self) -> bool:
        return self.raw is None


@dataclass(frozen=True)
class ResultsLog:
    """All rows of a campaign and the direction its metric improves in."""

    higher_is_better: bool
    rows: tuple[ResultRow, ...] = ()

    def with_row(self, row: ResultRow) -> "ResultsLog":
        return replace(self, rows=self.rows + (row,))

    @property
    def baseline(self) -> ResultRow | None:
        return next((r for r in self.rows if r.status == "baseline" and r.readable), None)

    def best(self) -> ResultRow | None:
        """The latest keep (else the baseline): each keep beat the best before it at the same seeds.

        Not the highest mean: two means over different seeds can rank the other way round. A `rollback`
        row (the path did not hold on fresh seeds) moves it back to the point it names.
        """
        best = None
        for row in self.rows:
            if row.status in BEST_STATUSES and row.metric is not None and row.readable:
                best = row
            elif row.status == "rollback":  # back to the keep it names, or to the baseline
                best = next((r for r in self.rows if r.status == "keep" and r.commit == row.commit), self.baseline)
        return best

    def experiments(self) -> list[ResultRow]:
        """The rows that tried a candidate: not the baseline, a path confirmation or the best's further seeds."""
        return [r for r in self.rows if r.status not in ("baseline", BEST_SEEDS, *PATH_STATUSES)]

    def next_iteration(self) -> int:
        """The number the next iteration gets: one more than the highest so far."""
        numbers = [int(m.group()) for r in self.rows if (m := re.match(r"\d+", r.iteration))]
        return max(numbers, default=-1) + 1

    def tried_candidates(self) -> set[str]:
        return {r.extra["candidate"] for r in self.rows if r.extra.get("candidate")}


def clean_text(text: str) -> str:
    """Text that cannot break the format or the terminal: no escape sequences, control characters or runs of spaces.

    Descriptions come from LLMs and from model code's errors; an escape sequence in one would recolour
    or rewrite the reader's terminal each time the log is shown.
    """
    text = _ANSI_ESCAPE.sub("", text)
    text = "".join(" " if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS else ch for ch in text)
    return " ".join(text.split())


def terminal_text(text: str) -> str:
    """Lines of text (a trial's output, a diff) safe to show in a terminal: no escape sequences or controls but newlines and tabs."""
    text = _ANSI_ESCAPE.sub("", text)
    return "".join(
        ch if ch in "\n\t" or (unicodedata.category(ch) != "Cc" and ch not in _BIDI_CONTROLS) else "?" for ch in text
    )


def format_number(value: float | None, signed: bool = False) -> str:
    """A number as the results log stores it: full precision (the float's repr), so reading it back loses nothing."""
    if value is None:
        return "-"
    text = repr(float(value))
    return f"+{text}" if signed and not text.startswith("-") else text


def readable_number(value: float | None, signed: bool = False) -> str:
    """A number as people read it outside the results log: 4 significant digits, as the views show them."""
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def format_log(log: ResultsLog) -> str:
    """The whole file's text."""
    direction = "higher_is_better" if log.higher_is_better else "lower_is_better"
    lines = [f"# metric_direction: {direction}", "\t".join(COLUMNS + EXTRA_COLUMNS)]
    for row in log.rows:
        if row.raw is not None:
            lines.append(row.raw)
            continue
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
        metric, delta = _parse_number(values["metric"]), _parse_number(values["delta"])
        unreadable = metric is _UNREADABLE or delta is _UNREADABLE
        rows.append(
            ResultRow(
                iteration=values["iteration"],
                commit=values["commit"],
                metric=None if unreadable else metric,
                delta=None if unreadable else delta,
                status=values["status"],
                description=values["description"],
                extra={k: v for k, v in values.items() if k not in COLUMNS and v},
                raw=line if unreadable else None,
            )
        )
    return ResultsLog(higher_is_better=direction == "higher_is_better", rows=tuple(rows))


_UNREADABLE = object()


def _parse_number(cell: str) -> float | None | object:
    """A finite number, None for an empty cell ('-'), or _UNREADABLE for anything else."""
    if cell.strip() in ("", "-"):
        return None
    try:
        value = float(cell)
    except ValueError:
        return _UNREADABLE
    return value if math.isfinite(value) else _UNREADABLE


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
