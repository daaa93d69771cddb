"""The generated train.py: it renders to valid Python, really trains, and reports the metric last."""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from autoraysearch.setup.datasets import DatasetInfo, describe_dataset
from autoraysearch.errors import AutoraysearchError
from autoraysearch.setup.rendering import TrainSpec, render_train_py
from small_datasets import (
    CUSTOM_DATA_PY,
    FASHION_MNIST_DIR,
    IMAGE_MODEL,
    MLP_MODEL,
    REGRESSION_MODEL,
    write_cifar10_folder,
    write_cifar100_archive,
    write_mnist_like,
)

EXAMPLE_MODEL = Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py"
METRIC_LINE = re.compile(r"^val_acc=(\d\.\d{4})$")
PROGRESS_LINE = re.compile(
    r"^epoch=(\d+)(?:/(\d+))? train_loss=(\d+\.\d{4}) val_acc=(\d\.\d{4}) elapsed_s=(\d+\.\d)$"
)
MSE_LINE = re.compile(r"^val_mse=(\d+\.\d{4})$")
TIME_BUDGET = 1.5
HAS_FASHION_MNIST = (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
# Only where apt-get could not install it (.ci/run installs it wherever apt-get works).
NO_FASHION_MNIST = "Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist"

# A model whose Model() takes no arguments, for a 4-feature, 3-class problem.
NO_ARG_MODEL = '''
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.net(x)
'''

# Logits of the right shape that are all NaN, so the loss is NaN on the very first step.
NAN_MODEL = '''
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.linear = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.linear(x.flatten(1)) * float("nan")
'''


def write_learnable_npz(path: Path) -> None:
    """A tiny 3-class problem: the label is the argmax of three fixed linear scores of 4 features."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 3))
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ weights).argmax(axis=1).astype(np.int64)
    np.savez(path, X_train=x[:240], y_train=y[:240], X_val=x[240:], y_val=y[240:])


SGD_COSINE = dict(optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, schedule="cosine")


def scenarios(root: Path) -> dict[str, tuple[TrainSpec, str | None, dict[str, str]]]:
    """Each run: its spec, its model.py source (None: the bundled example), extra environment."""
    npz = root / "data.npz"
    write_learnable_npz(npz)
    data = root / "data"
    write_mnist_like(data / "mnist")
    write_cifar10_folder(data / "cifar10")
    write_cifar100_archive(data / "cifar100")
    digits = TrainSpec("digits", epochs=2, model_kwargs={"num_classes": 10})
    custom = TrainSpec("custom", epochs=4, batch_size=32, learning_rate=0.01, metric="val_mse", data_module="data.py")
    runs = {
        "digits": (digits, None, {}),
        "digits_again": (digits, None, {}),
        "digits_seed1": (TrainSpec("digits", epochs=2, seed=1, model_kwargs={"num_classes": 10}), None, {}),
        "budget": (TrainSpec("digits", epochs=None, time_budget=TIME_BUDGET), None, {}),
        "npz_no_args": (
            TrainSpec(f"npz:{npz}", epochs=5, batch_size=32, learning_rate=0.01),
            NO_ARG_MODEL,
            # Ignored on CPU; set so the run shows it does no harm there.
            {"AUTORAYSEARCH_GPU_MEMORY_FRACTION": "0.5"},
        ),
        # On the npz data: it fails before the data matters, and skips importing scikit-learn.
        "nan": (TrainSpec(f"npz:{npz}", epochs=1), NAN_MODEL, {}),
        "mnist": (
            TrainSpec("mnist", epochs=2, batch_size=32, data_dir=str(data / "mnist"), model_kwargs={"num_classes": 10}),
            MLP_MODEL, {},
        ),
        "cifar10": (
            TrainSpec("cifar10", epochs=2, batch_size=32, data_dir=str(data / "cifar10"),
                      model_kwargs={"num_classes": 10, "channels": 3}),
            IMAGE_MODEL, {},
        ),
        "cifar100_archive": (
            TrainSpec("cifar100", epochs=1, batch_size=32, data_dir=str(data / "cifar100"),
                      model_kwargs={"num_classes": 100, "channels": 3}),
            IMAGE_MODEL, {},
        ),
        "missing_files": (TrainSpec("fashionmnist", epochs=1, data_dir=str(data)), IMAGE_MODEL, {}),
        "custom": (custom, REGRESSION_MODEL, {}),
        # Two gloo processes on the CPU, forked from train.py.
        "ddp_digits": (TrainSpec("digits", epochs=2, model_kwargs={"num_classes": 10}, processes=2), None, {}),
        "ddp_budget": (
            TrainSpec(f"npz:{npz}", epochs=None, time_budget=TIME_BUDGET, batch_size=32, processes=2), NO_ARG_MODEL, {},
        ),
        "ddp_custom": (replace(custom, processes=2), REGRESSION_MODEL, {}),
        "ddp_nan": (TrainSpec(f"npz:{npz}", epochs=1, processes=2), NAN_MODEL, {}),
        # BATCH_SIZE is per process: two ranks of 16 step on 32 samples.
        "ddp_batch_per_process": (replace(digits, epochs=1, batch_size=16, processes=2), None, {}),
        "sgd_cosine": (replace(digits, epochs=3, **SGD_COSINE), None, {}),
        # Under a time budget the schedule follows rank 0's clock, so every rank uses the same rate.
        "ddp_budget_sgd_cosine": (
            TrainSpec(f"npz:{npz}", epochs=None, time_budget=TIME_BUDGET, batch_size=16, processes=2, **SGD_COSINE),
            NO_ARG_MODEL, {},
        ),
    }
    if HAS_FASHION_MNIST:
        runs["fashionmnist"] = (
            TrainSpec("fashionmnist", epochs=None, time_budget=1.0, batch_size=256, data_dir=str(FASHION_MNIST_DIR),
                      model_kwargs={"num_classes": 10}),
            MLP_MODEL, {},
        )
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every scenario's train.py at once (torch's import dominates, so runs overlap well on 2 cores)."""
    root = tmp_path_factory.mktemp("train_runs")
    started = {}
    for name, (spec, model_source, extra_env) in scenarios(root).items():
        workdir = root / name
        workdir.mkdir()
        (workdir / "train.py").write_text(render_train_py(spec))
        if model_source is None:
            shutil.copy(EXAMPLE_MODEL, workdir / "model.py")
        else:
            (workdir / "model.py").write_text(model_source)
        if spec.data_module:
            (workdir / spec.data_module).write_text(CUSTOM_DATA_PY)
        # One thread per process so the parallel runs do not fight over the cores.
        threads = str(spec.processes)
        env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": threads, **extra_env}
        process = subprocess.Popen(
            [sys.executable, "train.py"],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = process
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=600)
        summary = root / name / "train_summary.json"
        results[name] = (process.returncode, stdout, stderr, json.loads(summary.read_text()) if summary.exists() else None)
    return results


def successful_lines(result) -> list[str]:
    """The stdout lines of a run that must have exited 0."""
    returncode, stdout, stderr, _ = result
    assert returncode == 0, stderr
    return stdout.splitlines()


def metric_value(lines: list[str]) -> float:
    """The metric on the last line, which must have the exact `val_acc=0.1234` form."""
    match = METRIC_LINE.match(lines[-1])
    assert match, f"last line is {lines[-1]!r}"
    return float(match.group(1))


def progress(lines: list[str]) -> list[re.Match]:
    """Every line before the metric, each of which must be a progress line."""
    matches = [PROGRESS_LINE.match(line) for line in lines[:-1]]
    assert all(matches), lines
    return matches


# ---- rendering ----

def module_settings(source: str) -> dict[str, object]:
    """The literal UPPER_CASE settings assigned at the top level of a rendered train.py."""
    settings = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                settings[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # computed settings such as DEVICE
    return settings


@pytest.mark.parametrize(
    "spec",
    [
        TrainSpec("digits"),
        TrainSpec("digits", epochs=None, time_budget=30.0, seed=7, metric="accuracy"),
        TrainSpec("npz:/data/it's \"quoted\"\n.npz", epochs=3, model_kwargs={"num_classes": 10, "width": 0.5}),
        TrainSpec("digits", epochs=1, batch_size=16, learning_rate=3e-4, model_kwargs={}),
    ],
)
def test_render_writes_the_settings_as_python_literals(spec):
    source = render_train_py(spec)
    settings = module_settings(source)
    assert settings["DATASET"] == spec.dataset
    assert settings["EPOCHS"] == spec.epochs
    assert settings["TIME_BUDGET"] == spec.time_budget
    # The campaign may set the seed per run; the spec's is the default.
    assert f'SEED = int(os.environ.get("AUTORAYSEARCH_SEED", {spec.seed!r}))' in source
    assert settings["BATCH_SIZE"] == spec.batch_size
    assert settings["LEARNING_RATE"] == spec.learning_rate
    assert settings["METRIC"] == spec.metric
    assert settings["MODEL_KWARGS"] == spec.model_kwargs


def test_render_has_header_and_imports_model_only_inside_a_function():
    source = render_train_py(TrainSpec("digits"))
    # setup recognises its own train.py by this lowercase marker on the first line.
    assert "generated by autoraysearch" in source.splitlines()[0]
    assert "DO NOT MODIFY" in source.splitlines()[0]
    assert "autoraysearch setup" in source.split("import", 1)[0]
    tree = ast.parse(source)
    top_level_imports = [
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert "model" not in top_level_imports
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    assert any(isinstance(node, ast.ImportFrom) and node.module == "model" for node in ast.walk(train))
    for section in ("data", "model", "training", "evaluation", "reports to the judge", "the judge"):
        assert f"# ---- {section} ----" in source
    # The judge, which holds the validation labels, never trains (so never imports model.py).
    judge = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "judge")
    called = {node.func.id for node in ast.walk(judge) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "train" not in called and "model_side" not in called and "start_model_side" in called


VARIANTS = [
    TrainSpec("digits"),
    TrainSpec("mnist", data_dir="/data/mnist"),
    TrainSpec("fashionmnist", data_dir="/usr/share/datasets/fashion-mnist", download=True),
    TrainSpec("cifar10", data_dir="/data/cifar", compile=True),
    TrainSpec("cifar100", data_dir="/data/cifar", augment=False, channels_last=False, bf16=False),
    TrainSpec("npz:/data/arrays.npz", epochs=None, time_budget=60.0),
    TrainSpec("custom", data_module="data.py", metric="val_mse"),
]


@pytest.mark.parametrize("processes", [1, 4])
@pytest.mark.parametrize("spec", VARIANTS, ids=lambda spec: spec.dataset.split(":")[0])
def test_every_variant_renders_to_readable_python(spec, processes):
    source = render_train_py(replace(spec, processes=processes))
    tree = ast.parse(source)
    settings = module_settings(source)
    assert source.splitlines()[0] == "# train.py: generated by autoraysearch. DO NOT MODIFY."
    # The settings block comes first, every setting with a comment saying what it means.
    body = source.split("# ---- settings ----", 1)[1].split("# ---- runtime ----", 1)[0]
    for line in body.splitlines():
        if re.match(r"^[A-Z_]+ = ", line):
            assert "  # " in line, line
    for name in ("INPUT_SHAPE", "NUM_CLASSES", "AUGMENT", "CHANNELS_LAST", "BF16", "COMPILE", "RESIDENT_MAX_BYTES"):
        assert name in settings
    assert settings["COMPILE"] == spec.compile
    # Measured: faster for 3-channel images, slower for 1-channel ones (unless the spec says otherwise).
    assert settings["CHANNELS_LAST"] == (spec.dataset.startswith("cifar") if spec.channels_last is None else spec.channels_last)
    assert settings["AUGMENT"] == (spec.dataset.startswith("cifar") if spec.augment is None else spec.augment)
    # Only the chosen dataset's loader is in the file.
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert ("read_idx" in functions) == spec.dataset.endswith("mnist")
    assert ("read_batches" in functions) == spec.dataset.startswith("cifar")
    assert ("data_module" in functions) == (spec.dataset == "custom")
    # The DDP template is the single-device one plus its process handling, nothing copied twice.
    assert ("PROCESSES" in settings) == (processes > 1)
    assert ("run_rank" in functions) == (processes > 1) == ("import torch.distributed as dist" in source)
    assert len(functions) == len([n for n in tree.body if isinstance(n, ast.FunctionDef)])


def test_known_datasets_write_their_input_shape_and_classes():
    assert module_settings(render_train_py(TrainSpec("cifar100", data_dir="/d")))["INPUT_SHAPE"] == (3, 32, 32)
    assert module_settings(render_train_py(TrainSpec("cifar100", data_dir="/d")))["NUM_CLASSES"] == 100
    assert module_settings(render_train_py(TrainSpec("digits")))["INPUT_SHAPE"] == (1, 8, 8)
    npz = module_settings(render_train_py(TrainSpec("npz:/a.npz", input_shape=(4,), num_classes=3)))
    assert (npz["INPUT_SHAPE"], npz["NUM_CLASSES"]) == ((4,), 3)


def digits_split(seed: int):
    """Run the rendered train.py's digits loader alone, without importing torch, for a given SEED."""
    tree = ast.parse(render_train_py(TrainSpec("digits", seed=seed)))
    wanted = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in ("load_digits_arrays", "digits_file", "fail"))
        or (isinstance(node, ast.Assign) and node.targets[0].id in ("SEED", "DIGITS_VAL_FRACTION", "DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED"))
    ]
    namespace = {"np": np, "os": os, "gzip": gzip, "sys": sys}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "train.py", "exec"), namespace)
    return namespace["load_digits_arrays"]()


def test_digits_split_is_fixed_stratified_and_independent_of_seed():
    x_train, y_train, x_val, y_val, x_test, y_test = digits_split(seed=0)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert len(x_train) + len(x_val) + len(x_test) == 1797
    val_share = np.bincount(y_val) / (np.bincount(y_val) + np.bincount(y_train) + np.bincount(y_test))
    assert np.allclose(val_share, 0.2, atol=0.01)
    other = digits_split(seed=123)
    for mine, theirs in zip((x_train, y_train, x_val, y_val, x_test, y_test), other):
        assert np.array_equal(mine, theirs)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"epochs": 5, "time_budget": 60.0}, "exactly one"),
        ({"epochs": None, "time_budget": None}, "exactly one"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": None, "time_budget": -1.0}, "time budget"),
        ({"metric": "val acc"}, "metric name"),
        ({"learning_rate": 0.0}, "learning rate"),
        ({"batch_size": 0}, "batch size"),
        ({"seed": -1}, "seed"),
        ({"model_kwargs": {"num classes": 10}}, "model argument name"),
        ({"model_kwargs": {"layer": object()}}, "cannot be written"),
        ({"dataset": "npz:relative.npz"}, "absolute path"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"dataset": "mnist"}, "absolute"),
        ({"dataset": "cifar10", "data_dir": "relative/dir"}, "absolute"),
        ({"dataset": "custom"}, "data module"),
        ({"dataset": "custom", "data_module": "my data.py"}, "data module"),
        ({"processes": 0}, "processes"),
        ({"optimizer": "adam"}, "optimizer 'adam' is unknown: use adamw or sgd"),
        ({"schedule": "linear"}, "schedule 'linear' is unknown: use none or cosine"),
        ({"weight_decay": -0.1}, "weight decay"),
        ({"warmup_fraction": 1.0}, "warm-up fraction"),
    ],
)
def test_render_refuses_a_bad_spec_with_one_sentence(changes, words):
    spec = TrainSpec(**{"dataset": "digits", **changes})
    with pytest.raises(AutoraysearchError, match=words) as caught:
        render_train_py(spec)
    assert "\n" not in str(caught.value)


def test_render_writes_the_optimizer_and_schedule_settings():
    settings = module_settings(render_train_py(TrainSpec("digits", **SGD_COSINE, warmup_fraction=0.1)))
    assert (settings["OPTIMIZER"], settings["LEARNING_RATE"], settings["WEIGHT_DECAY"]) == ("sgd", 0.05, 5e-4)
    assert (settings["SCHEDULE"], settings["WARMUP_FRACTION"], settings["MOMENTUM"]) == ("cosine", 0.1, 0.9)
    defaults = module_settings(render_train_py(TrainSpec("digits")))
    # The defaults train as train.py always did: AdamW at torch's weight decay, a constant rate.
    assert (defaults["OPTIMIZER"], defaults["WEIGHT_DECAY"], defaults["SCHEDULE"]) == ("adamw", 0.01, "none")
    assert defaults["DETERMINISTIC"] is True


def learning_rate_function(**changes):
    """The rendered train.py's learning_rate_at, run alone (without torch) for a spec."""
    tree = ast.parse(render_train_py(TrainSpec("digits", **changes)))
    names = ("LEARNING_RATE", "SCHEDULE", "WARMUP_FRACTION")
    wanted = [
        node for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "learning_rate_at")
        or (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names)
    ]
    namespace = {"math": __import__("math")}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "train.py", "exec"), namespace)
    return namespace["learning_rate_at"]


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    rate = learning_rate_function(learning_rate=0.1, schedule="cosine", warmup_fraction=0.05)
    assert 0 < rate(0.0) <= 0.1 * 0.01 + 1e-12  # the first step still learns, a little
    assert rate(0.025) == pytest.approx(0.05)  # half-way through the warm-up
    assert rate(0.05) == pytest.approx(0.1)  # the peak
    assert rate(0.525) == pytest.approx(0.05)  # half-way through the decay
    assert rate(1.0) == pytest.approx(0.0, abs=1e-12) and rate(1.2) == pytest.approx(0.0, abs=1e-12)
    rates = [rate(i / 100) for i in range(5, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    constant = learning_rate_function(learning_rate=0.1)
    assert {constant(p) for p in (0.0, 0.5, 1.0)} == {0.1}


# ---- running the rendered train.py ----

def test_digits_run_trains_and_prints_the_metric_last(runs):
    lines = successful_lines(runs["digits"])
    assert metric_value(lines) > 0.3
    matches = progress(lines)
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "2"), ("2", "2")]
    # The metric is the validation accuracy after the last epoch.
    assert matches[-1].group(4) == lines[-1].split("=")[1]


# Runs train.py as `python train.py` would, then says which of these modules the judge's process imported.
JUDGE_IMPORTS = """
import json, runpy, sys
sys.argv = ["train.py"]
try:
    runpy.run_path("train.py", run_name="__main__")
finally:
    print(json.dumps({name: name in sys.modules for name in ("torch", "sklearn")}), file=sys.stderr)
"""


@pytest.mark.parametrize("processes", [1, 2])
def test_the_judge_scores_without_importing_torch_or_scikit_learn(tmp_path, processes):
    # Both imports are seconds of every run's start-up; only the model side trains, so only it needs torch.
    (tmp_path / "train.py").write_text(render_train_py(TrainSpec("digits", epochs=1, processes=processes)))
    shutil.copy(EXAMPLE_MODEL, tmp_path / "model.py")
    result = subprocess.run([sys.executable, "-c", JUDGE_IMPORTS], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "AUTORAYSEARCH_NUM_THREADS": str(processes)}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert METRIC_LINE.match(result.stdout.splitlines()[-1])
    assert json.loads(result.stderr.splitlines()[-1]) == {"torch": False, "sklearn": False}


def test_same_seed_gives_the_same_metric(runs):
    first = successful_lines(runs["digits"])
    second = successful_lines(runs["digits_again"])
    assert first[-1] == second[-1]
    assert [m.group(3) for m in progress(first)] == [m.group(3) for m in progress(second)]


def test_another_seed_trains_differently(runs):
    seed0 = [m.group(3) for m in progress(successful_lines(runs["digits"]))]
    seed1 = [m.group(3) for m in progress(successful_lines(runs["digits_seed1"]))]
    assert seed0 != seed1


def test_time_budget_run_stops_near_the_budget(runs):
    lines = successful_lines(runs["budget"])
    metric_value(lines)
    matches = progress(lines)
    assert all(m.group(2) is None for m in matches)  # no "/total" without EPOCHS
    assert [int(m.group(1)) for m in matches] == list(range(1, len(matches) + 1))
    elapsed = [float(m.group(5)) for m in matches]
    assert elapsed == sorted(elapsed)  # training and evaluation time accumulate over epochs
    summary = runs["budget"][3]
    trained = [sum(summary["epoch_seconds"][:n]) for n in range(1, len(matches) + 1)]
    assert TIME_BUDGET - 0.1 <= trained[-1] <= TIME_BUDGET + 1.0
    assert all(seconds < TIME_BUDGET for seconds in trained[:-1])  # the budget counts training alone
    assert elapsed[-1] == pytest.approx(summary["train_seconds"] + summary["eval_seconds"], abs=0.051)


def test_npz_run_with_a_no_argument_model(runs):
    lines = successful_lines(runs["npz_no_args"])
    assert len(progress(lines)) == 5
    assert metric_value(lines) > 0.6  # chance is about 0.33


def test_nan_loss_stops_with_one_error_line(runs):
    returncode, stdout, stderr, _ = runs["nan"]
    assert returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        "error: training loss is nan at epoch 1 step 1; lower LEARNING_RATE or fix the model"
    )
    assert not any(METRIC_LINE.match(line) for line in stdout.splitlines())


def test_the_summary_file_holds_the_runs_figures(runs):
    lines = successful_lines(runs["digits"])
    summary = runs["digits"][3]
    assert summary["metric"] == "val_acc" and f"val_acc={summary['value']:.4f}" == lines[-1]
    assert summary["epochs"] == 2 and summary["processes"] == 1 and summary["device"] == "cpu"
    assert summary["parameters"] == 38378  # the bundled example's parameter count
    assert summary["samples_per_s"] > 0 and summary["peak_memory_bytes"] > 10_000_000
    assert 0 < summary["train_seconds"] + summary["eval_seconds"] < summary["total_seconds"]
    assert 0 < summary["eval_seconds"]
    assert 0 < summary["train_cpu_seconds"]


def test_mnist_from_torchvisions_layout_of_gzipped_idx_files(runs):
    lines = successful_lines(runs["mnist"])
    assert len(progress(lines)) == 2
    assert metric_value(lines) > 0.5  # chance is 0.1


def test_cifar10_from_its_folder_with_augmentation(runs):
    lines = successful_lines(runs["cifar10"])
    assert len(progress(lines)) == 2
    assert metric_value(lines) > 0.2  # chance is 0.1; the bands survive 4-pixel shifts and flips


def test_cifar100_straight_from_its_archive(runs):
    lines = successful_lines(runs["cifar100_archive"])
    assert len(progress(lines)) == 1
    metric_value(lines)


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=NO_FASHION_MNIST)
def test_fashion_mnist_from_the_debian_package_folder(runs):
    lines = successful_lines(runs["fashionmnist"])
    assert metric_value(lines) > 0.6  # 60000 real images, 10000 validated; chance is 0.1
    assert runs["fashionmnist"][3]["samples_per_s"] > 0


def test_missing_image_files_say_where_to_put_them(runs):
    returncode, stdout, stderr, _ = runs["missing_files"]
    assert returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: Fashion-MNIST files are not in ")
    assert "train-images-idx3-ubyte.gz" in last and "--download" in last
    assert not stdout.strip()


def mse_values(lines: list[str]) -> list[float]:
    return [float(re.search(r"val_mse=(\d+\.\d{4})", line).group(1)) for line in lines]


def test_custom_data_module_with_its_own_loss_and_lower_is_better_metric(runs):
    lines = successful_lines(runs["custom"])
    assert MSE_LINE.match(lines[-1]), lines[-1]
    values = mse_values(lines)
    assert len(values) == 5 and values[-2] == values[-1]  # four epochs, then the metric line
    assert values[-1] < values[0] / 2  # the regression really trains (targets have variance ~7.5)


def test_ddp_on_two_cpu_processes_keeps_ranks_equal_and_prints_the_metric_last(runs):
    lines = successful_lines(runs["ddp_digits"])
    matches = progress(lines)
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "2"), ("2", "2")]  # rank 0 alone reports
    assert metric_value(lines) > 0.3
    summary = runs["ddp_digits"][3]
    assert summary["processes"] == 2
    checksums = summary["parameter_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


def test_ddp_time_budget_stops_every_rank_together(runs):
    lines = successful_lines(runs["ddp_budget"])
    metric_value(lines)
    trained = float(progress(lines)[-1].group(5))
    assert TIME_BUDGET - 0.1 <= trained <= TIME_BUDGET + 1.0
    assert len(set(runs["ddp_budget"][3]["parameter_checksums"])) == 1


def test_ddp_with_a_dataloader_and_a_custom_metric(runs):
    lines = successful_lines(runs["ddp_custom"])
    assert MSE_LINE.match(lines[-1])
    values = mse_values(lines)
    assert values[-1] < values[0]
    assert len(set(runs["ddp_custom"][3]["parameter_checksums"])) == 1


def test_ddp_batch_size_is_per_process(runs):
    successful_lines(runs["ddp_batch_per_process"])
    training_samples = len(digits_split(seed=0)[1])
    summary = runs["ddp_batch_per_process"][3]
    # One epoch of full steps of 2 ranks x 16 samples (the batch split across ranks would take twice as many).
    assert summary["steps"] == training_samples // 32
    assert summary["processes"] == 2 and len(set(summary["parameter_checksums"])) == 1
    single = runs["digits"][3]
    assert single["steps"] == 2 * (training_samples // 64)


def test_sgd_with_a_cosine_schedule_trains(runs):
    lines = successful_lines(runs["sgd_cosine"])
    assert metric_value(lines) > 0.8
    losses = [float(m.group(3)) for m in progress(lines)]
    assert losses[-1] < losses[0]


def test_ddp_time_budget_with_a_schedule_keeps_ranks_equal(runs):
    lines = successful_lines(runs["ddp_budget_sgd_cosine"])
    metric_value(lines)
    assert len(set(runs["ddp_budget_sgd_cosine"][3]["parameter_checksums"])) == 1


def test_ddp_nan_loss_stops_every_rank_with_the_failure_line(runs):
    returncode, stdout, stderr, summary = runs["ddp_nan"]
    assert returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        "error: training loss is nan at epoch 1 step 1; lower LEARNING_RATE or fix the model"
    )
    assert not any(METRIC_LINE.match(line) for line in stdout.splitlines())
    assert summary is None


# ---- describe_dataset ----

def test_describe_digits():
    assert describe_dataset("digits", Path("/anywhere")) == DatasetInfo("digits", (1, 8, 8), 10)


def test_describe_npz_resolves_a_relative_path(tmp_path):
    (tmp_path / "data").mkdir()
    x = np.zeros((6, 3, 5), dtype=np.float32)
    np.savez(
        tmp_path / "data" / "set.npz",
        X_train=x,
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        X_val=x[:2],
        y_val=np.array([4, 0]),
    )
    info = describe_dataset("npz:data/set.npz", tmp_path)
    assert info == DatasetInfo(f"npz:{(tmp_path / 'data' / 'set.npz').resolve()}", (3, 5), 5)


def test_describe_unknown_dataset():
    with pytest.raises(AutoraysearchError, match=r"dataset 'imagenet' is unknown: use 'digits', 'mnist'"):
        describe_dataset("imagenet", Path("."))


def test_describe_missing_file(tmp_path):
    with pytest.raises(AutoraysearchError, match=r"missing\.npz does not exist: check the path"):
        describe_dataset("npz:missing.npz", tmp_path)


def test_describe_missing_arrays(tmp_path):
    np.savez(tmp_path / "partial.npz", X_train=np.zeros((2, 3)), y_train=np.array([0, 1]))
    with pytest.raises(AutoraysearchError, match=r"lacks X_val, y_val: save it with numpy\.savez"):
        describe_dataset("npz:partial.npz", tmp_path)


def test_describe_refuses_float_labels(tmp_path):
    x = np.zeros((2, 3))
    np.savez(tmp_path / "floats.npz", X_train=x, y_train=np.array([0.5, 1.0]), X_val=x, y_val=np.array([0, 1]))
    with pytest.raises(AutoraysearchError, match="non-negative integers"):
        describe_dataset("npz:floats.npz", tmp_path)


def test_describe_an_image_set_in_torchvision_layout(tmp_path):
    write_mnist_like(tmp_path / "data", train=20, val=10)
    info = describe_dataset("mnist", tmp_path, data_dir="data")
    assert info == DatasetInfo("mnist", (1, 28, 28), 10, data_dir=str((tmp_path / "data").resolve()))


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=NO_FASHION_MNIST)
def test_describe_fashion_mnist_from_the_debian_package():
    info = describe_dataset("fashionmnist", Path("/"), data_dir=str(FASHION_MNIST_DIR))
    assert (info.input_shape, info.num_classes, info.data_dir) == ((1, 28, 28), 10, str(FASHION_MNIST_DIR))


def test_describe_cifar_folder_and_archive(tmp_path):
    write_cifar10_folder(tmp_path / "c10", per_batch=2, val=2)
    write_cifar100_archive(tmp_path / "c100", train=2, val=2)
    assert describe_dataset("cifar10", tmp_path, data_dir="c10").input_shape == (3, 32, 32)
    assert describe_dataset("cifar100", tmp_path, data_dir="c100").num_classes == 100


def test_describe_an_image_set_without_its_files(tmp_path):
    with pytest.raises(AutoraysearchError, match=r"needs --data-dir"):
        describe_dataset("cifar10", tmp_path)
    with pytest.raises(AutoraysearchError, match=r"CIFAR-10 files are not in .*: put the folder cifar-10-batches-py/"):
        describe_dataset("cifar10", tmp_path, data_dir=".")
    # With --download train.py fetches them; setup only needs the folder.
    assert describe_dataset("cifar10", tmp_path, data_dir=".", download=True).data_dir == str(tmp_path.resolve())


def test_describe_refuses_idx_files_of_the_wrong_size(tmp_path):
    from small_datasets import write_idx

    write_mnist_like(tmp_path, train=4, val=4)
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(AutoraysearchError, match=r"holds 8x8 images, not the 28x28 of MNIST"):
        describe_dataset("mnist", tmp_path, data_dir=".")


def test_describe_a_custom_data_module(tmp_path):
    (tmp_path / "data.py").write_text(CUSTOM_DATA_PY)
    info = describe_dataset("custom", tmp_path, data_module="data.py")
    assert info == DatasetInfo("custom", (4,), None, data_module="data.py")


def test_describe_a_custom_classification_module_counts_its_classes(tmp_path):
    (tmp_path / "cls.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load_data():\n"
        "    x = torch.zeros(6, 2, 3)\n"
        "    return TensorDataset(x, torch.tensor([0, 1, 4, 0, 1, 2])), TensorDataset(x[:2], torch.tensor([0, 1]))\n"
    )
    assert describe_dataset("custom", tmp_path, data_module="cls.py") == DatasetInfo(
        "custom", (2, 3), 5, data_module="cls.py"
    )


def test_describe_a_custom_module_that_breaks_the_contract(tmp_path):
    (tmp_path / "data.py").write_text("def load_data():\n    return [1, 2, 3]\n")
    with pytest.raises(AutoraysearchError, match=r"data.py cannot be used: load_data\(\) returned list"):
        describe_dataset("custom", tmp_path, data_module="data.py")
    with pytest.raises(AutoraysearchError, match=r"needs --data-module data.py"):
        describe_dataset("custom", tmp_path)


# ---- setup's plan ----

def test_setup_plan_writes_the_input_shape_and_picks_the_template(tmp_path):
    from autoraysearch.setup.folder import plan_setup
    from helpers import make_repo

    exp = make_repo(tmp_path / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    write_cifar10_folder(tmp_path / "cifar", per_batch=2, val=2)
    plan = plan_setup(exp, dataset="cifar10", data_dir=str(tmp_path / "cifar"), gpus_per_trial=4, epochs=20)
    assert plan.settings.input_shape == [3, 32, 32] and plan.settings.num_classes == 10
    assert plan.settings.model_kwargs == {"num_classes": 10}  # the example's Model takes num_classes
    assert plan.settings.data_dir == str((tmp_path / "cifar").resolve())
    settings = module_settings(plan.train_source)
    assert settings["PROCESSES"] == 4 and settings["DATA_DIR"] == plan.settings.data_dir
    assert settings["INPUT_SHAPE"] == (3, 32, 32)

    single = plan_setup(exp, model_kwargs={"num_classes": 10, "width": 2}, batch_size=16, learning_rate=0.01)
    settings = module_settings(single.train_source)
    assert "PROCESSES" not in settings and settings["MODEL_KWARGS"] == {"num_classes": 10, "width": 2}
    assert (settings["BATCH_SIZE"], settings["LEARNING_RATE"]) == (16, 0.01)
    assert single.settings.input_shape == [1, 8, 8]


def test_a_run_on_more_gpus_than_the_generated_train_py_uses_is_refused():
    from autoraysearch.campaign.opening import with_overrides
    from autoraysearch.campaign.settings import CampaignSettings

    single = CampaignSettings(gpus_per_trial=1.0)
    with pytest.raises(AutoraysearchError, match=r"again with --gpus-per-trial 4 for its DDP version"):
        with_overrides(single, {"gpus_per_trial": 4.0})
    assert with_overrides(single, {"gpus_per_trial": 0.5}).gpus_per_trial == 0.5
    # The DDP train.py uses however many GPUs it is given; the user's own train.py is the user's business.
    assert with_overrides(CampaignSettings(gpus_per_trial=4.0), {"gpus_per_trial": 2.0}).gpus_per_trial == 2.0
    assert with_overrides(CampaignSettings(generated=False), {"gpus_per_trial": 2.0}).gpus_per_trial == 2.0
