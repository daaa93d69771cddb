"""A user's own data.py end to end: setup, a lower-is-better metric, the results log and decide."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import read_results_log
from helpers import git, make_repo
from small_datasets import CUSTOM_DATA_PY, REGRESSION_MODEL

pytestmark = pytest.mark.slow


def test_custom_mse_campaign_keeps_only_lower_errors(services, tmp_path: Path):
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    exp = make_repo(tmp_path / "exp", {"model.py": REGRESSION_MODEL, "data.py": CUSTOM_DATA_PY})
    summary = autoraysearch_setup(
        experiment_dir=str(exp), dataset="custom", data_module="data.py", metric="val_mse", direction="lower",
        epochs=3, batch_size=32, learning_rate=0.01,
    )
    assert summary.metric == "val_mse" and 0 < summary.baseline < 7.5  # below the targets' variance
    settings = tomllib.loads((exp / "autoraysearch.toml").read_text())
    assert settings["dataset"] == "custom" and settings["data_module"] == "data.py"
    assert settings["input_shape"] == [4] and settings["model_kwargs"] == {} and "num_classes" not in settings
    assert settings["direction"] == "lower"

    autoraysearch_loop(experiment_dir=str(exp), max_iterations=2, tag="mse")
    assert (exp / "autoraysearch-results.tsv").read_text().startswith("# metric_direction: lower_is_better\n")
    log = read_results_log(exp / "autoraysearch-results.tsv", higher_is_better=False)
    path = [row for row in log.rows if row.iteration.endswith(".path")]  # a path check after keeps, none without
    assert [row.iteration for row in log.experiments()] == ["1", "2"]  # beside them, the best's further seeds may be
    assert all(row.status in {"confirmed", "rollback"} for row in path)
    best = log.rows[0].metric
    for row in log.experiments():
        # decide judged by the lower error: a keep beats the best so far (by more than the noise allows).
        if row.status == "keep":
            assert row.metric < best
            best = row.metric
        assert row.status in {"keep", "discard", "crash", "pruned"}
    assert any(row.status in {"keep", "discard", "pruned"} for row in log.rows[1:])  # trained, not only crashed
    assert log.best().metric == best
    assert "val_mse=" in (exp / ".autoraysearch" / "logs" / "1.log").read_text()
    # data.py is the user's: trials got it as data, the campaign never changed it.
    assert git(exp, "diff", "main", "autoraysearch/mse", "--", "data.py") == ""
