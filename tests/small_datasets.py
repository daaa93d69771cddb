"""Small learnable datasets written in each real format train.py reads, and a custom data.py of the user's."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

# A regression problem for --dataset custom, judged by its own lower-is-better metric: the target is
# a fixed linear function of 4 features. The training set is a plain Dataset (so train.py uses a
# DataLoader for it); the validation set is a TensorDataset (batched in memory).
CUSTOM_DATA_PY = '''
"""Regression data: y = x @ w + 0.5, judged by mean squared error."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset


class Pairs(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def load_data():
    rng = np.random.default_rng(0)
    w = torch.tensor([1.5, -2.0, 0.5, 1.0])
    x = torch.tensor(rng.normal(size=(400, 4)), dtype=torch.float32)
    y = x @ w + 0.5
    return Pairs(x[:320], y[:320]), TensorDataset(x[320:], y[320:])


def loss(outputs, targets):
    return F.mse_loss(outputs.squeeze(1), targets)


@torch.no_grad()
def evaluate(model, batches):
    errors = [((model(x).squeeze(1) - y) ** 2).sum().item() for x, y in batches]
    count = sum(len(y) for _, y in batches)
    return sum(errors) / count
'''

REGRESSION_MODEL = '''
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)
'''

# For 28x28 images: a one-hidden-layer MLP, quick to train on the CPU.
MLP_MODEL = '''
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)
'''

# Takes images of any size with `channels` channels: a small CNN with a pooled head.
IMAGE_MODEL = '''
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10, channels=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten()
        )
        self.head = nn.Linear(16 * 16, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''


def labelled_images(count: int, classes: int, channels: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose label sets which horizontal band is bright: easy to learn, noisy elsewhere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=count)
    images = rng.integers(0, 60, size=(count, channels, size, size)).astype(np.uint8)
    band = max(1, size // classes)
    for i, label in enumerate(labels):
        row = (label * size) // classes
        images[i, :, row : row + band, :] = 250
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (gzipped when the name ends in .gz): magic, big-endian sizes, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def write_mnist_like(folder: Path, train: int = 600, val: int = 200) -> None:
    """MNIST's four IDX files, in torchvision's layout folder/MNIST/raw/, gzipped."""
    raw = folder / "MNIST" / "raw"
    x_train, y_train = labelled_images(train, 10, 1, 28, seed=1)
    x_val, y_val = labelled_images(val, 10, 1, 28, seed=2)
    write_idx(raw / "train-images-idx3-ubyte.gz", x_train[:, 0])
    write_idx(raw / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", x_val[:, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", y_val)


def cifar_batch(images: np.ndarray, labels: np.ndarray, key: bytes) -> bytes:
    """One batch file of CIFAR's python version: a pickled dict of bytes keys."""
    return pickle.dumps({b"data": images.reshape(len(images), -1), key: [int(v) for v in labels]})


def write_cifar10_folder(folder: Path, per_batch: int = 80, val: int = 200) -> None:
    """cifar-10-batches-py/ with five training batches and a test batch."""
    target = folder / "cifar-10-batches-py"
    target.mkdir(parents=True)
    for i in range(1, 6):
        images, labels = labelled_images(per_batch, 10, 3, 32, seed=10 + i)
        (target / f"data_batch_{i}").write_bytes(cifar_batch(images, labels, b"labels"))
    images, labels = labelled_images(val, 10, 3, 32, seed=20)
    (target / "test_batch").write_bytes(cifar_batch(images, labels, b"labels"))


def write_cifar100_archive(folder: Path, train: int = 400, val: int = 200) -> None:
    """cifar-100-python.tar.gz as downloaded, holding train and test with fine labels."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tar:
        for name, count, seed in (("train", train, 30), ("test", val, 31)):
            images, labels = labelled_images(count, 100, 3, 32, seed=seed)
            data = cifar_batch(images, labels, b"fine_labels")
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
