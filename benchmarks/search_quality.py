"""Whether a campaign's claims are true: claimed gain against the gain on a held-out test split.

    .venv/bin/python benchmarks/search_quality.py [--campaigns 3] [--budget 12] [--epochs 1]
                                                  [--fresh-seeds 5] [--rules 1,3]

Runs, for each decision rule (`--seeds 1`, the greedy rule, and `--seeds 3`, the noise-aware
default) and each campaign seed, a real campaign on digits (examples/digits/model.py) in a fresh git
repository: the setup flow, then the loop flow one chunk of iterations at a time, until the campaign
has spent `--budget` training runs (baseline seeds, screens and confirmations all count; rows past
the budget are cut off, so every campaign is judged on at most the same number of runs). Then:

* claimed gain: the logged best's metric minus the logged baseline's (validation split);
* true gain: the final best model.py and the baseline model.py, each retrained with `--fresh-seeds`
  seeds the campaigns never used and scored on the digits test split (AUTORAYSEARCH_EVAL_SPLIT=test),
  which no campaign sees: the difference of the means;
* false keeps: keeps whose own true delta (the kept model.py against the best before it, retrained
  the same way) is ≤ 0;
* training seconds (the `seconds` column) and the share of them spent on confirmation runs.

The table is printed and written to benchmarks/results/search_quality.md and .json. Fashion-MNIST
is used as well when Debian's copy is at /usr/share/datasets/fashion-mnist (not yet: a note says so).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits" / "model.py"
RESULTS_DIR = ROOT / "benchmarks" / "results"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FRESH_SEED_BASE = 1000  # retraining seeds start here: campaigns use seed .. seed + K - 1, all far below
RULES = {1: "greedy (--seeds 1)", 3: "noise-aware (--seeds 3)"}


# ---- counting runs in a results log ----

def runs_in_row(row, seeds: int) -> int:
    """Training runs a results-log row stands for: its seed count, K for a failed confirmation, 0 if never trained."""
    if row.extra.get("seeds"):
        return int(row.extra["seeds"])
    if "(screen " in row.description or "seed run " in row.description:
        return seeds
    if row.status in ("rejected", "stopped") and not float(row.extra.get("seconds") or 0):
        return 0
    return 1


def within_budget(rows, seeds: int, budget: int) -> list:
    """The log's rows, in order, as long as their runs add up to no more than `budget`."""
    kept, spent = [], 0
    for row in rows:
        spent += runs_in_row(row, seeds)
        if spent > budget:
            break
        kept.append(row)
    return kept


def runs_spent(rows, seeds: int) -> int:
    return sum(runs_in_row(r, seeds) for r in rows)


# ---- campaigns, through the product's own flows ----

def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout


def new_experiment(root: Path, name: str) -> Path:
    """A fresh git repository holding the example model.py, committed."""
    folder = root / name
    folder.mkdir()
    git(folder, "init", "-q")
    (folder / "model.py").write_text(EXAMPLE.read_text())
    git(folder, "add", "model.py")
    git(folder, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "the example model")
    return folder


def read_log(folder: Path):
    from autoraysearch.campaign.results_log import read_results_log
    from autoraysearch.campaign.settings import RESULTS_FILE

    return read_results_log(folder / RESULTS_FILE, higher_is_better=True)


def run_campaign(folder: Path, seeds: int, seed: int, budget: int, epochs: int, quiet: bool) -> float:
    """Setup with `seeds` and `seed`, then the loop until `budget` runs are spent; the wall seconds it took."""
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    started = time.perf_counter()
    with muted(quiet):
        autoraysearch_setup(experiment_dir=str(folder), model_py="model.py", dataset="digits", epochs=epochs,
                            seed=seed, seeds=seeds, cpus_per_trial=1.0)
    while (spent := runs_spent(read_log(folder).rows, seeds)) < budget:
        # A noise-aware iteration costs 1 run (a screen) or K (screen and confirmation): never overshoot by much.
        chunk = max(1, (budget - spent) // seeds)
        with muted(quiet):
            autoraysearch_loop(experiment_dir=str(folder), max_iterations=chunk)
        print(f"  {folder.name}: {runs_spent(read_log(folder).rows, seeds)}/{budget} runs", flush=True)
    return time.perf_counter() - started


@contextlib.contextmanager
def muted(quiet: bool):
    """The flows' own logging, out of the benchmark's output unless asked for."""
    if not quiet:
        yield
        return
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


# ---- what a campaign claims ----

@dataclass
class Keep:
    iteration: str
    claimed_delta: float  # the logged metric minus the best's before it
    model: str  # fingerprint of the kept model.py
    predecessor: str  # fingerprint of the best model.py before it
    true_delta: float | None = None


@dataclass
class Campaign:
    rule: int
    seed: int
    runs: int
    claimed_gain: float
    baseline_model: str
    best_model: str
    noise_sigma: float | None  # the campaign's own σ (None: not measured, --seeds 1)
    seconds: float
    confirmation_seconds: float
    wall_seconds: float
    keeps: list[Keep] = field(default_factory=list)
    true_gain: float | None = None


def fingerprint(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def read_claims(folder: Path, rule: int, seed: int, budget: int, wall: float, models: dict[str, str]) -> Campaign:
    """The campaign as its log says within the budget; every model.py it names goes into `models`."""
    from autoraysearch.campaign.noise import campaign_noise
    from autoraysearch.campaign.results_log import ResultsLog

    log = read_log(folder)
    rows = within_budget(log.rows, rule, budget)
    baseline_source = EXAMPLE.read_text()
    models[fingerprint(baseline_source)] = baseline_source

    def model_of(row) -> str:
        if row.status == "baseline":
            return fingerprint(baseline_source)
        source = git(folder, "show", f"{row.commit}:model.py")
        models[fingerprint(source)] = source
        return fingerprint(source)

    keeps = []
    for index, row in enumerate(rows):
        if row.status == "keep":
            before = ResultsLog(True, tuple(rows[:index])).best()
            keeps.append(Keep(row.iteration, row.metric - before.metric, model_of(row), model_of(before)))
    cut = ResultsLog(True, tuple(rows))
    seconds = sum(float(r.extra.get("seconds") or 0) for r in rows)
    confirming = sum(float(r.extra.get("seconds") or 0) * (runs_in_row(r, rule) - 1) / runs_in_row(r, rule)
                     for r in rows if r.status != "baseline" and runs_in_row(r, rule) > 1)
    noise = campaign_noise(rows)
    return Campaign(
        rule=rule, seed=seed, runs=runs_spent(rows, rule), claimed_gain=cut.best().metric - cut.baseline.metric,
        baseline_model=fingerprint(baseline_source), best_model=model_of(cut.best()),
        noise_sigma=noise.sigma if noise.measured else None, seconds=seconds, confirmation_seconds=confirming,
        wall_seconds=wall, keeps=keeps,
    )


# ---- the truth: fresh seeds on the test split ----

def score_models(models: dict[str, str], train_py: str, seeds: list[int], epochs_note: str) -> dict[str, list[float]]:
    """Each model.py retrained with `seeds` and scored on the test split, in one process (torch imported once)."""
    with tempfile.TemporaryDirectory(prefix="search-quality-") as scratch:
        work = Path(scratch)
        (work / "train.py").write_text(train_py)
        for name, source in models.items():
            (work / name).mkdir()
            (work / name / "model.py").write_text(source)
        request = {"folder": str(work), "models": sorted(models), "seeds": seeds}
        env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": "1", "AUTORAYSEARCH_SUMMARY_PATH": str(work / "summary.json")}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--score", json.dumps(request)], env=env, check=True,
                              capture_output=True, text=True)
        print(f"retrained {len(models)} models x {len(seeds)} seeds on the test split ({epochs_note}) "
              f"in {time.perf_counter() - started:.0f} s", flush=True)
        return json.loads(done.stdout.strip().splitlines()[-1])


def score_worker(request: dict) -> None:
    """The --score process: train.py imported afresh per run (it reads its seed and split at import)."""
    os.environ["AUTORAYSEARCH_EVAL_SPLIT"] = "test"
    scores = {}
    for name in request["models"]:
        sys.path.insert(0, str(Path(request["folder"]) / name))
        sys.modules.pop("model", None)
        scores[name] = []
        for seed in request["seeds"]:
            os.environ["AUTORAYSEARCH_SEED"] = str(seed)
            spec = importlib.util.spec_from_file_location("train_for_test", Path(request["folder"]) / "train.py")
            train = importlib.util.module_from_spec(spec)
            with contextlib.redirect_stdout(io.StringIO()):
                spec.loader.exec_module(train)
                assert train.EVAL_SPLIT == "test" and train.SEED == seed
                train.configure_runtime()
                metric, _, _ = train.train(train.load_datasets())
            scores[name].append(metric)
        sys.path.pop(0)
    print(json.dumps(scores))


def pooled_sigma(groups) -> float:
    """The pooled per-run standard deviation of several models' fresh-seed scores."""
    squares = sum(sum((x - fmean(g)) ** 2 for x in g) for g in groups)
    dof = sum(len(g) - 1 for g in groups)
    return math.sqrt(squares / dof) if dof else float("nan")


# ---- the table ----

def summarise(campaigns: list[Campaign], scores: dict[str, list[float]]) -> tuple[list[dict], dict[int, dict]]:
    """One row per campaign and one per rule (means over its campaigns, false-keep rate over all its keeps)."""
    for c in campaigns:
        c.true_gain = fmean(scores[c.best_model]) - fmean(scores[c.baseline_model])
        for k in c.keeps:
            k.true_delta = fmean(scores[k.model]) - fmean(scores[k.predecessor])
    sigma = pooled_sigma(scores.values())
    rows = []
    for c in campaigns:
        false = sum(k.true_delta <= 0 for k in c.keeps)
        rows.append({
            "rule": RULES[c.rule], "seed": c.seed, "runs": c.runs, "keeps": len(c.keeps), "false_keeps": false,
            "claimed_gain": c.claimed_gain, "true_gain": c.true_gain, "claim_error": c.claimed_gain - c.true_gain,
            "campaign_sigma": c.noise_sigma, "train_seconds": c.seconds,
            "confirmation_share": c.confirmation_seconds / c.seconds if c.seconds else 0.0,
            "wall_seconds": c.wall_seconds,
        })
    by_rule = {}
    for rule in sorted({c.rule for c in campaigns}):
        mine = [c for c in campaigns if c.rule == rule]
        keeps = [k for c in mine for k in c.keeps]
        false = sum(k.true_delta <= 0 for k in keeps)
        by_rule[rule] = {
            "rule": RULES[rule], "campaigns": len(mine), "runs": fmean(c.runs for c in mine), "keeps": len(keeps),
            "false_keeps": false, "false_keep_rate": false / len(keeps) if keeps else 0.0,
            "claimed_gain": fmean(c.claimed_gain for c in mine), "true_gain": fmean(c.true_gain for c in mine),
            "mean_abs_claim_error": fmean(abs(c.claimed_gain - c.true_gain) for c in mine),
            "train_seconds": fmean(c.seconds for c in mine),
            "confirmation_share": sum(c.confirmation_seconds for c in mine) / max(sum(c.seconds for c in mine), 1e-9),
        }
    return rows, {"sigma": sigma, **{str(k): v for k, v in by_rule.items()}}


def markdown(rows: list[dict], totals: dict, command: str, notes: list[str]) -> str:
    sigma = totals["sigma"]
    lines = [
        "# Search quality: claimed against true gains", "",
        f"`{command}`", "",
        "Claimed gain: the logged best minus the logged baseline (validation split). True gain: the final best "
        "model.py minus the baseline model.py, each retrained with fresh seeds and scored on the held-out test "
        "split. A false keep is a keep whose own true delta (against the best before it) is ≤ 0. "
        f"Noise σ (one run, test split, pooled over every retrained model): {sigma:.4f}.", "",
        "| rule | seed | runs | keeps | false keeps | claimed gain | true gain | claimed − true | campaign σ "
        "| train s | confirmation share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        campaign_sigma = f"{r['campaign_sigma']:.4f}" if r["campaign_sigma"] is not None else "–"
        lines.append(
            f"| {r['rule']} | {r['seed']} | {r['runs']} | {r['keeps']} | {r['false_keeps']} | {r['claimed_gain']:+.4f} "
            f"| {r['true_gain']:+.4f} | {r['claim_error']:+.4f} | {campaign_sigma} | {r['train_seconds']:.0f} "
            f"| {r['confirmation_share']:.0%} |")
    lines += ["", "| rule | campaigns | keeps | false-keep rate | mean claimed | mean true | mean abs(claimed − true) "
              "| within 1 σ | mean train s | confirmation share |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, t in totals.items():
        if key == "sigma":
            continue
        lines.append(
            f"| {t['rule']} | {t['campaigns']} | {t['keeps']} | {t['false_keeps']}/{t['keeps']} = {t['false_keep_rate']:.0%} "
            f"| {t['claimed_gain']:+.4f} | {t['true_gain']:+.4f} | {t['mean_abs_claim_error']:.4f} "
            f"| {'yes' if t['mean_abs_claim_error'] <= sigma else 'no'} | {t['train_seconds']:.0f} "
            f"| {t['confirmation_share']:.0%} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=3, help="campaign seeds per rule (0, 1, …)")
    parser.add_argument("--budget", type=int, default=12, help="training runs per campaign, all counted")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fresh-seeds", type=int, default=5, help="seeds each model is retrained with for the truth")
    parser.add_argument("--rules", default="1,3", help="the --seeds values compared")
    parser.add_argument("--keep", help="keep the campaign repositories in this folder")
    parser.add_argument("--verbose", action="store_true", help="show the flows' own output")
    parser.add_argument("--score", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score:
        return score_worker(json.loads(args.score))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.pop("AUTORAYSEARCH_EVAL_SPLIT", None)  # campaigns decide on the validation split, always
    command = "python benchmarks/search_quality.py " + " ".join(sys.argv[1:])
    notes = [f"digits (examples/digits/model.py), {args.epochs} epoch(s), --cpus-per-trial 1, offline mutate ideator, "
             f"{args.budget} training runs per campaign, fresh seeds {FRESH_SEED_BASE}…{FRESH_SEED_BASE + args.fresh_seeds - 1}."]
    if not FASHION_MNIST.is_dir():
        notes.append(f"Fashion-MNIST skipped: {FASHION_MNIST} is not installed on this machine.")
    print("\n".join(notes), flush=True)

    from autoraysearch.cluster import ray_session
    from autoraysearch.prefect_api import local_prefect_api

    root = Path(args.keep or tempfile.mkdtemp(prefix="search-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    campaigns, models, train_py = [], {}, None
    with local_prefect_api(), ray_session(None):
        for seed in range(args.campaigns):
            for rule in (int(r) for r in args.rules.split(",")):
                folder = new_experiment(root, f"seeds{rule}-campaign{seed}")
                wall = run_campaign(folder, rule, seed, args.budget, args.epochs, quiet=not args.verbose)
                campaign = read_claims(folder, rule, seed, args.budget, wall, models)
                train_py = (folder / "train.py").read_text()
                campaigns.append(campaign)
                print(f"{RULES[rule]} seed {seed}: {campaign.runs} runs, {len(campaign.keeps)} keeps, "
                      f"claimed {campaign.claimed_gain:+.4f}, {wall:.0f} s", flush=True)
    seeds = list(range(FRESH_SEED_BASE, FRESH_SEED_BASE + args.fresh_seeds))
    scores = score_models(models, train_py, seeds, f"{args.epochs} epoch(s)")
    rows, totals = summarise(campaigns, scores)
    text = markdown(rows, totals, command, notes)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "search_quality.md").write_text(text)
    (RESULTS_DIR / "search_quality.json").write_text(json.dumps(
        {"command": command, "notes": notes, "campaigns": rows, "totals": totals,
         "details": [asdict(c) for c in campaigns], "test_scores": scores}, indent=2) + "\n")


if __name__ == "__main__":
    main()
