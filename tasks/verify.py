"""verify: train a candidate on whichever Ray node has the resources, and read its metric."""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.cluster import current_node_id
from autoraysearch.experiment import Trial, TrialResult
from autoraysearch.metric import parse_metric
from autoraysearch.trial_process import ProcessOutcome, run_in_directory

log = logging.getLogger(__name__)
_warned_without_sandbox = False


def judge_outcome(trial: Trial, outcome: ProcessOutcome) -> tuple[str, float | None, str]:
    """(status, metric, error) of a finished process: a timeout, a crash, or a metric."""
    if outcome.timed_out:
        return "timeout", None, f"killed after the trial timeout of {trial.timeout:g} s"
    if outcome.returncode != 0:
        reason = outcome.last_error_line or f"train.py exited with code {outcome.returncode}"
        return "crash", None, reason
    last_line = outcome.stdout_tail[-1] if outcome.stdout_tail else ""
    try:
        if outcome.metric_lines:
            return "ok", reported_metric(outcome.metric_lines, last_line, trial.metric), ""
        # A user's own train.py that does not know the channel: the last stdout line, as always.
        return "ok", parse_metric(last_line, trial.metric), ""
    except ValueError as exc:
        return "crash", None, str(exc)


def reported_metric(channel_lines: tuple[str, ...], last_line: str, name: str) -> float:
    """The metric train.py wrote to its channel, which must be one line and agree with the printed one."""
    if len(channel_lines) > 1:
        raise ValueError("the metric was written more than once: the model code tried to report its own score")
    metric = parse_metric(channel_lines[0], name)
    if last_line.strip() != channel_lines[0]:
        shown = last_line.strip()[:120] or "nothing"
        raise ValueError(
            f"the last printed line ({shown}) differs from the metric train.py reported ({channel_lines[0]}): "
            "the model code tried to report its own score"
        )
    return metric


def writable_folders(files: dict[str, str]) -> list[Path]:
    """Folders outside the scratch a trial may write to: the DATA_DIR of a generated train.py with DOWNLOAD on."""
    settings = {}
    try:
        for node in ast.parse(files.get("train.py", "")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    settings[node.targets[0].id] = ast.literal_eval(node.value)
                except ValueError:
                    pass
    except SyntaxError:
        return []
    data_dir = settings.get("DATA_DIR")
    if settings.get("DOWNLOAD") is True and isinstance(data_dir, str) and data_dir:
        Path(data_dir).mkdir(parents=True, exist_ok=True)  # its parent may be read-only to the trial
        return [Path(data_dir)]
    return []


def _warn_once_without_sandbox(sandbox: str) -> None:
    """Say once per process when trials run without Landlock: their code can write anywhere we can."""
    global _warned_without_sandbox
    if not sandbox.startswith("landlock") and not _warned_without_sandbox:
        _warned_without_sandbox = True
        log.warning("trials run without a sandbox on this machine (%s): candidate code can write outside "
                    "its scratch folder and signal other processes", sandbox)


def run_trial(trial: Trial, node_id: str | None = None) -> TrialResult:
    """Write the candidate's files into a scratch folder on this node and run train.py there."""
    # Stream the log straight into the experiment folder only when it is on this node.
    live_log = Path(trial.log_path) if trial.log_path and node_id == trial.repo_node_id else None
    outcome = run_in_directory(
        trial.files, [sys.executable, "train.py"], timeout=trial.timeout, env=trial.env, log_path=live_log,
        writable=writable_folders(trial.files),
    )
    _warn_once_without_sandbox(outcome.sandbox)
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
