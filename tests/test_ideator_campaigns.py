"""benchmarks/ideator_campaigns.py replays search_quality's campaigns with another ideator: it must keep up with them."""

import math
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_ideator_campaign_gets_past_its_keeps_and_confirms_its_path(tmp_path, monkeypatch):
    # Its campaigns once left the baseline's runs out of the paired bar, and the first keep divided by zero.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the Trainer adds its scratch folder
    for name in ("AUTORAYSEARCH_NUM_THREADS", "AUTORAYSEARCH_SUMMARY_PATH"):  # the Trainer sets them; restored after
        monkeypatch.setenv(name, "")
    for module in ("training_cache", "search_quality", "ideator_campaigns"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    import ideator_campaigns
    import search_quality
    import training_cache

    # A copy of the committed cache: the runs it lacks are trained into the copy, never into the repository.
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("pool.json", training_cache.cache_path(1).name):
        if (training_cache.CACHE_DIR / name).exists():  # after a change to train.py, the runs are trained again
            shutil.copy(training_cache.CACHE_DIR / name, cache / name)
    monkeypatch.setattr(training_cache, "CACHE_DIR", cache)
    trainer = search_quality.Trainer(1)
    monkeypatch.setattr(ideator_campaigns, "load_previous", lambda folder: None)  # "mutate" alone: no git history needed
    monkeypatch.setattr(search_quality, "propose", ideator_campaigns.Ideators(tmp_path).propose)

    state = ideator_campaigns.run_campaign("paired", "mutate", 0, trainer, 40)
    keeps = [step for step in state.steps if step.kept]
    assert state.iteration == 40 and keeps
    assert all(0.0 < chance <= 1.0 for chance in state.keep_chances) and len(state.keep_chances) == len(keeps)
    assert state.segments or state.rollbacks  # the path confirmed at the end
    assert all(math.isfinite(gain) for gain, _ in state.segments)
