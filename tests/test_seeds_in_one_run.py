"""Several seeds in one run of the generated train.py: the same metrics as a run per seed, and nothing carried between seeds.

Every trial here is contained the way a campaign contains it (run_trial: the supervisor, the judge,
the sandboxed model side). Model code that tries to pass something from one seed to the next (a file,
a file in /dev/shm, a daemon, a changed model.py) must fail or be caught.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Trial
from autoraysearch.setup.rendering import TrainSpec, optimization_defaults, render_train_py
from autoraysearch.trials.runs import (
    confirmation_seeds, first_run_seeds, mostly_start_up, seeded, seeds_for_one_run, seeds_together, start_up_and_training,
)
from autoraysearch.campaign.experiment import TrialResult
from tasks.verify import run_trial

ROOT = Path(__file__).resolve().parents[1]
MODEL = (ROOT / "examples" / "digits" / "model.py").read_text()
TRAIN = render_train_py(TrainSpec(dataset="digits", epochs=1, **optimization_defaults("digits")))


def trial(model: str, label: str = "t", timeout: float = 300) -> Trial:
    return Trial(label=label, files={"model.py": model, "train.py": TRAIN}, metric="val_acc", timeout=timeout,
                 env={"AUTORAYSEARCH_NUM_THREADS": "1"}, trusted_channel=True)


@pytest.mark.slow
def test_seeds_in_one_run_score_what_a_run_per_seed_scores():
    together = run_trial(seeds_together(trial(MODEL), [0, 1, 2], "all"))
    apart = [run_trial(seeded(trial(MODEL), seed, f"s{seed}")) for seed in (0, 1, 2)]
    assert together.status == "ok", together.error
    assert [round(r, 4) for r in together.runs] == [r.metric for r in apart]
    assert together.metric == pytest.approx(sum(together.runs) / 3)
    assert together.screen is None  # every seed is judged: none was a screen
    assert together.seed_seconds is not None and together.seed_seconds > 0
    assert together.seconds < sum(r.seconds for r in apart)  # one start-up instead of three


# The example, evaluating slowly: 1.5 s at its first validation batch of each run.
SLOW_EVALUATION = MODEL + textwrap.dedent("""
    import time as _time
    _forward = Model.forward
    _slept = []
    def _slow_when_evaluated(self, x):
        if not self.training and not _slept:
            _slept.append(True)
            _time.sleep(1.5)
        return _forward(self, x)
    Model.forward = _slow_when_evaluated
""")


@pytest.mark.slow
def test_a_seeds_evaluation_counts_as_its_time_not_as_start_up():
    # Every seed in one run is evaluated again: counted as start-up, a slow evaluation would make
    # seeds look cheap to train together when each one costs it.
    result = run_trial(seeded(trial(SLOW_EVALUATION), 0, "slow"))
    assert result.status == "ok", result.error
    assert 1.5 <= result.seed_seconds < result.seconds
    start_up, per_seed = start_up_and_training([result])
    assert per_seed >= 1.5 and start_up == pytest.approx(result.seconds - result.seed_seconds)


# Model code that leaves something behind in every place a seed can write (the run's folder, its temporary
# folder, /dev/shm, a daemon on an abstract socket) and says what it found from an earlier seed. With the
# sweep between seeds switched off by hand, the second and third seeds find all four.
CARRIER = MODEL + textwrap.dedent("""
    import os as _os, socket as _socket, subprocess as _subprocess, sys as _sys, tempfile as _tempfile
    _found = []
    _places = [_os.path.join(_os.getcwd(), "carried"), _os.path.join(_tempfile.gettempdir(), "carried"), "/dev/shm/carried"]
    for _place in _places:
        if _os.path.exists(_place):
            _found.append(_place)
        try:
            with open(_place, "w") as _f:
                _f.write("from an earlier seed")
        except OSError:
            pass
    _probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        _probe.connect("\\0autoraysearch-carried")
        _found.append("daemon")
    except OSError:
        _subprocess.Popen([_sys.executable, "-c", "import socket, time; s = socket.socket(socket.AF_UNIX); "
                           "s.bind('\\\\0autoraysearch-carried'); s.listen(); time.sleep(600)"], start_new_session=True)
        import time as _time
        _time.sleep(1)
    print("carried over:", _found or "nothing", file=_sys.stderr, flush=True)
    if _found:
        _forward = Model.forward
        Model.forward = lambda self, x: _forward(self, x).roll(1, dims=1)
""")


@pytest.mark.slow
def test_nothing_one_seed_leaves_reaches_the_next():
    result = run_trial(seeds_together(trial(CARRIER), [0, 1, 2], "carrier"))
    assert result.status == "ok", result.error
    assert result.output.count("carried over: nothing") == 3, result.output
    plain = run_trial(seeds_together(trial(MODEL), [0, 1, 2], "plain"))
    assert result.runs == plain.runs  # no seed scored differently for what an earlier one left


# Rewrites model.py after the first seed: a later seed would import a better model than the candidate.
REWRITER = MODEL + textwrap.dedent("""
    import os as _os
    with open(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "model.py"), "a") as _f:
        _f.write("\\n# changed by the first seed\\n")
""")


@pytest.mark.slow
def test_a_seed_that_changes_a_file_it_did_not_create_fails_the_run():
    result = run_trial(seeds_together(trial(REWRITER), [0, 1], "rewriter"))
    assert result.status == "crash"
    assert "seed 0 changed" in result.error and "model.py" in result.error, result.error
    assert "which a later seed could read" in result.error


def test_runs_that_mostly_start_are_the_ones_whose_seeds_go_together():
    def timed(seconds, train):
        return TrialResult(label="b", status="ok", metric=0.9, seconds=seconds, seed_seconds=train)

    assert mostly_start_up([timed(5.5, 0.2), timed(5.3, 0.2), timed(6.0, 0.3)])
    assert not mostly_start_up([timed(65.0, 60.0), timed(64.0, 59.0)])
    assert not mostly_start_up([timed(5.0, None)])  # a train.py that says nothing of its training: a run per seed
    assert not mostly_start_up([TrialResult(label="b", status="crash", metric=None, seconds=1.0)])


def test_a_candidate_gets_as_many_seeds_as_train_in_one_start_up():
    assert seeds_for_one_run(5.3, 0.1) == 24  # digits at 1 epoch: training is 2 % of a run, capped
    assert seeds_for_one_run(5.3, 0.5) == 11
    assert seeds_for_one_run(5.3, 1.3) == 8 and seeds_for_one_run(5.3, 0.0) == 24
    assert [first_run_seeds(n) for n in (1, 2, 3, 8, 11, 24, 32)] == [1, 2, 3, 8, 8, 8, 10]
    assert [confirmation_seeds(n) for n in (1, 2, 3, 8, 11, 24)] == [1, 2, 3, 3, 3, 8]


def test_work_that_would_end_after_the_stop_time_is_foreseen():
    from datetime import datetime, timedelta

    from autoraysearch.trials.runs import fits_before

    now = datetime(2026, 12, 5, 6, 59, 50)
    assert fits_before(None, 8.6, now) and fits_before(now + timedelta(seconds=9), 8.6, now)
    assert not fits_before(now + timedelta(seconds=8), 8.6, now)


def test_the_next_candidates_first_run_and_the_confirmation_a_keep_would_need_are_foreseen_from_the_latest_candidates():
    from autoraysearch.campaign.opening import first_run_seconds, seconds_before_stop
    from autoraysearch.campaign.results_log import ResultRow, ResultsLog

    def row(status, seeds, seconds, metric=0.9):
        return ResultRow("1", "-", metric, 0.0, status, "x", {"seeds": str(seeds), "seconds": str(seconds)})

    log = ResultsLog(True, (row("baseline", 8, 19.0), row("keep", 8, 7.0), row("discard", 24, 20.0), row("discard", 8, 6.5),
                            row("crash", 8, 1.0, metric=None), ResultRow("2.seeds", "abc", 0.9, None, "best-seeds", "", {"seeds": "16", "seconds": "2"})))
    assert first_run_seconds(log, 8) == 6.5  # a row over more than a first run's seeds took two runs
    assert first_run_seconds(log) == pytest.approx(6.5 / 8)  # a run per seed: the shortest share of one seed
    assert first_run_seconds(ResultsLog(True, (row("baseline", 8, 19.0),)), 8) is None
    # Where decisions take several seeds, about two more first runs for the final path confirmation the next
    # candidate would need if kept: whether keeps await one (the keep above), none do (after a confirmation) or
    # none were made (discards only).
    assert seconds_before_stop(log, 24, 8) == 19.5 and seconds_before_stop(log, 3) == pytest.approx(3 * 6.5 / 8)
    assert seconds_before_stop(log, 1) == pytest.approx(6.5 / 8)  # decisions on single runs: no path confirmation
    confirmed = ResultRow("3.path", "abc", 0.9, 0.01, "confirmed", "path", {"seconds": "9"})
    assert seconds_before_stop(ResultsLog(True, log.rows + (confirmed,)), 24, 8) == 19.5
    assert seconds_before_stop(ResultsLog(True, log.rows[:1] + log.rows[2:]), 24, 8) == 19.5
    assert seconds_before_stop(ResultsLog(True, (row("baseline", 8, 19.0),)), 24, 8) is None
    # Where this run's iterations took longer on the clock than their runs (ideas, commits, scheduling), a first
    # run counts as the shortest of the latest of them; shorter ones never lower it below the run itself.
    assert seconds_before_stop(log, 24, 8, [30.0, 8.5, 9.0]) == pytest.approx(3 * 8.5)
    assert seconds_before_stop(log, 24, 8, [8.5] + [12.0] * 5) == pytest.approx(3 * 12.0)  # the latest five
    assert seconds_before_stop(log, 24, 8, [2.0]) == 19.5
    assert seconds_before_stop(log, 1, None, [8.5]) == 8.5
    # Before any candidate, setup's timing of the baseline says what a first run takes: its start-up and its seeds.
    timed = ResultsLog(True, (ResultRow("0", "baseline", 0.9, 0.0, "baseline", "x",
                                        {"seeds": "8", "seconds": "19", "start_up": "4.5", "per_seed": "1.5"}),))
    assert first_run_seconds(timed, 8) == 16.5 and first_run_seconds(timed) == 6.0
    assert seconds_before_stop(timed, 24, 8) == 3 * 16.5 and seconds_before_stop(timed, 1) == 6.0
    assert first_run_seconds(ResultsLog(True, timed.rows + log.rows[1:]), 8) == 6.5  # candidates say it once there are some


def test_only_an_iteration_of_a_first_run_alone_says_what_the_next_first_run_takes_on_the_clock():
    from autoraysearch.campaign.opening import only_a_first_run
    from autoraysearch.campaign.results_log import ResultRow

    def row(label, status, seeds):
        return ResultRow(label, "-", 0.9, 0.0, status, "x", {"seeds": seeds})

    rows = (row("1", "discard", "8"), row("2", "keep", "24"), row("3.seeds", "best-seeds", "16"), row("3", "discard", "24"),
            row("4", "keep", "8"), row("4.path", "confirmed", "8"), row("5", "crash", "8"), row("6", "discard", ""))
    assert only_a_first_run(rows, 1, 8)  # decided on its first run
    assert not only_a_first_run(rows, 2, 8)  # a second run too
    assert not only_a_first_run(rows, 3, 8)  # and the best's missing seeds beside it
    assert not only_a_first_run(rows, 4, 8)  # a path confirmation after the keep
    assert not only_a_first_run(rows, 5, 8)  # crashed: no full run
    assert only_a_first_run(rows, 6, None) and only_a_first_run(rows, 6, 1) and not only_a_first_run(rows, 6, 8)  # a run per seed: the screen alone
    assert not only_a_first_run(rows, 7, 8)  # nothing logged


def test_a_trial_of_several_seeds_is_never_pruned_and_gets_time_for_each():
    from autoraysearch.campaign.pruning import PruneRule

    one = trial(MODEL)
    several = seeds_together(seeded(one, 4, "x", pruning=PruneRule.__new__(PruneRule)), [4, 5, 6], "x-seeds")
    assert several.pruning is None
    assert several.env["AUTORAYSEARCH_SEEDS"] == "4,5,6" and "AUTORAYSEARCH_SEED" not in several.env
    assert several.timeout == 3 * one.timeout


# Hangs, and leaves a process that holds the seed's report pipe open: only the seed's own limit ends it.
HANGER = MODEL + textwrap.dedent("""
    import os as _os, time as _time
    _os.fork()  # both go on holding every descriptor the seed has
    _time.sleep(3600)
""")


@pytest.mark.slow
def test_a_seed_that_hangs_gets_the_time_of_a_run_and_no_more():
    hanging = seeds_together(trial(HANGER, timeout=20), [0, 1, 2], "hanger")
    assert hanging.timeout == 60  # the run's own limit: three seeds' worth
    result = run_trial(hanging)
    assert result.status == "crash" and result.seconds < 50, (result.status, result.seconds, result.error)
    assert "seed 0 ran past the time a run of its own gets (20 s)" in result.error, result.error
