"""What setup needs to know about a dataset: its canonical name, one sample's shape, its number of classes."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoraysearch.errors import AutoraysearchError

# scikit-learn's bundled 8x8 digits, as train.py shapes them: one channel, 8x8 pixels, ten classes.
DIGITS_INPUT_SHAPE = (1, 8, 8)
DIGITS_NUM_CLASSES = 10

NPZ_PREFIX = "npz:"
NPZ_ARRAYS = ("X_train", "y_train", "X_val", "y_val")


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset train.py can load, and the shapes a model for it must accept and produce."""

    name: str  # "digits" or "npz:/abs/path.npz"
    input_shape: tuple[int, ...]  # one sample's shape, e.g. (1, 8, 8)
    num_classes: int


def describe_dataset(dataset: str, base_dir: Path) -> DatasetInfo:
    """Describe "digits" or "npz:PATH" (PATH relative to base_dir); raise a user error for anything else."""
    if dataset == "digits":
        return DatasetInfo("digits", DIGITS_INPUT_SHAPE, DIGITS_NUM_CLASSES)
    if isinstance(dataset, str) and dataset.startswith(NPZ_PREFIX) and dataset[len(NPZ_PREFIX) :].strip():
        return describe_npz(resolve_npz_path(dataset[len(NPZ_PREFIX) :], base_dir))
    raise AutoraysearchError(
        f"dataset {dataset!r} is unknown: use 'digits' or 'npz:PATH' with PATH an .npz file "
        "holding X_train, y_train, X_val and y_val."
    )


def resolve_npz_path(path: str, base_dir: Path) -> Path:
    """An absolute path: relative ones are taken from base_dir so train.py finds the file from its scratch dir."""
    candidate = Path(path.strip()).expanduser()
    if not candidate.is_absolute():
        candidate = Path(base_dir) / candidate
    return candidate.resolve()


def describe_npz(path: Path) -> DatasetInfo:
    """Read an .npz's four arrays and check they make a classification problem train.py can run."""
    arrays = load_npz_arrays(path)
    x_train, y_train, x_val, y_val = (arrays[key] for key in NPZ_ARRAYS)
    check_npz_arrays(path, x_train, y_train, x_val, y_val)
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    return DatasetInfo(f"{NPZ_PREFIX}{path}", tuple(int(d) for d in x_train.shape[1:]), num_classes)


def load_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays train.py reads, or a user error naming what is missing or unreadable."""
    if not path.is_file():
        raise AutoraysearchError(f"dataset file {path} does not exist: check the path after 'npz:'.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in NPZ_ARRAYS if key not in data.files]
            if missing:
                raise AutoraysearchError(
                    f"dataset file {path} lacks {', '.join(missing)}: save it with "
                    "numpy.savez(path, X_train=..., y_train=..., X_val=..., y_val=...)."
                )
            return {key: data[key] for key in NPZ_ARRAYS}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        # np.load raises these for non-npz files and for object arrays (which need pickle, refused for safety).
        raise AutoraysearchError(
            f"dataset file {path} is not a readable .npz of numeric arrays ({exc}): "
            "write it with numpy.savez."
        ) from None


def check_npz_arrays(path: Path, x_train, y_train, x_val, y_val) -> None:
    """Raise a user error unless inputs are numeric samples and labels are matching non-negative integers."""
    if x_train.ndim < 2 or x_val.shape[1:] != x_train.shape[1:]:
        raise AutoraysearchError(
            f"dataset file {path} has X_train of shape {x_train.shape} and X_val of shape {x_val.shape}: "
            "both must be (samples, ...) with the same shape per sample."
        )
    if not (np.issubdtype(x_train.dtype, np.number) and np.issubdtype(x_val.dtype, np.number)):
        raise AutoraysearchError(f"dataset file {path} has non-numeric X_train or X_val: store numbers.")
    for name, x, y in (("train", x_train, y_train), ("val", x_val, y_val)):
        if y.ndim != 1 or len(y) != len(x) or len(y) == 0:
            raise AutoraysearchError(
                f"dataset file {path} has y_{name} of shape {y.shape} for {len(x)} samples: "
                f"store one integer label per row of X_{name}."
            )
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise AutoraysearchError(
                f"dataset file {path} has y_{name} of dtype {y.dtype} with minimum {y.min()}: "
                "store class indices as non-negative integers."
            )
