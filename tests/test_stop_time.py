"""A campaign with a deadline or an hours limit ends on time, even in the middle of a long trial."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from autoraysearch.campaign.stopping import StopConditions
from helpers import git, hanging_experiment, is_running, loop, results, wait_until

START = datetime(2026, 1, 1, 22, 0)


def test_the_stop_time_is_the_earliest_of_the_deadline_and_the_hours():
    assert StopConditions().stop_time(START) is None
    assert StopConditions(max_iterations=3).stop_time(START) is None
    deadline = START + timedelta(hours=9)
    assert StopConditions(deadline=deadline).stop_time(START) == deadline
    assert StopConditions(deadline=deadline, max_hours=2).stop_time(START) == START + timedelta(hours=2)
    assert StopConditions(deadline=deadline, max_hours=10).stop_time(START) == deadline


@pytest.mark.slow
def test_a_trial_running_at_the_stop_time_is_stopped_and_the_branch_left_on_its_best(
    services, example_repo: Path, trial_dir: Path
):
    exp = example_repo
    pids = trial_dir / "pids"
    best = hanging_experiment(exp, trial_dir, pids)

    # 30 s: time for the first candidate's trial to start on a busy machine; it would hang for ten minutes
    started = datetime.now()
    run = loop(exp, max_hours=30 / 3600)
    took = (datetime.now() - started).total_seconds()

    assert pids.exists(), "the limit came before the trial started: nothing was running at the stop time"
    assert run.stop_reason == f"ran for {30 / 3600:g} hours"
    assert 30 <= took < 150
    rows = results(exp).rows
    assert [r.status for r in rows] == ["baseline", "stopped"]
    assert "the campaign's time limit" in rows[1].description
    assert git(exp, "rev-parse", "HEAD") == best and run.best_sha == best
    assert git(exp, "status", "--porcelain", "model.py") == ""
    trial_pids = list(map(int, pids.read_text().split()))
    # the trial's supervisor may still be finishing its kill
    assert wait_until(lambda: not any(map(is_running, trial_pids)), 60), trial_pids


def test_a_stop_time_that_leaves_too_few_runs_for_paired_decisions_says_so_and_what_to_do_instead():
    from autoraysearch.campaign.opening import SHORT_CAMPAIGN_RUNS, short_campaign
    from autoraysearch.campaign.results_log import ResultRow, ResultsLog

    def log(runs="0.91,0.93,0.92", seconds="1800"):  # three seeds, a run each: 10 minutes a run
        return ResultsLog(True, (ResultRow("0", "baseline", 0.92, None, "baseline", "x",
                                           {"seeds": "3", "seconds": seconds, "runs": runs}),))

    hours = 3600.0
    said = short_campaign(log(), 3, False, 1, 2 * hours)  # a two-hour night: 12 runs
    assert said is not None and said.startswith("the stop time leaves about 12 runs of the baseline's length")
    assert "`run --seeds 1`" in said and "final path confirmation 6 runs" in said
    assert short_campaign(log(), 3, False, 4, 2 * hours) is None  # four at once: 48 runs
    assert short_campaign(log(), 3, False, 1, SHORT_CAMPAIGN_RUNS * 600.0) is None
    assert short_campaign(log(), 3, False, 1, SHORT_CAMPAIGN_RUNS * 600.0 - 1) is not None
    assert short_campaign(log(), 1, False, 1, 2 * hours) is None  # single runs: the greedy loop already
    assert short_campaign(log(), 3, True, 1, 2 * hours) is None  # seeds in one run: a run holds many seeds
    assert short_campaign(log(runs="0.92,0.92,0.92"), 3, False, 1, 2 * hours) is None  # identical runs: single runs decide
    assert short_campaign(log(seconds=""), 3, False, 1, 2 * hours) is None  # no time measured
    assert short_campaign(ResultsLog(True, ()), 3, False, 1, 2 * hours) is None


def test_with_seeds_in_one_run_a_short_campaign_is_counted_in_candidates_first_runs_from_setups_timing():
    from autoraysearch.campaign.opening import SHORT_CAMPAIGN_FIRST_RUNS, SHORT_CAMPAIGN_RUNS, short_campaign
    from autoraysearch.campaign.results_log import ResultRow, ResultsLog

    # Setup's two runs: the first seed alone, then 7 more and 3 held ahead, in 2 × 4.5 s of start-up and 11 × 1.5 s.
    def log(**timing):
        return ResultsLog(True, (ResultRow("0", "baseline", 0.92, None, "baseline", "x", {
            "seeds": "8", "seconds": "25.5", "runs": "0.91,0.93,0.92,0.90,0.94,0.92,0.91,0.93", **timing}),))

    timed = log(start_up="4.5", per_seed="1.5")  # a run of one seed: 6 s; a first run of 8 seeds: 16.5 s
    said = short_campaign(timed, 8, True, 1, 100.0)
    assert said is not None and said.startswith("the stop time leaves about 17 runs of the baseline's length, "
                                                "time for about 6 candidates' first runs of 8 seeds")
    assert "`run --seeds 1`" in said
    assert "time for about 1 candidate's first run of 8 seeds" in short_campaign(timed, 8, True, 1, 20.0)
    assert short_campaign(timed, 8, True, 1, SHORT_CAMPAIGN_FIRST_RUNS * 16.5) is None
    assert short_campaign(timed, 8, True, 1, SHORT_CAMPAIGN_FIRST_RUNS * 16.5 - 1) is not None
    assert short_campaign(timed, 8, True, 4, 100.0) is None  # four first runs at once
    assert short_campaign(timed, 24, True, 1, SHORT_CAMPAIGN_FIRST_RUNS * 16.5) is None  # still 8 seeds first
    assert short_campaign(log(), 8, True, 1, 100.0) is None  # a log from before setup timed its runs
    assert short_campaign(log(start_up="4.5", per_seed="x"), 8, True, 1, 100.0) is None
    assert short_campaign(log(start_up="4.5", per_seed="-1"), 8, True, 1, 100.0) is None
    # A seed that trains in under a millisecond: a run is its start-up.
    assert short_campaign(log(start_up="4.5", per_seed="0"), 8, True, 1, SHORT_CAMPAIGN_FIRST_RUNS * 4.5 - 1) is not None
    # Run with --seeds-apart, a run costs its start-up and one seed: not the row's seconds per seed (3.2 s).
    assert short_campaign(timed, 8, False, 1, SHORT_CAMPAIGN_RUNS * 6.0) is None
    assert short_campaign(timed, 8, False, 1, SHORT_CAMPAIGN_RUNS * 6.0 - 1) is not None
