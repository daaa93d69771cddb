"""What a decide or log task run's final state is called: the verdict, so the UI's timeline shows it at a glance.

The state stays Completed (the step itself worked); only its name changes, from "Completed" to "Kept",
"Discarded", "Pruned"… Prefect shows that name on the run's timeline bar and in the task runs list.
"""

from __future__ import annotations

from typing import Any

from autoraysearch.campaign.experiment import Verdict

STATE_NAMES = {
    "keep": "Kept",
    "discard": "Discarded",
    "pruned": "Pruned",
    "crash": "Crashed",
    "timeout": "Timed out",
    "rejected": "Rejected",
    "stopped": "Stopped",
    "baseline": "Baseline",
}


def state_name(status: str) -> str:
    """`keep` -> `Kept`; a status of its own shows as it is, capitalised."""
    return STATE_NAMES.get(status, status[:1].upper() + status[1:] or "Completed")


def parallel_state_name(verdicts: dict[str, Verdict]) -> str:
    """`Kept 5b` when one candidate was kept; else the verdict they share, or `Nothing kept`."""
    kept = [label for label, v in verdicts.items() if v.status == "keep"]
    if kept:
        return f"Kept {', '.join(kept)}"
    statuses = {v.status for v in verdicts.values()}
    return state_name(statuses.pop()) if len(statuses) == 1 else "Nothing kept"


def completed_as(name: str, value: Any = None):
    """A Completed state named `name` holding value: what a task returns to name its final state."""
    from prefect.states import Completed

    return Completed(name=name, data=value)


def verdict_state(verdict: Verdict):
    """decide's final state: Completed, named after the verdict, holding it."""
    return completed_as(state_name(verdict.status), verdict)


def verdicts_state(verdicts: dict[str, Verdict]):
    """decide's final state for a parallel iteration: named after the kept candidate, holding every verdict."""
    return completed_as(parallel_state_name(verdicts), verdicts)
