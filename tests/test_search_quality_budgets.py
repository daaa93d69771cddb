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
