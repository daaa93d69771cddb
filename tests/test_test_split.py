"""The digits test split: held out from training and from every campaign decision, used only when asked."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch

from autoraysearch.setup.rendering import TrainSpec, render_train_py

EVAL_SPLIT_ENV = "AUTORAYSEARCH_EVAL_SPLIT"


def load_train_py(tmp_path, monkeypatch, seed=0, eval_split=None):
    """The rendered digits train.py imported as a module (its settings read the environment at import)."""
    if eval_split is None:
        monkeypatch.delenv(EVAL_SPLIT_ENV, raising=False)
    else:
        monkeypatch.setenv(EVAL_SPLIT_ENV, eval_split)
    monkeypatch.delenv("AUTORAYSEARCH_SEED", raising=False)
    folder = tmp_path / f"seed{seed}-{eval_split}"
    folder.mkdir()
    path = folder / "train.py"
    path.write_text(render_train_py(TrainSpec("digits", seed=seed)))
    spec = importlib.util.spec_from_file_location(f"digits_train_{seed}_{eval_split}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(images):
    """Each image as bytes, sorted: a multiset that can be compared."""
    return sorted(image.tobytes() for image in images)


def test_three_splits_partition_the_digits_stratified_and_fixed(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    train = load_train_py(tmp_path, monkeypatch, seed=0)
    x_train, y_train, x_val, y_val, x_test, y_test = train.load_digits_arrays()
    digits = load_digits()
    everything = (digits.images / 16.0).astype(np.float32)[:, None]
    # Together they are the whole data set, each sample exactly once: the splits are disjoint.
    assert rows(np.concatenate([x_train, x_val, x_test])) == rows(everything)
    assert sorted(np.concatenate([y_train, y_val, y_test])) == sorted(digits.target)
    counts = np.bincount(digits.target)
    for labels, share in ((y_val, 0.2), (y_test, 0.2), (y_train, 0.6)):
        assert np.allclose(np.bincount(labels, minlength=10) / counts, share, atol=0.01)
    # The draw depends on neither the training seed nor the split asked for.
    other = load_train_py(tmp_path, monkeypatch, seed=123, eval_split="test")
    for mine, theirs in zip((x_train, y_train, x_val, y_val, x_test, y_test), other.load_digits_arrays()):
        assert np.array_equal(mine, theirs)


def test_metric_is_on_validation_unless_test_is_asked_for(tmp_path, monkeypatch):
    default = load_train_py(tmp_path, monkeypatch)
    x_train, y_train, x_val, y_val, x_test, y_test = default.load_digits_arrays()
    trained, _, judged, labels = default.load_arrays()
    assert torch.equal(torch.as_tensor(trained), torch.as_tensor(x_train))
    assert torch.equal(torch.as_tensor(judged), torch.as_tensor(x_val))

    asked = load_train_py(tmp_path, monkeypatch, eval_split="test")
    trained, _, judged, labels = asked.load_arrays()
    assert torch.equal(torch.as_tensor(trained), torch.as_tensor(x_train))  # the test split is never trained on
    assert torch.equal(torch.as_tensor(judged), torch.as_tensor(x_test))
    assert torch.equal(torch.as_tensor(labels), torch.as_tensor(y_test))


def test_an_unknown_split_fails_instead_of_silently_validating(tmp_path, monkeypatch, capsys):
    module = load_train_py(tmp_path, monkeypatch, eval_split="train")
    with pytest.raises(SystemExit) as stop:
        module.load_arrays()
    assert stop.value.code == 1
    assert "AUTORAYSEARCH_EVAL_SPLIT" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def forget_imported_train_modules():
    yield
    for name in [n for n in sys.modules if n.startswith("digits_train_")]:
        del sys.modules[name]
