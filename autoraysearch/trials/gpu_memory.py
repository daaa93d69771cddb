"""How much GPU memory a trial's processes hold, read by nvidia-smi from outside the trial.

A trial that prints "CUDA out of memory" at a fraction of a GPU is run once more on a whole GPU.
What it printed is not evidence (model code can print anything), so while such a trial runs, its
Ray worker samples the GPU memory held by the trial's processes; the retry needs both the message
and a peak near the trial's share. Where nvidia-smi is missing (no NVIDIA GPU, or another vendor's),
nothing is measured and the message alone decides, as the README says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

from autoraysearch.trials.sandbox import live_descendants

SAMPLE_EVERY_S = 0.5
QUERY_TIMEOUT_S = 5.0
NEAR_SHARE = 0.8  # a peak at this much of the trial's share (gpus x the GPU's memory) counts as running out


def _query(kind: str, fields: str) -> list[list[str]] | None:
    """nvidia-smi's CSV answer to `--query-KIND=FIELDS`, split; None when it cannot be asked."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, f"--query-{kind}={fields}", "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def held_by(pids: set[int]) -> float | None:
    """MiB of GPU memory the processes `pids` hold, all GPUs together; None when it cannot be measured."""
    rows = _query("compute-apps", "pid,used_memory")
    if rows is None:
        return None
    held = 0.0
    for row in rows:
        try:
            if int(row[0]) in pids:
                held += float(row[1])
        except (ValueError, IndexError):
            continue
    return held


def gpu_total_mib() -> float | None:
    """The memory of the largest GPU this process sees, in MiB; None when it cannot be measured."""
    rows = _query("gpu", "memory.total")
    sizes = []
    for row in rows or []:
        try:
            sizes.append(float(row[0]))
        except (ValueError, IndexError):
            continue
    return max(sizes) if sizes else None


class PeakWatch:
    """While the block runs, the peak share of a GPU's memory held by this process's descendants (the trial).

    `share` is None when nothing could be measured (no nvidia-smi, or it failed every time).
    """

    def __init__(self, every_s: float = SAMPLE_EVERY_S):
        self.every_s = every_s
        self.share: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakWatch":
        total = gpu_total_mib()
        if total:
            self._thread = threading.Thread(target=self._watch, args=(total,), daemon=True, name="gpu-memory-watch")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self, total: float) -> None:
        root = os.getpid()
        while True:
            held = held_by(set(live_descendants(root)))
            if held is not None:
                self.share = max(self.share or 0.0, held / total)
            if self._stop.wait(self.every_s):
                return
