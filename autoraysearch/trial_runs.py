"""Turning a candidate into a Trial, and waiting for it on Ray without ever leaving it running."""

from __future__ import annotations

import math
from pathlib import Path

from autoraysearch.experiment import Campaign, Candidate, Trial, TrialResult

# A fractional trial caps its GPU memory a little under its share, so neighbours never collide.
GPU_MEMORY_HEADROOM = 0.95
CANCEL_GRACE_S = 5.0
SIGNAL_POLL_S = 0.5


def trial_env(cpus: float, gpus: float) -> dict[str, str]:
    """Environment train.py reads: its thread count, and its GPU memory cap when it has a fraction."""
    env = {"AUTORAYSEARCH_NUM_THREADS": str(max(1, math.floor(cpus)))}
    if 0 < gpus < 1:
        env["AUTORAYSEARCH_GPU_MEMORY_FRACTION"] = f"{gpus * GPU_MEMORY_HEADROOM:.3f}"
    return env


def make_trial(campaign: Campaign, candidate: Candidate, train_source: str, label: str | None = None) -> Trial:
    """The candidate's model.py and the campaign's train.py, as data the trial's node writes itself."""
    settings = campaign.settings
    label = label or candidate.label
    return Trial(
        label=label,
        files={Path(settings.model_py).name: candidate.model_source, Path(settings.train_py).name: train_source},
        metric=settings.metric,
        timeout=campaign.trial_timeout,
        env=trial_env(settings.cpus_per_trial, settings.gpus_per_trial),
        log_path=str(campaign.paths.trial_log(label)),
        repo_node_id=campaign.repo_node_id,
    )


def wait_for_trial(future, label: str) -> TrialResult:
    """The trial's result; a lost Ray worker becomes a crash, an interruption cancels the trial."""
    try:
        wait_interruptibly(future)
        return future.result()
    except Exception as exc:  # infrastructure: the worker died, the node went away
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return TrialResult(label=label, status="crash", metric=None, seconds=0.0, error=f"the Ray task running the trial failed: {first}")
    except BaseException:
        cancel_trial(future)
        raise


def wait_interruptibly(future) -> None:
    """Block until the trial ends, returning to Python often so Ctrl-C and SIGTERM are handled.

    An unbounded ray.get blocks in C++ where SIGTERM's Python handler never gets to run.
    """
    import ray

    ref = getattr(future, "wrapped_future", None)
    if ref is None or not ray.is_initialized():
        return
    while True:
        try:
            if ray.wait([ref], timeout=SIGNAL_POLL_S)[0]:
                return
        except SystemError as exc:
            # A signal handler that raised inside Ray's C++ wait surfaces as SystemError.
            # (Ctrl-C, or the SIGTERM that Prefect's flow engine turns into TerminationSignal).
            original = exc.__cause__ or exc.__context__
            if isinstance(original, BaseException) and not isinstance(original, Exception):
                raise original from None
            raise


def cancel_trial(future) -> None:
    """Stop a running trial: an interrupt first (its process tree is killed), then the worker itself."""
    import ray

    ref = getattr(future, "wrapped_future", None)
    if ref is None or not ray.is_initialized():
        return
    try:
        ray.cancel(ref, force=False)
        done, _ = ray.wait([ref], timeout=CANCEL_GRACE_S)
        if not done:
            ray.cancel(ref, force=True)
    except Exception:
        pass  # the task already finished or Ray is going down; nothing is left to stop
