"""What setup needs to know about a dataset: its canonical name, where its files are, one sample's shape,
its number of classes.

train.py reads the files itself (it must run on any Ray node without this package's help); this module
only checks, before any service starts, that they are there and shaped as train.py expects.
"""

from __future__ import annotations

import gzip
import json
import struct
import sys
import tarfile
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
CUSTOM = "custom"


@dataclass(frozen=True)
class ImageSet:
    """A well-known image classification set read from files in a data directory."""

    title: str
    input_shape: tuple[int, int, int]
    num_classes: int
    torchvision_name: str  # the torchvision class that can download it, and its folder in torchvision's layout
    files: tuple[str, ...]  # what must be in the data directory (IDX: each may also end in .gz)
    archive: str = ""  # CIFAR: the archive that may stand in for the extracted folder


# The IDX sets: the four files directly in the data directory (as Debian's dataset-fashion-mnist
# installs them) or in torchvision's layout, DIR/<torchvision_name>/raw/.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IMAGE_SETS = {
    "mnist": ImageSet("MNIST", (1, 28, 28), 10, "MNIST", IDX_FILES),
    "fashionmnist": ImageSet("Fashion-MNIST", (1, 28, 28), 10, "FashionMNIST", IDX_FILES),
    # The CIFAR sets: the "python version" folder, in the data directory or as the data directory
    # itself, or its .tar.gz archive as downloaded.
    "cifar10": ImageSet(
        "CIFAR-10", (3, 32, 32), 10, "CIFAR10",
        ("cifar-10-batches-py", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
         "test_batch"),
        archive="cifar-10-python.tar.gz",
    ),
    "cifar100": ImageSet(
        "CIFAR-100", (3, 32, 32), 100, "CIFAR100", ("cifar-100-python", "train", "test"),
        archive="cifar-100-python.tar.gz",
    ),
}
KNOWN = "'digits', 'mnist', 'fashionmnist', 'cifar10', 'cifar100', 'npz:PATH' or 'custom'"


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset train.py can load, and the shapes a model for it must accept and produce."""

    name: str  # "digits", "mnist", "fashionmnist", "cifar10", "cifar100", "npz:/abs/path.npz" or "custom"
    input_shape: tuple[int, ...]  # one sample's shape, e.g. (1, 8, 8)
    num_classes: int | None  # None: a custom dataset judged by its own evaluate()
    data_dir: str | None = None  # absolute folder of an image set's files
    data_module: str | None = None  # a custom dataset's module file, relative to the experiment folder


def describe_dataset(
    dataset: str,
    base_dir: Path,
    data_dir: str | None = None,
    data_module: str | None = None,
    download: bool = False,
) -> DatasetInfo:
    """Describe a dataset setup was asked for (paths relative to base_dir); raise a user error if it is unusable."""
    if dataset == "digits":
        return DatasetInfo("digits", DIGITS_INPUT_SHAPE, DIGITS_NUM_CLASSES)
    if dataset in IMAGE_SETS:
        return describe_image_set(dataset, data_dir, base_dir, download)
    if dataset == CUSTOM:
        return describe_custom(base_dir, data_module)
    if isinstance(dataset, str) and dataset.startswith(NPZ_PREFIX) and dataset[len(NPZ_PREFIX) :].strip():
        return describe_npz(resolve_path(dataset[len(NPZ_PREFIX) :], base_dir))
    raise AutoraysearchError(
        f"dataset {dataset!r} is unknown: use {KNOWN} (npz: an .npz file holding X_train, y_train, X_val "
        "and y_val; custom: a data.py of yours)."
    )


def resolve_path(path: str, base_dir: Path) -> Path:
    """An absolute path: relative ones are taken from base_dir so train.py finds the file from its scratch dir."""
    candidate = Path(path.strip()).expanduser()
    if not candidate.is_absolute():
        candidate = Path(base_dir) / candidate
    return candidate.resolve()


# ---- image sets ----

def describe_image_set(name: str, data_dir: str | None, base_dir: Path, download: bool) -> DatasetInfo:
    """An image set's files must be in data_dir, unless train.py is to download them."""
    image_set = IMAGE_SETS[name]
    if not data_dir:
        raise AutoraysearchError(
            f"dataset {name} needs --data-dir: the folder holding its files ({where_to_put(name)})."
        )
    folder = resolve_path(data_dir, base_dir)
    info = DatasetInfo(name, image_set.input_shape, image_set.num_classes, data_dir=str(folder))
    found = find_image_files(name, folder)
    if found is None:
        if download:
            return info
        raise AutoraysearchError(
            f"{image_set.title} files are not in {folder}: put {where_to_put(name)}, or add --download "
            "to fetch them with torchvision (it needs network access)."
        )
    if image_set.files == IDX_FILES:
        check_idx_images(found[0], image_set)
    return info


def where_to_put(name: str) -> str:
    """One phrase naming the files an image set needs."""
    image_set = IMAGE_SETS[name]
    if image_set.files == IDX_FILES:
        return ", ".join(f"{file}.gz" for file in IDX_FILES) + " (or unpacked) there"
    return f"the folder {image_set.files[0]}/ or the archive {image_set.archive} there"


def find_image_files(name: str, folder: Path) -> list[Path] | None:
    """The paths of an image set's files in folder, in the order of its `files`, or None if any is missing."""
    image_set = IMAGE_SETS[name]
    if image_set.files == IDX_FILES:
        for place in (folder, folder / image_set.torchvision_name / "raw"):
            found = [next((p for p in (place / f, place / f"{f}.gz") if p.is_file()), None) for f in IDX_FILES]
            if all(found):
                return found
        return None
    subfolder, members = image_set.files[0], image_set.files[1:]
    for place in (folder / subfolder, folder):
        if all((place / member).is_file() for member in members):
            return [place / member for member in members]
    archive = folder / image_set.archive
    return [archive] if archive.is_file() and archive_has(archive, subfolder, members) else None


def archive_has(archive: Path, subfolder: str, members: tuple[str, ...]) -> bool:
    """Whether a CIFAR .tar.gz holds every batch file train.py reads."""
    try:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
    except (tarfile.TarError, OSError):
        return False
    return all(f"{subfolder}/{member}" in names for member in members)


def check_idx_images(path: Path, image_set: ImageSet) -> None:
    """The training images file must be an IDX file of 28x28 images (its 16-byte header says)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(16)
    except (OSError, EOFError) as exc:
        raise AutoraysearchError(f"{path} cannot be read ({exc}): download it again.") from None
    if len(header) < 16 or header[:4] != b"\x00\x00\x08\x03":
        raise AutoraysearchError(f"{path} is not an IDX image file: download {image_set.title} again.")
    _, rows, cols = struct.unpack(">3I", header[4:16])
    if (1, rows, cols) != image_set.input_shape:
        raise AutoraysearchError(
            f"{path} holds {rows}x{cols} images, not the {image_set.input_shape[1]}x{image_set.input_shape[2]} "
            f"of {image_set.title}: check --dataset and --data-dir."
        )


# ---- npz ----

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


# ---- custom ----

CUSTOM_CONTRACT = (
    "define load_data() returning (train_dataset, val_dataset) of (input, target) pairs, and optionally "
    "evaluate(model, batches) -> float and loss(outputs, targets)"
)
DESCRIBE_TIMEOUT_S = 300.0
DESCRIBE_MARKER = "AUTORAYSEARCH_DATA "

# Runs next to a copy of data.py in a scratch folder, as train.py will: imports it, loads the data
# and prints one sample's shape and, for a classification set, its number of classes.
_DESCRIBE_CUSTOM = r"""
import importlib, json, sys

def finish(**result):
    print("AUTORAYSEARCH_DATA " + json.dumps(result), flush=True)
    sys.exit(0)

module = importlib.import_module(sys.argv[1])
if not callable(getattr(module, "load_data", None)):
    finish(error="it defines no load_data()")
import torch
datasets = module.load_data()
if not (isinstance(datasets, (tuple, list)) and len(datasets) == 2):
    finish(error=f"load_data() returned {type(datasets).__name__}, not (train_dataset, val_dataset)")
train, val = datasets
if len(train) == 0 or len(val) == 0:
    finish(error="load_data() returned an empty dataset")
sample = train[0]
if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
    finish(error="the training dataset's items are not (input, target) pairs")
inputs = torch.as_tensor(sample[0])
judged_by_module = callable(getattr(module, "evaluate", None))
num_classes = getattr(module, "NUM_CLASSES", None)
if num_classes is None and not judged_by_module:
    if isinstance(train, torch.utils.data.TensorDataset):
        targets = train.tensors[1]
    else:
        targets = [torch.as_tensor(train[i][1]) for i in range(len(train))]
        targets = torch.stack([t.reshape(()) for t in targets]) if all(t.numel() == 1 for t in targets) else None
    if targets is None or targets.is_floating_point() or targets.dim() != 1 or targets.min() < 0:
        finish(error="its targets are not class indices; define evaluate(model, batches) and loss(outputs, targets)")
    num_classes = int(targets.max()) + 1
finish(input_shape=list(inputs.shape), num_classes=num_classes, evaluate=judged_by_module)
"""


def describe_custom(base_dir: Path, data_module: str | None) -> DatasetInfo:
    """Run the user's data module once, as train.py will, and read one sample's shape from it."""
    from autoraysearch.trials.process import run_in_directory

    if not data_module:
        raise AutoraysearchError(f"dataset custom needs --data-module data.py, a file that must {CUSTOM_CONTRACT}.")
    path = resolve_path(data_module, base_dir)
    if path.suffix != ".py" or not path.is_file():
        raise AutoraysearchError(f"data module {path} is not an existing .py file: pass --data-module data.py.")
    if path.parent != Path(base_dir).resolve() or not path.stem.isidentifier():
        raise AutoraysearchError(
            f"data module {path} must be a .py file with a plain name in the experiment folder {base_dir}, "
            "next to model.py."
        )
    files = {path.name: path.read_text(), "autoraysearch_describe_data.py": _DESCRIBE_CUSTOM}
    outcome = run_in_directory(
        files, [sys.executable, "autoraysearch_describe_data.py", path.stem], timeout=DESCRIBE_TIMEOUT_S,
        env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    line = next((ln for ln in reversed(outcome.stdout_tail) if ln.startswith(DESCRIBE_MARKER)), None)
    if line is None:
        why = "timed out" if outcome.timed_out else f"failed: {outcome.last_error_line or 'no output'}"
        raise AutoraysearchError(f"loading the data with {path.name} {why}; it must {CUSTOM_CONTRACT}.")
    result = json.loads(line[len(DESCRIBE_MARKER) :])
    if "error" in result:
        raise AutoraysearchError(f"{path.name} cannot be used: {result['error']}; it must {CUSTOM_CONTRACT}.")
    return DatasetInfo(CUSTOM, tuple(result["input_shape"]), result["num_classes"], data_module=path.name)
