"""What a seed costs when a candidate's seeds train in one run (seeds_in_one_run) against a run per seed.

    python benchmarks/seeds_in_one_run.py --runs 5 --epochs 1

Each trial runs the way a campaign runs it (process.run_in_directory: the supervisor, the generated
digits train.py's judge and its contained model side, a 1-CPU trial's limits), alternating:

* apart: one run at AUTORAYSEARCH_SEED=s, as many times as there are seeds;
* together: one run with AUTORAYSEARCH_SEEDS=s,s+1,…, each seed trained in a fork of its own.

It prints the medians, the start-up of a run (its seconds minus the training its judge reported),
the extra cost of each seed after the first in one run beyond its training, and checks that every
seed's metric is the same either way. The figures go to benchmarks/results/seeds_in_one_run.json,
where search_quality.py reads what a run costs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoraysearch.campaign.experiment import Trial  # noqa: E402
from autoraysearch.setup.rendering import TrainSpec, optimization_defaults, render_train_py  # noqa: E402
from autoraysearch.tasks.verify import seed_runs, seed_seconds  # noqa: E402
from autoraysearch.trials.process import run_in_directory  # noqa: E402
from autoraysearch.trials.runs import trial_limits  # noqa: E402

MODEL = (ROOT / "examples" / "digits" / "model.py").read_text()
RESULTS = ROOT / "benchmarks" / "results" / "seeds_in_one_run.json"


def timed(source: str, env: dict[str, str]) -> tuple[float, float, tuple[float, ...]]:
    """(seconds, its seeds' training and evaluation seconds, each seed's metric) of one contained trial."""
    outcome = run_in_directory({"train.py": source, "model.py": MODEL}, [sys.executable, "train.py"], timeout=600,
                               env={"AUTORAYSEARCH_NUM_THREADS": "1", **env}, watch_channel=True,
                               limits=trial_limits(1.0))
    if outcome.returncode != 0:
        raise SystemExit(f"a trial failed: {outcome.last_error_line}")
    trial = Trial(label="t", files={}, metric="val_acc", timeout=600, env=env, trusted_channel=True)
    runs = seed_runs(trial, outcome) or (float(outcome.channel_lines[-1].split("=", 1)[1]),)
    return outcome.seconds, seed_seconds(trial, outcome) or 0.0, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3: a median of fewer says little")
    source = render_train_py(TrainSpec(dataset="digits", epochs=args.epochs, **optimization_defaults("digits")))
    seeds = list(range(args.seeds))
    timed(source, {"AUTORAYSEARCH_SEED": "0"})  # warm the page cache
    apart, together, startup, extra, same = [], [], [], [], True
    for _ in range(args.runs):
        singles = [timed(source, {"AUTORAYSEARCH_SEED": str(s)}) for s in seeds]
        seconds, trained, runs = timed(source, {"AUTORAYSEARCH_SEEDS": ",".join(map(str, seeds))})
        apart.append(sum(s for s, _, _ in singles))
        together.append(seconds)
        startup.append(statistics.median(s - t for s, t, _ in singles))
        extra.append((seconds - trained - startup[-1]) / (len(seeds) - 1))
        same = same and [round(r, 4) for r in runs] == [r[0] for _, _, r in singles]  # a single run says 4 decimals
    figures = {
        "epochs": args.epochs, "seeds": args.seeds, "runs": args.runs,
        "apart_s": statistics.median(apart), "together_s": statistics.median(together),
        "startup_s": statistics.median(startup), "extra_per_seed_s": max(0.0, statistics.median(extra)),
        "train_s": statistics.median(t for _, t, _ in singles), "same_metrics": same,
    }
    print(f"digits, {args.epochs} epoch(s), {args.seeds} seeds, {args.runs} rounds, contained 1-CPU trials; "
          f"Linux {platform.release()}")
    print(f"  apart (a run per seed, one after another): median {figures['apart_s']:.2f} s   "
          f"{' '.join(f'{v:.2f}' for v in apart)}")
    print(f"  together (one run, a fork per seed):       median {figures['together_s']:.2f} s   "
          f"{' '.join(f'{v:.2f}' for v in together)}")
    print(f"  together / apart: {figures['together_s'] / figures['apart_s']:.2f}x; a run's start-up "
          f"{figures['startup_s']:.2f} s, its training {figures['train_s']:.2f} s; each seed after the first in one "
          f"run costs its training plus {figures['extra_per_seed_s']:.2f} s")
    print(f"  every seed's metric the same either way: {same}")
    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
