from datetime import datetime, timedelta

import pytest

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import TrialResult
from autoraysearch.campaign.metric import is_improvement, parse_metric
from autoraysearch.campaign.stopping import Progress, StopConditions, parse_deadline, validate
from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.tasks.decide import judge

NOW = datetime(2026, 11, 27, 23, 30)


@pytest.mark.parametrize("line, value", [("val_acc=0.8728", 0.8728), ("val_acc = 1e-3 ", 0.001), ("val_acc=-2", -2.0)])
def test_parse_metric_reads_the_last_line(line, value):
    assert parse_metric(line, "val_acc") == pytest.approx(value)


@pytest.mark.parametrize("line, reason", [
    ("", "not val_acc=VALUE"),
    ("epoch 3 done", "not val_acc=VALUE"),
    ("val_loss=0.3", "reports val_loss, not the campaign metric val_acc"),
    ("val_acc=high", "not a number"),
    ("val_acc=nan", "not a finite number"),
    ("val_acc=inf", "not a finite number"),
])
def test_parse_metric_says_why_a_line_is_not_a_metric(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_metric(line, "val_acc")


def test_improvement_is_strict_and_follows_direction():
    assert is_improvement(0.9, 0.8, True) and not is_improvement(0.8, 0.8, True)
    assert is_improvement(0.1, 0.2, False) and not is_improvement(0.3, 0.2, False)
    assert not is_improvement(None, 0.2, True)


def result(status, metric=None):
    return TrialResult(label="1", status=status, metric=metric, seconds=1.0)


def single_run_bar(best, higher_is_better=True, min_delta=0.0):
    return Bar(best_runs=(best,), noise=Noise(), higher_is_better=higher_is_better, min_delta=min_delta)


def test_judge_on_single_runs_keeps_only_strict_improvements():
    assert judge(result("ok", 0.9), single_run_bar(0.8)) == ("keep", pytest.approx(0.1))
    assert judge(result("ok", 0.8), single_run_bar(0.8)) == ("discard", 0.0)
    assert judge(result("ok", 0.7), single_run_bar(0.8))[0] == "discard"
    assert judge(result("ok", 0.7), single_run_bar(0.8, higher_is_better=False))[0] == "keep"
    assert judge(result("ok", 0.85), single_run_bar(0.8, min_delta=0.1))[0] == "discard"
    assert judge(result("crash"), single_run_bar(0.8)) == ("crash", None)
    assert judge(result("timeout"), single_run_bar(0.8)) == ("timeout", None)


def progress(iterations=0, best=None, since_keep=0, started=NOW):
    return Progress(iterations=iterations, started=started, best=best, iterations_since_keep=since_keep)


def test_no_condition_means_never_stop():
    assert StopConditions().reason_to_stop(progress(10_000, 0.99, 10_000, NOW - timedelta(days=30)), NOW, True) is None


def test_each_stop_condition():
    assert "3 iterations" in StopConditions(max_iterations=3).reason_to_stop(progress(3), NOW, True)
    assert StopConditions(max_iterations=3).reason_to_stop(progress(2), NOW, True) is None
    deadline = NOW + timedelta(minutes=1)
    assert StopConditions(deadline=deadline).reason_to_stop(progress(), NOW, True) is None
    assert "deadline" in StopConditions(deadline=deadline).reason_to_stop(progress(), deadline, True)
    assert "2 hours" in StopConditions(max_hours=2).reason_to_stop(progress(started=NOW - timedelta(hours=2)), NOW, True)
    assert "target" in StopConditions(target=0.9).reason_to_stop(progress(best=0.91), NOW, True)
    assert StopConditions(target=0.9).reason_to_stop(progress(best=0.91), NOW, False) is None
    assert "target" in StopConditions(target=0.1).reason_to_stop(progress(best=0.05), NOW, False)
    assert "no improvement in 4" in StopConditions(patience=4).reason_to_stop(progress(since_keep=4), NOW, True)


def test_deadline_is_the_next_time_the_clock_shows_it():
    assert parse_deadline("07:00", NOW) == datetime(2026, 11, 28, 7, 0)
    assert parse_deadline("23:45", NOW) == datetime(2026, 11, 27, 23, 45)
    for bad in ("7am", "25:00", "12:60", ""):
        with pytest.raises(AutoraysearchError, match="HH:MM"):
            parse_deadline(bad, NOW)


def test_nonsense_stop_conditions_are_refused():
    for conditions in (StopConditions(max_iterations=0), StopConditions(max_hours=-1), StopConditions(patience=0)):
        with pytest.raises(AutoraysearchError):
            validate(conditions)
