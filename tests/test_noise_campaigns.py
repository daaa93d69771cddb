"""Decisions that survive noise, on real campaigns: a null change is never kept, a real gain is, seeds run at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoraysearch.campaign.noise import bar_from_log, runs_of
from autoraysearch.campaign.results_log import read_results_log
from autoraysearch.campaign.settings import load_settings
from helpers import EXAMPLE_MODEL, agent_proposing, git, make_repo

pytestmark = pytest.mark.slow

EXAMPLE = EXAMPLE_MODEL.read_text()
# No effect on what the model computes, but created first it shifts every other layer's initial weights.
NULL_CHANGE = EXAMPLE.replace("        super().__init__()\n", "        super().__init__()\n        self.unused = nn.Linear(8, 8)\n")
# A model crippled to two hidden units, and the change that undoes it.
CRIPPLED = EXAMPLE.replace("nn.Linear(32 * 4 * 4, 64)", "nn.Linear(32 * 4 * 4, 2)").replace("nn.Linear(64, num_classes)", "nn.Linear(2, num_classes)")


def campaign(tmp_path: Path, model: str, candidate: str, seed: int, **setup_options):
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    exp = make_repo(tmp_path / f"exp-{seed}", {"model.py": model})
    setup = autoraysearch_setup(experiment_dir=str(exp), epochs=1, seed=seed, seeds=3, **setup_options)
    command = agent_proposing(tmp_path, {"description": "the change", "kind": "other", "model_py": candidate})
    autoraysearch_loop(experiment_dir=str(exp), max_iterations=1, ideator="command", llm_command=command)
    return setup, read_results_log(exp / "autoraysearch-results.tsv", True), exp


def test_a_null_change_is_never_kept_whatever_the_campaign_seed(services, tmp_path: Path):
    for seed in (0, 1, 2):
        setup, log, exp = campaign(tmp_path, EXAMPLE, NULL_CHANGE, seed)
        baseline, candidate = log.rows[0], log.rows[1]
        assert baseline.extra["seeds"] == "3" and len(runs_of(baseline)) == 3
        assert "noise σ = " in setup.noise
        # discarded, or pruned between seeds once even its last seed could not have carried it over the bar
        assert candidate.status in ("discard", "pruned"), f"campaign seed {seed} kept a null change: {candidate}"
        assert git(exp, "rev-parse", "HEAD") == git(exp, "rev-parse", "main")  # the branch stayed on the baseline


def test_a_clearly_better_change_is_kept_after_confirmation(services, tmp_path: Path):
    setup, log, exp = campaign(tmp_path, CRIPPLED, EXAMPLE, seed=0)
    candidate = log.rows[1]
    assert candidate.status == "keep", candidate
    seeds = len(runs_of(candidate))
    assert seeds >= 2 and candidate.extra["seeds"] == str(seeds)  # the screen and at least one paired seed
    # a run per seed: the screen, then its paired seeds; all seeds in one run (setup's choice here): no screen
    together = load_settings(exp).seeds_together
    assert f"{seeds} seeds" in candidate.description and ": confirmed)" in candidate.description
    assert ("screen " in candidate.description) != together and ("trained together" in candidate.description) == together
    assert candidate.metric == pytest.approx(sum(runs_of(candidate)) / seeds)
    # the paired gain over the crippled baseline, with its interval, at the end of the row
    assert float(candidate.extra["gain"]) > 0.05 and candidate.extra["interval"].startswith("±")
    assert len(candidate.extra["diffs"].split(",")) == seeds
    # the seconds column counts the screen and the paired runs
    assert float(candidate.extra["seconds"]) > 0
    assert git(exp, "rev-parse", "HEAD") != git(exp, "rev-parse", "main")


# A scripted train.py: the model's SCORE plus a fixed offset per seed, after a pause so that runs overlap.
SCRIPTED_TRAIN = '''
import os, time
from model import Model, SCORE
seed = int(os.environ.get("AUTORAYSEARCH_SEED", "0"))
start = time.time()
time.sleep(2)
with open({spans!r}, "a") as f:
    f.write(f"{{SCORE}} {{seed}} {{start}} {{time.time()}}\\n")
print(f"val_acc={{SCORE + {{0: 0.0, 1: 0.01, 2: -0.01}}.get(seed, 0.0)}}")
'''
SCRIPTED_MODEL = "from torch import nn\n\nSCORE = {score}\n\n\nclass Model(nn.Module):\n    pass\n"


def test_parallel_confirmation_runs_overlap_and_resume_keeps_the_noise(services, tmp_path: Path, trial_dir: Path):
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    spans = trial_dir / "spans"
    exp = make_repo(tmp_path / "exp", {
        "model.py": SCRIPTED_MODEL.format(score=0.5), "train.py": SCRIPTED_TRAIN.format(spans=str(spans)),
    })
    autoraysearch_setup(experiment_dir=str(exp), train_py="train.py", seeds=3)
    before = bar_from_log(read_results_log(exp / "autoraysearch-results.tsv", True))
    assert before.noise.measured and before.noise.sigma == pytest.approx(0.01)

    command = agent_proposing(
        tmp_path,
        {"description": "score 0.6", "kind": "a", "model_py": SCRIPTED_MODEL.format(score=0.6)},
        {"description": "score 0.7", "kind": "b", "model_py": SCRIPTED_MODEL.format(score=0.7)},
    )
    autoraysearch_loop(experiment_dir=str(exp), max_iterations=1, parallel=2, cpus_per_trial=1,
                       ideator="command", llm_command=command, tag="p")

    log = read_results_log(exp / "autoraysearch-results.tsv", True)
    statuses = {r.iteration: (r.status, r.extra.get("seeds")) for r in log.rows}
    # Both screens pass and race on a paired seed at once; the larger paired mean is kept, two seeds suffice.
    assert statuses["1a"] == ("discard", "2") and statuses["1b"] == ("keep", "2")
    # The race's runs at the second seed; the path's fresh seeds at the campaign's end come later and are others.
    confirmations = [tuple(map(float, line.split()[2:])) for line in spans.read_text().splitlines()
                     if line.split()[0] in ("0.6", "0.7") and line.split()[1] == "1"]
    assert len(confirmations) == 2
    first_start = min(start for start, _ in confirmations)
    first_end = min(end for _, end in confirmations)
    assert sum(start < first_end for start, _ in confirmations) >= 2, "no two confirmation runs overlapped"
    assert first_start < first_end

    # A new run reads the same noise back from the log: the baseline's three seeds and the two raced candidates.
    after = bar_from_log(read_results_log(exp / "autoraysearch-results.tsv", True))
    assert after.noise.dof == before.noise.dof + 2 and after.paired.dof == before.paired.dof + 2
    assert after.best_runs == (0.7, 0.71)
