"""The GPU checks of the generated train.py, in one script for the day a GPU is at hand.

It renders train.py files from this copy of the repository and runs each with plain python3, so it
needs PyTorch, Jinja2 and numpy only: no Ray, Prefect, GitPython, pydantic or network. The data are a
synthetic CIFAR-shaped .npz (3x32x32 images, 10 classes) written by the script, so nothing is
downloaded. On one GPU it finishes in under 8 minutes:

  speed       train.py's steady samples/s (epochs after the first) with bf16, channels_last and
              torch.compile each switched, and with deterministic cuDNN off, against an airbench-style
              hand-written loop on the same GPU (benchmarks/train_throughput.py's; target >= 0.9x)
  sharing     two trials at once, each capped at half the GPU's memory by
              AUTORAYSEARCH_GPU_MEMORY_FRACTION=0.5: both finish, each under its cap
  oom         a candidate that needs more than half the GPU's memory: a real out-of-memory error at
              0.5, success with the whole GPU (what the loop's retry on a whole GPU relies on)
  ddp         the DDP template with NCCL on one GPU (world size 1 still sets NCCL up, meets at the
              barrier and evaluates on rank 0)
  seeds       three seeds in one run (AUTORAYSEARCH_SEEDS, a fork per seed taken before CUDA starts):
              each seed's metric equal to its own run's, and the time against three runs

On a machine without CUDA it runs the same single-device, hand-written and DDP (gloo, 2 processes)
cases on tiny data and reports every CUDA case as skipped. It writes gpu_check.json and gpu_check.txt
(a table) into $OUT when that is set, else into benchmarks/results/, and exits 1 when a check failed.

    python3 benchmarks/gpu_check.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoraysearch.setup.rendering import TrainSpec, render_train_py  # noqa: E402  (Jinja2 and numpy only)
from autoraysearch.trials.gpu_memory import NEAR_SHARE, PeakWatch  # noqa: E402  (standard library only)
from benchmarks.train_throughput import HAND_LOOP  # noqa: E402

TOTAL_BUDGET_S = 7 * 60  # cases still to run after this are reported as skipped, to finish within 8 minutes
RUN_TIMEOUT_S = 240
HAND_RATIO_TARGET = 0.9

# An airbench-sized CNN: three conv blocks with BatchNorm and GELU, widths set by `width`.
MODEL = '''
import torch
from torch import nn


def block(channels_in, channels_out):
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out), nn.GELU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out), nn.GELU(),
        nn.MaxPool2d(2),
    )


class Model(nn.Module):
    def __init__(self, num_classes=10, width=WIDTH):
        super().__init__()
        self.features = nn.Sequential(block(3, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))
'''

# The same model holding, from its first forward pass, a block of 60 % of the GPU's memory.
BALLAST = '''

class Model(Model):
    def forward(self, x):
        if x.is_cuda and getattr(self, "ballast", None) is None:
            total = torch.cuda.get_device_properties(x.device).total_memory
            self.ballast = torch.empty(int(total * 0.6), dtype=torch.uint8, device=x.device)
        return super().forward(x)
'''


@dataclass
class Case:
    """One check's outcome: ok, failed or skipped, the figures it measured and a note in words."""

    name: str
    status: str
    note: str = ""
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """How big the data, the model and the runs are on this device."""

    train: int
    val: int
    width: int
    batch_size: int
    epochs: int


GPU_SCALE = Scale(train=20000, val=2000, width=64, batch_size=512, epochs=5)
CPU_SCALE = Scale(train=512, val=128, width=8, batch_size=64, epochs=2)


def write_cifar_like(path: Path, scale: Scale) -> None:
    """Random 3x32x32 images whose label is told by their mean colour, so a run learns something."""
    rng = np.random.default_rng(0)
    count = scale.train + scale.val
    y = rng.integers(0, 10, count).astype(np.int64)
    x = rng.normal(size=(count, 3, 32, 32)).astype(np.float32)
    x += (np.arange(3)[None, :] * 0.1 * y[:, None])[:, :, None, None].astype(np.float32)
    np.savez(path, X_train=x[: scale.train], y_train=y[: scale.train], X_val=x[scale.train :], y_val=y[scale.train :])


def base_spec(npz: Path, scale: Scale) -> TrainSpec:
    """train.py as setup renders it for CIFAR-shaped data: SGD with a cosine schedule, bf16, channels_last."""
    return TrainSpec(
        f"npz:{npz}", epochs=scale.epochs, batch_size=scale.batch_size, input_shape=(3, 32, 32), num_classes=10,
        model_kwargs={"num_classes": 10}, optimizer="sgd", learning_rate=0.05, weight_decay=5e-4, schedule="cosine",
    )


@dataclass
class Run:
    """A finished train.py (or hand-written loop) process."""

    returncode: int
    stdout: str
    stderr: str
    summary: dict | None

    def error(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {self.returncode}"


def prepare(folder: Path, spec: TrainSpec, model_source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(model_source)
    (folder / "train.py").write_text(render_train_py(spec))
    return folder


def start(folder: Path, extra_env: dict[str, str] | None = None, script: str = "train.py", args=()) -> subprocess.Popen:
    env = {**os.environ, "AUTORAYSEARCH_SUMMARY_PATH": str(folder / "summary.json"), **(extra_env or {})}
    env.pop("AUTORAYSEARCH_METRIC_FD", None)  # the metric is the last stdout line
    return subprocess.Popen([sys.executable, script, *args], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, folder: Path) -> Run:
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f"\nkilled after {RUN_TIMEOUT_S} s"
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if process.returncode == 0 and summary_path.exists() else None
    return Run(process.returncode, stdout, stderr, summary)


def run_train(folder: Path, extra_env: dict[str, str] | None = None) -> Run:
    return finish(start(folder, extra_env), folder)


def steady_rate(summary: dict, batch_size: int) -> float:
    """Training samples/s of the epochs after the first (which pays for warm-up and compiling)."""
    per_epoch = summary["steps"] // summary["epochs"] * batch_size * summary.get("processes", 1)
    seconds = summary["epoch_seconds"][1:] or summary["epoch_seconds"]
    return per_epoch / statistics.median(seconds)


def metric_last(run: Run) -> bool:
    lines = run.stdout.strip().splitlines()
    return bool(lines) and lines[-1].startswith("val_acc=")


class Checker:
    """Runs the cases in order, each in its own folder, within the time budget."""

    def __init__(self, work: Path, npz: Path, scale: Scale, cuda: bool):
        self.work, self.npz, self.scale, self.cuda = work, npz, scale, cuda
        self.model = MODEL.replace("WIDTH", str(scale.width))
        self.started = time.monotonic()
        self.cases: list[Case] = []

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > TOTAL_BUDGET_S

    def add(self, case: Case) -> None:
        self.cases.append(case)
        figures = " ".join(f"{k}={v}" for k, v in case.figures.items())
        print(f"{case.name:34s} {case.status:8s} {figures} {case.note}".rstrip(), flush=True)

    def speed(self) -> None:
        """train.py's settings one at a time, then the hand-written loop on the same data and device."""
        spec = base_spec(self.npz, self.scale)
        variants = {"train.py (bf16, channels_last)": spec}
        if self.cuda:
            variants.update({
                "train.py bf16 off": replace(spec, bf16=False),
                "train.py channels_last off": replace(spec, channels_last=False),
                "train.py compile on": replace(spec, compile=True),
                "train.py deterministic cuDNN off": replace(spec, deterministic=False),
            })
        rates = {}
        for name, variant in variants.items():
            if self.out_of_time():
                self.add(Case(name, "skipped", "out of time"))
                continue
            run = run_train(prepare(self.work / name.replace(" ", "_"), variant, self.model))
            if run.returncode or not metric_last(run):
                self.add(Case(name, "failed", run.error()))
                continue
            rates[name] = steady_rate(run.summary, self.scale.batch_size)
            self.add(Case(name, "ok", figures={
                "samples_per_s": round(rates[name]), "val_acc": round(run.summary["value"], 4),
                "first_epoch_s": run.summary["epoch_seconds"][0], "device": run.summary["device"],
            }))
        folder = self.work / "hand_loop"
        folder.mkdir()
        (folder / "model.py").write_text(self.model)
        (folder / "hand_loop.py").write_text(HAND_LOOP)
        hand = finish(start(folder, script="hand_loop.py", args=(
            str(self.npz), str(self.scale.epochs), str(self.scale.batch_size), str(os.cpu_count()), "sgd")), folder)
        if hand.returncode:
            self.add(Case("hand-written loop", "failed", hand.error()))
            return
        figures = json.loads(hand.stdout.strip().splitlines()[-1])
        hand_rate = statistics.median(figures["epochs"][1:] or figures["epochs"])
        self.add(Case("hand-written loop", "ok", figures={"samples_per_s": round(hand_rate), "device": figures["device"]}))
        for name, rate in rates.items():
            ratio = rate / hand_rate
            # Only a GPU is held to the target: on a shared CPU, wall-clock ratios mostly measure the neighbours.
            status = "ok" if ratio >= HAND_RATIO_TARGET or not self.cuda else "failed"
            self.add(Case(f"{name} vs hand-written", status, f"target >= {HAND_RATIO_TARGET}x" if self.cuda else
                          "not judged on a CPU", {"ratio": round(ratio, 3)}))

    def sharing(self) -> None:
        """Two trials at once, each capped at half the GPU's memory."""
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        spec = base_spec(self.npz, self.scale)
        folders = [prepare(self.work / f"shared_{i}", spec, self.model) for i in range(2)]
        processes = [start(folder, {"AUTORAYSEARCH_GPU_MEMORY_FRACTION": "0.5"}) for folder in folders]
        runs = [finish(process, folder) for process, folder in zip(processes, folders)]
        failed = [run.error() for run in runs if run.returncode or not metric_last(run)]
        if failed:
            self.add(Case("two trials at half the memory each", "failed", "; ".join(failed)))
            return
        peaks = [run.summary["peak_memory_bytes"] for run in runs]
        under = all(peak <= 0.5 * total for peak in peaks)
        self.add(Case("two trials at half the memory each", "ok" if under else "failed",
                      "both finished, each under its cap" if under else "a trial went over its cap",
                      {"peak_gib": [round(p / 2**30, 2) for p in peaks], "cap_gib": round(0.5 * total / 2**30, 1)}))

    def out_of_memory(self) -> None:
        """A candidate needing 60 % of the GPU: out of memory at a 0.5 share, fine with the whole GPU."""
        spec = replace(base_spec(self.npz, self.scale), epochs=1)
        folder = prepare(self.work / "ballast", spec, self.model + BALLAST)
        with PeakWatch() as held:  # what the Ray worker measures before it believes an out-of-memory error
            capped = run_train(folder, {"AUTORAYSEARCH_GPU_MEMORY_FRACTION": "0.5"})
        real_oom = capped.returncode != 0 and "out of memory" in capped.stderr.lower()
        self.add(Case("over half the memory, capped at 0.5", "ok" if real_oom else "failed",
                      "out of memory, as expected" if real_oom else f"expected an out-of-memory error: {capped.error()}"))
        believed = held.share is not None and held.share >= NEAR_SHARE * 0.5
        self.add(Case("that out-of-memory error measured from outside", "ok" if believed else "failed",
                      "nvidia-smi saw it hold its share: it would be retried" if believed else
                      "nvidia-smi did not see it hold 80 % of its share: it would not be retried",
                      {"peak_share_of_gpu": None if held.share is None else round(held.share, 3)}))
        whole = run_train(folder)
        ok = whole.returncode == 0 and metric_last(whole)
        self.add(Case("over half the memory, whole GPU", "ok" if ok else "failed", "" if ok else whole.error(),
                      {"peak_gib": round(whole.summary["peak_memory_bytes"] / 2**30, 2)} if ok else {}))

    def ddp(self) -> None:
        """The DDP template: NCCL with world size 1 on one GPU; two gloo processes on a CPU."""
        spec = replace(base_spec(self.npz, self.scale), processes=2, epochs=2)
        folder = prepare(self.work / "ddp", spec, self.model)
        env = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]} if self.cuda else {
            "AUTORAYSEARCH_NUM_THREADS": "2"}
        run = run_train(folder, env)
        name = "DDP template, NCCL on one GPU" if self.cuda else "DDP template, gloo on 2 CPU processes"
        if run.returncode or not metric_last(run):
            self.add(Case(name, "failed", run.error()))
            return
        summary = run.summary
        expected = ("nccl", 1) if self.cuda else ("gloo", 2)
        ok = (summary.get("backend"), summary["processes"]) == expected and len(set(summary["parameter_checksums"])) == 1
        self.add(Case(name, "ok" if ok else "failed", "" if ok else f"expected backend/processes {expected}", {
            "backend": summary.get("backend"), "processes": summary["processes"], "val_acc": round(summary["value"], 4),
            "samples_per_s": round(steady_rate(summary, self.scale.batch_size)),
        }))

    def seeds_in_one_run(self) -> None:
        """Three seeds in one run: the same metric per seed as a run of each, for one start-up instead of three."""
        spec = replace(base_spec(self.npz, self.scale), epochs=1)
        folder = prepare(self.work / "seeds", spec, self.model)
        started = time.monotonic()
        apart = [run_train(folder, {"AUTORAYSEARCH_SEED": str(seed)}) for seed in range(3)]
        apart_s = time.monotonic() - started
        started = time.monotonic()
        together = run_train(folder, {"AUTORAYSEARCH_SEEDS": "0,1,2"})
        together_s = time.monotonic() - started
        failed = [run.error() for run in (*apart, together) if run.returncode or not metric_last(run)]
        if failed:
            self.add(Case("three seeds in one run", "failed", "; ".join(failed)))
            return
        each = [together.summary["seeds"][str(seed)]["value"] for seed in range(3)]
        same = [round(v, 4) for v in each] == [round(run.summary["value"], 4) for run in apart]
        self.add(Case("three seeds in one run", "ok" if same else "failed",
                      "each seed as in its own run" if same else "a seed scored differently from its own run",
                      {"together_s": round(together_s, 1), "apart_s": round(apart_s, 1), "val_acc": [round(v, 4) for v in each],
                       "device": together.summary["device"]}))

    def run_all(self) -> None:
        self.speed()
        if self.out_of_time():
            self.add(Case("three seeds in one run", "skipped", "out of time"))
        else:
            self.seeds_in_one_run()
        for name, check in (("sharing", self.sharing), ("out of memory", self.out_of_memory)):
            if not self.cuda:
                self.add(Case(name, "skipped", "needs a CUDA GPU: none here"))
            elif self.out_of_time():
                self.add(Case(name, "skipped", "out of time"))
            else:
                check()
        if self.out_of_time():
            self.add(Case("DDP template", "skipped", "out of time"))
        else:
            self.ddp()


def table(cases: list[Case]) -> str:
    lines = [f"{'case':40s} {'status':8s} figures / note", "-" * 100]
    for case in cases:
        figures = ", ".join(f"{k}={v}" for k, v in case.figures.items())
        lines.append(f"{case.name:40s} {case.status:8s} {'; '.join(x for x in (figures, case.note) if x)}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.txt (default: $OUT, else benchmarks/results)")
    args = parser.parse_args()
    import torch

    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    print(f"torch {torch.__version__} on {device}" + ("" if cuda else "; no CUDA: the CUDA cases are skipped"), flush=True)
    scale = GPU_SCALE if cuda else CPU_SCALE
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        npz = work / "cifar_like.npz"
        write_cifar_like(npz, scale)
        checker = Checker(work, npz, scale, cuda)
        checker.run_all()
    cases = checker.cases
    report = {
        "torch": torch.__version__, "device": device, "cuda": cuda, "scale": scale.__dict__,
        "seconds": round(time.monotonic() - started, 1), "cases": [case.__dict__ for case in cases],
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = f"torch {torch.__version__} on {device}, {report['seconds']} s\n" + table(cases)
    (out / "gpu_check.txt").write_text(text)
    print(text + f"written to {out}", flush=True)
    return 1 if any(case.status == "failed" for case in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
