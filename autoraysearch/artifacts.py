"""What the Prefect UI shows for a campaign: the results table, progress, the best model's diff, the plot.

Published from the flow's process after every iteration under stable keys, so each new version
supersedes the last on the UI's Artifacts page. Never fatal: a failure is a logged warning.
"""

from __future__ import annotations

import base64
import difflib
import logging
from datetime import datetime
from pathlib import Path

from autoraysearch.experiment import Campaign, ExperimentPaths
from autoraysearch.progress_plot import save_progress_plot
from autoraysearch.repository import ExperimentRepo
from autoraysearch.results_log import EXTRA_COLUMNS, ResultsLog, format_number, read_results_log
from autoraysearch.stopping import Progress, StopConditions

RESULTS_KEY = "autoraysearch-results"
PROGRESS_KEY = "autoraysearch-progress"
DIFF_KEY = "autoraysearch-best-diff"
PLOT_KEY = "autoraysearch-plot"
PLOT_FILE = "progress.png"


def plot_path(paths: ExperimentPaths) -> Path:
    """Where the progress plot is saved: in .autoraysearch/, created ignored by git if it is missing."""
    return paths.make_state_dir() / PLOT_FILE


def results_table(log: ResultsLog) -> list[dict[str, str]]:
    """The results log as table rows, with the cells as the TSV writes them."""
    return [
        {
            "iteration": r.iteration,
            "commit": r.commit,
            "metric": format_number(r.metric),
            "delta": "0.0" if r.status == "baseline" else format_number(r.delta, signed=True),
            "status": r.status,
            "description": r.description,
            **{name: r.extra.get(name, "") for name in EXTRA_COLUMNS},
        }
        for r in log.rows
    ]


def best_summary(log: ResultsLog, metric: str) -> str:
    best = log.best()
    if best is None:
        return "no baseline yet"
    where = "the baseline" if best.status == "baseline" else f"iteration {best.iteration} ({best.commit})"
    return f"best {metric}={format_number(best.metric)} from {where}"


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
        parts[0] = f"{done} of {conditions.max_iterations} iterations done"
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
        parts.append(f"or after {conditions.patience} iterations without a keep")
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
        f"- `{r.iteration}` {r.commit} {metric}={format_number(r.metric)} "
        f"({format_number(r.delta, signed=True)}): {r.description}" for r in kept
    )
    return f"{header}\nKept changes:\n\n{changes}\n\n```diff\n{diff}```\n"


def _lines(text: str) -> list[str]:
    return (text.rstrip("\n") + "\n").splitlines(keepends=True)  # git show drops the last newline


def plot_markdown(png: bytes, path: Path) -> str:
    """The plot inline (a data URL: the UI needs no access to the experiment folder) and where the file is."""
    encoded = base64.b64encode(png).decode()
    return f"![progress](data:image/png;base64,{encoded})\n\nSaved as `{path}`.\n"


def publish_campaign_artifacts(
    campaign: Campaign,
    progress: Progress | None = None,
    conditions: StopConditions | None = None,
    stop_reason: str | None = None,
) -> None:
    """Create or update every artifact of the campaign; any failure is only a warning."""
    try:
        _publish(campaign, progress, conditions, stop_reason)
    except Exception as exc:  # the UI is a view: it must never stop the campaign
        _logger().warning("could not publish the campaign's artifacts: %s", exc)


def _publish(campaign: Campaign, progress: Progress | None, conditions: StopConditions | None,
             stop_reason: str | None) -> None:
    from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact

    settings = campaign.settings
    log = read_results_log(campaign.paths.results, settings.higher_is_better)
    where = f"Campaign {campaign.branch}" if campaign.branch else "Set-up"
    summary = f"{where} in {campaign.experiment_dir}: {best_summary(log, settings.metric)}"
    create_table_artifact(results_table(log), key=RESULTS_KEY, description=summary)
    percent, line = campaign_progress(progress, conditions, datetime.now(), stop_reason)
    create_progress_artifact(percent, key=PROGRESS_KEY, description=f"{line}; {best_summary(log, settings.metric)}")
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    create_markdown_artifact(best_diff_markdown(repo, log, settings.model_py, settings.metric), key=DIFF_KEY,
                             description=summary)
    path = plot_path(campaign.paths)
    png = save_progress_plot(log, settings.metric, path)
    create_markdown_artifact(plot_markdown(png, path), key=PLOT_KEY, description=summary)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("autoraysearch")
