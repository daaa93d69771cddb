"""Confirming the path on fresh seeds: the verdict, the rollback it leads to, and the confirmed gain reported."""

from __future__ import annotations

import pytest

from autoraysearch.campaign.noise import Bar, Noise
from autoraysearch.campaign.path import (
    CONFIRM_SEEDS, FRESH_OFFSET, FRESH_STRIDE, confirmed_gain, describe_confirmed, fresh_seeds, keeps_since_confirmed,
    last_confirmed, next_fresh_seeds, runs_ahead, verdict,
)
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log, parse_log


def row(iteration, status, metric=0.9, commit="-", **extra):
    return ResultRow(iteration, commit, metric, 0.0, status, "x", {k: str(v) for k, v in extra.items()})


def test_a_path_that_holds_is_confirmed_and_one_that_does_not_is_rolled_back():
    bar = Bar(paired=Noise(sigma=0.004, dof=20))
    status, cells = verdict((0.95, 0.96, 0.955), (0.94, 0.945, 0.95), bar)
    assert status == "confirmed" and cells["gain"] == "+0.01" and cells["interval"] == "±0.0038"
    status, cells = verdict((0.94, 0.945, 0.95), (0.95, 0.96, 0.955), bar)
    assert status == "rollback" and float(cells["gain"]) < 0


def test_the_best_goes_back_to_the_point_a_rollback_names():
    rows = (row("0", "baseline", 0.90, "baseline"), row("1", "keep", 0.92, "aaa1111"), row("2", "keep", 0.93, "bbb2222"),
            row("3", "keep", 0.935, "ccc3333"))
    log = ResultsLog(True, rows)
    assert log.best().iteration == "3" and keeps_since_confirmed(rows) == 3 and last_confirmed(rows).commit is None
    rolled = ResultsLog(True, rows + (row("3.path", "rollback", 0.92, "aaa1111", gain="-0.002"),))
    assert rolled.best().iteration == "1" and last_confirmed(rolled.rows).commit == "aaa1111"
    to_baseline = ResultsLog(True, rows + (row("3.path", "rollback", 0.90, "0000000", gain="-0.01"),))
    assert to_baseline.best().status == "baseline"
    # Later keeps build on the point rolled back to, and count towards the next confirmation.
    later = ResultsLog(True, rolled.rows + (row("4", "keep", 0.94, "ddd4444"),))
    assert later.best().iteration == "4" and keeps_since_confirmed(later.rows) == 1


def test_each_confirmation_uses_seeds_nothing_else_used():
    rows = [row("0", "baseline"), row("3.path", "confirmed", commit="ccc3333", gain="+0.01", interval="±0.004")]
    assert fresh_seeds(7, rows[:1]) == list(range(7 + FRESH_OFFSET, 7 + FRESH_OFFSET + CONFIRM_SEEDS))
    assert fresh_seeds(7, rows)[0] == 7 + FRESH_OFFSET + FRESH_STRIDE
    # With seeds in one run a confirmation takes a first run's worth (8 of 24): still apart from the next one's.
    assert fresh_seeds(7, rows[:1], 8)[-1] < fresh_seeds(7, rows, 8)[0] and len(fresh_seeds(7, rows, 8)) == 8
    assert max(fresh_seeds(7, rows, 8)) < 7 + FRESH_OFFSET + 2 * FRESH_STRIDE


def test_the_confirmed_gain_adds_up_the_stretches_that_held():
    rows = [row("0", "baseline"), row("3.path", "confirmed", commit="c", gain="+0.01", interval="±0.003"),
            row("6.path", "rollback", commit="c", gain="-0.002", interval="±0.003"),
            row("9.path", "confirmed", commit="f", gain="+0.02", interval="±0.004")]
    gain, half, n = confirmed_gain(rows)
    assert gain == pytest.approx(0.03) and half == pytest.approx(0.005) and n == 2
    assert describe_confirmed(rows) == "confirmed gain +0.03 ±0.005 (90 %) over 2 stretches on fresh seeds"
    assert describe_confirmed(rows[:1]) == "no gain confirmed on fresh seeds yet"
    # The rows survive the results log's format, their paired cells at the end.
    log = parse_log(format_log(ResultsLog(True, tuple(rows))))
    assert confirmed_gain(log.rows) == confirmed_gain(rows)


def test_a_point_trained_ahead_is_read_at_the_next_confirmations_seeds_and_nowhere_else():
    baseline = row("0", "baseline", ahead="0.9,0.91,0.92")
    keeps = (row("1", "keep", commit="aaa1111"), row("2", "keep", commit="bbb2222"))
    # The baseline trained ahead in setup: the first confirmation reads it, at the seeds it would train.
    assert runs_ahead((baseline, *keeps), 3) == (0.9, 0.91, 0.92)
    assert runs_ahead((baseline, *keeps), 8) is None  # another number of seeds: trained again
    # A best that held was trained ahead at the next confirmation's seeds, which the next one then uses.
    held = row("2.path", "confirmed", commit="bbb2222", ahead="0.95,0.96,0.97")
    rows = (baseline, *keeps, held)
    assert next_fresh_seeds(7, rows[:3], 3) == fresh_seeds(7, rows, 3)
    assert runs_ahead(rows + (row("3", "keep", commit="ccc3333"),), 3) == (0.95, 0.96, 0.97)
    # A rollback's point was not trained at the seeds after it: nothing ahead, not even an older row's.
    rolled = rows + (row("5.path", "rollback", commit="bbb2222"),)
    assert runs_ahead(rolled, 3) is None
    assert runs_ahead((row("0", "baseline"), *keeps), 3) is None
    # The cell survives the results log's format.
    assert runs_ahead(parse_log(format_log(ResultsLog(True, rows))).rows, 3) == (0.95, 0.96, 0.97)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_where_seeds_train_in_one_run_each_confirmation_trains_the_best_alone(services, tmp_path, monkeypatch):
    """The baseline is trained ahead in setup, each best that holds in its confirmation: no point is trained twice."""
    from statistics import fmean

    import autoraysearch.flows.loop as loop_flow
    import autoraysearch.flows.setup_experiment as setup_flow
    from helpers import EXAMPLE_MODEL, agent_answering_in_turn, loop, make_repo, results, setup

    from autoraysearch.campaign.noise import parse_runs
    from autoraysearch.campaign.settings import load_settings

    trained: list[tuple[str, list[int]]] = []
    for module in (setup_flow, loop_flow):
        real = module.seeds_together
        monkeypatch.setattr(module, "seeds_together", lambda trial, seeds, label, real=real: (
            trained.append((label, list(seeds))), real(trial, seeds, label))[1])
    monkeypatch.setattr(loop_flow, "CONFIRM_EVERY", 1)  # a confirmation after every keep: two within the campaign

    def width(n: int) -> str:
        return EXAMPLE_MODEL.read_text().replace("nn.Linear(32 * 4 * 4, 64)", f"nn.Linear(32 * 4 * 4, {n})").replace(
            "nn.Linear(64, num_classes)", f"nn.Linear({n}, num_classes)")

    exp = make_repo(tmp_path / "exp", {"model.py": width(1)})
    setup(exp, seeds=3, epochs=3)  # each widening a gain no seed's noise can hide
    command = agent_answering_in_turn(tmp_path, *({"description": f"hidden width {n}", "kind": "width", "model_py": width(n)}
                                                   for n in (6, 64)))
    loop(exp, max_iterations=2, ideator="command", llm_command=command)

    rows = results(exp).rows
    assert [r.status for r in rows] == ["baseline", "keep", "confirmed", "keep", "confirmed"], [
        (r.status, r.description) for r in rows]
    baseline, first, second = rows[0], rows[2], rows[4]
    seed = load_settings(exp).seed
    fresh = [list(range(seed + FRESH_OFFSET + FRESH_STRIDE * n, seed + FRESH_OFFSET + FRESH_STRIDE * n + 3))
             for n in range(3)]
    # Setup's run of the baseline's seeds held the first confirmation's; each confirmation trained its best
    # at its own seeds and the next one's, and never the point before it.
    assert trained[0] == ("baseline-seeds", [seed + 1, seed + 2, *fresh[0]])
    assert [t for t in trained if ".path" in t[0]] == [
        ("1.path-best-seeds", fresh[0] + fresh[1]), ("2.path-best-seeds", fresh[1] + fresh[2])]
    assert len(parse_runs(baseline.extra["runs"])) == 3  # the held-out seeds are not among the baseline's
    for path, point_ahead in ((first, baseline), (second, first)):
        ahead = parse_runs(point_ahead.extra["ahead"])
        assert len(ahead) == 3
        # The paired gain is the best against the point's values trained ahead.
        assert fmean(parse_runs(path.extra["diffs"])) == pytest.approx(path.metric - fmean(ahead))
    logs = exp / ".autoraysearch" / "logs"
    assert not list(logs.glob("*.path-point*"))
