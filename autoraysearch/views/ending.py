"""The end of a campaign as the Prefect UI shows it last: why it stopped, where the branch is, every result.

A run stopped from outside (cancelled in the UI or with `prefect flow-run cancel`, Ctrl-C, SIGTERM) or
by a failing step publishes the same closing artifacts as one that met its stop condition. By then the
loop has already rolled the branch back, removed candidate branches and logged interrupted candidates
as `stopped`; this module only reports. Never fatal: a failure is a logged warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from autoraysearch.views.artifacts import result_headline, results_table
from autoraysearch.views.identity import artifact_key, run_name
from autoraysearch.campaign.experiment import Campaign
from autoraysearch.campaign.results_log import ResultsLog, read_results_log
from autoraysearch.views.step_logs import fmt
from autoraysearch.campaign.stopping import Progress, StopConditions

FINAL = "final"  # the artifact kind: its key is the campaign's (see campaign_identity.artifact_key)
TABLE_COLUMNS = ("iteration", "commit", "metric", "delta", "needed", "status", "description")


def stop_reason(exc: BaseException) -> str:
    """Why the loop ended early, in a user's words."""
    from prefect.exceptions import TerminationSignal

    if isinstance(exc, TerminationSignal):
        return "cancelled" if _cancel_requested() else "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, Exception):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"failed: {first}"
    return f"stopped ({type(exc).__name__})"


def _cancel_requested() -> bool:
    """Whether Prefect's runner announced the SIGTERM as a cancellation (its control channel)."""
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:
        return True  # a Prefect without the channel: its runner only sends SIGTERM to cancel
    return get_intent() == "cancel"


def final_markdown(log: ResultsLog, metric: str, branch: str, head: str, reason: str) -> str:
    """The closing report: the stop reason, the best result, its confirmed gain and the branch, then every row."""
    from autoraysearch.campaign.path import describe_confirmed

    best = log.best()
    experiments = log.experiments()
    kept = sum(r.status == "keep" for r in experiments)
    stopped = [r.iteration for r in experiments if r.status == "stopped"]
    if best is None:
        best_text = "no baseline recorded"
    elif best.status == "baseline":
        best_text = f"best {metric}={fmt(best.metric)}: the baseline (no change beat it)"
    else:
        best_text = f"best {metric}={fmt(best.metric)} from iteration {best.iteration} ({best.commit})"
    lines = [
        f"# Campaign {branch}: {reason}",
        "",
        f"- {best_text}",
        f"- {describe_confirmed(log.rows)}",
        f"- branch `{branch}` left on `{head}`",
        f"- {len(experiments)} experiment{'s' * (len(experiments) != 1)}, {kept} kept",
    ]
    if stopped:
        lines.append(f"- interrupted before a verdict, logged as `stopped`: {', '.join(stopped)}")
    lines += ["", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in results_table(log):
        cells = [row[name] for name in TABLE_COLUMNS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def publish_final_artifact(campaign: Campaign, reason: str) -> None:
    """Write the campaign's `…-final` artifact for this flow run."""
    try:
        from prefect.artifacts import create_markdown_artifact

        from autoraysearch.campaign.repository import ExperimentRepo

        settings = campaign.settings
        log = read_results_log(campaign.paths.results, settings.higher_is_better)
        repo = ExperimentRepo(Path(campaign.experiment_dir))
        head = repo.short(repo.branch_sha(campaign.branch))
        create_markdown_artifact(
            final_markdown(log, settings.metric, campaign.branch, head, reason),
            key=artifact_key(campaign.experiment_dir, campaign.branch, FINAL),
            description=f"{run_name(campaign.experiment_dir, campaign.branch)}: {reason}; "
                        f"{result_headline(log, settings.metric)} — {campaign.experiment_dir}",
        )
    except Exception as exc:  # the UI is a view: it must never change how the campaign ends
        logging.getLogger("autoraysearch").warning("could not publish the final artifact: %s", exc)


def close_stopped_campaign(
    campaign: Campaign, progress: Progress | None, conditions: StopConditions | None, exc: BaseException
) -> None:
    """Publish the closing artifacts and event of a run that ended early."""
    from autoraysearch.views.artifacts import publish_campaign_artifacts
    from autoraysearch.views.events import announce_campaign_finished

    reason = stop_reason(exc)
    publish_campaign_artifacts(campaign, progress, conditions, stop_reason=reason)
    publish_final_artifact(campaign, reason)
    announce_campaign_finished(campaign, reason)
