"""What the Prefect UI shows for a campaign: the results table, progress, the best model's diff, the plot.

Keys come from the campaign (experiment folder and tag, see identity), so two experiments on one
server keep their own "latest", and set-up publishes under the keys of the campaign that follows it.
Progress is one artifact per flow run, updated in place after every iteration. The table, diff and
plot cost an API call each and the plot a render: they are looked at only when something that matters
changed (a keep, a status not seen before, the end) or every few minutes, and a new version is
published only when its content differs from the key's latest, so the shelf holds one version per
change. Every description starts with the run's name (`alpha/2026-12-04: best …`), since the UI's
lists cut descriptions short. Never fatal: a failure is a logged warning.
"""

from __future__ import annotations

import base64
import difflib
import json
import logging
import textwrap
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from autoraysearch.views.identity import artifact_key, expected_branch, run_name, tag_flow_run
from autoraysearch.views.step_logs import fmt
from autoraysearch.campaign.experiment import Campaign, ExperimentPaths
from autoraysearch.campaign.noise import campaign_noise
from autoraysearch.views.progress_plot import save_progress_plot
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.results_log import ResultsLog, read_results_log
from autoraysearch.campaign.stopping import Progress, StopConditions

RESULTS = "results"
PROGRESS = "progress"
DIFF = "best-diff"
PLOT = "plot"
PLOT_FILE = "progress.png"
REPUBLISH_S = 300.0  # the table and plot are at most this old while nothing that matters changes
DESCRIPTION_CHARS = 90  # the table's description column (its reason kept whole); the TSV keeps the whole text
REASON_CHARS = 60  # the most of a description's closing "(…)" a cut keeps
EMPTY = "—"  # never "-": a lone dash in a markdown cell renders as a list bullet
TABLE_EXTRAS = ("seeds", "std", "seconds")
NEEDED = "needed"  # the delta a keep needed, shown beside the delta
# The UI renders each table cell as markdown and never wraps one by itself: a description is broken into
# lines of this many characters, so that the table fits a 1600 px window with every column shown.
CELL_LINE_CHARS = 34


def campaign_keys(campaign: Campaign) -> dict[str, str]:
    """Kind -> artifact key of this campaign (`digits-exp-2026-11-30-3f2a-results` …)."""
    return {kind: artifact_key(campaign.experiment_dir, campaign.branch, kind) for kind in (RESULTS, PROGRESS, DIFF, PLOT)}


def plot_path(paths: ExperimentPaths) -> Path:
    """Where the progress plot is saved: in .autoraysearch/, created ignored by git if it is missing."""
    return paths.make_state_dir() / PLOT_FILE


def cell(value: float | None, signed: bool = False) -> str:
    """A number as every table of the campaign shows it: 4 significant digits, signed deltas, an em dash for none."""
    return fmt(value, signed)


def short(text: str, width: int = DESCRIPTION_CHARS) -> str:
    """text within width; a closing `(reason)` is kept and the change before it cut, since the reason is the news."""
    if len(text) <= width:
        return text
    head, paren, reason = text.rpartition(" (")
    if paren and text.endswith(")") and head and len(reason) < REASON_CHARS:
        room = width - len(reason) - 3
        if room >= 12:
            return head[: room - 1].rstrip() + "… (" + reason
    return text[: width - 1].rstrip() + "…"


def _text(value: str) -> str:
    return value if value.strip() not in ("", "-") else EMPTY


def _needed(value: str) -> str:
    """The TSV's `needed` cell as the table shows it: `> +0.0518` (or `< -0.01` for a falling metric)."""
    from autoraysearch.views.step_logs import beyond

    try:
        return beyond(float(value))
    except ValueError:
        return EMPTY


def results_table(log: ResultsLog) -> list[dict[str, str]]:
    """The results log as the UI's table: one number format, descriptions cut, no cell a lone dash."""
    return [
        {
            "iteration": r.iteration,
            "commit": _text(r.commit),
            "metric": cell(r.metric),
            "delta": EMPTY if r.status == "baseline" else cell(r.delta, signed=True),
            NEEDED: _needed(r.extra.get(NEEDED, "")),
            "status": r.status,
            "description": short(r.description),
            **{name: _text(r.extra.get(name, "")) for name in TABLE_EXTRAS},
        }
        for r in log.rows
    ]


def table_artifact(log: ResultsLog) -> list[dict[str, str]]:
    """The results table as the UI's table artifact shows it whole: descriptions on short lines, no cell a quote.

    Each cell is rendered as markdown, so a leading `>` (the `needed` cell) would draw a block quote.
    """
    def as_cell(value: str) -> str:
        return "\\" + value if value.startswith(">") else value

    return [{**{name: as_cell(value) for name, value in row.items()},
             "description": "  \n".join(textwrap.wrap(row["description"], CELL_LINE_CHARS)) or row["description"]}
            for row in results_table(log)]


def best_summary(log: ResultsLog, metric: str) -> str:
    best = log.best()
    if best is None:
        return "no baseline yet"
    where = "the baseline" if best.status == "baseline" else f"iteration {best.iteration} ({best.commit})"
    return f"best {metric}={cell(best.metric)} from {where}"


def result_headline(log: ResultsLog, metric: str) -> str:
    """`best val_acc=0.9387 (+0.086) after 5 experiments`: what a description starts with."""
    best, baseline = log.best(), log.baseline
    if best is None:
        return "no baseline yet"
    experiments = len(log.experiments())
    gain = ""
    if baseline is not None and baseline.metric is not None and best is not baseline:
        gain = f" ({cell(best.metric - baseline.metric, signed=True)})"
    return f"best {metric}={cell(best.metric)}{gain} after {experiments} experiment{'s' * (experiments != 1)}"


def campaign_description(campaign: Campaign, log: ResultsLog) -> str:
    """`alpha/2026-12-04: best val_acc=0.9387 (+0.086) after 5 experiments; noise … — /path/to/alpha`."""
    noise = campaign_noise(log.rows)
    noise_text = f"; {noise.describe()}" if noise.measured else ""
    return (f"{run_name(campaign.experiment_dir, campaign.branch)}: {result_headline(log, campaign.settings.metric)}"
            f"{noise_text} — {campaign.experiment_dir}")


def campaign_progress(
    progress: Progress | None, conditions: StopConditions | None, now: datetime, stop_reason: str | None = None
) -> tuple[float, str]:
    """(percent done, one line saying so): the stop condition nearest to holding sets the percentage."""
    conditions = conditions or StopConditions()
    done = progress.iterations if progress else 0
    parts = [f"{done} iteration{'s' if done != 1 else ''} done in this run"]
    fractions = []
    if conditions.max_iterations:
        fractions.append(done / conditions.max_iterations)
        parts[0] = f"{done} of {conditions.max_iterations} iteration{'s' * (conditions.max_iterations != 1)} done"
    if conditions.deadline is not None:
        start = progress.started if progress else now
        total = (conditions.deadline - start).total_seconds()
        fractions.append((now - start).total_seconds() / total if total > 0 else 1.0)
        parts.append(f"{_duration((conditions.deadline - now).total_seconds())} left to the deadline "
                     f"{conditions.deadline:%H:%M}")
    if conditions.max_hours and progress:
        elapsed = (now - progress.started).total_seconds()
        fractions.append(elapsed / (conditions.max_hours * 3600))
        parts.append(f"{_duration(conditions.max_hours * 3600 - elapsed)} left of {conditions.max_hours:g} hours")
    if conditions.target is not None:
        parts.append(f"stops at the target {conditions.target:g}")
    if conditions.patience:
        parts.append(f"or after {conditions.patience} iteration{'s' * (conditions.patience != 1)} without a keep")
    if stop_reason is not None:
        return 100.0, f"finished: {stop_reason}; {parts[0]}"
    if not fractions and conditions.target is None and not conditions.patience:
        parts.append("no stop condition: runs until cancelled")
    percent = 100.0 * min(1.0, max(fractions, default=0.0))
    return round(percent, 1), "; ".join(parts)


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    return f"{minutes // 60}h {minutes % 60:02d}m"


def best_diff_markdown(repo: ExperimentRepo, log: ResultsLog, model_py: str, metric: str) -> str:
    """The best model.py against the baseline's, with the kept changes that led there."""
    kept = [r for r in log.rows if r.status == "keep"]
    best = log.best()
    header = f"# Best model against the baseline\n\n{best_summary(log, metric)}.\n"
    if not kept or best is None or best.status != "keep":
        return header + "\nNo change has been kept yet: the best model is the baseline.\n"
    # Every kept commit sits on the previous best; the first one's parent is the baseline's commit.
    baseline_source = repo.file_at(f"{kept[0].commit}^", model_py)
    best_source = repo.file_at(best.commit, model_py)
    diff = "".join(difflib.unified_diff(
        _lines(baseline_source), _lines(best_source), fromfile=f"{model_py} (baseline)",
        tofile=f"{model_py} ({best.commit})",
    ))
    changes = "\n".join(
        f"- `{r.iteration}` {r.commit} {metric}={cell(r.metric)} "
        f"({cell(r.delta, signed=True)}): {r.description}" for r in kept
    )
    return f"{header}\nKept changes:\n\n{changes}\n\n```diff\n{diff}```\n"


def _lines(text: str) -> list[str]:
    return (text.rstrip("\n") + "\n").splitlines(keepends=True)  # git show drops the last newline


def plot_markdown(png: bytes, path: Path) -> str:
    """The plot inline (a data URL: the UI needs no access to the experiment folder) and where the file is."""
    encoded = base64.b64encode(png).decode()
    return f"![progress](data:image/png;base64,{encoded})\n\nSaved as `{path}`.\n"


@dataclass
class _Published:
    """What this flow run last published, to tell whether the table, diff and plot need a new version."""

    progress_id: Any = None
    at: float = 0.0
    kept: int = -1
    statuses: frozenset[str] = field(default_factory=frozenset)
    rows: int = -1


_PUBLISHED: dict[tuple[str, str], _Published] = {}  # (flow run id, progress key) -> what it published


def publish_campaign_artifacts(
    campaign: Campaign,
    progress: Progress | None = None,
    conditions: StopConditions | None = None,
    stop_reason: str | None = None,
) -> None:
    """Update the progress artifact; republish table, diff and plot when it matters. Any failure is only a warning."""
    try:
        _publish(campaign, progress, conditions, stop_reason)
    except Exception as exc:  # the UI is a view: it must never stop the campaign
        _logger().warning("could not publish the campaign's artifacts: %s", exc)


def needs_republishing(before: _Published, log: ResultsLog, now: float, final: bool) -> bool:
    """A first publication, the end, a keep, a status not seen before, or REPUBLISH_S since the last one."""
    if final or before.rows < 0:
        return True
    if len(log.rows) == before.rows:
        return False  # nothing new in the log
    kept = sum(r.status == "keep" for r in log.rows)
    statuses = frozenset(r.status for r in log.rows)
    return kept != before.kept or not statuses <= before.statuses or now - before.at >= REPUBLISH_S


def _publish(campaign: Campaign, progress: Progress | None, conditions: StopConditions | None,
             stop_reason: str | None) -> None:
    from prefect.artifacts import (
        create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact,
    )

    settings = campaign.settings
    keys = campaign_keys(campaign)
    log = read_results_log(campaign.paths.results, settings.higher_is_better)
    description = campaign_description(campaign, log)
    state = _PUBLISHED.setdefault((_flow_run_id(), keys[PROGRESS]), _Published())
    now = time.monotonic()
    percent, line = campaign_progress(progress, conditions, datetime.now(), stop_reason)
    noise = campaign_noise(log.rows)
    progress_text = (f"{run_name(campaign.experiment_dir, campaign.branch)}: {result_headline(log, settings.metric)}; "
                     f"{line}; {noise.describe()} — {campaign.experiment_dir}")
    if state.progress_id is None:  # this flow run's first publication: it is named after the campaign too
        tag_flow_run(campaign.experiment_dir, campaign.branch)
        state.progress_id = create_progress_artifact(percent, key=keys[PROGRESS], description=progress_text)
    else:
        update_progress_artifact(state.progress_id, percent, description=progress_text)
    if not needs_republishing(state, log, now, final=stop_reason is not None):
        return
    table = table_artifact(log)
    if is_new(keys[RESULTS], json.dumps(table)):
        create_table_artifact(table, key=keys[RESULTS], description=description)
    kept = sum(r.status == "keep" for r in log.rows)
    if kept != state.kept or stop_reason is not None:
        repo = ExperimentRepo(Path(campaign.experiment_dir))
        diff = best_diff_markdown(repo, log, settings.model_py, settings.metric)
        if is_new(keys[DIFF], diff):  # described by what it shows, so that only a new best makes a new version
            create_markdown_artifact(diff, key=keys[DIFF], description=f"{run_name(campaign.experiment_dir, campaign.branch)}: "
                                     f"{best_summary(log, settings.metric)}, against the baseline")
    path = plot_path(campaign.paths)
    plot = plot_markdown(save_progress_plot(log, settings.metric, path), path)
    if is_new(keys[PLOT], plot):
        create_markdown_artifact(plot, key=keys[PLOT], description=description)
    state.at, state.kept, state.rows = now, kept, len(log.rows)
    state.statuses = frozenset(r.status for r in log.rows)


def is_new(key: str, data: str) -> bool:
    """Whether data differs from the key's latest version on the server (no version: new)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    with get_client(sync_client=True) as client:
        latest = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])), limit=1)
    if not latest:
        return True
    stored = latest[0].data
    if not isinstance(stored, str):
        stored = json.dumps(stored)
    return stored != data


def publish_setup_artifacts(campaign: Campaign) -> None:
    """Set-up's results (the baseline) and a finished progress, under the keys of the campaign that follows."""
    try:
        from prefect.artifacts import create_progress_artifact, create_table_artifact

        settings = campaign.settings
        branch = expected_branch(campaign.experiment_dir, None)
        ahead = replace(campaign, branch=branch)
        keys = campaign_keys(ahead)
        log = read_results_log(campaign.paths.results, settings.higher_is_better)
        tag_flow_run(campaign.experiment_dir, "")
        done = (f"{run_name(campaign.experiment_dir, '')}: set-up complete, {result_headline(log, settings.metric)}; "
                f"start the campaign with `autoraysearch run` — {campaign.experiment_dir}")
        create_progress_artifact(100.0, key=keys[PROGRESS], description=done)
        table, description = table_artifact(log), campaign_description(ahead, log)
        if is_new(keys[RESULTS], json.dumps(table)):
            create_table_artifact(table, key=keys[RESULTS], description=description)
    except Exception as exc:  # the UI is a view: it must never stop the set-up
        _logger().warning("could not publish the set-up's artifacts: %s", exc)


def _flow_run_id() -> str:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.flow_run.id) if context is not None and context.flow_run is not None else ""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("autoraysearch")
