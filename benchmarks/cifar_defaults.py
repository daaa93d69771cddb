"""Which optimizer settings setup should default to for CIFAR: the generated train.py, on a CPU, on CIFAR-shaped data.

The data are synthetic but learnable: each of 10 classes is a smooth random 3x32x32 pattern, every
image its class's pattern shifted by up to 4 pixels, scaled, and buried in noise, so a small CNN
must learn shift-tolerant features (as on CIFAR) and no download is needed. The model is
benchmarks/train_throughput.py's CIFAR-shaped CNN. Each configuration trains for --epochs epochs with
each of --seeds seeds and reports the mean validation accuracy and the training time:

    python benchmarks/cifar_defaults.py [--epochs 4] [--seeds 2] [--train 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoraysearch.setup.rendering import TrainSpec, render_train_py  # noqa: E402
from benchmarks.train_throughput import CIFAR_MODEL  # noqa: E402

CONFIGS = {
    "adamw 1e-3 wd 0.01, constant": dict(optimizer="adamw", learning_rate=1e-3, weight_decay=0.01, schedule="none"),
    "adamw 2e-3 wd 0.05, cosine": dict(optimizer="adamw", learning_rate=2e-3, weight_decay=0.05, schedule="cosine"),
    "sgd 0.05 wd 5e-4, constant": dict(optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, schedule="none"),
    "sgd 0.05 wd 5e-4, cosine": dict(optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, schedule="cosine"),
}


def write_shifted_patterns(path: Path, train: int, val: int, seed: int = 0) -> None:
    """Ten classes of smooth random patterns, randomly shifted, with noise of the patterns' own size."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(10, 3, 8, 8)).astype(np.float32)
    patterns = coarse.repeat(5, axis=2).repeat(5, axis=3)[:, :, :40, :40]  # 40x40, cropped to 32x32 below
    def images(n):
        labels = rng.integers(0, 10, n)
        rows, cols = rng.integers(0, 9, n), rng.integers(0, 9, n)
        x = np.stack([patterns[l, :, r : r + 32, c : c + 32] for l, r, c in zip(labels, rows, cols)])
        x = x * rng.uniform(0.5, 1.5, (n, 1, 1, 1)) + rng.normal(scale=1.5, size=x.shape)
        return x.astype(np.float32), labels.astype(np.int64)
    x_train, y_train = images(train)
    x_val, y_val = images(val)
    np.savez(path, X_train=x_train, y_train=y_train, X_val=x_val, y_val=y_val)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "data.npz"
        write_shifted_patterns(data, args.train, 1000)
        (folder / "model.py").write_text(CIFAR_MODEL)
        results = {}
        for name, options in CONFIGS.items():
            accuracies, seconds = [], []
            for seed in range(args.seeds):
                spec = TrainSpec(f"npz:{data}", epochs=args.epochs, seed=seed, batch_size=args.batch_size,
                                 input_shape=(3, 32, 32), num_classes=10, model_kwargs={"num_classes": 10}, **options)
                (folder / "train.py").write_text(render_train_py(spec))
                env = {**os.environ, "AUTORAYSEARCH_NUM_THREADS": str(args.threads)}
                done = subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(done.stderr)
                summary = json.loads((folder / "train_summary.json").read_text())
                accuracies.append(summary["value"])
                seconds.append(summary["train_seconds"])
            results[name] = {"val_acc": accuracies, "mean": statistics.mean(accuracies), "train_s": statistics.mean(seconds)}
            print(f"{name:32s} val_acc {statistics.mean(accuracies):.4f} {accuracies} train {statistics.mean(seconds):.1f} s",
                  flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
