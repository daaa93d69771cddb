"""Render the package's Jinja2 templates; render_train_py writes the fixed train.py every candidate is judged by."""

from __future__ import annotations

import ast
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from autoraysearch.setup.datasets import DIGITS_INPUT_SHAPE, DIGITS_NUM_CLASSES, IMAGE_SETS, NPZ_PREFIX, where_to_put
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
        loader=template_loader(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Python source, not HTML; values go through pyrepr instead.
    )
    env.filters["pyrepr"] = pyrepr
    return env


def template_loader() -> jinja2.BaseLoader:
    """The installed package's templates, else (a bare copy of the repository) its templates/ folder."""
    try:
        return jinja2.PackageLoader("autoraysearch.templates", ".")
    except (ModuleNotFoundError, ValueError):
        # benchmarks/gpu_check.py renders train.py from a copy of the repository with nothing installed.
        return jinja2.FileSystemLoader(Path(__file__).resolve().parents[2] / "templates")


ENVIRONMENT = make_environment()

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("none", "cosine")
# Each optimizer's learning rate and weight decay when setup is given none: AdamW's are torch's own
# defaults; SGD's are the usual ones for Nesterov SGD on small image sets.
DEFAULT_LEARNING_RATE = {"adamw": 1e-3, "sgd": 0.05}
DEFAULT_WEIGHT_DECAY = {"adamw": 0.01, "sgd": 5e-4}
# Optimizer and schedule per dataset when setup is given neither (benchmarks/cifar_defaults.py measured CIFAR's).
DEFAULT_OPTIMIZATION = {"cifar10": ("sgd", "cosine"), "cifar100": ("sgd", "cosine")}


def optimization_defaults(
    dataset: str,
    optimizer: str | None = None,
    schedule: str | None = None,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
) -> dict[str, Any]:
    """The optimizer settings for train.py: those given, the rest the dataset's and the optimizer's defaults."""
    default_optimizer, default_schedule = DEFAULT_OPTIMIZATION.get(dataset, ("adamw", "none"))
    optimizer = optimizer or default_optimizer
    if optimizer not in OPTIMIZERS:
        raise AutoraysearchError(f"optimizer {optimizer!r} is unknown: use {' or '.join(OPTIMIZERS)}.")
    return dict(
        optimizer=optimizer,
        schedule=schedule or default_schedule,
        learning_rate=DEFAULT_LEARNING_RATE[optimizer] if learning_rate is None else learning_rate,
        weight_decay=DEFAULT_WEIGHT_DECAY[optimizer] if weight_decay is None else weight_decay,
    )


@dataclass(frozen=True)
class TrainSpec:
    """The settings baked into train.py: what to train on, for how long, and how."""

    dataset: str  # "digits", "mnist", "fashionmnist", "cifar10", "cifar100", "npz:/abs/path.npz" or "custom"
    epochs: int | None = 5  # exactly one of epochs / time_budget is set
    time_budget: float | None = None  # seconds of training, then evaluate
    seed: int = 0
    batch_size: int = 64  # per training process: a DDP run of N processes steps on N x batch_size samples
    learning_rate: float = 1e-3
    optimizer: str = "adamw"  # "adamw" or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 0.01
    schedule: str = "none"  # "none" or "cosine" (a linear warm-up, then a cosine decay to 0)
    warmup_fraction: float = 0.05  # share of training spent warming up under the cosine schedule
    metric: str = "val_acc"
    model_kwargs: dict = field(default_factory=dict)  # Model(**model_kwargs)
    data_dir: str | None = None  # the image sets' folder (already absolute)
    download: bool = False  # an image set's missing files may be fetched with torchvision
    data_module: str | None = None  # custom: the data module's file name, next to model.py
    input_shape: tuple[int, ...] | None = None  # one sample's shape; known datasets fill it in
    num_classes: int | None = None  # known datasets fill it in; None for a custom metric
    processes: int = 1  # above 1: the DDP template, one process per GPU (this many on a CPU)
    augment: bool | None = None  # None: on for the CIFAR sets, off for the rest
    resident_max_bytes: int = 4 * 1024**3  # tensor datasets up to this size are batched on the GPU
    num_workers: int = 2  # DataLoader processes for data that is not resident
    channels_last: bool | None = None  # None: on for images of 3 or more channels, where it measured faster
    bf16: bool = True
    compile: bool = False
    deterministic: bool = True  # deterministic cuDNN kernels; False lets cuDNN benchmark and pick its fastest


# Which data-loading code a dataset gets in train.py.
KINDS = {"digits": "digits", "mnist": "idx", "fashionmnist": "idx", "cifar10": "cifar", "cifar100": "cifar", "custom": "custom"}


def dataset_kind(dataset: str) -> str:
    return "npz" if dataset.startswith(NPZ_PREFIX) else KINDS[dataset]


def render_train_py(spec: TrainSpec) -> str:
    """The source of train.py for spec, after checking every setting: the DDP template above one process."""
    validate_train_spec(spec)
    spec = with_known_shapes(spec)
    kind = dataset_kind(spec.dataset)
    image_set = IMAGE_SETS.get(spec.dataset)
    template = "train_ddp.py.j2" if spec.processes > 1 else "train.py.j2"
    return ENVIRONMENT.get_template(template).render(
        spec=spec,
        kind=kind,
        ddp=spec.processes > 1,
        image_set=image_set,
        where_to_put=where_to_put(spec.dataset) if image_set else "",
        data_module_name=Path(spec.data_module).stem if spec.data_module else None,
        augment=kind == "cifar" if spec.augment is None else spec.augment,
        channels_last=default_channels_last(spec.input_shape) if spec.channels_last is None else spec.channels_last,
    )


def default_channels_last(input_shape: tuple[int, ...] | None) -> bool:
    """channels_last for images of 3 or more channels: on a CPU it trained a CIFAR-shaped CNN about 30% faster,
    and the 1-channel digits CNN no faster (0-20% slower) (benchmarks/train_throughput.py)."""
    return input_shape is not None and len(input_shape) == 3 and input_shape[0] >= 3


def with_known_shapes(spec: TrainSpec) -> TrainSpec:
    """The spec with the input shape and classes of a built-in dataset filled in where it left them out."""
    if spec.dataset == "digits":
        shape, classes = DIGITS_INPUT_SHAPE, DIGITS_NUM_CLASSES
    elif spec.dataset in IMAGE_SETS:
        shape, classes = IMAGE_SETS[spec.dataset].input_shape, IMAGE_SETS[spec.dataset].num_classes
    else:
        return spec
    return replace(spec, input_shape=spec.input_shape or shape, num_classes=spec.num_classes or classes)


def validate_train_spec(spec: TrainSpec) -> None:
    """Raise a user error for the first setting train.py could not run with."""
    validate_dataset(spec)
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
    if not is_int(spec.processes) or spec.processes < 1:
        raise AutoraysearchError(f"processes {spec.processes!r} is invalid: use a positive integer.")
    validate_optimization(spec)


def validate_optimization(spec: TrainSpec) -> None:
    """An optimizer and a schedule train.py knows, a weight decay of 0 or more, a warm-up share below 1."""
    if spec.optimizer not in OPTIMIZERS:
        raise AutoraysearchError(f"optimizer {spec.optimizer!r} is unknown: use {' or '.join(OPTIMIZERS)}.")
    if spec.schedule not in SCHEDULES:
        raise AutoraysearchError(f"schedule {spec.schedule!r} is unknown: use {' or '.join(SCHEDULES)}.")
    decay = spec.weight_decay
    if not isinstance(decay, (int, float)) or isinstance(decay, bool) or not math.isfinite(decay) or decay < 0:
        raise AutoraysearchError(f"weight decay {decay!r} is invalid: use 0 or a positive number such as 0.0005.")
    if not is_positive_number(spec.warmup_fraction) or spec.warmup_fraction >= 1:
        raise AutoraysearchError(
            f"warm-up fraction {spec.warmup_fraction!r} is invalid: use a share of training above 0 and below 1, such as 0.05."
        )


def validate_dataset(spec: TrainSpec) -> None:
    """A dataset train.py can load, with the paths it needs already absolute (setup resolves relative ones)."""
    dataset = spec.dataset
    if not isinstance(dataset, str) or not (dataset in KINDS or dataset.startswith(NPZ_PREFIX)):
        raise AutoraysearchError(
            f"dataset {dataset!r} cannot be written into train.py: use 'digits', 'mnist', 'fashionmnist', "
            "'cifar10', 'cifar100', 'custom' or 'npz:' followed by an absolute path."
        )
    if dataset.startswith(NPZ_PREFIX) and not os.path.isabs(dataset[len(NPZ_PREFIX) :]):
        raise AutoraysearchError(
            f"dataset {dataset!r} cannot be written into train.py: give 'npz:' followed by an absolute path."
        )
    if dataset in IMAGE_SETS and not (isinstance(spec.data_dir, str) and os.path.isabs(spec.data_dir)):
        raise AutoraysearchError(f"dataset {dataset} needs its data folder as an absolute path, not {spec.data_dir!r}.")
    if dataset == "custom" and not (
        isinstance(spec.data_module, str) and spec.data_module.endswith(".py") and spec.data_module[:-3].isidentifier()
    ):
        raise AutoraysearchError(
            f"data module {spec.data_module!r} is invalid: give the file name of a module next to model.py, such as data.py."
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
