"""The setup options, listed once.

`autoraysearch setup`'s flags are built from this list; the setup flow and `plan_setup` take exactly
these keywords with these defaults, and the plan wizard answers only with these names. A test holds
the four together, so an option added in one place and forgotten in another fails at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from autoraysearch.errors import AutoraysearchError


@dataclass(frozen=True)
class SetupOption:
    name: str  # the keyword of the setup flow and of plan_setup
    default: Any
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    switch: bool = False  # a flag without a value (store_true)
    budget: bool = False  # one of the training budgets, of which the CLI takes at most one
    from_text: Callable[[str | None], Any] | None = None  # the CLI's text to the flow's value

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.switch:
            return dict(action="store_true", help=self.help)
        given = dict(type=self.type, choices=self.choices, metavar=self.metavar)
        return dict(default=self.default, help=self.help, **{k: v for k, v in given.items() if v is not None})

    def value(self, cli_value: Any) -> Any:
        return self.from_text(cli_value) if self.from_text else cli_value


def model_kwargs_from_text(text: str | None) -> dict | None:
    """--model-kwargs as a dict, or None to let setup choose (num_classes when Model takes it)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise AutoraysearchError(f"--model-kwargs is not valid JSON ({exc}): pass an object such as '{{\"width\": 64}}'.") from None
    if not isinstance(value, dict):
        raise AutoraysearchError("--model-kwargs must be a JSON object such as '{\"num_classes\": 10}'.")
    return value


MODEL_PY = SetupOption("model_py", "model.py", "path of the model file (defines class Model)")

SETUP_OPTIONS: tuple[SetupOption, ...] = (
    MODEL_PY,
    SetupOption("dataset", "digits", "digits (bundled), mnist, fashionmnist, cifar10, cifar100 (from --data-dir), "
                "npz:PATH, or custom (--data-module) (default: digits)"),
    SetupOption("epochs", None, "training epochs per trial (default 5)", type=int, budget=True),
    SetupOption("time_budget", None, "train for this many seconds instead", type=float, metavar="SECONDS", budget=True),
    SetupOption("seed", 0, "training and ideator seed (default 0)", type=int),
    SetupOption("seeds", None, "train the baseline with K seeds to measure the noise, and confirm promising candidates "
                "over K seeds (default 3, or 8 where a run is mostly start-up and a candidate's seeds train in one "
                "run; 1: decide on single runs)", type=int, metavar="K"),
    SetupOption("metric", "val_acc", "metric name train.py prints last (default val_acc)"),
    SetupOption("direction", "higher", "which way is better", choices=("higher", "lower")),
    SetupOption("train_py", None, "use your own train.py instead of generating one"),
    SetupOption("goal", "", "what you want from the model, in plain words"),
    SetupOption("trial_timeout", None, "kill a trial after this long", type=float, metavar="SECONDS"),
    SetupOption("cpus_per_trial", 1.0, "CPUs per trial (default 1)", type=float),
    SetupOption("gpus_per_trial", None, "GPUs per trial, fractions allowed (default: 1 on a cluster with GPUs, else 0)",
                type=float),
    SetupOption("data_dir", None, "the folder holding mnist/fashionmnist/cifar10/cifar100's files"),
    SetupOption("data_module", None, "for --dataset custom: your data.py (see README)", metavar="DATA_PY"),
    SetupOption("download", False, "let train.py fetch missing files with torchvision", switch=True),
    SetupOption("model_kwargs", None, "Model's arguments, e.g. '{\"num_classes\": 10}'", metavar="JSON",
                from_text=model_kwargs_from_text),
    SetupOption("batch_size", 64, "training samples per step, per process with DDP (default 64)", type=int),
    SetupOption("learning_rate", None, "the optimizer's peak learning rate (default: 0.001 for adamw, 0.05 for sgd)",
                type=float),
    SetupOption("compile", False, "torch.compile the model in train.py", switch=True),
    SetupOption("optimizer", None, "adamw, or sgd with Nesterov momentum 0.9 (default: sgd for cifar10/cifar100, "
                "else adamw)", choices=("adamw", "sgd")),
    SetupOption("schedule", None, "cosine: a 5%% linear warm-up, then a cosine decay to 0 (default: cosine for "
                "cifar10/cifar100, else none)", choices=("none", "cosine")),
    SetupOption("weight_decay", None, "weight decay (default: 0.01 for adamw, 0.0005 for sgd)", type=float),
)


def chosen(values: dict[str, Any]) -> dict[str, Any]:
    """The setup options among a function's arguments (the setup flow's `locals()` at its start)."""
    return {option.name: values[option.name] for option in SETUP_OPTIONS}


def defaults() -> dict[str, Any]:
    """Every setup option at its default: what setup does when nothing is given."""
    return {option.name: option.default for option in SETUP_OPTIONS}
