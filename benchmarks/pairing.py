"""How well a candidate's run pairs with the best's run at the same seed, with and without seeding each layer on its own.

A paired comparison (candidate at seed s minus the best at seed s) is only as good as the two runs'
correlation. train.py seeds every torch.nn layer from (SEED, its type and shape, its count), so a
change to one layer leaves the other layers' initial weights as they were. The simplest alternative,
one global seed for the whole model, shifts every later layer's draw when a layer's size changes.
This trains the example and its single edits (the offline ideator's, the same list as
benchmarks/training_cache.py) at seeds 0..N-1 both ways, in this process, and prints per edit the
correlation of its metric with the example's across seeds, the medians, and the spread of a paired
difference relative to one run's (1.41 for independent runs).

    nice -n 10 python benchmarks/pairing.py [--seeds 8] [--edits 15] [--epochs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import training_cache  # noqa: E402


def metric(folder: Path, source: str, seed: int, layer_seeds: bool) -> float:
    """One run of the generated train.py's training and scoring, in this process."""
    (folder / "model.py").write_text(source)
    sys.modules.pop("model", None)
    with training_cache.run_settings(folder, seed, "validation"), contextlib.redirect_stdout(io.StringIO()):
        train = training_cache.import_train(folder / "train.py", "train_for_pairing")
        if not layer_seeds:
            train.seeded_layers = contextlib.nullcontext  # one global seed for the whole model
        return training_cache.train_in_process(train)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--edits", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    models = [m for m in training_cache.pool() if m.kind in ("baseline", "edit")][: args.edits + 1]
    results = {}
    with tempfile.TemporaryDirectory(prefix="pairing-") as scratch:
        folder = Path(scratch)
        (folder / "train.py").write_text(training_cache.render_train(args.epochs))
        for layer_seeds in (False, True):
            results[layer_seeds] = {m.key: [metric(folder, m.source, s, layer_seeds) for s in range(args.seeds)]
                                    for m in models}
    base = models[0].key
    print(f"digits, {args.epochs} epoch(s), {args.seeds} seeds, {len(models) - 1} single edits of the example")
    print(f"{'edit':60s} {'global seed':>12s} {'layer seeds':>12s}")
    summary = {}
    for layer_seeds, runs in results.items():
        correlations, spreads = [], []
        for m in models[1:]:
            try:
                correlations.append(statistics.correlation(runs[base], runs[m.key]))
            except statistics.StatisticsError:  # a constant metric over the seeds
                correlations.append(float("nan"))
            diffs = [a - b for a, b in zip(runs[m.key], runs[base])]
            single = statistics.fmean([statistics.stdev(runs[base]), statistics.stdev(runs[m.key])])
            spreads.append(statistics.stdev(diffs) / single if single else float("nan"))
        summary[layer_seeds] = (correlations, spreads)
    for index, m in enumerate(models[1:]):
        print(f"{m.description[:60]:60s} {summary[False][0][index]:12.2f} {summary[True][0][index]:12.2f}")
    for layer_seeds, name in ((False, "global seed"), (True, "layer seeds")):
        correlations, spreads = (sorted(v for v in values if v == v) for values in summary[layer_seeds])
        print(f"{name}: median correlation {statistics.median(correlations):.2f}, "
              f"median spread of a paired difference {statistics.median(spreads):.2f}x one run's")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
