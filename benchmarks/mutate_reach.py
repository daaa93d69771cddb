"""How far the offline ideator reaches on model files it has never seen, and how often a small edit truly helps.

    .venv/bin/python benchmarks/mutate_reach.py [STYLE.py ...] [--cap 300] [--preflight 30] [--train 8]
                                                [--base-rate 12 --base-rate-style cnn --seeds 10 --epochs 5]

For each model style (benchmarks/model_styles/*.py by default; each takes a digits image (1, 8, 8)
and gives 10 class scores) it asks the ideator for up to `--cap` distinct proposals at once, every
one passing its build check, and reports:

* proposals: how many it gave (the cap means "at least");
* pre-flight: of a seeded sample of `--preflight` of them, how many pass the trial pre-flight
  (trials.preflight, the check every candidate passes before it may train);
* crash share: of a seeded sample of `--train`, the share whose 1-epoch digits training crashed.

With --base-rate N, it also samples N small single edits of one style and trains each, and the style
itself, with `--seeds` seeds for `--epochs` epochs, scored on the digits test split: the base rate is
the share of edits whose mean paired test gain (same seed, edit minus original) is above zero, and
above two standard errors. Results go to benchmarks/results/mutate_reach.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean, stdev

ROOT = Path(__file__).resolve().parents[1]
STYLES = ROOT / "benchmarks" / "model_styles"
RESULTS_DIR = ROOT / "benchmarks" / "results"
INPUT_SHAPE = [1, 8, 8]
MODEL_KWARGS = {"num_classes": 10}
FRESH_SEED_BASE = 1000


def reach(source: str, cap: int) -> list:
    """Up to `cap` distinct proposals that pass the build check, in the order the ideator gives them."""
    from autoraysearch.campaign.model_source import fingerprint
    from autoraysearch.ideators.mutate import BuildCheck, choose_mutations

    check = BuildCheck(INPUT_SHAPE, dict(MODEL_KWARGS), 10)
    proposals = choose_mutations(source, tried={fingerprint(source)}, seed=0, count=cap, check=check)
    assert len({fingerprint(m.source) for m in proposals}) == len(proposals)
    return proposals


def preflight_passes(sources: list[str]) -> int:
    from autoraysearch.trials.preflight import preflight

    return sum(preflight(source, MODEL_KWARGS, INPUT_SHAPE, 10).ok for source in sources)


def train_py(epochs: int) -> str:
    from autoraysearch.setup.rendering import TrainSpec, render_train_py

    return render_train_py(TrainSpec("digits", epochs=epochs, model_kwargs=dict(MODEL_KWARGS)))


def train_models(models: dict[str, str], epochs: int, seeds: list[int], split: str) -> dict[str, list[float | None]]:
    """Each model.py trained with each seed in one process; None for a run that crashed."""
    with tempfile.TemporaryDirectory(prefix="mutate-reach-") as scratch:
        work = Path(scratch)
        (work / "train.py").write_text(train_py(epochs))
        for name, source in models.items():
            (work / name).mkdir()
            (work / name / "model.py").write_text(source)
        request = {"folder": str(work), "models": sorted(models), "seeds": seeds, "split": split}
        env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": "1", "AUTORAYSEARCH_SUMMARY_PATH": str(work / "summary.json")}
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(request)], env=env, check=True,
                              capture_output=True, text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def worker(request: dict) -> None:
    """The --worker process: train.py imported afresh per run (it reads its seed and split at import)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import training_cache
    os.environ["AUTORAYSEARCH_EVAL_SPLIT"] = request["split"]
    scores: dict[str, list] = {}
    for name in request["models"]:
        sys.path.insert(0, str(Path(request["folder"]) / name))
        sys.modules.pop("model", None)
        scores[name] = []
        for seed in request["seeds"]:
            os.environ["AUTORAYSEARCH_SEED"] = str(seed)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    train = training_cache.import_train(Path(request["folder"]) / "train.py", "train_for_reach")
                    metric = training_cache.train_in_process(train)[-1]
                scores[name].append(metric if math.isfinite(metric) else None)
            except Exception:
                scores[name].append(None)
        sys.path.pop(0)
    print(json.dumps(scores))


def base_rate(source: str, count: int, seeds: int, epochs: int) -> dict:
    """The share of `count` sampled small single edits whose mean paired test gain is positive (and > 2 SE)."""
    from autoraysearch.ideators.mutate import BuildCheck
    from autoraysearch.ideators.mutate.search import Pool

    small = Pool(source, BuildCheck(INPUT_SHAPE, dict(MODEL_KWARGS), 10)).small()
    sample = random.Random(0).sample(small, min(count, len(small)))
    models = {"base": source, **{f"edit{i:02d}": m.source for i, m in enumerate(sample)}}
    seed_list = list(range(FRESH_SEED_BASE, FRESH_SEED_BASE + seeds))
    scores = train_models(models, epochs, seed_list, "test")
    edits = []
    for index, mutation in enumerate(sample):
        pairs = [(a, b) for a, b in zip(scores[f"edit{index:02d}"], scores["base"]) if a is not None and b is not None]
        gains = [a - b for a, b in pairs]
        mean = fmean(gains) if gains else float("nan")
        error = stdev(gains) / math.sqrt(len(gains)) if len(gains) > 1 else float("inf")
        edits.append({"description": mutation.description, "gain": mean, "stderr": error,
                      "crashed_runs": seeds - len(pairs)})
    improved = sum(1 for e in edits if e["gain"] > 0)
    clearly = sum(1 for e in edits if e["gain"] > 2 * e["stderr"])
    return {"sampled": len(sample), "of": len(small), "improved": improved, "clearly_improved": clearly,
            "base_test_acc": fmean(x for x in scores["base"] if x is not None), "edits": edits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("styles", nargs="*", help="model.py files (default: benchmarks/model_styles/*.py)")
    parser.add_argument("--cap", type=int, default=300, help="proposals asked for per style")
    parser.add_argument("--preflight", type=int, default=30, help="proposals per style checked with the trial pre-flight")
    parser.add_argument("--train", type=int, default=8, help="proposals per style trained for 1 epoch to count crashes")
    parser.add_argument("--base-rate", type=int, default=0, help="small single edits sampled for the base rate (0: skip)")
    parser.add_argument("--base-rate-style", default="cnn")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    command = "python benchmarks/mutate_reach.py " + " ".join(sys.argv[1:])
    paths = [Path(p) for p in args.styles] or sorted(STYLES.glob("*.py"))
    rows = []
    for path in paths:
        source = path.read_text()
        started = time.perf_counter()
        proposals = reach(source, args.cap)
        seconds = time.perf_counter() - started
        rng = random.Random(0)
        checked = rng.sample(proposals, min(args.preflight, len(proposals)))
        passed = preflight_passes([m.source for m in checked])
        trained = rng.sample(proposals, min(args.train, len(proposals)))
        scores = train_models({f"p{i:03d}": m.source for i, m in enumerate(trained)}, 1, [0], "validation") \
            if trained else {}
        crashes = sum(1 for runs in scores.values() if None in runs)
        kinds = sorted({kind for m in proposals for kind in m.kinds})
        row = {"style": path.stem, "proposals": len(proposals), "cap": args.cap, "preflight_checked": len(checked),
               "preflight_passed": passed, "trained": len(trained), "crashed": crashes,
               "kinds": kinds, "seconds": round(seconds, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"`{command}`", "", "| model style | proposals passing the build check | pre-flight (sample) "
             "| crashed in 1-epoch training (sample) | kinds | seconds |", "|---|---:|---:|---:|---|---:|"]
    for r in rows:
        at_least = "≥ " if r["proposals"] >= r["cap"] else ""
        lines.append(f"| {r['style']} | {at_least}{r['proposals']} | {r['preflight_passed']}/{r['preflight_checked']} "
                     f"| {r['crashed']}/{r['trained']} | {', '.join(r['kinds'])} | {r['seconds']} |")
    result = {"command": command, "styles": rows}
    if args.base_rate:
        style = next(p for p in paths if p.stem == args.base_rate_style) if args.styles else STYLES / f"{args.base_rate_style}.py"
        rate = base_rate(style.read_text(), args.base_rate, args.seeds, args.epochs)
        result["base_rate"] = rate
        lines += ["", f"Base rate on {style.stem}: {rate['sampled']} of its {rate['of']} small single edits sampled, "
                      f"each trained with {args.seeds} seeds x {args.epochs} epochs and scored on the test split "
                      f"(original: {rate['base_test_acc']:.4f}): {rate['improved']}/{rate['sampled']} improve on average, "
                      f"{rate['clearly_improved']}/{rate['sampled']} by more than two standard errors.", "",
                  "| edit | mean paired test gain | standard error |", "|---|---:|---:|"]
        lines += [f"| {e['description']} | {e['gain']:+.4f} | {e['stderr']:.4f} |" for e in rate["edits"]]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "mutate_reach.md").write_text(text)
    (RESULTS_DIR / "mutate_reach.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
