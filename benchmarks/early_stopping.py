"""What early stopping saves and whom it wrongly stops, replayed over a fixed pool of fully trained candidates.

    nice -n 10 .venv/bin/python benchmarks/training_cache.py --epochs 5 --val-seeds 8 --test-seeds 10
    .venv/bin/python benchmarks/early_stopping.py [--epochs 5] [--replays 40]

The pool (training_cache.py): every single edit the offline ideator proposes for the digits example and
three known-bad controls (widths ÷ 4, dropout 0.9, normalization removed), each trained to the end with
8 seeds, its curve logged. A replay is one campaign's stream of screens: the pool in a shuffled order,
each candidate at the replay's seed against the baseline's curve at that seed, the rule built from the
screens before it exactly as the loop builds it (pruning.rule_for: the fitted keep-bar rule once
MIN_FIT screens ran to the end, with its prior line spread by the baseline's seed noise, loosened to
EXPLORE_Z after EXPLORE_AFTER stopped in a row; the cautious noise-margin rule before). Each progress
line goes through pruning.CurveWatch as it would during training.

* good: a candidate whose 8-seed mean paired gain clears the keep bar at two seeds (noise.Bar.margin(2)
  with σ_d the pool's paired spread, before any screen taught the rule anything); bad: every other one.
* saved: the training seconds spared: the rest of a stopped screen (its epochs after the stop) and the
  paired seed its screen would have earned, as a share of all the seconds the replays used.
* wrong kills: stopped candidates that are good.
* oracle: every bad candidate stopped after its first epoch, no good one: the most any rule can save.
Side by side: the fitted rule without exploration (it may stop every screen once fitted), without
its prior line (a line through the first few screens alone), and the previous rule (3·√2·σ_e behind
the best's curve, after a third of the epochs) alone.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import training_cache  # noqa: E402
from autoraysearch.campaign import noise, pruning  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "early_stopping.md"


def lines_of(curve: tuple[float, ...]) -> list[str]:
    return [f"epoch={e}/{len(curve)} train_loss=0.1 val_acc={v:.4f} elapsed_s={e:.1f}" for e, v in enumerate(curve, 1)]


def stopped_at(curve: tuple[float, ...], rule) -> int | None:
    """The epoch the rule stops this curve after, or None."""
    watch = pruning.CurveWatch(rule, "val_acc")
    for epoch, line in enumerate(lines_of(curve), 1):
        if watch.see(line):
            return epoch
    return None


def replay(pool, runs, seeds, base, bar, replay_seed: int, rule_kind: str, good: dict) -> dict:
    """One shuffled stream of screens under one rule: seconds used, saved, stops and wrong kills."""
    rng = random.Random(replay_seed)
    order = list(pool)
    rng.shuffle(order)
    seed = seeds[replay_seed % len(seeds)]
    reference = runs[(base, seed)].curve
    baseline_runs = [runs[(base, seeds[(replay_seed + i) % len(seeds)])] for i in range(3)]
    setup_noise = noise.pooled_noise([[r.metric for r in baseline_runs]])
    sigmas = pruning.epoch_noise([[r.curve for r in baseline_runs]])
    screen_bar = noise.Bar(best_runs=(reference[-1],), noise=setup_noise, paired=noise.paired_prior(
        [r.metric for r in baseline_runs]))
    used = saved = 0.0
    stops = wrong = changed = in_a_row = 0
    history = []
    for key in order:
        run = runs[(key, seed)]
        passes = run.metric - runs[(base, seed)].metric > screen_bar.screen_bar()
        confirm = runs[(key, seeds[(replay_seed + 1) % len(seeds)])].seconds if passes else 0.0
        used += run.seconds + confirm
        if rule_kind == "oracle":
            epoch = 1 if not good[key] else None
        else:
            history_now = history if rule_kind in ("fitted", "never exploring", "no prior") else []
            stopped = in_a_row if rule_kind in ("fitted", "no prior") else 0
            rule = pruning.rule_for(reference, screen_bar, sigmas, history_now, stopped)
            epoch = stopped_at(run.curve, rule)
        if epoch is not None and epoch < len(run.curve):
            stops += 1
            wrong += good[key]
            changed += good[key] and passes  # run to the end, its screen would have earned it paired seeds
            saved += run.seconds * (len(run.curve) - epoch) / len(run.curve) + confirm
            in_a_row += 1
        else:
            history.append((run.curve, reference))
            in_a_row = 0
    return {"used": used, "saved": saved, "stops": stops, "wrong": wrong, "changed": changed, "candidates": len(order)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--replays", type=int, default=40)
    args = parser.parse_args()
    runs = {(m, s): r for (m, s, split), r in training_cache.load_runs(args.epochs).items() if split == "validation"}
    described = json.loads((training_cache.CACHE_DIR / "pool.json").read_text())
    base = next(k for k, v in described.items() if v["kind"] == "baseline")
    seeds = list(range(8))  # the pool's validation seeds (campaign runs in the same cache use others)
    pool = [k for k in described if k != base and all((k, s) in runs for s in seeds)]
    diffs = {k: [runs[(k, s)].metric - runs[(base, s)].metric for s in seeds] for k in pool}
    sigma_d = noise.robust_pool(diffs.values()).sigma
    keep_bar = noise.Bar(paired=noise.Noise(sigma=sigma_d, dof=len(pool) * (len(seeds) - 1))).margin(2)
    good = {k: fmean(d) > keep_bar for k, d in diffs.items()}
    bad_share = sum(not g for g in good.values()) / len(good)
    rows = []
    for kind, name in (("fitted", "fitted keep-bar rule (default)"),
                       ("never exploring", f"fitted, without exploration after {pruning.EXPLORE_AFTER:g} stops in a row"),
                       ("no prior", "fitted, without the prior line (PRIOR_SCREENS = 0)"),
                       ("cautious", "previous rule: 3·√2·σ_e behind"),
                       ("oracle", "oracle: every bad candidate after epoch 1")):
        prior = pruning.PRIOR_SCREENS
        pruning.PRIOR_SCREENS = 0 if kind == "no prior" else prior
        try:
            results = [replay(pool, runs, seeds, base, None, r, kind, good) for r in range(args.replays)]
        finally:
            pruning.PRIOR_SCREENS = prior
        used = sum(r["used"] for r in results)
        stops = sum(r["stops"] for r in results)
        wrong = sum(r["wrong"] for r in results)
        changed = sum(r["changed"] for r in results)
        total = sum(r["candidates"] for r in results)
        goods = sum(good.values()) * args.replays
        rows.append(f"| {name} | {sum(r['saved'] for r in results) / used:.0%} | {stops} of {total} "
                    f"| {wrong} = {wrong / total:.1%} of candidates, {wrong / goods:.1%} of good ones "
                    f"| {changed} = {changed / total:.1%} |")
    text = "\n".join([
        "# Early stopping, replayed over a fixed pool", "",
        f"`.venv/bin/python benchmarks/early_stopping.py --epochs {args.epochs} --replays {args.replays}`", "",
        f"Pool: {len(pool)} candidates of the digits example ({args.epochs} epochs, {len(seeds)} seeds each, "
        f"3 known-bad controls among them); {bad_share:.0%} are bad (their {len(seeds)}-seed mean paired gain "
        f"does not clear the keep bar at two seeds, {keep_bar:+.4f} with σ_d = {sigma_d:.4f}). "
        f"{args.replays} replays, each a shuffled order at one of the seeds; the rule learns from the screens "
        "before each candidate. Saved: share of all training seconds (screens and the paired seed a passing "
        "screen earns). Wrong kill: a stopped candidate that is good; it changed a decision when its screen, run "
        "to the end, would have passed (otherwise the screen discards it anyway).", "",
        "| rule | saved | stopped | wrong kills | wrong kills that changed a decision |", "|---|---:|---:|---|---:|", *rows, ""])
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
