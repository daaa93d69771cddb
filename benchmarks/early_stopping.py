"""What early stopping would save, measured without letting it decide: every candidate runs to the end.

A digits campaign (the bundled example model, the offline mutate ideator, several epochs of small
batches) runs with early stopping OFF. Afterwards each candidate's screen log is replayed, line by line,
through the rule exactly as the loop would have applied it at that iteration (the best's curve and the
seed noise as the results log stood then; pruning.rule_from_log), and the benchmark reports:

* saved: the training seconds the rule would have spared on discarded candidates, as a share of all
  the seconds those candidates used. A pruned run saves its training after the epoch it was stopped at
  (elapsed_s of its last epoch minus elapsed_s there, which leaves out the evaluations it skips too) and
  every confirmation run it would not have reached.
* wrong kills: candidates the rule would have pruned that the campaign kept.

Side by side, in the same run, the naive rule: prune at a third of the epochs when behind the best's
curve at all (margin 0), to show what the noise margin buys.

    python benchmarks/early_stopping.py [--iterations 6] [--parallel 2] [--epochs 6] [--batch-size 8]

The table is printed and written to benchmarks/results/early_stopping.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "early_stopping.md"


@dataclass(frozen=True)
class Replay:
    """One candidate under a rule: what the campaign did with it, and where the rule would have stopped it."""

    label: str
    status: str
    seconds: float
    pruned_at: str  # "2/6", or "" when the rule lets it run to the end
    saved: float


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd=folder,
                   check=True, capture_output=True)


def run_campaign(exp: Path, args) -> None:
    """Set up the example on digits and run the loop with early stopping off."""
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    autoraysearch_setup(experiment_dir=str(exp), epochs=args.epochs, batch_size=args.batch_size, seeds=args.seeds,
                        cpus_per_trial=args.cpus_per_trial)
    autoraysearch_loop(experiment_dir=str(exp), max_iterations=args.iterations, parallel=args.parallel,
                       cpus_per_trial=args.cpus_per_trial, early_stop=False)


def elapsed(line: str) -> float:
    for field in line.split():
        if field.startswith("elapsed_s="):
            return float(field.split("=", 1)[1])
    return 0.0


def number(row) -> str:
    """The iteration a row belongs to: 5 for 5, 5a, 5-seed2 and 5.1."""
    return re.match(r"\d*", row.iteration).group()


def replay(campaign, row, rule) -> Replay:
    """Feed the candidate's screen log to the rule; what it would have saved had it stopped there."""
    from autoraysearch.campaign.pruning import CurveWatch, parse_progress

    seconds = float(row.extra.get("seconds", "0") or 0)
    text = campaign.paths.trial_log(row.iteration).read_text(errors="replace")
    progress = [line for line in text.splitlines() if parse_progress(line, campaign.settings.metric)]
    watch = CurveWatch(rule, campaign.settings.metric)
    for line in progress:
        if watch.see(line):
            point = watch.last
            runs = int(row.extra.get("seeds", "") or 1)
            confirmations = seconds * (runs - 1) / runs  # the confirmation runs it would never have reached
            saved = elapsed(progress[-1]) - elapsed(line) + confirmations
            return Replay(row.iteration, row.status, seconds, f"{point.epoch}/{rule.budget(point)}", saved)
    return Replay(row.iteration, row.status, seconds, "", 0.0)


def replay_campaign(exp: Path, margin_scale: float) -> list[Replay]:
    """Every trained candidate against the rule the log set before its iteration (margins × margin_scale)."""
    from autoraysearch.campaign.experiment import Campaign
    from autoraysearch.campaign.noise import bar_from_log
    from autoraysearch.campaign.pruning import rule_from_log
    from autoraysearch.campaign.results_log import ResultsLog, read_results_log
    from autoraysearch.campaign.settings import load_settings

    settings = load_settings(exp)
    campaign = Campaign(experiment_dir=str(exp), branch="", settings=settings, trial_timeout=None)
    log = read_results_log(campaign.paths.results, settings.higher_is_better)
    replays = []
    for n, row in enumerate(log.rows):
        if row.status not in ("keep", "discard") or not campaign.paths.trial_log(row.iteration).exists():
            continue
        # The rows of its own iteration (5a, 5b …) were logged after its screen ran.
        before = ResultsLog(log.higher_is_better, tuple(r for r in log.rows[:n] if number(r) != number(row)))
        rule = rule_from_log(campaign, before, bar_from_log(before, settings.min_delta))
        if rule is not None:
            rule = replace(rule, margins=tuple(m * margin_scale for m in rule.margins))
        replays.append(replay(campaign, row, rule))
    return replays


def summary(name: str, replays: list[Replay]) -> list[str]:
    discarded = [r for r in replays if r.status == "discard"]
    spent = sum(r.seconds for r in discarded)
    saved = sum(r.saved for r in discarded)
    pruned = [r for r in replays if r.pruned_at]
    wrong = [r for r in pruned if r.status == "keep"]
    share = saved / spent if spent else 0.0
    wrong_share = len(wrong) / len(pruned) if pruned else 0.0
    return [
        f"| {name} | {len(replays)} | {len(pruned)} | {spent:.1f} | {saved:.1f} | {share:.0%} | "
        f"{len(wrong)} ({wrong_share:.0%}) |"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--keep", action="store_true", help="keep the experiment folder")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))

    folder = Path(tempfile.mkdtemp(prefix="autoraysearch-bench-es-"))
    exp = folder / "exp"
    exp.mkdir()
    shutil.copy(ROOT / "examples" / "digits" / "model.py", exp / "model.py")
    git(exp, "init", "-q", "-b", "main")
    git(exp, "add", "model.py")
    git(exp, "commit", "-q", "-m", "initial")
    started = time.monotonic()
    from autoraysearch.cluster import ray_session
    from autoraysearch.prefect_api import local_prefect_api

    with local_prefect_api(), ray_session(None):
        run_campaign(exp, args)
    minutes = (time.monotonic() - started) / 60
    rows = [replay_campaign(exp, 1.0), replay_campaign(exp, 0.0)]
    table = [
        f"early stopping on digits: {args.iterations} iterations x {args.parallel} mutate candidates, "
        f"{args.epochs} epochs of batch {args.batch_size}, {args.seeds} seeds; campaign run to the end in "
        f"{minutes:.1f} min (early stopping off), then replayed",
        "",
        "| rule | candidates | would prune | s on discards | s saved | saved share | wrong kills |",
        "|---|---|---|---|---|---|---|",
        *summary("noise margin (pruning.py)", rows[0]),
        *summary("naive: behind at all (margin 0)", rows[1]),
        "",
        "| candidate | status | seconds | pruned at (rule) | s saved | pruned at (naive) |",
        "|---|---|---|---|---|---|",
        *[f"| {a.label} | {a.status} | {a.seconds:.1f} | {a.pruned_at or '-'} | {a.saved:.1f} | {b.pruned_at or '-'} |"
          for a, b in zip(*rows)],
    ]
    text = "\n".join(table) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        print(f"experiment kept in {exp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
