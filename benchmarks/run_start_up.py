"""What a run of train.py costs before it trains: this tree's train.py against an earlier commit's, side by side.

    python benchmarks/run_start_up.py [--runs 7] [--before bc8a169] [--seeds 1]

For models that train in seconds (digits at 1 epoch), a run is mostly its start-up, so every second
of it is a share of the candidates a campaign can try. Both train.py files are rendered for digits
(1 epoch), the earlier one from the template at commit --before, and run as campaign trials run
(process.run_in_directory: the supervisor, the judge and its contained model side, a 1-CPU trial's
limits), alternating. It prints each one's median seconds, the paired median difference and the
ratio, and checks that both give the same metric.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import jinja2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoraysearch.setup import rendering  # noqa: E402
from autoraysearch.setup.rendering import TrainSpec, optimization_defaults, render_train_py  # noqa: E402
from autoraysearch.trials.process import run_in_directory  # noqa: E402
from autoraysearch.trials.runs import trial_limits  # noqa: E402

MODEL = (ROOT / "examples" / "digits" / "model.py").read_text()


def train_py_at(commit: str, spec: TrainSpec) -> str:
    """train.py for spec as the template of `commit` renders it."""
    old = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:templates/train.py.j2"],
                         capture_output=True, text=True, check=True).stdout
    loader = rendering.ENVIRONMENT.loader
    rendering.ENVIRONMENT.loader = jinja2.DictLoader({"train.py.j2": old})
    try:
        rendering.ENVIRONMENT.cache = {}
        return render_train_py(spec)
    finally:
        rendering.ENVIRONMENT.loader = loader
        rendering.ENVIRONMENT.cache = {}


def timed(source: str, env: dict[str, str]) -> tuple[float, str]:
    """(seconds, the metric line) of one contained 1-CPU trial."""
    outcome = run_in_directory({"train.py": source, "model.py": MODEL}, [sys.executable, "train.py"], timeout=600,
                               env={"AUTORAYSEARCH_NUM_THREADS": "1", **env}, watch_channel=True,
                               limits=trial_limits(1.0))
    if outcome.returncode != 0:
        raise SystemExit(f"a trial failed: {outcome.last_error_line}")
    return outcome.seconds, outcome.channel_lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", default="bc8a169", help="the commit whose train.py template is compared")
    parser.add_argument("--seeds", type=int, default=1, help="seeds in each run (AUTORAYSEARCH_SEEDS)")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3: a median of fewer says little")
    spec = TrainSpec(dataset="digits", epochs=1, **optimization_defaults("digits"))
    variants = {f"train.py of {args.before}": train_py_at(args.before, spec), "this tree's train.py": render_train_py(spec)}
    env = {"AUTORAYSEARCH_SEEDS": ",".join(map(str, range(args.seeds)))} if args.seeds > 1 else {"AUTORAYSEARCH_SEED": "0"}
    timed(variants["this tree's train.py"], env)  # warm the page cache
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    metrics: dict[str, set[str]] = {name: set() for name in variants}
    for _ in range(args.runs):
        for name, source in variants.items():
            took, metric = timed(source, env)
            seconds[name].append(took)
            metrics[name].add(metric)
    before, after = (seconds[name] for name in variants)
    print(f"digits, 1 epoch, {args.seeds} seed(s) per run, {args.runs} contained 1-CPU trials each, alternating:")
    for name, values in seconds.items():
        print(f"  {name:26s} median {statistics.median(values):6.2f} s   runs {' '.join(f'{v:.2f}' for v in values)}")
    paired = statistics.median(a - b for a, b in zip(after, before))
    print(f"  this tree / before: {statistics.median(after) / statistics.median(before):.2f}x; "
          f"median of the paired differences {paired:+.2f} s")
    earlier, now = metrics.values()
    print(f"  the same metric either way: {earlier == now} ({', '.join(sorted(now))})")


if __name__ == "__main__":
    main()
