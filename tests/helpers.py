"""What many test modules share: running a campaign in-process, and watching processes come and go."""

from __future__ import annotations

import time
from pathlib import Path

from autoraysearch.campaign.results_log import read_results_log


def setup(experiment: Path, **options):
    """The setup flow on an experiment folder; single runs unless a test asks for seeds."""
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    options.setdefault("seeds", 1)  # single runs, as scripted train.py files expect; the noise tests ask for more
    return autoraysearch_setup(experiment_dir=str(experiment), **options)


def loop(experiment: Path, **options):
    from autoraysearch.flows.loop import autoraysearch_loop

    return autoraysearch_loop(experiment_dir=str(experiment), **options)


def results(experiment: Path, higher_is_better: bool = True):
    return read_results_log(experiment / "autoraysearch-results.tsv", higher_is_better)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger where PID 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate, seconds: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True
