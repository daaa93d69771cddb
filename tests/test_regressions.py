"""Fixes that each once broke a campaign, pinned: every test here fails when its fix is reverted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Review
from autoraysearch.trials.preflight import PreflightResult
from autoraysearch.campaign.settings import CampaignSettings
from helpers import EXAMPLE_MODEL, hanging_experiment

# ---- spare mutations are pre-flighted one at a time until every slot is filled ----


def test_a_failed_pre_flight_is_replaced_by_a_spare_in_parallel_mode(monkeypatch):
    """Two slots, six drawn mutations, m1, m2 and m4 failing: m0 and m3 fill the slots (m3 was once skipped)."""
    import autoraysearch.tasks.ideate as ideate
    from autoraysearch.ideators.mutate.rules import Mutation

    drawn = [Mutation(kind=f"k{n}", description=f"m{n}", source=f"m{n} = {n}\n") for n in range(6)]
    checked: list[str] = []

    def fake_choose_mutations(source, **options):  # stands in for the rule engine: six fixed proposals
        return drawn

    def fake_preflight(sources, settings):  # stands in for the CPU pre-flight: m1, m2 and m4 fail
        checked.extend(s.split()[0] for s in sources)
        return [PreflightResult(ok=s.split()[0] not in ("m1", "m2", "m4"), reason="scripted failure", seconds=0.0,
                                parameters=None, stage="forward") for s in sources]

    monkeypatch.setattr(ideate, "choose_mutations", fake_choose_mutations)
    monkeypatch.setattr(ideate, "preflight_sources", fake_preflight)
    review = Review(model_source=EXAMPLE_MODEL.read_text(), train_source="", git_log=(), best_metric=0.9,
                    best_sha="x", tried=frozenset())
    ideas = ideate.propose_mutations(review, CampaignSettings(), 3, ["3a", "3b"])
    assert [(c.label, c.description) for c in ideas.candidates] == [("3a", "m0"), ("3b", "m3")]
    assert [d.description for d in ideas.crashed] == ["m1", "m2"]
    assert checked == ["m0", "m1", "m2", "m3"]  # one at a time, and no spare once both slots are full


# ---- signals reach a run however it was started ----

def stop_when_training(cli: subprocess.Popen, pid_file: Path, stop) -> str:
    try:
        deadline = time.monotonic() + 240
        while not pid_file.exists():
            assert cli.poll() is None, cli.communicate()[0]
            assert time.monotonic() < deadline, "the trial never started"
            time.sleep(0.2)
        stop()
        return cli.communicate(timeout=90)[0]
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)


@pytest.mark.slow
def test_kill_int_stops_a_run_started_in_the_background(services, example_repo: Path, trial_dir: Path):
    """A job started by a script inherits SIGINT ignored; `kill -INT` must still stop the campaign cleanly."""
    from prefect.settings import PREFECT_API_URL

    pid_file = trial_dir / "trial.pid"
    hanging_experiment(example_repo, trial_dir, pid_file)
    cli = subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(example_repo), "--trial-timeout", "300"],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # what `cmd &` in a script does
    )
    output = stop_when_training(cli, pid_file, lambda: os.kill(cli.pid, signal.SIGINT))
    assert cli.returncode == 130, output
    assert "stopped; the campaign branch is on its best commit" in output


@pytest.mark.slow
def test_ctrl_c_with_the_local_prefect_server_the_cli_started(services, example_repo: Path, trial_dir: Path,
                                                              tmp_path: Path):
    """Ctrl-C signals the whole foreground group; the local server must outlive it to record the clean-up."""
    pid_file = trial_dir / "trial.pid"
    hanging_experiment(example_repo, trial_dir, pid_file)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # a server of its own, on its own database
    cli = subprocess.Popen(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(example_repo), "--trial-timeout", "300"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = stop_when_training(cli, pid_file, lambda: os.killpg(cli.pid, signal.SIGINT))  # as a terminal does
    assert cli.returncode == 130, output
    assert "stopped; the campaign branch is on its best commit" in output
    assert "Traceback" not in output, output
    rows = (example_repo / "autoraysearch-results.tsv").read_text().splitlines()
    assert rows[-1].split("\t")[4] == "stopped"  # the clean-up reached the end


def test_looking_for_a_cluster_running_here_leaves_ray_usable():
    """Importing ray._common.utils before ray once left ray half-initialised: every `run` failed in ray.init."""
    env = {k: v for k, v in os.environ.items() if k not in ("AUTORAYSEARCH_RAY_ADDRESS", "RAY_ADDRESS")}
    check = ("from autoraysearch.cluster import resolve_address; resolve_address(None); import ray; "
             "ray._common.utils.get_default_ray_temp_dir()")
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---- trials on threads of one process parse Python one at a time (CPython 3.11's AST builder is not thread-safe) ----


def test_threads_parse_python_one_at_a_time(monkeypatch):
    """Six threads parse at once; inside ast.parse there is never more than one (it once failed with
    "AST constructor recursion depth mismatch" when trials parsed their train.py on threads)."""
    import ast
    import threading

    from autoraysearch.campaign.model_source import parse_python

    real_parse, inside, most, guard = ast.parse, [0], [0], threading.Lock()

    def slow_parse(*args, **kwargs):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)  # long enough for every thread to arrive while one is parsing
        with guard:
            inside[0] -= 1
        return real_parse(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", slow_parse)
    trees = []
    threads = [threading.Thread(target=lambda n=n: trees.append(parse_python(f"x = {n}\n"))) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trees) == 6 and most[0] == 1


def test_the_product_parses_python_only_through_the_thread_safe_parser():
    root = Path(__file__).resolve().parents[1]
    sources = [p for folder in ("autoraysearch", "flows", "tasks") for p in (root / folder).rglob("*.py")]
    direct = [str(p.relative_to(root)) for p in sources
              if "ast.parse(" in p.read_text() and p.name != "model_source.py"]
    assert sources and direct == []
