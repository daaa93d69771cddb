"""benchmarks/search_quality.py's side runs: they size a change to the loop, and never take the default table's place."""

import argparse

import pytest


def options(first_run="third", second_run=None, baseline_free=False, noise="", rules="greedy,together", epochs=1, start_up=None,
            early_stop=True, pruning="", seeds=None, budgets=(12, 48)):
    return argparse.Namespace(first_run=first_run, second_run=second_run, baseline_free=baseline_free, noise=noise, rules=rules,
                              epochs=epochs, start_up=start_up, early_stop=early_stop, pruning=pruning, seeds=seeds,
                              budgets=budgets)


def test_a_first_run_names_the_loops_rule_all_seeds_or_a_number_of_them(search_quality):
    from autoraysearch.trials.runs import first_run_seeds

    assert search_quality.first_run_rule("third") is first_run_seeds
    assert search_quality.first_run_rule("all")(24) == 24
    assert search_quality.first_run_rule("3")(24) == 3
    assert search_quality.first_run_rule("30")(24) == 24  # never more seeds than a candidate has
    for wrong in ("0", "x", "-2", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="third, all or a number"):
            search_quality.first_run_rule(wrong)


def test_a_second_run_is_none_as_in_the_loop_all_the_rest_or_a_number_of_seeds(search_quality):
    assert search_quality.second_run_rule("none") is None
    assert search_quality.second_run_rule("rest") == 0  # no cap on the rest
    assert search_quality.second_run_rule("8") == 8
    for wrong in ("0", "x", "-2", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="none, rest or a number"):
            search_quality.second_run_rule(wrong)


def test_a_start_up_is_a_number_of_seconds_zero_or_more(search_quality):
    assert search_quality.start_up_seconds("0") == 0.0
    assert search_quality.start_up_seconds("2.5") == 2.5
    for wrong in ("-1", "x", "", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds, zero or more"):
            search_quality.start_up_seconds(wrong)


def test_budgets_are_whole_numbers_of_runs_that_leave_room_past_setup(search_quality):
    assert search_quality.budgets_list("24") == (24,)
    assert search_quality.budgets_list("32,18,24,18") == (18, 24, 32)  # sorted, each once
    assert search_quality.DEFAULT_BUDGETS == (12, 48)
    for wrong in ("", "x", "3", "12,2", "12.5", "-12"):
        with pytest.raises(argparse.ArgumentTypeError, match="whole numbers of runs, 4 or more"):
            search_quality.budgets_list(wrong)


def test_noise_settings_take_only_numeric_constants_the_keep_rule_has(search_quality):
    assert search_quality.noise_overrides("KEEP_CONFIDENCE=0.8,PRIOR_WEIGHT=2") == {"KEEP_CONFIDENCE": 0.8, "PRIOR_WEIGHT": 2.0}
    assert search_quality.noise_overrides("") == {}
    with pytest.raises(argparse.ArgumentTypeError, match="no numeric constant 'KEEP_CONFIDENCES'"):
        search_quality.noise_overrides("KEEP_CONFIDENCES=0.8")
    with pytest.raises(argparse.ArgumentTypeError, match="no numeric constant 'math'"):
        search_quality.noise_overrides("math=1")  # a module the rule imports is not a setting
    with pytest.raises(argparse.ArgumentTypeError, match="KEEP_CONFIDENCE needs a number"):
        search_quality.noise_overrides("KEEP_CONFIDENCE=high")
    assert search_quality.pruning_overrides("STOP_Z=1.5") == {"STOP_Z": 1.5}
    counts = search_quality.pruning_overrides("PRIOR_SCREENS=4,EXPLORE_AFTER=10")
    assert counts == {"PRIOR_SCREENS": 4, "EXPLORE_AFTER": 10} and all(type(v) is int for v in counts.values())
    with pytest.raises(argparse.ArgumentTypeError, match="campaign/pruning.py has no numeric constant 'HOPELESS'"):
        search_quality.pruning_overrides("HOPELESS=0.1")  # noise.py's, not early stopping's


def test_only_the_loops_own_rules_and_settings_write_the_default_table(search_quality):
    table = "## digits, 1 epoch(s)\n\n| budget |\n"
    assert search_quality.side_run(options(), table) == ("search_quality_e1", table)
    sides = {
        "search_quality_e1_first_run_3": options(first_run="3"),
        "search_quality_e1_all_seeds_at_once": options(first_run="all"),
        "search_quality_e1_second_run_8": options(second_run=8),
        "search_quality_e1_second_run_rest": options(second_run=0),
        "search_quality_e1_baseline_free": options(baseline_free=True),
        "search_quality_e1_start_up_0": options(start_up=0.0),
        "search_quality_e1_budgets_18_24_32": options(budgets=(18, 24, 32)),
        "search_quality_e1_no_early_stop": options(early_stop=False),
        "search_quality_e1_noise_KEEP_CONFIDENCE_0.8": options(noise={"KEEP_CONFIDENCE": 0.8}),
        "search_quality_e5_start_up_0_pruning_STOP_Z_1.5": options(start_up=0.0, pruning={"STOP_Z": 1.5}, epochs=5),
        "search_quality_e5_start_up_0_seeds_5": options(start_up=0.0, seeds=5, epochs=5),
        "search_quality_e5_what_if": options(rules="greedy,racing-shared", epochs=5),
    }
    for expected, side in sides.items():
        name, text = search_quality.side_run(side, table)
        assert name == expected
        assert text.startswith("# ") and ("not the default" in text or "does not have yet" in text)
        assert "### digits" in text  # the regime's heading sits under the side run's own


def test_side_runs_stacked_name_each_setting_and_keep_the_regimes_heading_one_level_down(search_quality):
    table = "## digits, 1 epoch(s)\n\n| budget |\n"
    name, text = search_quality.side_run(options(first_run="3", noise={"PRIOR_WEIGHT": 2.0}), table)
    assert name == "search_quality_e1_first_run_3_noise_PRIOR_WEIGHT_2"
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Search quality at 1 epoch(s) with a candidate's first run at 3 seeds (not the default)",
                        "# Search quality at 1 epoch(s) with PRIOR_WEIGHT = 2 (not the default)",
                        "### digits, 1 epoch(s)"]
