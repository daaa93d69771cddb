"""Seconds autoraysearch adds to each iteration, against a bare shell loop running the same train.py.

The train.py prints its metric at once, so each iteration's wall time is the loop's own cost: the
Prefect task runs on Ray, git, the ideator and the process start. Both loops run here, in one run,
and each train.py start is time-stamped; per-iteration time is the gap between consecutive starts.

    python benchmarks/loop_overhead.py [--iterations 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TRAIN_PY = '''
import random, time

def load_model():  # never called: the point is to measure the loop, not training
    from model import Model

with open({stamps!r}, "a") as f:
    f.write(f"{{time.time()}}\\n")
print(f"val_acc={{random.random():.4f}}")
'''


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd=folder,
                   check=True, capture_output=True)


def make_experiment(folder: Path, stamps: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "digits" / "model.py", folder / "model.py")
    (folder / "train.py").write_text(TRAIN_PY.format(stamps=str(stamps)))
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "benchmark experiment")


def gaps(stamps: Path) -> list[float]:
    times = [float(line) for line in stamps.read_text().split()]
    return [b - a for a, b in zip(times, times[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    args = parser.parse_args()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env.setdefault("PREFECT_HOME", str(tmp / "prefect-home"))
        (tmp / "stamps").mkdir()
        env["AUTORAYSEARCH_TRIAL_WRITABLE"] = str(tmp / "stamps")  # trials may write only there besides scratch
        exp, stamps = tmp / "exp", tmp / "stamps" / "loop"
        make_experiment(exp, stamps)
        run = lambda *cmd: subprocess.run([str(BIN / "autoraysearch"), *cmd], cwd=exp, env=env, check=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run("setup", "model.py", "--train-py", "train.py", "--seeds", "1")  # one trial per iteration, as timed
        stamps.write_text("")
        started = time.perf_counter()
        run("run", "--max-iterations", str(args.iterations))
        total = time.perf_counter() - started
        loop_gaps = gaps(stamps)

        bare_stamps = tmp / "stamps" / "bare"
        (exp / "train.py").write_text(TRAIN_PY.format(stamps=str(bare_stamps)))
        subprocess.run(["bash", "-c", f"for i in $(seq {args.iterations}); do {sys.executable} train.py >/dev/null; done"],
                       cwd=exp, check=True)
        bare_gaps = gaps(bare_stamps)

    loop_median, bare_median = statistics.median(loop_gaps), statistics.median(bare_gaps)
    print(f"iterations                      {args.iterations}")
    print(f"autoraysearch run, s/iteration  median {loop_median:.3f}  (min {min(loop_gaps):.3f}, max {max(loop_gaps):.3f})")
    print(f"bare shell loop, s/iteration    median {bare_median:.3f}  (min {min(bare_gaps):.3f}, max {max(bare_gaps):.3f})")
    print(f"overhead per iteration          {loop_median - bare_median:.3f} s   (target <= 1 s)")
    print(f"autoraysearch run, whole command {total:.1f} s (includes starting Ray and a Prefect server)")


if __name__ == "__main__":
    main()
