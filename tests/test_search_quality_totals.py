"""benchmarks/search_quality.py's totals: what a rule's row says over its campaigns."""

import math


def campaign_row(candidates: int, runs: float) -> dict:
    """One judged campaign (search_quality.judge's keys), that kept nothing."""
    return {"true_gain": 0.0, "keeps": 0, "false_keeps": 0, "seconds": 60.0, "training": 10.0, "wall": 60.0,
            "power_hits": 0, "power_misses": 0, "clear_false_keeps": 0, "harm": 0.0, "runs": runs,
            "candidates": candidates, "crashes": 0, "confirm_runs": 0.0, "sigma_hat": 0.006, "claimed": 0.0, "rollbacks": 0}


def test_runs_per_candidate_is_unknown_where_no_candidate_fit_the_budget(search_quality):
    assert math.isnan(search_quality.totals([campaign_row(0, 8.0), campaign_row(0, 8.0)])["runs_per_candidate"])
    assert search_quality.totals([campaign_row(2, 8.0), campaign_row(0, 8.0)])["runs_per_candidate"] == 8.0
