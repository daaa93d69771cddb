"""How well parallel mode fills the cluster: efficiency = T / iteration wall time for N = 1, 2, 4.

Each trial's train.py sleeps T seconds and prints a metric; N trials get N slots of a local Ray
(fractional CPUs, so 4 fit on a small machine). An iteration's wall time runs from the start of
its first trial process to the start of the next iteration's, so it includes ideation, the
candidate commits, scheduling, decide and log.

    python benchmarks/parallel_efficiency.py [--seconds 20] [--iterations 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN_PY = '''
import os, random, time

def load_model():  # never called: the benchmark measures scheduling, not training
    from model import Model

with open({stamps!r}, "a") as f:
    f.write(f"{{os.environ.get('AUTORAYSEARCH_TRIAL_LABEL', 'baseline')}} {{time.time()}}\\n")
time.sleep({seconds})
print(f"val_acc={{random.random():.4f}}")
'''


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd=folder,
                   check=True, capture_output=True)


def iteration_walls(exp: Path, stamps: Path, parallel: int, iterations: int, seconds: float) -> list[float]:
    """Run the loop in-process; an iteration lasts from its first trial's start to the next one's."""
    from autoraysearch.flows.loop import autoraysearch_loop

    stamps.write_text("")
    autoraysearch_loop(experiment_dir=str(exp), max_iterations=iterations, parallel=parallel,
                       cpus_per_trial=0.5, trial_timeout=seconds * 10)
    firsts = first_starts(stamps.read_text(), parallel)
    walls = [b - a for a, b in zip(firsts, firsts[1:])]
    return walls[1:]  # the first iteration also waits for Ray to start its worker processes


def first_starts(stamps: str, parallel: int) -> list[float]:
    """When each iteration's first trial started, grouped by the iteration label each trial wrote (5a -> 5).

    An iteration that ran fewer than `parallel` trials (a candidate dropped at pre-flight, say) would
    make its wall time mean something else: the benchmark stops and says so.
    """
    starts: dict[int, list[float]] = {}
    for line in stamps.splitlines():
        label, stamp = line.split()
        if label[0].isdigit():
            starts.setdefault(int(label.rstrip("abcdefghijklmnopqrstuvwxyz")), []).append(float(stamp))
    short = {n: len(times) for n, times in starts.items() if len(times) != parallel}
    if short:
        raise SystemExit(f"iterations that did not run {parallel} trials (iteration: trials): {short}")
    return [min(starts[n]) for n in sorted(starts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="T: how long each trial sleeps")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per N (a warm-up one is not)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    from autoraysearch.cluster import ray_session
    from autoraysearch.flows.setup_experiment import autoraysearch_setup
    from autoraysearch.prefect_api import local_prefect_api

    rows = []
    tmp = tempfile.mkdtemp(prefix="autoraysearch-parallel-")
    (Path(tmp) / "stamps").mkdir()
    os.environ["AUTORAYSEARCH_TRIAL_WRITABLE"] = str(Path(tmp) / "stamps")  # the trials write their start times there
    with local_prefect_api(), ray_session(None):
        for parallel in (1, 2, 4):
            exp, stamps = Path(tmp) / f"exp{parallel}", Path(tmp) / "stamps" / f"stamps{parallel}"
            exp.mkdir()
            shutil.copy(ROOT / "examples" / "digits" / "model.py", exp / "model.py")
            (exp / "train.py").write_text(TRAIN_PY.format(stamps=str(stamps), seconds=args.seconds))
            git(exp, "init", "-q", "-b", "main")
            git(exp, "add", ".")
            git(exp, "commit", "-q", "-m", "benchmark")
            autoraysearch_setup(experiment_dir=str(exp), train_py="train.py", cpus_per_trial=0.5, seeds=1)
            walls = iteration_walls(exp, stamps, parallel, args.iterations + 2, args.seconds)
            wall = statistics.median(walls)
            rows.append((parallel, wall, args.seconds / wall))
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"T = {args.seconds:g} s per trial, {args.iterations} timed iterations per N, 0.5 CPU per trial")
    print("N  iteration wall (median, s)  efficiency T/wall")
    for parallel, wall, efficiency in rows:
        print(f"{parallel}  {wall:26.2f}  {efficiency:17.3f}")
    print("target: efficiency >= 0.9 at N = 4")


if __name__ == "__main__":
    sys.exit(main())
