"""Render the package's Jinja2 templates; render_train_py writes the fixed train.py every candidate is judged by."""

from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass, field
from typing import Any

import jinja2

from autoraysearch.errors import AutoraysearchError


def pyrepr(value: Any) -> str:
    """A Python literal for value; refuses anything whose repr does not read back as the same value."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        same = False
    if not same:
        raise AutoraysearchError(
            f"value {text[:60]} cannot be written into train.py: use numbers, strings, booleans, None, "
            "lists, tuples or dicts of them."
        )
    return text


def make_environment() -> jinja2.Environment:
    """The package's one template environment: strict about undefined names, templates loaded as files."""
    # The templates live in the subpackage autoraysearch.templates (the repository's templates/ folder),
    # so load them from there; this works from a source checkout and from an installed wheel alike.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autoraysearch.templates", "."),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Python source, not HTML; values go through pyrepr instead.
    )
    env.filters["pyrepr"] = pyrepr
    return env


ENVIRONMENT = make_environment()


@dataclass(frozen=True)
class TrainSpec:
    """The settings baked into train.py: what to train on, for how long, and how."""

    dataset: str  # "digits" or "npz:/abs/path.npz" (already absolute)
    epochs: int | None = 5  # exactly one of epochs / time_budget is set
    time_budget: float | None = None  # seconds of training, then evaluate
    seed: int = 0
    batch_size: int = 64
    learning_rate: float = 1e-3
    metric: str = "val_acc"
    model_kwargs: dict = field(default_factory=dict)  # Model(**model_kwargs)


def render_train_py(spec: TrainSpec) -> str:
    """The source of train.py for spec, after checking every setting."""
    validate_train_spec(spec)
    return ENVIRONMENT.get_template("train.py.j2").render(spec=spec)


def validate_train_spec(spec: TrainSpec) -> None:
    """Raise a user error for the first setting train.py could not run with."""
    validate_dataset(spec.dataset)
    validate_duration(spec.epochs, spec.time_budget)
    if not is_int(spec.seed) or not 0 <= spec.seed < 2**32:
        # numpy's seed accepts only this range.
        raise AutoraysearchError(f"seed {spec.seed!r} is invalid: use an integer from 0 to 2**32 - 1.")
    if not is_int(spec.batch_size) or spec.batch_size < 1:
        raise AutoraysearchError(f"batch size {spec.batch_size!r} is invalid: use a positive integer.")
    if not is_positive_number(spec.learning_rate):
        raise AutoraysearchError(
            f"learning rate {spec.learning_rate!r} is invalid: use a positive number such as 0.001."
        )
    if not isinstance(spec.metric, str) or not spec.metric.isidentifier():
        raise AutoraysearchError(
            f"metric name {spec.metric!r} is invalid: use letters, digits and underscores, such as 'val_acc'."
        )
    validate_model_kwargs(spec.model_kwargs)


def validate_dataset(dataset: str) -> None:
    """Accept "digits" or "npz:" followed by an absolute path (setup resolves relative ones)."""
    if dataset == "digits":
        return
    if isinstance(dataset, str) and dataset.startswith("npz:") and os.path.isabs(dataset[len("npz:") :]):
        return
    raise AutoraysearchError(
        f"dataset {dataset!r} cannot be written into train.py: use 'digits' or 'npz:' followed by an absolute path."
    )


def validate_duration(epochs: int | None, time_budget: float | None) -> None:
    """Exactly one of a positive epoch count and a positive time budget in seconds."""
    if (epochs is None) == (time_budget is None):
        raise AutoraysearchError(
            "train for either a number of epochs or a time budget: set exactly one of the two."
        )
    if epochs is not None and (not is_int(epochs) or epochs < 1):
        raise AutoraysearchError(f"epochs {epochs!r} is invalid: use a positive integer.")
    if time_budget is not None and not is_positive_number(time_budget):
        raise AutoraysearchError(f"time budget {time_budget!r} is invalid: use a positive number of seconds.")


def validate_model_kwargs(model_kwargs: dict) -> None:
    """Keyword arguments for Model(...): identifier names and literal values."""
    if not isinstance(model_kwargs, dict):
        raise AutoraysearchError(
            f"model arguments {model_kwargs!r} are invalid: give a dict of keyword arguments for Model(...)."
        )
    for name in model_kwargs:
        if not isinstance(name, str) or not name.isidentifier():
            raise AutoraysearchError(
                f"model argument name {name!r} is invalid: use the name of a parameter of Model.__init__."
            )
    pyrepr(model_kwargs)


def is_int(value: Any) -> bool:
    """An int that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_number(value: Any) -> bool:
    """A finite number above zero, bools excluded."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
