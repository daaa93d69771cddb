"""Whether today's offline ideator finds more true gain than the one before it, in campaigns of a fixed length.

    nice -n 10 .venv/bin/python benchmarks/ideator_campaigns.py --epochs 1 --campaigns 8 --iterations 40

Each campaign is search_quality.py's replay of the product's loop (its State, decision rules, cached
real digits training runs and judge) run for a fixed number of iterations rather than a run budget,
with one of two ideators proposing the edits:

* mutate: today's autoraysearch.ideators.mutate, fed the way the ideate step feeds it: the
  campaign's results so far as its history (per-seed runs, so that its gains are paired) and a build
  check on the digits input shape;
* previous: the offline ideator as it was before it learned from results (the package at
  PREVIOUS_COMMIT), read from git history when the benchmark runs, fed as the ideate step fed it.

Both ideators see the same campaign seeds, so each campaign is a paired comparison. The rule is the
product's default ("paired", with its path confirmation); `--rules paired,greedy` adds the greedy one.
Truth: the final best minus the baseline, each the mean of 10 test-split seeds (Trainer.truth).
Written to benchmarks/results/ideator_campaigns.md and .json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import search_quality as sq  # noqa: E402
import training_cache  # noqa: E402
from autoraysearch.campaign.model_source import fingerprint  # noqa: E402
from autoraysearch.campaign.results_log import ResultRow  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
PREVIOUS_COMMIT = "37342ff^"  # the last tree before the ideator learned from results
PREVIOUS_PACKAGE = "autoraysearch/ideators/mutate"
IDEATORS = ("mutate", "previous")
INPUT_SHAPE = [1, 8, 8]
NUM_CLASSES = 10
TIERS = ("small", "bold", "combined")


# ---- the two ideators ----

def load_previous(folder: Path):
    """The previous ideator's package, written from git history into `folder` under another name and imported."""
    listing = subprocess.run(["git", "ls-tree", "--name-only", PREVIOUS_COMMIT, PREVIOUS_PACKAGE + "/"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    package = folder / "previous_mutate"
    package.mkdir()
    for path in listing:
        text = subprocess.run(["git", "show", f"{PREVIOUS_COMMIT}:{path}"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
        (package / Path(path).name).write_text(text.replace("autoraysearch.ideators.mutate", "previous_mutate"))
    sys.path.insert(0, str(folder))
    return importlib.import_module("previous_mutate")


class Ideators:
    """Proposes a campaign's next edits with the ideator its state names (state.ideator)."""

    def __init__(self, scratch: Path):
        from autoraysearch.ideators.mutate import BuildCheck

        self.previous = load_previous(scratch)
        self.check = BuildCheck(INPUT_SHAPE, {"num_classes": NUM_CLASSES}, NUM_CLASSES)

    def propose(self, state: sq.State, count: int) -> list[str]:
        """search_quality.propose with the ideator chosen: the next `count` edits of the best."""
        seed = state.campaign * 1_000_003 + state.iteration
        stuck = state.stale >= sq.STUCK_AFTER
        if state.ideator == "previous":
            mutations = self.previous.choose_mutations(state.best, tried=state.tried, seed=seed, count=count,
                                                       failed=state.since_keep, stuck=stuck)
        else:
            from autoraysearch.ideators.mutate import choose_mutations

            mutations = choose_mutations(state.best, tried=state.tried, seed=seed, count=count,
                                         failed=state.since_keep, stuck=stuck, history=history(state),
                                         check=self.check, diverse=count if count > 1 else 0)
        for m in mutations:
            state.tried.add(fingerprint(m.source))
            state.descriptions[training_cache.model_hash(m.source)] = m.description
        return [m.source for m in mutations]


def history(state: sq.State) -> list[ResultRow]:
    """The campaign's results log as the ideator reads it: baseline, then one row per decided candidate."""
    rows = [_row(state, "0", state.baseline, "baseline", "baseline")]
    for number, step in enumerate(state.steps, 1):
        status = "keep" if step.kept else "discard"
        rows.append(_row(state, str(number), step.model, status,
                         state.descriptions.get(training_cache.model_hash(step.model), "")))
    return rows


def _row(state: sq.State, label: str, source: str, status: str, description: str) -> ResultRow:
    runs = _runs(state, source)
    if not runs:
        return ResultRow(label, "", None, None, "crash", description)
    seconds = state.seconds_of.get(training_cache.model_hash(source))
    extra = {"runs": ",".join(f"{r:.6g}" for r in runs), "seconds": f"{seconds:.3g}" if seconds else ""}
    return ResultRow(label, "", fmean(runs), None, status, description, extra)


def _runs(state: sq.State, source: str) -> list[float]:
    """The model's values at the campaign's seeds 0, 1, … as far as it has them without a gap."""
    key = training_cache.model_hash(source)
    runs = []
    while (value := state.known.get((key, state.seed + len(runs)))) is not None:
        runs.append(value)
    return runs


# ---- campaigns of a fixed length ----

def run_campaign(rule: str, ideator: str, campaign: int, trainer: sq.Trainer, iterations: int) -> sq.State:
    """One campaign of `iterations` iterations (fewer if the ideator runs dry), its path then confirmed."""
    base = training_cache.EXAMPLE.read_text()
    state = sq.State(rule=rule, campaign=campaign, baseline=base, best=base, confirmed=base, seed=10 * campaign)
    state.ideator, state.descriptions, state.seconds_of = ideator, {}, {}
    state.last_seconds = 0.0
    # The baseline's runs set the paired σ's prior (search_quality.paired_bar), as setup's do in the loop.
    state.baseline_runs = [sq.train(state, trainer, base, state.seed + i) for i in range(1 if rule == "greedy" else sq.SEEDS)]
    state.wall = state.seconds
    if rule != "greedy":
        state.groups.append(state.baseline_runs)
    while not state.exhausted and state.iteration < iterations:
        sq.iterate(state, trainer)
        if state.steps:
            model = state.steps[-1].model
            run = trainer.runs.get((training_cache.model_hash(model), state.seed, "validation"))
            if run is not None and not math.isnan(run.metric):
                state.seconds_of[training_cache.model_hash(model)] = run.seconds
    if rule in ("paired", "racing"):
        sq.confirm_path(state, trainer)
    return state


def judge(state: sq.State, trainer: sq.Trainer, sigma_fresh: float) -> dict:
    """search_quality's judgement, with what the ideator proposed: crashes, distinct candidates, kinds kept."""
    row = sq.judge(state, trainer, sigma_fresh)
    models = [training_cache.model_hash(s.model) for s in state.steps]
    crashed = sum(state.known.get((key, state.seed)) is None for key in models)
    tried = [state.descriptions.get(key, "") for key in models]
    kept = [d for d, s in zip(tried, state.steps) if s.kept]
    return {**row, "ideator": state.ideator, "iterations": state.iteration, "exhausted": state.exhausted,
            "crashed": crashed, "distinct": len(set(models)), "models": models, "kept_changes": kept,
            "tiers": {tier: sum(_tier(d) == tier for d in tried) for tier in TIERS}, "tried": tried}


def _tier(description: str) -> str:
    """Which tier a proposal came from, by how its description starts (both ideators write the same prefixes)."""
    return "combined" if description.startswith("combined: ") else "bold" if description.startswith("bold: ") else "small"


def totals(rows: list[dict]) -> dict:
    gains = [r["true_gain"] for r in rows]
    keeps = sum(r["keeps"] for r in rows)
    return {
        "campaigns": len(rows), "true_gain": fmean(gains), "true_gain_ci": sq.bootstrap(gains),
        "keeps": keeps, "false_keeps": sum(r["false_keeps"] for r in rows), "false_ci": sq.wilson(
            sum(r["false_keeps"] for r in rows), keeps),
        "candidates": sum(r["candidates"] for r in rows), "crashed": sum(r["crashed"] for r in rows),
        "distinct": fmean(r["distinct"] for r in rows),
        "distinct_all": len({m for r in rows for m in r["models"]}),
        "runs": fmean(r["runs"] for r in rows), "rollbacks": sum(r["rollbacks"] for r in rows),
        "exhausted": sum(r["exhausted"] for r in rows),
        "tiers": {tier: sum(r["tiers"][tier] for r in rows) for tier in TIERS},
    }


def difference(rows: list[dict], other: list[dict]) -> dict:
    """Mean of the per-campaign difference in true gain (same campaign seeds), with its bootstrap interval."""
    by_campaign = {r["campaign"]: r["true_gain"] for r in other}
    diffs = [r["true_gain"] - by_campaign[r["campaign"]] for r in rows if r["campaign"] in by_campaign]
    return {"mean": fmean(diffs), "ci": sq.bootstrap(diffs), "wins": sum(d > 0 for d in diffs), "n": len(diffs)}


def markdown(args, table: dict, diffs: dict, sigma_fresh: float, command: str) -> str:
    lines = [
        f"## digits, {args.epochs} epoch(s), {args.iterations} iterations, {args.campaigns} campaigns per ideator",
        "", f"`{command}`", "",
        f"True gain: the final best minus the baseline, each the mean of 10 test-split seeds (fresh per-run σ "
        f"{sigma_fresh:.4f}); interval: bootstrap over campaigns (95 %). mutate − previous: the mean of the "
        "per-campaign differences (same campaign seeds), bootstrap 95 %. False keep: a keep whose true delta "
        "against the best before it is ≤ 0 (Wilson 95 %). Crashed: candidates whose training failed. Distinct: "
        "different models tried per campaign (all campaigns together in brackets). Runs: search runs per campaign "
        f"(baseline included, path confirmation not). Tried: candidates that were small single / bold single / combined "
        f"edits. previous: the ideator at `{PREVIOUS_COMMIT}`.", "",
        "| rule | ideator | true gain [95 %] | keeps | false keeps [95 %] | crashed | distinct | runs | rollbacks "
        "| ran dry | tried small / bold / combined |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for rule, ideators in table.items():
        for ideator, t in ideators.items():
            lo, hi = t["true_gain_ci"]
            flo, fhi = t["false_ci"]
            lines.append(
                f"| {rule} | {ideator} | {t['true_gain']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {t['keeps']} "
                f"| {t['false_keeps']}/{t['keeps']} [{flo:.0%}, {fhi:.0%}] | {t['crashed']}/{t['candidates']} "
                f"| {t['distinct']:.1f} ({t['distinct_all']}) | {t['runs']:.1f} | {t['rollbacks']} "
                f"| {t['exhausted']}/{t['campaigns']} | {' / '.join(str(t['tiers'][k]) for k in TIERS)} |")
    lines += ["", "| rule | mutate − previous [95 %] | campaigns mutate ahead |", "|---|---|---:|"]
    for rule, d in diffs.items():
        lo, hi = d["ci"]
        lines.append(f"| {rule} | {d['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {d['wins']}/{d['n']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--campaigns", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rules", default="paired", help="comma-separated search_quality rules")
    parser.add_argument("--ideators", default=",".join(IDEATORS))
    args = parser.parse_args()
    os.environ.pop("AUTORAYSEARCH_EVAL_SPLIT", None)
    rules, ideators = args.rules.split(","), args.ideators.split(",")
    trainer = sq.Trainer(args.epochs)
    sq.propose = Ideators(Path(tempfile.mkdtemp(prefix="ideator-campaigns-"))).propose
    command = training_cache.command_line("ideator_campaigns.py")
    states = {rule: {ideator: [] for ideator in ideators} for rule in rules}
    for campaign in range(args.campaigns):
        for rule in rules:
            for ideator in ideators:
                states[rule][ideator].append(run_campaign(rule, ideator, campaign, trainer, args.iterations))
        print(f"campaign {campaign}: {trainer.trained} runs trained so far", flush=True)
    for rule in rules:  # the truth of every model a judgement needs, before the fresh σ is read
        for mine in states[rule].values():
            for state in mine:
                judge(state, trainer, 0.0)
    sigma_fresh = sq.fresh_sigma(trainer)
    judged = {rule: {i: [judge(s, trainer, sigma_fresh) for s in mine] for i, mine in by.items()}
              for rule, by in states.items()}
    table = {rule: {i: totals(rows) for i, rows in by.items()} for rule, by in judged.items()}
    diffs = {rule: difference(by["mutate"], by["previous"]) for rule, by in judged.items()
             if "mutate" in by and "previous" in by}
    text = markdown(args, table, diffs, sigma_fresh, command)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "ideator_campaigns.md").write_text("# Ideators compared: fixed-length campaigns over cached real "
                                                      "training runs\n\n" + text)
    (RESULTS_DIR / "ideator_campaigns.json").write_text(json.dumps(
        {"command": command, "previous": PREVIOUS_COMMIT, "table": table, "difference": diffs,
         "campaigns": judged, "sigma_fresh": sigma_fresh}, indent=1) + "\n")


if __name__ == "__main__":
    main()
