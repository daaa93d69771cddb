"""benchmarks/search_quality.py's budgets: a rule that confirms its path pays for the final confirmation within its budget."""

import pytest


def test_a_paired_campaign_ends_within_its_budget_with_its_path_confirmed(benchmark_on_a_cache_copy):
    # The paired rules once ran to the budget and confirmed their path after it, for free.
    search_quality, trainer = benchmark_on_a_cache_copy

    states = search_quality.run_campaign("paired", 0, trainer)
    assert set(states) == set(search_quality.BUDGETS)
    for budget, state in states.items():
        assert state.steps and state.best == state.confirmed  # the path confirmed at the end (or rolled back to what held)
        assert state.cost <= budget + 1e-9, (budget, state.cost)
    assert states[max(states)].confirm_runs > 0  # a keep, confirmed within the budget


def test_a_together_campaign_pays_only_for_the_seeds_its_stopped_runs_trained(benchmark_on_a_cache_copy):
    # As the loop stops a run of seeds once it can no longer be kept (campaign/seed_watch.py).
    search_quality, trainer = benchmark_on_a_cache_copy
    budget = max(search_quality.BUDGETS)

    stopping = search_quality.run_campaign("together", 0, trainer)[budget]
    trainer.early_stop = False
    whole = search_quality.run_campaign("together", 0, trainer)[budget]
    first = trainer.first_run(search_quality.together_seeds(trainer))
    seeds = [len(d) for d in stopping.diffs[:len(stopping.steps)]]
    assert min(seeds) < first and max(seeds) == first  # some runs stopped early, the rest trained every seed
    assert all(len(d) == first for d in whole.diffs)
    assert stopping.runs / len(stopping.steps) < whole.runs / len(whole.steps)  # seeds trained per candidate
    assert stopping.cost <= budget + 1e-9 and whole.cost <= budget + 1e-9


def test_a_paired_campaign_stops_hopeless_screens_between_epochs_and_pays_for_the_epochs_they_trained(benchmark_on_a_cache_copy):
    # As the loop stops a screen run with no realistic chance of clearing the bar (campaign/pruning.py), where each
    # seed is a run of its own (runs all training: --start-up 0).
    search_quality, _ = benchmark_on_a_cache_copy
    trainer = search_quality.Trainer(5, startup=0.0)
    budget = max(search_quality.BUDGETS)

    stopping = search_quality.run_campaign("paired", 0, trainer)[budget]
    trainer.early_stop = False
    whole = search_quality.run_campaign("paired", 0, trainer)[budget]
    pruned = [row for row in stopping.rows if row.status == "pruned"]
    assert stopping.pruned > 0 and len(pruned) == stopping.pruned and all(row.metric is None for row in pruned)
    assert whole.pruned == 0 and not any(row.status == "pruned" for row in whole.rows)
    assert len(stopping.steps) > len(whole.steps)  # cheaper screens: more candidates in the same budget
    assert stopping.cost <= budget + 1e-9 and whole.cost <= budget + 1e-9


def test_a_screen_is_stopped_after_the_epoch_the_loops_watch_stops_it_never_at_its_last(search_quality):
    from autoraysearch.campaign.pruning import PruneRule

    rule = PruneRule(reference=(0.5, 0.7, 0.8, 0.9), margins=(0.1,) * 4, min_fraction=0.0)
    assert search_quality.stopped_after((0.1, 0.1, 0.1, 0.1), rule) == 1
    assert search_quality.stopped_after((0.5, 0.55, 0.6, 0.9), rule) == 2  # 0.15 behind at epoch 2
    assert search_quality.stopped_after((0.5, 0.7, 0.8, 0.1), rule) is None  # behind only at the end: nothing to save
    assert search_quality.stopped_after((0.1, 0.1, 0.1, 0.1), None) is None


def test_a_rotating_campaign_screens_each_candidate_at_the_next_of_the_bests_seeds(benchmark_on_a_cache_copy):
    # The what-if paired-rotating: a best's lucky run at the campaign's seed no longer judges every screen.
    search_quality, _ = benchmark_on_a_cache_copy
    trainer = search_quality.Trainer(5, startup=0.0)
    budget = max(search_quality.BUDGETS)
    h = search_quality.training_cache.model_hash

    def first_seeds(state):  # the lowest of the campaign's seeds each candidate was trained at (None: a crash)
        return [min((i for i in range(search_quality.SEEDS) if (h(step.model), state.seed + i) in state.known), default=None)
                for step in state.steps]

    fixed = search_quality.run_campaign("paired", 0, trainer)[budget]
    rotating = search_quality.run_campaign("paired-rotating", 0, trainer)[budget]
    assert set(first_seeds(fixed)) <= {0, None}  # the loop's rule: every screen at the campaign's seed
    assert {1, 2} <= set(first_seeds(rotating))  # screens at the best's other seeds, not continued to seed 0
    assert [search_quality.paired_seed(rotating, i, 2) - rotating.seed for i in range(3)] == [2, 0, 1]
    assert search_quality.paired_seed(rotating, 5, 2) - rotating.seed == 5  # past the best's seeds: in order
    assert rotating.cost <= budget + 1e-9


def test_a_luck_aware_screen_lowers_its_bar_by_the_share_of_the_bests_luck_a_paired_difference_keeps(search_quality):
    # The what-if paired-luck: the best's run at the campaign's seed lies 0.006 above its mean over its 3 seeds.
    from autoraysearch.campaign.noise import Bar, Noise

    h = search_quality.training_cache.model_hash
    state = search_quality.State(rule="paired-luck", campaign=0, baseline="b", best="b", confirmed="b", seed=0)
    state.known = {(h("b"), 0): 0.986, (h("b"), 1): 0.977, (h("b"), 2): 0.977}
    state.curve_groups = [[(0.9, 0.986), (0.9, 0.977), (0.9, 0.977)], [(0.9, 0.970), (0.9, 0.982)]]
    sigma = search_quality.run_noise(state).sigma
    bar = Bar(paired=Noise(sigma=0.005, dof=20))
    luck = search_quality.best_luck(state, bar)
    assert luck == pytest.approx(min(1.0, 0.005 ** 2 / (2 * sigma ** 2)) * 0.006) and luck > 0
    screening = search_quality.LuckBar(**vars(bar), luck=luck)
    assert screening.screen_bar() == pytest.approx(bar.screen_bar() - luck)
    assert screening.needed(3) == bar.needed(3)  # keeps are decided as before: only the screen moves
    state.rule = "paired"  # the loop's rule: no luck taken into account
    assert search_quality.best_luck(state, bar) == 0.0
