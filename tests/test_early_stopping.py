"""Early stopping on the real thing: digits campaigns whose hopeless candidate is pruned, and the verify step's log."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Trial
from autoraysearch.campaign.pruning import PruneRule
from autoraysearch.tasks.verify import ProgressLog, run_trial
from helpers import EXAMPLE_MODEL, agent_proposing, git, loop, make_repo, results, setup

EXAMPLE = EXAMPLE_MODEL.read_text()
FORWARD = "        return self.classifier(self.features(x))\n"
# Models that learn nothing: every output is 0, so every class ties and accuracy stays near 1/10.
HOPELESS = EXAMPLE.replace(FORWARD, "        return self.classifier(self.features(x)) * 0\n")
ALSO_HOPELESS = EXAMPLE.replace(FORWARD, "        return self.classifier(self.features(x)) * 0.0\n")
# The baseline's computation, written differently: the same curve under the same seed.
SAME_AS_BASELINE = EXAMPLE.replace(FORWARD, "        x = x + 0\n" + FORWARD)
# Six epochs of small batches: a prune at epoch 2 is told from a full run by the epochs it logged.
TRAINING = dict(epochs=6, batch_size=8)


def epochs_logged(exp: Path, label: str) -> int:
    return (exp / ".autoraysearch" / "logs" / f"{label}.log").read_text().count("epoch=")


@pytest.mark.slow
def test_a_hopeless_candidate_is_pruned_and_no_early_stop_trains_it_to_the_end(services, tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE})
    setup(exp, seeds=1, **TRAINING)  # one seed: the fixed fallback margin

    loop(exp, max_iterations=1, ideator="command", tag="es",
         llm_command=agent_proposing(tmp_path, {"description": "zero the logits", "kind": "other", "model_py": HOPELESS}))
    pruned = results(exp).rows[1]
    assert pruned.status == "pruned", pruned
    assert pruned.metric is None and pruned.commit == "-"
    assert "zero the logits (pruned at epoch 2/6: val_acc=0." in pruned.description
    assert ", best had 0.9" in pruned.description
    # What a stop saves is the epochs not trained; their seconds are not compared, since on a busy machine
    # a run's start-up moves them more than four epochs of digits do.
    assert epochs_logged(exp, "1") == 2
    assert 0 < float(pruned.extra["seconds"]) < float("inf")  # the seconds it used are logged
    assert git(exp, "rev-parse", "HEAD") == git(exp, "rev-parse", "main")  # rolled back to the baseline

    loop(exp, max_iterations=1, ideator="command", early_stop=False, llm_command=agent_proposing(
        tmp_path, {"description": "zero the logits again", "kind": "other", "model_py": ALSO_HOPELESS}))
    full = results(exp).rows[2]
    assert full.status == "discard" and full.metric < 0.3, full
    assert epochs_logged(exp, "2") == 6


@pytest.mark.slow
def test_parallel_candidates_are_pruned_one_by_one_against_the_measured_noise(services, tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE})
    setup(exp, seeds=2, cpus_per_trial=0.5, **TRAINING)  # noise measured: margins from the seed curves

    command = agent_proposing(
        tmp_path,
        {"description": "zero the logits", "kind": "other", "model_py": HOPELESS},
        {"description": "add zero to the input", "kind": "other", "model_py": SAME_AS_BASELINE},
    )
    # A run per seed: pruning stops screen runs, and several seeds in one run have none.
    loop(exp, max_iterations=1, parallel=2, ideator="command", llm_command=command, seeds_in_one_run=False)
    rows = {r.iteration: r for r in results(exp).rows}
    assert rows["1a"].status == "pruned" and "pruned at epoch 2/6" in rows["1a"].description, rows["1a"]
    assert rows["1b"].status in ("discard", "keep") and rows["1b"].metric > 0.9, rows["1b"]
    # Stopped after 2 of its 6 epochs while the other trained all 6. Their seconds are not compared: two runs
    # sharing two cores, the one that trains while the other starts up is slowed most, and at 5 s start-ups
    # that moves their seconds more than 4 epochs do.
    assert epochs_logged(exp, "1a") == 2 and epochs_logged(exp, "1b") == 6


PROGRESSING = textwrap.dedent("""
    import time
    for n in range(1, 31):
        print(f"epoch={n}/30 train_loss=1.0 val_acc={min(0.99, n / 10):.4f} elapsed_s={n / 10}", flush=True)
        time.sleep(0.1)
    print("val_acc=0.9900")
""")


def scripted_trial(script: str, pruning: PruneRule | None = None) -> Trial:
    return Trial(label="7", files={"train.py": script, "model.py": ""}, metric="val_acc", timeout=60, pruning=pruning)


def test_verify_stops_a_run_behind_the_reference_at_a_third_of_its_epochs():
    ahead = tuple([0.9] * 30)  # the best reached 0.9 at once; this run climbs by 0.01 an epoch
    slow = PROGRESSING.replace("n / 10", "n / 100")
    result = run_trial(scripted_trial(slow, PruneRule(reference=ahead, margins=(0.05,))), say=[].append)
    assert result.status == "pruned" and result.metric is None
    assert result.error == "pruned at epoch 10/30: val_acc=0.1000, best had 0.9000 there (margin 0.05)"
    assert result.seconds < 3.0  # ten epochs of 0.1 s, not thirty


def test_verify_passes_progress_lines_rate_limited_then_the_last_one_and_the_metric():
    said: list[str] = []
    result = run_trial(scripted_trial(PROGRESSING), say=said.append)
    assert result.status == "ok" and result.metric == 0.99
    progress = [line for line in said if line.startswith("epoch=")]
    assert progress[0].startswith("epoch=1/30") and progress[-1].startswith("epoch=30/30")
    assert len(progress) < 10  # about 3 s of lines, at most one every 5 s, plus the last
    assert said[-1].startswith("7: val_acc=0.9900 in ")


def test_a_crash_shows_its_last_error_lines():
    said: list[str] = []
    crash = "import sys\nprint('epoch=1/3 train_loss=1.0 val_acc=0.5 elapsed_s=0.1')\nsys.exit('error: out of ideas')\n"
    result = run_trial(scripted_trial(crash), say=said.append)
    assert result.status == "crash"
    assert said[0].startswith("epoch=1/3") and "crash after" in said[1] and "error: out of ideas" in said[-1]


def test_progress_log_says_at_most_one_line_per_interval():
    said, now = [], [0.0]
    progress = ProgressLog(said.append, "val_acc", every_s=5.0, clock=lambda: now[0])
    for n in range(1, 21):
        now[0] = n  # one epoch a second
        progress.see(f"epoch={n}/20 val_acc=0.5")
        progress.see("some other output")
    assert said == ["epoch=1/20 val_acc=0.5", "epoch=6/20 val_acc=0.5", "epoch=11/20 val_acc=0.5", "epoch=16/20 val_acc=0.5"]
    assert progress.held == "epoch=20/20 val_acc=0.5"
