"""benchmarks/ideator_campaigns.py replays search_quality's campaigns with another ideator: it must keep up with them."""

import math


def test_an_ideator_campaign_gets_past_its_keeps_and_confirms_its_path(tmp_path, monkeypatch, benchmark_on_a_cache_copy):
    # Its campaigns once left the baseline's runs out of the paired bar, and the first keep divided by zero.
    search_quality, trainer = benchmark_on_a_cache_copy
    import ideator_campaigns

    monkeypatch.setattr(ideator_campaigns, "load_previous", lambda folder: None)  # "mutate" alone: no git history needed
    monkeypatch.setattr(search_quality, "propose", ideator_campaigns.Ideators(tmp_path).propose)

    state = ideator_campaigns.run_campaign("paired", "mutate", 0, trainer, 40)
    keeps = [step for step in state.steps if step.kept]
    assert state.iteration == 40 and keeps
    assert all(0.0 < chance <= 1.0 for chance in state.keep_chances) and len(state.keep_chances) == len(keeps)
    assert state.segments or state.rollbacks  # the path confirmed at the end
    assert all(math.isfinite(gain) for gain, _ in state.segments)
