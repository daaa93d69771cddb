"""One list of setup options: the CLI's flags, the setup flow, plan_setup and the plan wizard agree on it."""

from __future__ import annotations

import inspect

import pytest

from autoraysearch.cli import _setup_options, build_parser
from autoraysearch.errors import AutoraysearchError
from autoraysearch.setup.folder import plan_setup
from autoraysearch.setup.options import SETUP_OPTIONS, defaults
from autoraysearch.setup.wizard import setup_options


def keywords(function) -> dict:
    """A function's keyword parameters and their defaults, the experiment folder left out."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items() if name != "experiment_dir"}


def test_the_setup_flow_takes_exactly_the_listed_options_with_their_defaults():
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    assert keywords(autoraysearch_setup.fn) == defaults()


def test_plan_setup_takes_exactly_the_listed_options_with_their_defaults():
    assert keywords(plan_setup) == defaults()


def test_setup_with_no_flags_gives_every_option_its_default():
    args = build_parser().parse_args(["setup", "net.py"])
    assert _setup_options("net.py", args) == {**defaults(), "model_py": "net.py"}


def test_every_listed_option_has_a_setup_flag_that_reaches_the_flow():
    flags = {action.dest: action for action in build_parser()._subparsers._group_actions[0].choices["setup"]._actions}
    for option in SETUP_OPTIONS:
        assert option.name in flags, option.name
    given = build_parser().parse_args(["setup", "net.py", "--epochs", "7", "--model-kwargs", '{"width": 8}',
                                       "--download", "--optimizer", "sgd", "--gpus-per-trial", "0.5"])
    options = _setup_options("net.py", given)
    assert (options["epochs"], options["model_kwargs"], options["download"], options["optimizer"],
            options["gpus_per_trial"]) == (7, {"width": 8}, True, "sgd", 0.5)


def test_bad_model_kwargs_is_one_sentence():
    args = build_parser().parse_args(["setup", "net.py", "--model-kwargs", "[1, 2]"])
    with pytest.raises(AutoraysearchError, match="must be a JSON object"):
        _setup_options("net.py", args)


@pytest.mark.parametrize("answers", [
    dict(model_py="net.py", goal="g", gpus_per_trial=1.0, train_py=None, dataset="digits",
         budget={"epochs": 3}, data_dir="/data", download=True, data_module=None),
    dict(model_py="net.py", goal="", gpus_per_trial=0.0, train_py="train.py", metric="loss", direction="lower"),
], ids=["generated-train-py", "own-train-py"])
def test_the_plan_wizard_answers_only_with_listed_options(answers):
    assert set(setup_options(answers)) <= set(defaults())
