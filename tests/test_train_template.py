"""The generated train.py: it renders to valid Python, really trains, and reports the metric last."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoraysearch.datasets import DatasetInfo, describe_dataset
from autoraysearch.errors import AutoraysearchError
from autoraysearch.rendering import TrainSpec, render_train_py

EXAMPLE_MODEL = Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py"
METRIC_LINE = re.compile(r"^val_acc=(\d\.\d{4})$")
PROGRESS_LINE = re.compile(
    r"^epoch=(\d+)(?:/(\d+))? train_loss=(\d+\.\d{4}) val_acc=(\d\.\d{4}) elapsed_s=(\d+\.\d)$"
)
TIME_BUDGET = 1.5

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


def scenarios(root: Path) -> dict[str, tuple[TrainSpec, str | None, dict[str, str]]]:
    """Each run: its spec, its model.py source (None: the bundled example), extra environment."""
    npz = root / "data.npz"
    write_learnable_npz(npz)
    digits = TrainSpec("digits", epochs=2, model_kwargs={"num_classes": 10})
    return {
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
    }


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
        # One thread each so the parallel runs do not fight over the cores.
        env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": "1", **extra_env}
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
        stdout, stderr = process.communicate(timeout=300)
        results[name] = (process.returncode, stdout, stderr)
    return results


def successful_lines(result) -> list[str]:
    """The stdout lines of a run that must have exited 0."""
    returncode, stdout, stderr = result
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
    assert settings["SEED"] == spec.seed
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
    for section in ("data", "model", "training", "evaluation", "report"):
        assert f"# ---- {section} ----" in source


def digits_split(seed: int):
    """Run the rendered train.py's digits loader alone, without importing torch, for a given SEED."""
    tree = ast.parse(render_train_py(TrainSpec("digits", seed=seed)))
    wanted = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "load_digits_arrays")
        or (isinstance(node, ast.Assign) and node.targets[0].id in ("SEED", "DIGITS_VAL_FRACTION", "DIGITS_SPLIT_SEED"))
    ]
    namespace = {"np": np}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "train.py", "exec"), namespace)
    return namespace["load_digits_arrays"]()


def test_digits_split_is_fixed_stratified_and_independent_of_seed():
    x_train, y_train, x_val, y_val = digits_split(seed=0)
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert len(x_train) + len(x_val) == 1797
    val_share = np.bincount(y_val) / (np.bincount(y_val) + np.bincount(y_train))
    assert np.allclose(val_share, 0.2, atol=0.01)
    other = digits_split(seed=123)
    for mine, theirs in zip((x_train, y_train, x_val, y_val), other):
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
        ({"dataset": "mnist"}, "dataset"),
    ],
)
def test_render_refuses_a_bad_spec_with_one_sentence(changes, words):
    spec = TrainSpec(**{"dataset": "digits", **changes})
    with pytest.raises(AutoraysearchError, match=words) as caught:
        render_train_py(spec)
    assert "\n" not in str(caught.value)


# ---- running the rendered train.py ----

def test_digits_run_trains_and_prints_the_metric_last(runs):
    lines = successful_lines(runs["digits"])
    assert metric_value(lines) > 0.3
    matches = progress(lines)
    assert [(m.group(1), m.group(2)) for m in matches] == [("1", "2"), ("2", "2")]
    # The metric is the validation accuracy after the last epoch.
    assert matches[-1].group(4) == lines[-1].split("=")[1]


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
    trained = float(matches[-1].group(5))
    assert TIME_BUDGET - 0.1 <= trained <= TIME_BUDGET + 1.0
    elapsed = [float(m.group(5)) for m in matches]
    assert elapsed == sorted(elapsed)  # training time accumulates over epochs
    assert all(seconds <= TIME_BUDGET for seconds in elapsed[:-1])  # printed to 0.1 s: 1.46 shows as 1.5


def test_npz_run_with_a_no_argument_model(runs):
    lines = successful_lines(runs["npz_no_args"])
    assert len(progress(lines)) == 5
    assert metric_value(lines) > 0.6  # chance is about 0.33


def test_nan_loss_stops_with_one_error_line(runs):
    returncode, stdout, stderr = runs["nan"]
    assert returncode == 1
    assert stderr.strip().splitlines()[-1] == (
        "error: training loss is nan at epoch 1 step 1; lower LEARNING_RATE or fix the model"
    )
    assert not any(METRIC_LINE.match(line) for line in stdout.splitlines())


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
    with pytest.raises(AutoraysearchError, match=r"dataset 'mnist' is unknown: use 'digits' or 'npz:PATH'"):
        describe_dataset("mnist", Path("."))


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
