"""Training samples/s of the generated train.py against a minimal hand-written loop, same model and data.

The hand-written loop is the simplest fast thing: tensors in memory, a random permutation cut into
batches, AdamW, nothing else. Both run as fresh processes with the same thread count, batch size and
epochs, alternately, and each reports its training steps only (evaluation and start-up excluded;
train.py's figures come from its JSON summary) as samples per second of wall time and samples per
second of the process's CPU time. On a machine others share, wall time swings with their load; CPU
time swings less, so the comparison to trust there is the median, over rounds, of each run's CPU-time
throughput divided by that of the hand-written run of the same round. --runs rounds, on:

  digits  the bundled example CNN on scikit-learn's digits (1437 training images of 1x8x8)
  cifar   a CIFAR-shaped CNN on synthetic 3x32x32 data (an .npz of random images)

    python benchmarks/train_throughput.py [--runs 5] [--threads 1] [--variants]

--variants also times train.py with the two speed settings whose defaults this chose on a CPU flipped:
CHANNELS_LAST (on by default for images of 3+ channels only) and COMPILE (off by default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoraysearch.setup.rendering import (  # noqa: E402
    TrainSpec,
    default_channels_last,
    render_train_py,
    with_known_shapes,
)

CIFAR_MODEL = '''
import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
'''

# The minimal loop, airbench-style: the data resident on the device, a random permutation cut into
# batches, and on a GPU bf16 autocast and channels_last; same model, seed, optimizer and batch size as
# train.py, no checks at all. On a GPU the clock is read after a synchronize, once per epoch.
HAND_LOOP = '''
import json, sys, time
from contextlib import nullcontext
import numpy as np
import torch
import torch.nn.functional as F
from model import Model

dataset, epochs, batch_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
optimizer_name = sys.argv[5] if len(sys.argv) > 5 else "adamw"
device = "cuda" if torch.cuda.is_available() else "cpu"
if dataset == "digits":
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor((digits.images / 16.0).astype(np.float32)[:, None][:1437])
    y = torch.tensor(digits.target[:1437].astype(np.int64))
else:
    with np.load(dataset) as data:
        x, y = torch.tensor(data["X_train"]), torch.tensor(data["y_train"])
x, y = x.to(device), y.to(device)
channels_last = device == "cuda" and x.dim() == 4 and x.shape[1] >= 3
if channels_last:
    x = x.contiguous(memory_format=torch.channels_last)
torch.manual_seed(0)
model = Model(num_classes=10).to(device)
if channels_last:
    model = model.to(memory_format=torch.channels_last)
if optimizer_name == "sgd":
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
else:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else nullcontext()
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
model.train()
samples, epoch_rates = 0, []
sync()
start, cpu_start = time.perf_counter(), time.process_time()
for epoch in range(epochs):
    epoch_start = time.perf_counter()
    order = torch.randperm(len(y), device=device)
    steps = len(y) // batch_size
    for i in range(steps):
        batch = order[i * batch_size : (i + 1) * batch_size]
        with autocast:
            outputs = model(x[batch])
        loss = F.cross_entropy(outputs.float(), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    samples += steps * batch_size
    epoch_rates.append(steps * batch_size / (time.perf_counter() - epoch_start))
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({"wall": samples / wall, "cpu": samples / cpu, "last_epoch": epoch_rates[-1], "epochs": epoch_rates, "device": device}))
'''


def write_cifar_like(path: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=count).astype(np.int64)
    np.savez(path, X_train=x, y_train=y, X_val=x[:256], y_val=y[:256])


def run_train_py(folder: Path, threads: int) -> dict[str, float]:
    """Samples per wall second and per CPU second of train.py's training steps, from its summary."""
    summary = folder / "summary.json"
    env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": str(threads), "AUTORAYSEARCH_SUMMARY_PATH": str(summary)}
    subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, check=True, capture_output=True)
    figures = json.loads(summary.read_text())
    samples = figures["samples_per_s"] * figures["train_seconds"]
    return {"wall": figures["samples_per_s"], "cpu": samples / figures["train_cpu_seconds"]}


def run_hand_loop(folder: Path, dataset: str, epochs: int, batch_size: int, threads: int, optimizer: str = "adamw") -> dict:
    """The hand-written loop's samples/s (on the GPU when there is one): overall, per CPU second, last epoch."""
    command = [sys.executable, "hand_loop.py", dataset, str(epochs), str(batch_size), str(threads), optimizer]
    out = subprocess.run(command, cwd=folder, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def prepare(folder: Path, model_source: str, spec: TrainSpec) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(model_source)
    (folder / "train.py").write_text(render_train_py(spec))
    (folder / "hand_loop.py").write_text(HAND_LOOP)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each contender (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    parser.add_argument("--variants", action="store_true", help="also time CHANNELS_LAST flipped and COMPILE=True")
    args = parser.parse_args()
    example = (ROOT / "examples" / "digits" / "model.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        npz = tmp / "cifar.npz"
        write_cifar_like(npz, 2048)
        cases = {
            "digits": (example, TrainSpec("digits", epochs=20, model_kwargs={"num_classes": 10}), "digits", 20),
            # As setup renders it for an .npz of 3x32x32 images.
            "cifar": (
                CIFAR_MODEL,
                TrainSpec(f"npz:{npz}", epochs=2, model_kwargs={"num_classes": 10}, input_shape=(3, 32, 32), num_classes=10),
                str(npz),
                2,
            ),
        }
        print(f"threads={args.threads} runs={args.runs} batch=64; medians of samples/s over training steps only,")
        print("per second of wall time and of CPU time; the ratio is the median over rounds of CPU-time throughputs")
        for name, (model_source, spec, dataset, epochs) in cases.items():
            folder = prepare(tmp / name, model_source, spec)
            contenders = {
                "train.py": lambda f=folder: run_train_py(f, args.threads),
                "hand-written": lambda f=folder: run_hand_loop(f, dataset, epochs, 64, args.threads),
            }
            if args.variants:
                flipped = not default_channels_last(with_known_shapes(spec).input_shape)
                other = prepare(tmp / f"{name}-channels", model_source, replace(spec, channels_last=flipped))
                contenders[f"train.py CHANNELS_LAST={flipped}"] = lambda f=other: run_train_py(f, args.threads)
                compiled = prepare(tmp / f"{name}-compile", model_source, replace(spec, compile=True))
                contenders["train.py COMPILE=True"] = lambda f=compiled: run_train_py(f, args.threads)
            figures = {label: [] for label in contenders}
            for _ in range(args.runs):  # interleaved, so load changes hit every contender alike
                for label, run in contenders.items():
                    figures[label].append(run())
            hand = figures["hand-written"]
            for label, values in figures.items():
                wall, cpu = (statistics.median(r[clock] for r in values) for clock in ("wall", "cpu"))
                # Each run against the hand-written run of the same round, which met the same load.
                paired = statistics.median(r["cpu"] / h["cpu"] for r, h in zip(values, hand))
                runs = " ".join(f"{r['cpu']:.0f}" for r in values)
                print(
                    f"{name:7s} {label:29s} wall {wall:7.0f}/s  cpu {cpu:7.0f}/s  "
                    f"cpu vs hand-written, paired by round: {paired:5.3f}  cpu runs [{runs}]"
                )


if __name__ == "__main__":
    main()
