"""What containment costs one digits trial: the same launcher with every layer on, and with every layer off.

Each trial runs the way a campaign runs it (process.run_in_directory: the supervisor, then the
generated train.py's judge and contained model side). "Contained" is this machine's default
(Landlock, network, mount and where needed PID namespaces, read-only mounts, no capabilities, and
the cgroup limits a 1-CPU trial gets);
"uncontained" is the same launcher with AUTORAYSEARCH_LANDLOCK_ABI=0 and
AUTORAYSEARCH_TRIAL_NETWORK=host, which turn Landlock and the namespaces off. Runs alternate, and
the script prints each trial's seconds, the medians and their ratio.

    python benchmarks/containment_cost.py [--runs 7] [--epochs 1] [--threads 1] [--abi N] [--empty]

`--empty` times a train.py that only starts its model side and exits: the fixed cost alone, without
the training time whose noise hides it on a busy machine.

`--abi N` caps the contained runs' Landlock ABI, to price a kernel's fallbacks (N < 6: a PID namespace).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

from autoraysearch.setup.rendering import TrainSpec, render_train_py
from autoraysearch.trials.process import run_in_directory
from autoraysearch.trials.runs import trial_limits
from autoraysearch.trials.sandbox import LANDLOCK_ABI_ENV, NETWORK_ENV
from training_cache import environment  # benchmarks/, this script's own folder

ROOT = Path(__file__).resolve().parents[1]
MODEL = (ROOT / "examples" / "digits" / "model.py").read_text()
UNCONTAINED = {LANDLOCK_ABI_ENV: "0", NETWORK_ENV: "host"}


# Starts the model side the way the generated judge does (behind AUTORAYSEARCH_CONTAIN) and waits for it.
EMPTY_TRAIN_PY = """import json, os, subprocess, sys
prefix = json.loads(os.environ.get("AUTORAYSEARCH_CONTAIN", "[]"))
subprocess.run([*prefix, "{}", sys.executable, "-c", "import model"] if prefix else [sys.executable, "-c", "import model"], check=True)
"""


def timed_trial(train_source: str, threads: int, settings: dict[str, str]) -> tuple[float, str]:
    """Seconds one trial took as the campaign's launcher measures it, and the sandbox it reported."""
    contained = settings != UNCONTAINED
    with environment(settings):  # the supervisor reads these from the environment it inherits
        outcome = run_in_directory({"train.py": train_source, "model.py": MODEL}, [sys.executable, "train.py"],
                                   timeout=600, env={"AUTORAYSEARCH_NUM_THREADS": str(threads)},
                                   limits=trial_limits(1.0) if contained else None)
    if outcome.returncode != 0:
        raise SystemExit(f"a trial failed: {outcome.last_error_line}")
    return outcome.seconds, outcome.sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--abi", type=int, default=None, help="cap the contained runs' Landlock ABI")
    parser.add_argument("--empty", action="store_true", help="a train.py that trains nothing: the fixed cost")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5: a median of fewer says little")
    source = EMPTY_TRAIN_PY if args.empty else render_train_py(
        TrainSpec("digits", epochs=args.epochs, model_kwargs={"num_classes": 10}))
    contained = {} if args.abi is None else {LANDLOCK_ABI_ENV: str(args.abi)}
    variants = {"contained": contained, "uncontained": UNCONTAINED}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    sandboxes: dict[str, str] = {}
    timed_trial(source, args.threads, contained)  # warm the page cache for both
    for _ in range(args.runs):
        for name, settings in variants.items():
            value, sandboxes[name] = timed_trial(source, args.threads, settings)
            seconds[name].append(value)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    what = "an empty train.py (model side imports model.py)" if args.empty else f"digits, {args.epochs} epoch(s)"
    print(f"{what}, {args.threads} thread(s), {args.runs} trials each, alternating; "
          f"Linux {platform.release()}")
    for name, values in seconds.items():
        print(f"  {name:12s} median {medians[name]:6.2f} s   runs {' '.join(f'{v:.2f}' for v in values)}")
        print(f"  {'':12s} sandbox: {sandboxes[name]}")
    on, off = medians["contained"], medians["uncontained"]
    paired = statistics.median(a - b for a, b in zip(seconds["contained"], seconds["uncontained"]))
    print(f"  containment adds {on - off:+.2f} s per trial ({on / off:.3f}x); "
          f"median of the paired differences {paired:+.2f} s")


if __name__ == "__main__":
    main()
