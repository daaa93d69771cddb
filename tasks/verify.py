"""verify: train a candidate on whichever Ray node has the resources, and read its metric.

While it trains, its progress lines go to the task run's log (at most one every PROGRESS_EVERY_S
seconds, then the last one, the metric line, or the error's last lines), and a screen run that falls
clearly behind the best's curve is stopped (pruning.py).
"""

from __future__ import annotations

import ast
import re
import contextlib
import logging
import socket
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from autoraysearch.cluster import current_node_id, sends_its_logs
from autoraysearch.campaign.experiment import Trial, TrialResult
from autoraysearch.campaign.metric import parse_metric, seed_line
from autoraysearch.campaign.model_source import parse_python
from autoraysearch.campaign.pruning import CurveWatch, parse_progress, read_curve
from autoraysearch.campaign.seed_watch import SeedWatch
from autoraysearch.campaign.results_log import clean_text, terminal_text
from autoraysearch.trials.process import ProcessOutcome, TrialLimits, run_in_directory
from autoraysearch.trials.gpu_memory import PeakWatch
from autoraysearch.trials.runs import GPU_FRACTION_ENV, SEEDS_ENV, compile_cache, trial_limits

log = logging.getLogger(__name__)
_warned_without_sandbox = False
PROGRESS_EVERY_S = 5.0  # the most often a progress line goes to the task run's log
ERROR_LINES = 5  # lines of a failed run's output the task run's log shows
_ELAPSED = re.compile(r"\belapsed_s=([0-9.]+)")
MAX_PROGRESS_LINES = 100_000  # the most progress lines of one run kept for its curve


class ProgressLog:
    """Passes a trial's progress lines to `say`, rate-limited; the last one always gets through at the end."""

    def __init__(self, say: Callable[[str], None], metric: str, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.say, self.metric, self.every_s, self.clock = say, metric, every_s, clock
        self.said_at: float | None = None
        self.held = ""  # the latest progress line not yet said

    def see(self, line: str) -> None:
        if parse_progress(line, self.metric) is None:
            return
        now = self.clock()
        if self.said_at is None or now - self.said_at >= self.every_s:
            self.say(line)
            self.said_at, self.held = now, ""
        else:
            self.held = line

    def finish(self, result: TrialResult, outcome: ProcessOutcome) -> None:
        """The last progress line held back, then how the run ended."""
        if self.held:
            self.say(self.held)
            self.held = ""
        if result.status == "ok":
            self.say(f"{result.label}: {self.metric}={result.metric:.4f} in {result.seconds:.1f} s")
            return
        self.say(f"{result.label} {result.status} after {result.seconds:.1f} s: {clean_text(result.error)}")
        if result.status in ("crash", "timeout"):
            tail = [line for line in terminal_text(outcome.output).splitlines() if line.strip()][-ERROR_LINES:]
            if tail:
                self.say("last lines of its output:\n" + "\n".join(tail))


def judge_outcome(trial: Trial, outcome: ProcessOutcome, pruned_reason: str = "",
                  limits: TrialLimits | None = None) -> tuple[str, float | None, str]:
    """(status, metric, error) of a finished process: pruned, a timeout, a crash, or a metric."""
    if outcome.stopped_early:
        return "pruned", None, pruned_reason or "stopped early for being clearly behind the best"
    if outcome.timed_out:
        return "timeout", None, f"killed after the trial timeout of {trial.timeout:g} s"
    if outcome.out_of_memory:
        return "crash", None, (f"ran out of memory: the kernel killed it at the trial's limit of "
                               f"{limits.memory_bytes / 2**30:.1f} GiB (AUTORAYSEARCH_TRIAL_MEMORY, in GiB where the Ray workers run, "
                               "sets it)" if limits and limits.memory_bytes else
                               "ran out of memory: the kernel killed it at the trial's memory limit")
    if outcome.returncode != 0:
        reason = outcome.last_error_line or f"train.py exited with code {outcome.returncode}"
        return "crash", None, reason
    try:
        if trial.trusted_channel:
            return "ok", reported_metric(outcome.channel_lines, trial.metric), ""
        # A user's own train.py: its last stdout line, which its model code could forge.
        return "ok", parse_metric(outcome.stdout_tail[-1] if outcome.stdout_tail else "", trial.metric), ""
    except ValueError as exc:
        return "crash", None, str(exc)


def reported_metric(channel_lines: tuple[str, ...], name: str) -> float:
    """The metric a generated train.py's judge wrote to its channel, after its progress lines: exactly once."""
    finals = [line for line in channel_lines if not line.startswith(("epoch=", "seed="))]
    if not finals:
        raise ValueError(
            "train.py exited without reporting a metric on its channel (the model code may have ended it early)"
        )
    if len(finals) > 1:
        raise ValueError("train.py reported its metric more than once on its channel")
    return parse_metric(finals[0], name)


def seed_runs(trial: Trial, outcome: ProcessOutcome, stopped: bool = False) -> tuple[float, ...]:
    """Of a run of several seeds (AUTORAYSEARCH_SEEDS), each seed's metric as its judge said it, in seed order; () otherwise.

    A run that did not say all of them, or said one twice, crashed: its mean alone cannot be paired. A run
    stopped on purpose (`stopped`, seed_watch) says its first seeds, in order.
    """
    seeds = [int(seed) for seed in trial.env.get(SEEDS_ENV, "").split(",") if seed.strip()]
    if len(seeds) < 2 or not trial.trusted_channel:
        return ()
    said = {}
    for line in outcome.channel_lines:
        if (end := seed_line(line)) is not None:
            number, rest = end
            if number in said or number not in seeds:
                raise ValueError(f"train.py reported seed {number} more than once, or one it was not given")
            said[number] = parse_metric(rest, trial.metric)
    if stopped and said and sorted(said) == sorted(seeds[:len(said)]):
        return tuple(said[seed] for seed in seeds[:len(said)])
    if sorted(said) != sorted(seeds):
        raise ValueError(f"train.py reported {len(said)} of the {len(seeds)} seeds it was given")
    return tuple(said[seed] for seed in seeds)


def seed_seconds(trial: Trial, outcome: ProcessOutcome) -> float | None:
    """How long a generated train.py's seeds trained and were evaluated, summed: each seed's last progress line's elapsed_s."""
    if not trial.trusted_channel:
        return None
    last: dict[str, float] = {}
    for line in outcome.channel_lines:
        seed, _, rest = line.partition(" ") if line.startswith("seed=") else ("", "", line)
        if rest.startswith("epoch=") and (elapsed := _ELAPSED.search(rest)):
            last[seed] = float(elapsed.group(1))
    return round(sum(last.values()), 3) if last else None


def trusted_curve(trial: Trial, outcome: ProcessOutcome, seen: list[str]) -> tuple[float, ...]:
    """The metric after each epoch: from the channel for a generated train.py, else from the progress lines seen."""
    return read_curve("\n".join(outcome.channel_lines if trial.trusted_channel else seen), trial.metric)


def writable_folders(files: dict[str, str]) -> list[Path]:
    """Folders outside the scratch a trial may write to: the DATA_DIR of a generated train.py with DOWNLOAD on."""
    settings = {}
    try:
        for node in parse_python(files.get("train.py", "")).body:
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


def short_hostname() -> str:
    """This machine's name as people use it: the first label of its host name."""
    return socket.gethostname().split(".")[0]


def run_trial(trial: Trial, node_id: str | None = None, say: Callable[[str], None] | None = None) -> TrialResult:
    """Write the candidate's files into a scratch folder on this node and run train.py there.

    `say` gets its progress (see ProgressLog); a run given a pruning rule is stopped once clearly behind.
    """
    # Stream the log straight into the experiment folder only when it is on this node.
    live_log = Path(trial.log_path) if trial.log_path and node_id == trial.repo_node_id else None
    watch = CurveWatch(trial.pruning, trial.metric)
    seeds_watch = SeedWatch(trial.seed_stop if trial.trusted_channel else None, trial.metric)  # only a judge's seed lines
    progress = ProgressLog(say, trial.metric) if say is not None else None

    seen: list[str] = []

    def on_line(line: str) -> bool:
        if len(seen) < MAX_PROGRESS_LINES:
            seen.append(line)
        if progress is not None:
            progress.see(line)
        behind = watch.see(line)
        return seeds_watch.see(line) or behind

    limits = trial_limits(trial.cpus)
    cache, cache_env = compile_cache(trial.cache_key)
    # At a fraction of a GPU, what it holds is measured from here: its own "out of memory" is not evidence.
    fractional = GPU_FRACTION_ENV in trial.env
    with PeakWatch() if fractional else contextlib.nullcontext() as gpu_memory:
        outcome = run_in_directory(
            trial.files, [sys.executable, "train.py"], timeout=trial.timeout, env={**trial.env, **cache_env},
            log_path=live_log, writable=[*writable_folders(trial.files), *([cache] if cache else [])], on_line=on_line,
            watch_channel=trial.trusted_channel, limits=limits,
        )
    _warn_once_without_sandbox(outcome.sandbox)
    status, metric, error = judge_outcome(trial, outcome, watch.reason, limits)
    hopeless = seeds_watch.reason if outcome.stopped_early else ""
    if hopeless:  # stopped on its seeds so far, which are its result
        status, error = "ok", ""
    runs: tuple[float, ...] = ()
    if status == "ok":
        try:
            runs = seed_runs(trial, outcome, stopped=bool(hopeless))
            metric = fmean(runs) if runs else metric  # the seeds' own values, not their mean as rounded for reading
        except ValueError as exc:
            status, metric, error = "crash", None, str(exc)
    result = TrialResult(
        label=trial.label,
        status=status,
        metric=metric,
        seconds=round(outcome.seconds, 2),
        error=error,
        output=outcome.output,
        node_id=node_id,
        host=short_hostname(),
        log_written=live_log is not None,
        curve=trusted_curve(trial, outcome, seen),
        runs=runs,
        seed_seconds=seed_seconds(trial, outcome),
        sandbox=outcome.sandbox,
        hopeless=hopeless,
        gpu_memory_share=gpu_memory.share if fractional else None,
    )
    if progress is not None:
        progress.finish(result, outcome)
    return result


@task(name="verify", task_run_name="verify-{trial.label}", cache_policy=NO_CACHE)
@sends_its_logs
def verify(trial: Trial) -> TrialResult:
    """Train the candidate and extract its metric; a crash, a timeout or a pruned run is a result."""
    logger = get_run_logger()  # on this, the launching thread: the trial's lines are said from here
    return run_trial(trial, node_id=current_node_id(), say=lambda line: logger.info("%s", line))
