"""benchmarks/search_quality.py's budgets: a rule that confirms its path pays for the final confirmation within its budget."""


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
