"""Trained results kept by (model.py hash, seed, epochs, split), so that many simulated campaigns cost little.

    nice -n 10 .venv/bin/python benchmarks/training_cache.py --epochs 1 --val-seeds 8 --test-seeds 10

Trains, on digits, the example model.py, every single edit the offline ideator proposes for it
(`propose_mutations`) and three known-bad controls (every width ÷ 4, dropout 0.9, the normalization
layers removed), each with the campaign's seeds on the validation split and fresh seeds on the test
split. Every run is the generated train.py, imported afresh in this process (torch is imported once),
with AUTORAYSEARCH_SEED and AUTORAYSEARCH_EVAL_SPLIT set; the final metric, the metric after each
epoch and the training seconds are appended to benchmarks/results/cache/digits-e{EPOCHS}.jsonl.
A run already in the file is never trained again.

    nice -n 10 .venv/bin/python benchmarks/training_cache.py --epochs 1 --carry-over benchmarks/results/cache/digits-e1-OLD.jsonl

After a change to train.py that leaves training alone, takes the older cache for the new train.py once
a sample of its runs (--check, 100 by default) retrains alike: a third or more to the same metric, none moving
the mean beyond its noise (see carry_over).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits" / "model.py"
CACHE_DIR = ROOT / "benchmarks" / "results" / "cache"
TEST_SEED_BASE = 1000  # test-split seeds start here; campaigns use the seeds below
SPLITS = ("validation", "test")


@dataclass(frozen=True)
class PoolModel:
    """A model.py of the pool: its name in tables, what it is, and its source."""

    key: str
    description: str
    kind: str  # "baseline", "edit" or "control"
    source: str


@dataclass(frozen=True)
class Run:
    """One cached training run."""

    model: str
    seed: int
    epochs: int
    split: str
    metric: float
    curve: tuple[float, ...]
    seconds: float


def command_line(script: str) -> str:
    """How this benchmark was started, for its results: the niceness it really ran at, then the script and its arguments."""
    niceness = os.nice(0)
    return " ".join([f"nice -n {niceness}"] * bool(niceness) + [f".venv/bin/python benchmarks/{script}", *sys.argv[1:]])


def model_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def controls(source: str) -> list[tuple[str, str]]:
    """Known-bad versions of the example: (description, source)."""
    quarter = re.sub(r"\b(16|32|64)\b", lambda m: str(int(m.group()) // 4), source)
    dropout = source.replace("nn.Dropout(0.25)", "nn.Dropout(0.9)")
    no_norm = re.sub(r"\n\s*nn\.BatchNorm2d\(\d+\),", "", source)
    return [("control: every width ÷ 4", quarter), ("control: dropout 0.9", dropout),
            ("control: normalization removed", no_norm)]


@functools.lru_cache(maxsize=1)
def build_check():
    """The ideate step's build check for digits (one sample 1×8×8, 10 classes); its verdicts serve every caller."""
    from autoraysearch.ideators.mutate import BuildCheck

    return BuildCheck([1, 8, 8], {}, 10)


def pool() -> list[PoolModel]:
    """The baseline, each single edit of it that builds (the ideator's build check), and the controls, without duplicates."""
    from autoraysearch.ideators.mutate.rules import propose_mutations

    base = EXAMPLE.read_text()
    edits = propose_mutations(base)
    built = build_check()([m.source for m in edits])
    models = [PoolModel(model_hash(base), "baseline: examples/digits/model.py", "baseline", base)]
    models += [PoolModel(model_hash(m.source), m.description, "edit", m.source) for m, verdict in zip(edits, built) if verdict.ok]
    models += [PoolModel(model_hash(s), d, "control", s) for d, s in controls(base)]
    unique = {m.key: m for m in reversed(models)}
    return [unique[k] for k in dict.fromkeys(m.key for m in models)]


def cache_path(epochs: int) -> Path:
    """The cache of one regime, for the train.py setup renders today (another template, another file)."""
    return CACHE_DIR / f"digits-e{epochs}-{model_hash(render_train(epochs))[:8]}.jsonl"


def load_runs(epochs: int) -> dict[tuple[str, int, str], Run]:
    """Every cached run of this regime, by (model hash, seed, split)."""
    path = cache_path(epochs)
    runs = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                run = Run(r["model"], r["seed"], r["epochs"], r["split"], r["metric"], tuple(r["curve"]), r["seconds"])
                runs[(run.model, run.seed, run.split)] = run
    return runs


def render_train(epochs: int) -> str:
    """The train.py setup generates for digits with these epochs."""
    from autoraysearch.setup.rendering import TrainSpec, optimization_defaults, render_train_py

    return render_train_py(TrainSpec(dataset="digits", epochs=epochs, **optimization_defaults("digits")))


def train_once(folder: Path, model: PoolModel, seed: int, split: str, epochs: int) -> Run:
    """One run of the generated train.py in this process, with the model's source as model.py."""
    (folder / "model.py").write_text(model.source)
    sys.modules.pop("model", None)
    printed = io.StringIO()
    started = time.perf_counter()
    with run_settings(folder, seed, split), contextlib.redirect_stdout(printed):
        train = import_train(folder / "train.py", "train_for_cache")
        assert train.SEED == seed and train.EVAL_SPLIT == split
        curve = train_in_process(train)
    seconds = time.perf_counter() - started
    return Run(model.key, seed, epochs, split, curve[-1], curve, round(seconds, 3))


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """These environment variables set for the block, each put back as it was (or removed) afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def run_settings(folder: Path, seed: int, split: str):
    """What one in-process run's train.py reads at import (its seed, split, threads, summary file, and model.py
    on the import path), put back as it was afterwards: a process that trains here and later starts a
    train.py of its own (a test session) must not hand it this run's seed or split."""
    values = {"AUTORAYSEARCH_SEED": str(seed), "AUTORAYSEARCH_EVAL_SPLIT": split, "AUTORAYSEARCH_NUM_THREADS": "1",
              "AUTORAYSEARCH_SUMMARY_PATH": str(folder / "summary.json")}
    sys.path.insert(0, str(folder))
    try:
        with environment(values):
            yield
    finally:
        sys.path.remove(str(folder))


def import_train(path: Path, name: str):
    """The generated train.py, imported afresh as its model side is (it reads its seed and split at import).

    Only the model side imports torch; the judge scores with numpy alone. train_in_process plays both.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    train = importlib.util.module_from_spec(spec)
    argv = sys.argv
    sys.argv = [str(path), "--model-side", str(path.parent)]
    try:
        spec.loader.exec_module(train)
    finally:
        sys.argv = argv
    return train


def train_in_process(train) -> tuple[float, ...]:
    """train.py's model side and its judge's scoring in this process (trusted code only): the metric after each epoch."""
    x_train, y_train, x_val, targets = train.load_arrays()
    unknown = [-1] * len(x_val)
    datasets = train.tensor_dataset(x_train, y_train), train.tensor_dataset(x_val, unknown)
    reports = io.StringIO()
    train.configure_runtime()
    train.train(datasets, reports)
    messages = [json.loads(line) for line in reports.getvalue().splitlines()]
    return tuple(train.score(m, targets) for m in messages if "epoch" in m)


@contextlib.contextmanager
def training_folder(epochs: int):
    """A scratch folder holding today's train.py, where train_once trains on one thread; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="training-cache-") as scratch:
        folder = Path(scratch)
        (folder / "train.py").write_text(render_train(epochs))
        yield folder


def fill(epochs: int, val_seeds: int, test_seeds: int, models: list[PoolModel]) -> None:
    """Train every missing run, the validation seeds of all models first, appending each as it ends."""
    done = load_runs(epochs)
    wanted = [(m, s, "validation") for s in range(val_seeds) for m in models]
    wanted += [(m, TEST_SEED_BASE + s, "test") for s in range(test_seeds) for m in models]
    missing = [(m, s, split) for m, s, split in wanted if (m.key, s, split) not in done]
    print(f"digits, {epochs} epoch(s): {len(wanted) - len(missing)} runs cached, {len(missing)} to train", flush=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with training_folder(epochs) as folder:
        with cache_path(epochs).open("a") as out:
            for n, (model, seed, split) in enumerate(missing, 1):
                run = train_once(folder, model, seed, split, epochs)
                out.write(json.dumps({**run.__dict__, "curve": list(run.curve)}) + "\n")
                out.flush()
                if n % 25 == 0:
                    print(f"  {n}/{len(missing)}", flush=True)


def carry_over(epochs: int, older: Path, check: int) -> None:
    """Take an older template's cache for today's, once `check` of its runs, drawn at random, retrain alike.

    A change to train.py that does not touch training (how the judge loads its data, how a run exits)
    changes the cache's name and would throw away every run; this keeps them, on evidence. Alike, not
    bit for bit: CPU kernels round differently with the memory alignment of their buffers, so a run's
    metric can move by a few validation samples with what the process ran before it (a real run of
    train.py and this process's run of it differ alike). After a change to the judge alone, 59 of 100
    runs at 1 epoch and 85 of 100 at 5 ended exactly where they did. So a third of the retrained runs
    must end exactly where they did, and the rest must not move the mean beyond its noise. A change to
    training, or to how seeds pair runs, moves nearly every run: the cache from before layers were
    seeded apart is refused.
    """
    current = cache_path(epochs)
    if current.exists() and current.read_text().strip():
        raise SystemExit(f"{current.name} already holds runs; carry over only into an empty cache")
    runs = [json.loads(line) for line in older.read_text().splitlines() if line.strip()]
    runs = [r for r in runs if r["epochs"] == epochs and r["curve"]]
    sources = {m.key: m for m in pool()}
    drawn = [r for r in runs if r["model"] in sources]
    if len(drawn) < 2:
        raise SystemExit(f"{older} holds too few {epochs}-epoch runs of the pool's models to check")
    drawn = random.Random(0).sample(drawn, min(check, len(drawn)))
    with training_folder(epochs) as folder:
        differences = [train_once(folder, sources[r["model"]], r["seed"], r["split"], epochs).metric - r["metric"]
                       for r in drawn]
    same = sum(d == 0 for d in differences)
    shift = sum(differences) / len(differences)
    error = (sum((d - shift) ** 2 for d in differences) / (len(differences) - 1) / len(differences)) ** 0.5
    figures = (f"of {len(drawn)} runs retrained, {same} ended on the same metric; the mean moved {shift:+.5f} "
               f"(standard error {error:.5f}), the most {max(map(abs, differences)):.4f}")
    if same < len(drawn) / 3 or abs(shift) > 2 * error:
        raise SystemExit(f"{figures}: today's train.py trains differently, so {older.name} cannot be carried over")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    current.write_text(older.read_text())
    print(f"{older.name} -> {current.name}: {len(runs)} runs carried over; {figures}")


def write_pool(models: list[PoolModel]) -> None:
    """The pool's descriptions by hash, for the tables."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    (CACHE_DIR / "pool.json").write_text(json.dumps(
        {m.key: {"description": m.description, "kind": m.kind} for m in models}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--val-seeds", type=int, default=8, help="validation seeds 0 … N-1 per model")
    parser.add_argument("--test-seeds", type=int, default=10, help=f"test seeds {TEST_SEED_BASE} … per model")
    parser.add_argument("--carry-over", type=Path, metavar="OLDER_CACHE",
                        help="take this older template's cache for today's train.py, checked first (--check)")
    parser.add_argument("--check", type=int, default=100, help="with --carry-over: runs retrained and compared")
    args = parser.parse_args()
    if args.carry_over:
        carry_over(args.epochs, args.carry_over, args.check)
        return
    models = pool()
    write_pool(models)
    fill(args.epochs, args.val_seeds, args.test_seeds, models)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
