"""The memory of every trained candidate: its diff, its result and its log, kept after any rollback.

Git keeps only the changes that won: a discarded candidate's commit is reset away (one at a time) or
its branch deleted (parallel). The log step writes `.autoraysearch/candidates/<label>/` (diff.patch and
result.json; the training log stays in `.autoraysearch/logs/<label>.log`) so that any candidate can be
shown again with `autoraysearch show`, and the ideator can read what past changes looked like.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from autoraysearch.campaign.experiment import ExperimentPaths
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, readable_number
from autoraysearch.campaign.settings import write_atomically

MEMORY_DIR = "candidates"
DIFF_FILE = "diff.patch"
RESULT_FILE = "result.json"
# What the ideator's prompt shows: a few recent keeps and the closest misses, each diff clipped.
PROMPT_DIFFS = 6
PROMPT_KEEPS = 3
PROMPT_DIFF_LINES = 40
SHOW_LOG_LINES = 20
_TAIL_BYTES = 64 * 1024
# Iteration labels as the loop writes them: 5, 5b, 5.1; nothing that could leave the memory folder.
_LABEL = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


@dataclass(frozen=True)
class RememberedCandidate:
    """One trained candidate as the log step recorded it."""

    label: str
    status: str
    metric: float | None
    delta: float | None
    description: str
    seconds: float | None = None
    fingerprint: str = ""  # of the candidate's model.py, as in the results log's `candidate` column
    commit: str = ""  # the candidate's commit when it was known (it may no longer be reachable)
    error: str = ""
    diff: str = ""  # model.py against the best it was built on; "" when neither the loop nor git had it


def memory_dir(paths: ExperimentPaths, label: str) -> Path:
    if not _LABEL.match(label) or ".." in label:
        raise ValueError(f"not an iteration label: {label!r}")
    return paths.state_dir / MEMORY_DIR / label


def model_diff(base_source: str, candidate_source: str, name: str = "model.py") -> str:
    """A unified diff of model.py, as `git diff` would print it (no header line)."""
    lines = difflib.unified_diff(
        base_source.splitlines(), candidate_source.splitlines(), fromfile=f"a/{name}", tofile=f"b/{name}", lineterm=""
    )
    text = "\n".join(lines)
    return text + "\n" if text else ""


def remember(paths: ExperimentPaths, candidate: RememberedCandidate) -> Path:
    """Write the candidate's folder: diff.patch (when known) and result.json; each file whole or not at all."""
    folder = memory_dir(paths, candidate.label)
    folder.mkdir(parents=True, exist_ok=True)
    if candidate.diff:
        write_atomically(folder / DIFF_FILE, candidate.diff)
    else:
        (folder / DIFF_FILE).unlink(missing_ok=True)  # an earlier campaign's candidate with the same label
    record = {k: v for k, v in asdict(candidate).items() if k != "diff"}
    write_atomically(folder / RESULT_FILE, json.dumps(record, indent=1) + "\n")
    return folder


def recall(paths: ExperimentPaths, label: str) -> RememberedCandidate | None:
    """The remembered candidate with this label, or None when it has no (readable) record."""
    try:
        folder = memory_dir(paths, label)
        record = json.loads((folder / RESULT_FILE).read_text())
        fields = {k: record[k] for k in RememberedCandidate.__dataclass_fields__ if k in record and k != "diff"}
        diff_path = folder / DIFF_FILE
        return RememberedCandidate(**fields, diff=diff_path.read_text() if diff_path.exists() else "")
    except (ValueError, TypeError, OSError):
        return None


def recall_for_row(paths: ExperimentPaths, row: ResultRow) -> RememberedCandidate | None:
    """The memory of this results-log row; not one an earlier campaign left under the same label."""
    remembered = recall(paths, row.iteration)
    if remembered is None:
        return None
    wanted = row.extra.get("candidate", "")
    return remembered if not wanted or not remembered.fingerprint or wanted == remembered.fingerprint else None


# ---- what the ideator reads ----

def clip_diff(diff: str, max_lines: int = PROMPT_DIFF_LINES) -> str:
    """The diff in at most max_lines lines, the last saying how many were left out."""
    lines = diff.rstrip("\n").splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    kept = lines[: max_lines - 1]
    return "\n".join(kept + [f"... ({len(lines) - len(kept)} more lines)"])


def informative_diffs(
    paths: ExperimentPaths, log: ResultsLog, limit: int = PROMPT_DIFFS, keeps: int = PROMPT_KEEPS,
    max_lines: int = PROMPT_DIFF_LINES,
) -> tuple[tuple[str, str], ...]:
    """(summary, diff) of the most telling past changes, oldest first: the last keeps and the closest misses."""
    rows = [r for r in log.rows if r.readable]
    order = {id(r): n for n, r in enumerate(rows)}
    chosen: list[tuple[ResultRow, RememberedCandidate]] = []

    def take(candidates: list[ResultRow], wanted: int) -> None:
        taken = 0
        for row in candidates:
            if taken >= wanted:
                return
            remembered = recall_for_row(paths, row)
            if remembered is not None and remembered.diff.strip():
                chosen.append((row, remembered))
                taken += 1

    take([r for r in reversed(rows) if r.status == "keep"], min(keeps, limit))
    misses = [r for r in rows if r.status == "discard" and r.delta is not None]
    take(sorted(misses, key=lambda r: (abs(r.delta), -order[id(r)])), limit - len(chosen))
    chosen.sort(key=lambda pair: order[id(pair[0])])
    return tuple((summary_line(row), clip_diff(remembered.diff, max_lines)) for row, remembered in chosen)


def summary_line(row: ResultRow) -> str:
    metric = readable_number(row.metric)
    delta = f" (delta {readable_number(row.delta, signed=True)})" if row.delta is not None else ""
    return f"{row.iteration} {row.status} {metric}{delta}: {row.description}"


# ---- what `autoraysearch show` prints ----

def show_candidate(paths: ExperimentPaths, log: ResultsLog, label: str, metric: str,
                   log_lines: int = SHOW_LOG_LINES) -> str | None:
    """A candidate's description, verdict, metric, diff and log tail; None when the label is unknown."""
    row = next((r for r in log.rows if r.iteration == label), None)
    remembered = recall_for_row(paths, row) if row is not None else recall(paths, label)
    if row is None and remembered is None:
        return None
    status = row.status if row is not None else remembered.status
    description = row.description if row is not None else remembered.description
    value = row.metric if row is not None else remembered.metric
    delta = row.delta if row is not None else remembered.delta
    lines = [f"{label} {status}: {description}"]
    result = f"{metric}={readable_number(value)}"
    if delta is not None:
        result += f" (delta {readable_number(delta, signed=True)} against the best it was tried on)"
    seconds = row.extra.get("seconds") if row is not None else remembered.seconds
    if seconds not in (None, ""):
        result += f", trained in {seconds} s"
    lines.append(result)
    if row is not None and row.commit not in ("-", ""):
        lines.append(f"commit {row.commit}")
    lines.append("")
    if status == "baseline":
        lines.append("the baseline: no change to show.")
    elif remembered is not None and remembered.diff:
        lines.append("diff of model.py against the best it was built on:")
        lines.append(remembered.diff.rstrip("\n"))
    elif remembered is None and row is not None and row.status == "keep":
        lines.append(f"no diff was recorded for {label}; it is kept, so `git show {row.commit}` has it.")
    else:
        lines.append(f"no diff was recorded for {label}.")
    trial_log = paths.trial_log(label)
    if trial_log.exists():
        lines += ["", f"last {log_lines} lines of {trial_log}:", log_tail(trial_log, log_lines).rstrip("\n")]
    else:
        lines += ["", f"no training log for {label} ({trial_log} does not exist)."]
    return "\n".join(lines)


def log_tail(path: Path, count: int) -> str:
    """The last `count` lines of a (possibly large) log, read from its end."""
    with path.open("rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - _TAIL_BYTES))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-count:])


def known_labels(paths: ExperimentPaths, log: ResultsLog) -> list[str]:
    labels = [r.iteration for r in log.rows]
    folder = paths.state_dir / MEMORY_DIR
    if folder.is_dir():
        labels += sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in labels)
    return labels


def nearest_labels(label: str, labels: list[str], count: int = 3) -> list[str]:
    """The labels closest to a mistyped one: by iteration number when it has one, else by spelling."""
    number = _leading_number(label)
    if number is None:
        return difflib.get_close_matches(label, labels, n=count, cutoff=0.0)
    numbered = [l for l in labels if _leading_number(l) is not None]
    return sorted(numbered, key=lambda l: (abs(_leading_number(l) - number), l))[:count]


def _leading_number(label: str) -> int | None:
    match = re.match(r"\d+", label)
    return int(match.group()) if match else None
