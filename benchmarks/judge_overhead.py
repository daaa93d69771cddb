"""What the trusted judge costs one digits trial: train.py as judge + contained model side, against one process.

The simplest alternative is the single-process train.py that autoraysearch generated before the judge
existed (it trained and scored in the process that imports model.py, so model code could forge the
score). This renders both from the templates (the earlier one from git history, commit BEFORE), runs
each as a trial the way a campaign does (process.run_in_directory: supervisor, Landlock), alternating
them, and prints the median wall time of each and their ratio.

    python benchmarks/judge_overhead.py [--runs 7] [--epochs 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import jinja2

from autoraysearch.setup.rendering import (
    TrainSpec, default_channels_last, make_environment, render_train_py, validate_train_spec, with_known_shapes,
)
from autoraysearch.trials.process import run_in_directory

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "20b36de"  # the last commit whose train.py scored in the model's own process
MODEL = (ROOT / "examples" / "digits" / "model.py").read_text()


def single_process_train_py(spec: TrainSpec) -> str:
    """train.py as the single-process template of commit BEFORE rendered it."""
    old = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE}:templates/train.py.j2"],
                         capture_output=True, text=True, check=True).stdout
    environment = make_environment()
    environment.loader = jinja2.DictLoader({"train.py.j2": old})
    validate_train_spec(spec)
    spec = with_known_shapes(spec)
    return environment.get_template("train.py.j2").render(
        spec=spec, kind="digits", ddp=False, image_set=None, where_to_put="", data_module_name=None,
        augment=False, channels_last=default_channels_last(spec.input_shape),
    )


def timed_trial(train_source: str, threads: int) -> float:
    """Seconds one trial took, start to end, as the campaign's launcher measures it."""
    outcome = run_in_directory({"train.py": train_source, "model.py": MODEL}, [sys.executable, "train.py"],
                               timeout=600, env={"AUTORAYSEARCH_NUM_THREADS": str(threads)})
    if outcome.returncode != 0:
        raise SystemExit(f"a trial failed: {outcome.last_error_line}")
    return outcome.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    spec = TrainSpec("digits", epochs=args.epochs, model_kwargs={"num_classes": 10})
    variants = {"single process (before)": single_process_train_py(spec), "judge + model side": render_train_py(spec)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    timed_trial(variants["judge + model side"], args.threads)  # warm the page cache for both
    for _ in range(args.runs):
        for name, source in variants.items():
            seconds[name].append(timed_trial(source, args.threads))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"digits, {args.epochs} epoch(s), {args.threads} thread(s), {args.runs} trials each, alternating:")
    for name, values in seconds.items():
        print(f"  {name:26s} median {medians[name]:6.2f} s   runs {' '.join(f'{v:.2f}' for v in values)}")
    before, after = medians["single process (before)"], medians["judge + model side"]
    paired = statistics.median(b - a for a, b in zip(seconds["single process (before)"], seconds["judge + model side"]))
    print(f"  the judge adds {after - before:+.2f} s per trial ({after / before:.2f}x); "
          f"median of the paired differences {paired:+.2f} s")


if __name__ == "__main__":
    main()
