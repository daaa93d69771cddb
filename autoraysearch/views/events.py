"""Prefect events a campaign emits, for automations (a message when the model gets better, or when it ends)."""

from __future__ import annotations

import logging
from typing import Any

from autoraysearch.views.identity import campaign_id, run_name
from autoraysearch.campaign.experiment import Campaign
from autoraysearch.campaign.results_log import ResultsLog, read_results_log

NEW_BEST = "autoraysearch.new-best"
CAMPAIGN_FINISHED = "autoraysearch.campaign-finished"
FLUSH_TIMEOUT_S = 10.0  # the last event is sent before the run goes on to exit, but never holds it longer


def campaign_resource(campaign: Campaign, payload: dict[str, Any] | None = None) -> dict[str, str]:
    """The campaign as an event resource: one id per experiment folder and branch, to match automations on.

    The metric and its value ride as labels too: the UI's event page shows labels without opening Raw.
    """
    resource = {
        "prefect.resource.id": f"autoraysearch.campaign.{campaign_id(campaign.experiment_dir, campaign.branch)}",
        "prefect.resource.name": run_name(campaign.experiment_dir, campaign.branch),
        "autoraysearch.experiment-dir": campaign.experiment_dir,
        "autoraysearch.branch": campaign.branch,
    }
    payload = payload or {}
    value = payload.get("value", payload.get("best"))
    if payload.get("metric"):
        resource["autoraysearch.metric"] = str(payload["metric"])
    if value is not None:
        resource["autoraysearch.value"] = f"{value:.6g}"
    if payload.get("stop_reason"):
        resource["autoraysearch.stop-reason"] = str(payload["stop_reason"])
    return resource


def new_best_payload(log: ResultsLog, metric: str) -> dict[str, Any] | None:
    """The best row and the best before it; None when the best is still the baseline."""
    best = log.best()
    if best is None or best.status == "baseline":
        return None
    index = log.rows.index(best)
    earlier = ResultsLog(log.higher_is_better, log.rows[:index]).best()
    return {
        "metric": metric,
        "value": best.metric,
        "previous": earlier.metric if earlier else None,
        "delta": best.delta,
        "iteration": best.iteration,
        "commit": best.commit,
        "description": best.description,
    }


def finished_payload(log: ResultsLog, metric: str, stop_reason: str) -> dict[str, Any]:
    best = log.best()
    experiments = [r for r in log.rows if r.status != "baseline"]
    return {
        "metric": metric,
        "best": best.metric if best else None,
        "best_commit": best.commit if best and best.status != "baseline" else None,
        "baseline": log.baseline.metric if log.baseline else None,
        "experiments": len(experiments),
        "kept": sum(r.status == "keep" for r in experiments),
        "stop_reason": stop_reason,
    }


def announce_new_best(campaign: Campaign) -> None:
    """Emit autoraysearch.new-best for the campaign's current best (call it after a keep)."""
    log = _read(campaign)
    payload = new_best_payload(log, campaign.settings.metric) if log else None
    if payload is not None:
        _emit(NEW_BEST, campaign, payload)


def announce_campaign_finished(campaign: Campaign, stop_reason: str) -> None:
    """Emit autoraysearch.campaign-finished with the best result and why the campaign stopped."""
    log = _read(campaign)
    if log is not None:
        _emit(CAMPAIGN_FINISHED, campaign, finished_payload(log, campaign.settings.metric, stop_reason))
    # The campaign's last word: a cancelled run's process is SIGKILLed once its grace period is over, and
    # events wait in a background queue; send them now rather than at interpreter exit.
    flush_events()


def flush_events(timeout: float = FLUSH_TIMEOUT_S) -> None:
    """Send every event emitted so far to the Prefect API before returning (at most timeout seconds)."""
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout, at_exit=False)
    except Exception as exc:
        logging.getLogger("autoraysearch").warning("could not send the campaign's events: %s", exc)


def _read(campaign: Campaign) -> ResultsLog | None:
    try:
        return read_results_log(campaign.paths.results, campaign.settings.higher_is_better)
    except Exception as exc:
        logging.getLogger("autoraysearch").warning("no event: cannot read the results log (%s)", exc)
        return None


def _emit(event: str, campaign: Campaign, payload: dict[str, Any]) -> None:
    from prefect.events import emit_event

    try:
        emit_event(event=event, resource=campaign_resource(campaign, payload),
                   payload={**payload, "branch": campaign.branch, "experiment_dir": campaign.experiment_dir})
    except Exception as exc:  # an automation's trigger must never stop the campaign
        logging.getLogger("autoraysearch").warning("could not emit %s: %s", event, exc)
