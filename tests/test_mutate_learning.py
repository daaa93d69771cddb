"""The offline ideator learns from the results log: what helped comes first, shrinking last, near misses are combined."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoraysearch.campaign.results_log import ResultRow
from autoraysearch.ideators.mutate import choose_mutations
from autoraysearch.ideators.mutate.arms import arms
from autoraysearch.ideators.mutate.learning import Learner

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py").read_text()
SHRINKING = (("width", "down"), ("depth", "down"), ("heads", "down"))


def row(iteration: str, status: str, metric: float | None, delta: float | None, description: str,
        runs: str = "", seconds: str = "") -> ResultRow:
    extra = {key: value for key, value in (("runs", runs), ("seconds", seconds)) if value}
    return ResultRow(iteration, "-", metric, delta, status, description, extra)


def test_gains_are_paired_seed_by_seed_against_the_best_they_were_tried_on() -> None:
    rows = [
        row("0", "baseline", 0.90, None, "baseline", runs="0.95,0.85"),
        row("1", "discard", 0.915, None, "width up: a 1 -> 2", runs="0.97,0.86"),
        row("2", "keep", 0.92, 0.02, "dropout up: b 0.1 -> 0.2", runs="0.96,0.88"),
        row("3", "discard", 0.91, -0.01, "activation swap: c", runs="0.97,0.85"),
        row("4", "discard", 0.91, -0.01, "kernel up: d 3 -> 5"),  # one run: its logged delta
        row("5", "crash", None, None, "norm add: e (crash: boom)"),
    ]
    gains = [outcome.gain for outcome in Learner.from_rows(rows).outcomes]
    assert gains[0] == pytest.approx((0.02 + 0.01) / 2)
    assert gains[1] == pytest.approx(0.02)  # 0.96 - 0.95, 0.88 - 0.85
    # Against the kept row 2, not the baseline (where it would have gained 0.01).
    assert gains[2] == pytest.approx((0.01 - 0.03) / 2)
    assert gains[3] == pytest.approx(-0.01) and gains[4] is None
    # A lower-is-better metric turns a negative delta into a gain.
    assert Learner.from_rows(rows[:1] + rows[4:5], higher_is_better=False).outcomes[0].gain == pytest.approx(0.01)


def test_what_helped_comes_first_and_its_credit_survives_a_keep() -> None:
    rows = [
        row("0", "baseline", 0.90, None, "baseline"),
        row("1", "keep", 0.93, 0.03, "width up: classifier[1] Linear out_features 64 -> 128"),
        row("2", "discard", 0.91, -0.02, "activation swap: activation ReLU -> GELU (3 places)"),
        row("3", "discard", 0.90, -0.03, "dropout down: classifier[3] Dropout p 0.25 -> 0.15"),
        row("4", "discard", 0.92, -0.01, "norm swap: features[1] nn.BatchNorm2d(16) -> nn.GroupNorm(8, 16)"),
    ]
    learner = Learner.from_rows(rows)
    assert learner.value(("width", "up")) > learner.value(("layer", "up")) > learner.value(("activation", "swap"))
    for seed in range(5):
        [first] = choose_mutations(EXAMPLE, tried=set(), seed=seed, history=rows)
        assert arms(first.description) == (("width", "up"),), first.description


def test_shrinking_comes_last_unless_the_goal_asks_for_a_smaller_model() -> None:
    first = choose_mutations(EXAMPLE, tried=set(), seed=0, count=40)
    assert not any(arm in SHRINKING for m in first for arm in arms(m.description))
    smaller = choose_mutations(EXAMPLE, tried=set(), seed=0, count=5, goal="a smaller, faster model for a phone")
    assert any(arm in SHRINKING for m in smaller for arm in arms(m.description))


def test_crashes_and_slow_trials_count_against_a_kind() -> None:
    rows = [
        row("0", "baseline", 0.90, None, "baseline", seconds="10"),
        row("1", "discard", 0.90, 0.0, "layer up: a followed by 1 more Linear(64, 64)", seconds="80"),
        row("2", "discard", 0.90, 0.0, "dropout up: b 0.1 -> 0.2", seconds="10"),
        row("3", "crash", None, None, "residual add: c inside a residual connection (crash: boom)"),
        row("4", "discard", 0.90, 0.0, "activation swap: d", seconds="10"),
    ]
    learner = Learner.from_rows(rows)
    assert learner.value(("layer", "up")) < learner.value(("dropout", "up"))
    assert learner.value(("residual", "add")) < learner.value(("activation", "swap"))


def test_the_best_near_misses_are_tried_together_first() -> None:
    rows = [
        row("0", "baseline", 0.90, None, "baseline"),
        row("1", "discard", 0.899, -0.001, "dropout up: classifier[3] Dropout p 0.25 -> 0.35"),
        row("2", "discard", 0.85, -0.05, "kernel up: features[0] Conv2d kernel_size 3 -> 5, padding 1 -> 2"),
        row("3", "discard", 0.898, -0.002, "pooling swap: features[6] MaxPool2d -> AvgPool2d (note: slow)"),
        *[row(str(n), "discard", 0.8, -0.1, f"number up: elsewhere {n} -> {n + 1}") for n in range(4, 7)],
    ]
    # Too early to call anything a near miss: no combination yet.
    assert not any(m.description.startswith("combined: ")
                   for m in choose_mutations(EXAMPLE, tried=set(), seed=0, count=5, history=rows[:4]))
    [pair] = choose_mutations(EXAMPLE, tried=set(), seed=0, history=rows)
    assert set(arms(pair.description)) == {("dropout", "up"), ("pooling", "swap")}
    assert "nn.Dropout(0.35)" in pair.source and "nn.AvgPool2d(2)" in pair.source
