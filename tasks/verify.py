"""verify: train a candidate on whichever Ray node has the resources, and read its metric."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.cluster import current_node_id
from autoraysearch.experiment import Trial, TrialResult
from autoraysearch.metric import parse_metric
from autoraysearch.trial_process import ProcessOutcome, run_in_directory


def judge_outcome(trial: Trial, outcome: ProcessOutcome) -> tuple[str, float | None, str]:
    """(status, metric, error) of a finished process: a timeout, a crash, or a metric."""
    if outcome.timed_out:
        return "timeout", None, f"killed after the trial timeout of {trial.timeout:g} s"
    if outcome.returncode != 0:
        reason = outcome.last_error_line or f"train.py exited with code {outcome.returncode}"
        return "crash", None, reason
    try:
        metric = parse_metric(outcome.stdout_tail[-1] if outcome.stdout_tail else "", trial.metric)
    except ValueError as exc:
        return "crash", None, str(exc)
    return "ok", metric, ""


def run_trial(trial: Trial, node_id: str | None = None) -> TrialResult:
    """Write the candidate's files into a scratch folder on this node and run train.py there."""
    # Stream the log straight into the experiment folder only when it is on this node.
    live_log = Path(trial.log_path) if trial.log_path and node_id == trial.repo_node_id else None
    outcome = run_in_directory(
        trial.files, [sys.executable, "train.py"], timeout=trial.timeout, env=trial.env, log_path=live_log,
    )
    status, metric, error = judge_outcome(trial, outcome)
    return TrialResult(
        label=trial.label,
        status=status,
        metric=metric,
        seconds=round(outcome.seconds, 2),
        error=error,
        output=outcome.output,
        node_id=node_id,
        log_written=live_log is not None,
    )


@task(name="verify", task_run_name="verify-{trial.label}", cache_policy=NO_CACHE)
def verify(trial: Trial) -> TrialResult:
    """Train the candidate and extract its metric; a crash or a timeout is a result."""
    return run_trial(trial, node_id=current_node_id())
