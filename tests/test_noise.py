"""The noise rule, checked by hand: pooled σ, the screen, the keep rule and what the log's columns hold."""

from __future__ import annotations

import math

import pytest

from autoraysearch.campaign.experiment import TrialResult
from autoraysearch.campaign.noise import (
    CAP,
    KEEP_CONFIDENCE,
    KEEP_FLOOR,
    Bar,
    Noise,
    Prior,
    bar_from_log,
    campaign_noise,
    effect_prior,
    keep_confidence,
    is_kept,
    next_step,
    paired_columns,
    paired_prior,
    parse_runs,
    pooled_noise,
    robust_pool,
    seed_columns,
    worth_confirming,
)
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, format_log, parse_log
from autoraysearch.tasks.decide import choose_winner, judge
from autoraysearch.trials.runs import merge_runs

# The demo baseline's val_acc over seeds 0..2, as measured.
BASELINE = (0.9694, 0.9721, 0.9721)


def test_pooled_sigma_is_the_within_model_spread():
    noise = pooled_noise([(1.0, 3.0), (10.0, 12.0, 14.0), (5.0,)])
    # squares: 2 + 8 = 10 over 1 + 2 = 3 degrees of freedom (the second's variance 4 is within CAP × 2)
    assert noise.dof == 3 and noise.sigma == pytest.approx(math.sqrt(10 / 3))
    assert pooled_noise([(0.97, 0.97, 0.97)]).measured is False
    assert pooled_noise([(0.9,)]) == Noise()


def test_one_candidates_wrecked_runs_cannot_blow_up_the_noise():
    # The baseline's honest spread, then a candidate that wrecked its own -seedN runs (0.20 apart).
    honest = [(0.9694, 0.9721, 0.9721), (0.9750, 0.9777, 0.9721)]
    before = campaign_noise([row("0", "baseline", honest[0]), row("1", "discard", honest[1])])
    sabotage = row("2", "discard", (0.98, 0.10, 0.12))
    after = campaign_noise([row("0", "baseline", honest[0]), row("1", "discard", honest[1]), sabotage])
    naive = math.sqrt(sum(sum((x - sum(g) / 3) ** 2 for x in g) for g in [*honest, (0.98, 0.10, 0.12)]) / 6)
    assert naive > 0.2 and after.sigma < 1.5 * before.sigma  # bounded: at most CAP times the variance before it
    # A real +3 % model is still kept after it.
    bar = Bar(best_runs=honest[0], noise=after, paired=robust_pool([(0.0, -0.86)], prior=paired_prior(honest[0])))
    assert bar.paired.sigma < 0.02 and is_kept((0.9994, 1.0021, 1.0021), bar)


def test_the_sabotage_is_capped_whatever_order_the_rows_come_in():
    # The baseline anchors the pool even when a candidate row comes before it in the log.
    rows = [row("1", "discard", (0.98, 0.10, 0.12)), row("0", "baseline", BASELINE)]
    assert campaign_noise(rows).sigma < math.sqrt(CAP + 1) * pooled_noise([BASELINE]).sigma


def test_paired_keep_rule_by_hand():
    prior = paired_prior(BASELINE)  # √2 × the baseline's σ, with its 2 degrees of freedom
    assert prior.sigma == pytest.approx(math.sqrt(2) * pooled_noise([BASELINE]).sigma) and prior.dof == 2
    bar = Bar(best_runs=BASELINE, paired=Noise(sigma=0.006, dof=10))
    # Before any screen, true gains are taken to spread like Normal(0, (2 σ_d)²): with n = 2 differences the
    # posterior precision is 1/(2σ_d)² + 2/σ_d² = 2.25/σ_d², and a 90 % chance of a true gain needs a mean of
    # z(0.9) × √2.25 × σ_d / 2 = 0.96 σ_d.
    z90 = 1.2815516
    assert KEEP_CONFIDENCE == 0.9 and bar.margin(2) == pytest.approx(z90 * 1.5 * 0.006 / 2, rel=1e-4)
    assert bar.chance([bar.margin(2)] * 2) == pytest.approx(0.9, abs=1e-6)
    # The demo's kernel 3 -> 5 edit: +0.0084 at seed 0 passes the screen and earns a paired seed at once.
    assert worth_confirming(0.9610, Bar(best_runs=(0.9526, 0.9580), paired=Noise(0.0074, 10)), seeds=3)
    assert next_step([0.0084], bar, 3) == "more"
    assert next_step([-0.001], bar, 3) == "discard"
    # Two seeds that both gain by more than the bar: kept; a lucky first seed then a loss: not.
    assert next_step([0.0084, 0.0070], bar, 3) == "keep"
    assert next_step([0.0084, -0.0100], bar, 3) == "discard"
    assert next_step([0.0060, -0.0010], bar, 3) == "more"  # within a standard error of the bar
    assert is_kept([x + d for x, d in zip(BASELINE, (0.008, 0.007))], bar)
    assert not is_kept([BASELINE[0] + 0.02], bar)  # one seed alone is never a keep when noise is measured


def test_the_bar_follows_what_the_campaigns_proposals_usually_do():
    sigma = 0.01
    calm = Bar(best_runs=BASELINE, paired=Noise(sigma=sigma, dof=10))
    helpful = effect_prior([0.02, 0.015, 0.03, 0.01, 0.025, 0.02, 0.018, 0.022], sigma)
    harmful = effect_prior([-0.02, -0.015, -0.03, -0.01, -0.025, -0.02, -0.018, -0.022], sigma)
    assert helpful.mean > 0 > harmful.mean and helpful.screens == 8
    with_help, with_harm = (Bar(best_runs=BASELINE, paired=calm.paired, prior=p) for p in (helpful, harmful))
    assert with_help.margin(2) < calm.margin(2) < with_harm.margin(2)
    # Shrunk toward the null-centred law: a handful of screens cannot make every candidate a keep.
    assert helpful.mean < 0.02 and with_help.margin(2) > 0
    # Broken models (far below the best) are left out, and one huge screen counts as CLIP σ_d at most.
    assert effect_prior([-0.9, -0.8, 0.01], sigma) == effect_prior([0.01], sigma)
    assert effect_prior([5.0], sigma).mean == pytest.approx(effect_prior([0.04], sigma).mean)
    # A null change (no difference at any seed) is never kept, whatever the campaign learned.
    eager = Bar(best_runs=BASELINE, paired=calm.paired, prior=Prior(mean=0.05, spread=0.005, screens=12))
    assert next_step([0.0, 0.0, 0.0], eager, 3) == "discard" and not is_kept(BASELINE, eager)


def test_the_prior_is_read_from_the_logs_screens():
    rows = [row("0", "baseline", BASELINE)]
    for i, first in enumerate((0.004, -0.002, 0.006), 1):
        rows.append(ResultRow(str(i), "-", 0.97, first, "discard", "x", {"diffs": f"{first},0.001"}))
    bar = bar_from_log(ResultsLog(higher_is_better=True, rows=tuple(rows)))
    assert bar.prior.screens == 3 and bar.prior == effect_prior([0.004, -0.002, 0.006], bar.paired.sigma)


def test_pairing_sees_a_gain_the_seed_noise_hides():
    # The candidate beats the best at every seed by 0.004, far less than the seeds' spread (0.03).
    best = (0.90, 0.93, 0.96)
    candidate = tuple(b + 0.004 for b in best)
    bar = Bar(best_runs=best, noise=pooled_noise([best]), paired=Noise(sigma=0.002, dof=20))
    assert is_kept(candidate, bar)
    assert judge(TrialResult("7", "ok", sum(candidate) / 3, 1.0, runs=candidate), bar) == ("keep", pytest.approx(0.004))


def test_lower_is_better_turns_the_gain_round():
    bar = Bar(best_runs=(1.0, 1.1, 0.9), paired=Noise(sigma=0.1, dof=2), higher_is_better=False)
    assert is_kept([0.2, 0.25, 0.3], bar)
    assert not is_kept([1.5, 1.6, 1.7], bar)


def test_min_delta_raises_the_bar_even_without_noise():
    bar = Bar(best_runs=(0.9,), noise=Noise(), min_delta=0.01)
    assert not is_kept([0.905], bar) and is_kept([0.911], bar)


def test_without_measured_noise_the_screen_decides_alone():
    bar = Bar(best_runs=(0.9, 0.9, 0.9))  # identical baseline runs: a train.py that ignores the seed
    assert not worth_confirming(0.999, bar, seeds=3) and next_step([0.001], bar, 3) == "keep"
    assert not worth_confirming(0.999, Bar(best_runs=(0.9, 0.91), paired=Noise(0.01, 4)), seeds=1)  # --seeds 1
    assert bar.chance([0.001]) == 1.0 and bar.chance([-0.001]) == 0.0 and bar.chance([]) == 0.0  # exact, no noise


def row(label, status, runs):
    return ResultRow(label, "-", sum(runs) / len(runs), 0.0, status, "x", seed_columns(runs))


def ok(label, metric, seconds=2.0):
    return TrialResult(label=label, status="ok", metric=metric, seconds=seconds)


def test_a_candidates_runs_merge_into_a_mean_and_every_second_counts():
    merged = merge_runs(ok("5", 0.98, 2.0), [ok("5-seed2", 0.96, 3.0), ok("5-seed3", 0.97, 4.0)])
    assert merged.metric == pytest.approx(0.97) and merged.runs == (0.98, 0.96, 0.97)
    assert merged.seconds == 9.0 and merged.screen == 0.98
    crashed = merge_runs(ok("5", 0.98), [ok("5-seed2", 0.96), TrialResult("5-seed3", "crash", None, 1.0, error="NaN")])
    assert crashed.status == "crash" and crashed.metric is None and "seed run 3 of 3: NaN" in crashed.error


def test_parallel_keeps_the_largest_confirmed_gain():
    bar = Bar(best_runs=BASELINE, paired=Noise(sigma=0.003, dof=4))
    a = TrialResult("5a", "ok", 0.99, 1.0, runs=(0.99, 0.99, 0.99))
    b = TrialResult("5b", "ok", 0.995, 1.0, runs=(0.995, 0.995, 0.995))
    within_noise = TrialResult("5c", "ok", 0.9707, 1.0, runs=(0.970, 0.9721, 0.970))
    assert choose_winner([a, within_noise, b], bar) == "5b"
    assert choose_winner([within_noise], bar) is None


def test_the_log_keeps_every_seed_and_the_bar_is_read_back_from_it():
    rows = (
        ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE)),
        ResultRow("1", "-", 0.9750, 0.0038, "discard", "x", seed_columns((0.9777, 0.9721, 0.9750))),
        ResultRow("2", "-", 0.95, -0.02, "discard", "screen only"),
    )
    log = parse_log(format_log(ResultsLog(higher_is_better=True, rows=rows)))
    assert log.rows[0].extra["seeds"] == "3" and log.rows[0].extra["runs"] == "0.9694,0.9721,0.9721"
    bar = bar_from_log(log, min_delta=0.001)
    assert bar.best_runs == BASELINE and bar.min_delta == 0.001
    assert bar.noise == pooled_noise([BASELINE, (0.9777, 0.9721, 0.9750)])
    assert bar.paired == paired_prior(BASELINE)  # no row has paired differences yet


def test_the_best_seeds_a_comparison_trained_are_read_back_and_never_trained_again():
    from autoraysearch.tasks.log import best_seeds_row
    from autoraysearch.views.step_logs import iteration_rows

    baseline = ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE))
    more = (0.9650, 0.9700)
    log = ResultsLog(higher_is_better=True, rows=(baseline, best_seeds_row(1, baseline, more, 4)))
    log = parse_log(format_log(log))
    seeds_row = log.rows[1]
    assert seeds_row.status == "best-seeds" and seeds_row.iteration == "1.seeds" and seeds_row.extra["at"] == "4"
    assert "the baseline at paired seeds 4-5" in seeds_row.description
    assert bar_from_log(log).best_runs == BASELINE + more
    assert log.experiments() == [] and log.next_iteration() == 2
    assert iteration_rows(log, 1) == []  # the iteration's own summary names only its experiments
    discard = ResultRow("1", "-", 0.96, -0.01, "discard", "d")
    assert iteration_rows(log.with_row(discard), 1) == [discard]
    # A row that does not start where the best's runs end (repeated, or for other seeds) changes nothing.
    again = best_seeds_row(2, baseline, (0.1, 0.2), 4)
    assert bar_from_log(log.with_row(again)).best_runs == BASELINE + more
    # A keep makes a new best: the baseline's seeds rows are not its runs; a rollback to the baseline restores them.
    keep = ResultRow("2", "abc1234", 0.98, 0.01, "keep", "k", seed_columns((0.98, 0.98, 0.98)))
    kept = log.with_row(keep)
    assert bar_from_log(kept).best_runs == (0.98, 0.98, 0.98)
    assert bar_from_log(kept.with_row(best_seeds_row(3, keep, (0.97,), 4))).best_runs == (0.98, 0.98, 0.98, 0.97)
    rolled = kept.with_row(ResultRow("2.path", "baseline", 0.97, 0.0, "rollback", "path"))
    assert bar_from_log(rolled).best_runs == BASELINE + more
    assert rolled.experiments() == [keep]  # neither a path confirmation nor the best's further seeds is an experiment


def test_a_kept_row_shows_its_paired_gain_and_interval_at_the_end():
    bar = Bar(best_runs=BASELINE, paired=Noise(sigma=0.004, dof=12))
    cells = paired_columns((0.9800, 0.9790), bar)
    chance = f"{bar.chance(bar.differences((0.9800, 0.9790))):.4g}"
    assert {k: v for k, v in cells.items() if k != "diffs"} == {"gain": "+0.00875", "interval": "±0.0047", "chance": chance}
    assert parse_runs(cells["diffs"]) == (0.9800 - 0.9694, 0.9790 - 0.9721)  # the TSV keeps every digit
    rows = (ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE)),
            ResultRow("1", "abc1234", 0.9795, 0.0088, "keep", "wider", {**seed_columns((0.98, 0.979)), **cells}))
    text = format_log(ResultsLog(higher_is_better=True, rows=rows))
    header = text.splitlines()[1].split("\t")
    # after every column older logs have (the baseline's start_up and per_seed came later)
    assert header[-8:] == ["diffs", "gain", "interval", "chance", "at", "ahead", "start_up", "per_seed"]
    assert text.splitlines()[3].endswith(f"\t+0.00875\t±0.0047\t{chance}\t\t\t\t")
    later = bar_from_log(parse_log(text))
    assert later.best_runs == (0.98, 0.979) and later.paired.dof == 3  # the prior's 2 and this comparison's 1
    assert later.keep_confidence == keep_confidence([float(chance)])  # the keep's chance spent the budget


def test_status_and_report_say_the_noise():
    from autoraysearch.views.report import best_line

    rows = (ResultRow("0", "baseline", 0.9712, 0.0, "baseline", "initial state", seed_columns(BASELINE)),)
    line = best_line(ResultsLog(higher_is_better=True, rows=rows), "val_acc")
    assert line.endswith("noise σ = 0.0016 over 3 seed runs")
    single = (ResultRow("0", "baseline", 0.97, 0.0, "baseline", "initial state"),)
    assert "decisions use single runs" in best_line(ResultsLog(higher_is_better=True, rows=single), "val_acc")


def test_the_node_column_names_the_host_and_the_ray_node_stays_available():
    import socket

    from autoraysearch.campaign.experiment import Candidate, Verdict
    from autoraysearch.tasks.log import result_row

    result = TrialResult("4", "ok", 0.9, 3.0, node_id="a1b2c3d4e5f6", host=socket.gethostname().split(".")[0])
    row = result_row(Candidate("4", "wider", "", "f00"), Verdict("discard", -0.01, 0.91, "x"), result, "abc1234")
    assert row.extra["node"] == socket.gethostname().split(".")[0] and row.extra["node_id"] == "a1b2c3d4"


def test_sure_keeps_leave_room_for_less_sure_ones_and_keeps_at_the_bar_leave_none():
    assert keep_confidence([]) == KEEP_CONFIDENCE  # the first keep: one chance in ten of being false
    assert keep_confidence([0.9, 0.9, 0.9]) == pytest.approx(KEEP_CONFIDENCE)  # each spent its tenth
    assert keep_confidence([0.99]) == pytest.approx(1 - (0.2 - 0.01))  # 0.81: the first left 0.09 unspent
    assert keep_confidence([0.999] * 10) == KEEP_FLOOR  # never a coin flip, however sure the keeps before
    # Expected false keeps stay within a tenth of the keeps, whatever order they came in.
    chances = []
    for _ in range(20):
        chances.append(keep_confidence(chances))  # each keep exactly at its bar
        assert sum(1 - c for c in chances) <= 0.1 * len(chances) + 1e-9


def test_with_all_seeds_in_one_run_the_law_is_learned_from_each_candidates_mean():
    sigma = 0.06
    # Means of 3 differences spread by σ_d/√3 from noise alone: less of their spread is noise than a screen's.
    means = [0.03, -0.02, 0.05, 0.0, 0.04, -0.01, 0.02, 0.06]
    together = effect_prior([(m, 3) for m in means], sigma)
    apart = effect_prior(means, sigma)
    assert together.mean == apart.mean and together.spread > apart.spread
    assert effect_prior([(0.02, 1)], sigma) == effect_prior([0.02], sigma)


def test_status_learns_what_proposals_gain_as_the_campaigns_decisions_do():
    from autoraysearch.campaign.settings import CampaignSettings
    from autoraysearch.views.report import best_line

    # Each candidate's first seed lost, but its mean over its three seeds (all trained in one run) gained.
    compared = [ResultRow(str(i), "-", 0.97, 0.0, "discard", "x", {"diffs": "-0.01,0.02,0.03"}) for i in range(1, 5)]
    log = ResultsLog(higher_is_better=True, rows=(row("0", "baseline", BASELINE), *compared))
    together = CampaignSettings(seeds=8, seeds_in_one_run=True)
    apart = CampaignSettings(seeds=8, seeds_in_one_run=False)
    assert together.seeds_together and not apart.seeds_together
    assert "proposals gain +0.0067" in best_line(log, "val_acc", together)  # 4 means of +0.0133, shrunk by 4 nulls
    assert "proposals gain -0.005 " in best_line(log, "val_acc", apart)  # 4 first differences of -0.01
    assert best_line(log, "val_acc", apart) == best_line(log, "val_acc")
    from io import StringIO

    from autoraysearch.views.status_view import print_status

    shown = StringIO()
    print_status(log, together, ["no run is active"], shown)  # what `status` prints on a terminal
    assert "proposals gain +0.0067" in shown.getvalue() and "no run is active" in shown.getvalue()


def test_the_baselines_spread_only_starts_the_paired_noise_however_many_seeds_it_has():
    from autoraysearch.campaign.noise import PRIOR_DOF, paired_prior, spread

    three, many = (0.90, 0.92, 0.94), tuple(0.90 + 0.02 * (i % 3) for i in range(24))
    assert paired_prior(three).dof == paired_prior(many).dof == PRIOR_DOF == 2
    assert paired_prior(many).sigma == pytest.approx(2 ** 0.5 * spread(many))
    # one comparison of 8 paired seeds weighs 7 degrees of freedom against its 2
    diffs = (0.001, -0.002, 0.0, 0.002, -0.001, 0.001, 0.0, -0.001)
    pooled = robust_pool([diffs], prior=paired_prior(many))
    assert pooled.dof == 9
    assert pooled.sigma ** 2 == pytest.approx((2 * paired_prior(many).sigma ** 2 + 7 * spread(diffs) ** 2) / 9)
