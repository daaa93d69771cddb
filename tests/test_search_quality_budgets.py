"""benchmarks/search_quality.py's budgets: a rule that confirms its path pays for the final confirmation within its budget."""

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_paired_campaign_ends_within_its_budget_with_its_path_confirmed(tmp_path, monkeypatch):
    # The paired rules once ran to the budget and confirmed their path after it, for free.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the Trainer adds its scratch folder
    for name in ("AUTORAYSEARCH_NUM_THREADS", "AUTORAYSEARCH_SUMMARY_PATH"):  # the Trainer sets them; restored after
        monkeypatch.setenv(name, "")
    for module in ("training_cache", "search_quality"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    import search_quality
    import training_cache

    # A copy of the committed cache: the runs it lacks are trained into the copy, never into the repository.
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("pool.json", training_cache.cache_path(1).name):
        if (training_cache.CACHE_DIR / name).exists():
            shutil.copy(training_cache.CACHE_DIR / name, cache / name)
    monkeypatch.setattr(training_cache, "CACHE_DIR", cache)
    trainer = search_quality.Trainer(1)

    states = search_quality.run_campaign("paired", 0, trainer)
    assert set(states) == set(search_quality.BUDGETS)
    for budget, state in states.items():
        assert state.steps and state.best == state.confirmed  # the path confirmed at the end (or rolled back to what held)
        assert state.cost <= budget + 1e-9, (budget, state.cost)
    assert states[max(states)].confirm_runs > 0  # a keep, confirmed within the budget
