"""Prefect events a campaign emits, for automations (a message when the model gets better, or when it ends)."""

from __future__ import annotations

import logging
from typing import Any

from autoraysearch.views.identity import campaign_id, run_name
from autoraysearch.views.step_logs import fmt
from autoraysearch.campaign.experiment import Campaign
from autoraysearch.campaign.results_log import ResultsLog, read_results_log

NEW_BEST = "autoraysearch.new-best"
CAMPAIGN_FINISHED = "autoraysearch.campaign-finished"
FLUSH_TIMEOUT_S = 10.0  # the last event is sent before the run goes on to exit, but never holds it longer


def campaign_resource(campaign: Campaign, payload: dict[str, Any] | None = None) -> dict[str, str]:
    """The campaign as an event resource: one id per experiment folder and branch, to match automations on.

    Its name is what the UI's event card shows: the run's name and the news (`alpha/2026-12-04: reached
    3 iterations; best val_acc=0.9397`). The metric, value and stop reason ride as labels too.
    """
    payload = payload or {}
    name = run_name(campaign.experiment_dir, campaign.branch)
    resource = {
        "prefect.resource.id": f"autoraysearch.campaign.{campaign_id(campaign.experiment_dir, campaign.branch)}",
        "prefect.resource.name": f"{name}: {headline(payload)}" if payload else name,
        "autoraysearch.experiment-dir": campaign.experiment_dir,
        "autoraysearch.branch": campaign.branch,
    }
    value = payload.get("value", payload.get("best"))
    if payload.get("metric"):
        resource["autoraysearch.metric"] = str(payload["metric"])
    if value is not None:
        resource["autoraysearch.value"] = fmt(value)
    if payload.get("stop_reason"):
        resource["autoraysearch.stop-reason"] = str(payload["stop_reason"])
    return resource


def headline(payload: dict[str, Any]) -> str:
    """The event in one line: `new best val_acc=0.9397 (+0.0157)` or `reached 3 iterations; best val_acc=0.9397`."""
    metric = payload.get("metric", "metric")
    if "value" in payload:
        return f"new best {metric}={fmt(payload['value'])} ({fmt(payload.get('delta'), signed=True)})"
    best = f"best {metric}={fmt(payload.get('best'))}"
    return f"{payload['stop_reason']}; {best}" if payload.get("stop_reason") else best


def related_resources(payload: dict[str, Any]) -> list[dict[str, str]]:
    """The payload's numbers as related resources: the UI's event card lists each one (`best val_acc=0.9397`)."""
    metric = payload.get("metric", "metric")
    shown = []
    if payload.get("value") is not None:
        shown.append(("value", f"{metric}={fmt(payload['value'])}"))
    if payload.get("previous") is not None:
        shown.append(("previous", f"previous best {metric}={fmt(payload['previous'])}"))
    if payload.get("best") is not None:
        shown.append(("best", f"best {metric}={fmt(payload['best'])}"))
    if payload.get("stop_reason"):
        shown.append(("stop-reason", f"stopped: {payload['stop_reason']}"))
    # The UI's event card shows a related resource of a kind it does not know by its id: the id is the text.
    return [
        {"prefect.resource.id": name, "prefect.resource.role": f"autoraysearch-{role}", "prefect.resource.name": name}
        for role, name in shown
    ]


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
    experiments = log.experiments()
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

        from autoraysearch.prefect_api import quiet_drain

        with quiet_drain():
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
        emit_event(event=event, resource=campaign_resource(campaign, payload), related=related_resources(payload),
                   payload={**payload, "branch": campaign.branch, "experiment_dir": campaign.experiment_dir})
    except Exception as exc:  # an automation's trigger must never stop the campaign
        logging.getLogger("autoraysearch").warning("could not emit %s: %s", event, exc)
