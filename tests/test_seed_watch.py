"""A run of several seeds is stopped once it can no longer be kept: the rule, the verify step on real runs, the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from autoraysearch.tasks.decide import judge
from autoraysearch.tasks.verify import run_trial
from helpers import EXAMPLE_MODEL, agent_proposing, loop, make_repo, results, setup

from autoraysearch.campaign.experiment import Trial
from autoraysearch.campaign.noise import Bar, Noise, Prior, chance_to_keep
from autoraysearch.campaign.seed_watch import (
    SeedStop,
    SeedWatch,
    reported_seed,
    seed_stop_for,
)
from autoraysearch.campaign.settings import load_settings
from autoraysearch.setup.rendering import (
    TrainSpec,
    optimization_defaults,
    render_train_py,
)
from autoraysearch.trials.runs import seeds_together

SIGMA = 0.02  # σ_d of these bars
BEST = (0.95,) * 8


NULL_LAW = Prior()  # no screens yet: the null-centred law


def bar(best=BEST, sigma=SIGMA, prior=NULL_LAW) -> Bar:
    return Bar(best_runs=best, paired=Noise(sigma=sigma, dof=20, samples=20), prior=prior)


def test_a_start_far_below_the_best_has_no_chance_and_a_level_or_better_one_keeps_it():
    b = bar()
    assert chance_to_keep([-2 * SIGMA, -2 * SIGMA], b, 8) < 0.001
    assert chance_to_keep([0.0, 0.0], b, 8) > 0.1  # a null start can still end kept by chance: it goes on
    assert chance_to_keep([2 * SIGMA, 2 * SIGMA], b, 8) > 0.5
    assert chance_to_keep([-SIGMA], b, 8) > chance_to_keep([-SIGMA, -SIGMA, -SIGMA], b, 8)  # more seeds, surer
    # Nothing to tell early: all seeds in, or no noise measured.
    assert chance_to_keep([-2 * SIGMA] * 8, b, 8) == 1.0
    assert chance_to_keep([-1.0, -1.0], Bar(best_runs=BEST), 8) == 1.0


def test_a_campaign_whose_proposals_mostly_help_stops_less_readily():
    start = [-0.6 * SIGMA, -0.6 * SIGMA]
    helping = bar(prior=Prior(mean=1.5 * SIGMA, spread=SIGMA, screens=12))
    hurting = bar(prior=Prior(mean=-1.5 * SIGMA, spread=SIGMA, screens=12))
    assert chance_to_keep(start, helping, 8) > chance_to_keep(start, hurting, 8)


def test_the_watch_stops_after_the_second_hopeless_seed_and_never_at_the_last():
    watch = SeedWatch(SeedStop(bar(), 8), "val_acc")
    assert not watch.see("seed=0 epoch=1/1 train_loss=2.3 val_acc=0.1000 elapsed_s=0.2")  # progress, not a seed's end
    assert not watch.see("seed=0 val_acc=0.100000")  # one seed: not yet
    assert watch.see("seed=1 val_acc=0.110000")
    assert watch.runs == (0.1, 0.11)
    assert watch.reason.startswith("stopped after 2 of 8 seeds: paired gain -0.845, a 0.0% chance")
    assert not watch.see("seed=2 val_acc=0.1")  # said once

    last = SeedWatch(SeedStop(bar(), 2), "val_acc")
    assert not last.see("seed=0 val_acc=0.1") and not last.see("seed=1 val_acc=0.1")  # nothing left to save
    better = SeedWatch(SeedStop(bar(), 8), "val_acc")
    assert not any(better.see(f"seed={s} val_acc=0.99") for s in range(8))
    # Level with the best at every seed: kept only if its last seeds were far better, so stopped late, not early.
    level = SeedWatch(SeedStop(bar(), 8), "val_acc")
    stops = [level.see(f"seed={s} val_acc=0.95") for s in range(8)]
    assert True in stops and stops.index(True) >= 4, stops


def test_a_seed_the_best_lacks_cannot_be_paired_so_it_stops_nothing():
    watch = SeedWatch(SeedStop(bar(best=(0.95,)), 8), "val_acc")
    assert not watch.see("seed=0 val_acc=0.1") and not watch.see("seed=1 val_acc=0.1")


def test_no_rule_where_nothing_can_be_told_early():
    assert seed_stop_for(bar(), 8, early_stop=False) is None
    assert seed_stop_for(Bar(best_runs=BEST), 8, early_stop=True) is None  # noise not measured
    assert seed_stop_for(bar(), 2, early_stop=True) is None  # the second seed would be the last
    assert seed_stop_for(bar(best=()), 8, early_stop=True) is None
    assert seed_stop_for(bar(), 8, early_stop=True) == SeedStop(bar(), 8)
    assert reported_seed("seed=3 val_acc=0.9712", "val_acc") == (3, 0.9712)
    assert reported_seed("seed=3 loss=0.9712", "val_acc") is None and reported_seed("val_acc=0.9", "val_acc") is None


# ---- real runs of the generated train.py ----

EXAMPLE = EXAMPLE_MODEL.read_text()
FORWARD = "        return self.classifier(self.features(x))\n"
HOPELESS_MODEL = EXAMPLE.replace(FORWARD, "        return self.classifier(self.features(x)) * 0\n")  # learns nothing
ALSO_HOPELESS = EXAMPLE.replace(FORWARD, "        return self.classifier(self.features(x)) * 0.0\n")
TRAIN = render_train_py(TrainSpec(dataset="digits", epochs=1, **optimization_defaults("digits")))


def trial(model: str, stop: SeedStop | None, trusted: bool = True) -> Trial:
    one = Trial(label="t", files={"model.py": model, "train.py": TRAIN}, metric="val_acc", timeout=300,
                env={"AUTORAYSEARCH_NUM_THREADS": "1"}, trusted_channel=trusted)
    return Trial(**{**seeds_together(one, [0, 1, 2, 3, 4, 5], "t").__dict__, "seed_stop": stop})


@pytest.mark.slow
def test_a_hopeless_run_stops_after_two_seeds_and_is_discarded_on_them():
    stop = SeedStop(bar(best=(0.95,) * 6), 6)
    stopped = run_trial(trial(HOPELESS_MODEL, stop))
    assert stopped.status == "ok", stopped.error
    assert len(stopped.runs) == 2 and all(r < 0.3 for r in stopped.runs), stopped.runs
    assert stopped.metric == pytest.approx(sum(stopped.runs) / 2)
    assert stopped.hopeless.startswith("stopped after 2 of 6 seeds: paired gain -0.")
    assert judge(stopped, stop.bar)[0] == "pruned"

    whole = run_trial(trial(HOPELESS_MODEL, None))  # the same run, nothing to stop it
    assert whole.status == "ok" and len(whole.runs) == 6 and not whole.hopeless
    assert stopped.runs == whole.runs[:2]  # the seeds it trained, as a whole run trains them
    assert stopped.seed_seconds < whole.seed_seconds


@pytest.mark.slow
def test_a_run_better_than_the_best_trains_every_seed():
    result = run_trial(trial(EXAMPLE, SeedStop(bar(best=(0.5,) * 6), 6)))  # the example reaches 0.7-0.8 in one epoch
    assert result.status == "ok" and len(result.runs) == 6 and not result.hopeless, result


GRU = (Path(__file__).resolve().parents[1] / "benchmarks" / "model_styles" / "gru.py").read_text()
GRU_FORWARD = "        return self.head(out[:, -1])\n"


@pytest.mark.slow
def test_a_model_unlike_the_example_is_stopped_the_same_way():
    """A GRU reading the image row by row: the judge reports its seeds as it does the example's."""
    hopeless = GRU.replace(GRU_FORWARD, "        return self.head(out[:, -1]) * 0\n")
    assert hopeless != GRU
    stopped = run_trial(trial(hopeless, SeedStop(bar(best=(0.9,) * 6), 6)))
    assert stopped.status == "ok" and len(stopped.runs) == 2, stopped
    assert stopped.hopeless.startswith("stopped after 2 of 6 seeds")
    kept_going = run_trial(trial(GRU, SeedStop(bar(best=(0.2,) * 6), 6)))  # far above 0.2 after one epoch
    assert kept_going.status == "ok" and len(kept_going.runs) == 6 and not kept_going.hopeless, kept_going


def test_seed_lines_a_users_own_train_py_prints_stop_nothing():
    script = "".join(f"print('seed={s} val_acc=0.1', flush=True)\n" for s in range(6)) + "print('val_acc=0.1')\n"
    mine = Trial(label="t", files={"model.py": "", "train.py": script}, metric="val_acc", timeout=60,
                 env={"AUTORAYSEARCH_SEEDS": "0,1,2,3,4,5"}, seed_stop=SeedStop(bar(best=(0.95,) * 6), 6))
    result = run_trial(mine)
    assert result.status == "ok" and result.metric == 0.1 and not result.hopeless


@pytest.mark.slow
def test_the_loop_stops_a_hopeless_candidate_after_two_seeds_and_no_early_stop_trains_them_all(services, tmp_path: Path):
    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE})
    setup(exp, seeds=8)
    assert load_settings(exp).seeds_in_one_run  # digits at 1 epoch: runs mostly start-up
    loop(exp, max_iterations=1, ideator="command", tag="seeds", llm_command=agent_proposing(
        tmp_path, {"description": "zero the logits", "kind": "other", "model_py": HOPELESS_MODEL}))
    stopped = results(exp).rows[-1]
    assert stopped.status == "pruned" and stopped.commit == "-", stopped
    assert stopped.metric < 0.3 and stopped.delta < -0.5  # the mean and paired gain of the seeds it trained
    assert "zero the logits (stopped after 2 of 8 seeds: paired gain -0." in stopped.description
    assert stopped.extra["seeds"] == "2" and len(stopped.extra["diffs"].split(",")) == 2

    loop(exp, max_iterations=1, ideator="command", early_stop=False, llm_command=agent_proposing(
        tmp_path, {"description": "zero the logits, all seeds", "kind": "other", "model_py": ALSO_HOPELESS}))
    whole = results(exp).rows[-1]
    assert whole.status == "discard" and whole.extra["seeds"] == "8" and "stopped after" not in whole.description
    assert float(whole.extra["seconds"]) > float(stopped.extra["seconds"])
