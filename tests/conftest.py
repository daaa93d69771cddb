"""Shared fixtures: real git repositories, one real Prefect API and one real local Ray per session."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A command with no address attaches to a cluster `ray start --head` (or a simulated cluster) left on this
# machine; the tests' own commands always start a private one unless a test says otherwise.
os.environ.setdefault("AUTORAYSEARCH_RAY_ADDRESS", "local")

# Prefect's console log handler keeps the stream it first sees; configure it now, while that is the
# session's, not a stream a test's capsys closes (a handler on a closed stream recurses until a flow dies).
import prefect.main  # noqa: E402,F401

from helpers import EXAMPLE_MODEL, is_running, make_repo  # noqa: E402

# Trials may write only their scratch folder; scripted train.py files that count their calls or write
# their pid do it under this one shared folder (see the trial_dir fixture), never in an experiment folder.
TRIAL_WRITABLE = Path(tempfile.mkdtemp(prefix="autoraysearch-test-trials-"))
os.environ["AUTORAYSEARCH_TRIAL_WRITABLE"] = str(TRIAL_WRITABLE)
# Campaigns keep their compile caches here, not in the real home.
os.environ["AUTORAYSEARCH_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="autoraysearch-test-compile-")


@pytest.fixture
def leftovers():
    """Pids to SIGKILL at teardown, so a failing test does not leak sleeping processes."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def trial_dir(request) -> Path:
    """A folder of this test's own that scripted trials and pre-flights may write (counters, pid files)."""
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40].replace("/", "_") + "-", dir=TRIAL_WRITABLE))
    return path


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A git repository holding the bundled digits model.py, committed on main."""
    return make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API server (temporary database) shared by the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def ray_local(prefect_api):
    """One real local Ray for the session; its workers report to the session's Prefect API."""
    import ray

    from autoraysearch.cluster import ray_init_arguments

    address, kwargs = ray_init_arguments("local", {"num_cpus": 2})
    ray.init(address, **kwargs)
    yield
    ray.shutdown()


@pytest.fixture
def services(prefect_api, ray_local):
    """Prefect and Ray, ready for flows."""
    yield


@pytest.fixture
def search_quality(monkeypatch):
    """benchmarks/search_quality.py, imported afresh with benchmarks/ importable (other benchmark modules too)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # a Trainer adds its scratch folder; restored after
    for module in ("training_cache", "search_quality", "ideator_campaigns"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    import search_quality

    return search_quality


@pytest.fixture
def benchmark_on_a_cache_copy(search_quality, tmp_path, monkeypatch):
    """search_quality with its training caches (1 and 5 epochs) copied into tmp_path, and a Trainer on the first.

    Runs the copy lacks are trained into the copy, never into the repository's cache. Returns
    (search_quality module, Trainer).
    """
    for name in ("AUTORAYSEARCH_NUM_THREADS", "AUTORAYSEARCH_SUMMARY_PATH"):  # the Trainer sets them; restored after
        monkeypatch.setenv(name, "")
    import training_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("pool.json", training_cache.cache_path(1).name, training_cache.cache_path(5).name):
        if (training_cache.CACHE_DIR / name).exists():  # after a change to train.py, the runs are trained again
            shutil.copy(training_cache.CACHE_DIR / name, cache / name)
    monkeypatch.setattr(training_cache, "CACHE_DIR", cache)
    return search_quality, search_quality.Trainer(1)
