"""A trial's "CUDA out of memory" buys a rerun on a whole GPU only when it did hold most of its share.

No GPU here, so nvidia-smi is a fake (named so): a script on PATH that reports, for the pid the trial
wrote down, the memory the test says it holds. Everything else is real: the trial runs contained,
and its Ray worker's side (tasks.verify.run_trial) samples while it runs.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Trial
from autoraysearch.trials.runs import GPU_FRACTION_ENV, ran_out_of_gpu_memory
from tasks.verify import run_trial

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux-only")

FAKE_NVIDIA_SMI = textwrap.dedent("""\
    #!/bin/sh
    # A stand-in for nvidia-smi on a machine without a GPU: one 80 GiB GPU, and the pid in $FAKE_PID_FILE
    # holding $FAKE_HELD_MIB of it.
    case "$1" in
      --query-gpu=*) echo 81920 ;;
      --query-compute-apps=*) [ -s "$FAKE_PID_FILE" ] && echo "$(cat "$FAKE_PID_FILE"), $FAKE_HELD_MIB" ;;
    esac
    exit 0
""")

CLAIMS_OUT_OF_MEMORY = textwrap.dedent("""\
    import os, sys, time
    with open(PID_FILE + ".part", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(PID_FILE + ".part", PID_FILE)
    time.sleep(2)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
""")


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch, trial_dir):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (tools / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PID_FILE", str(trial_dir / "pid"))
    return trial_dir / "pid"


def claiming_trial(pid_file: Path, gpus: float = 0.5) -> Trial:
    script = CLAIMS_OUT_OF_MEMORY.replace("PID_FILE", repr(str(pid_file)))
    return Trial(label="1", files={"train.py": script}, metric="val_acc", timeout=60,
                 env={GPU_FRACTION_ENV: f"{gpus * 0.95:.3f}"})


@pytest.mark.parametrize("held_mib, retried", [(512, False), (38000, True)], ids=["only-said-so", "held-its-share"])
def test_out_of_gpu_memory_needs_the_memory_held_not_only_the_message(fake_nvidia_smi, monkeypatch, held_mib, retried):
    monkeypatch.setenv("FAKE_HELD_MIB", str(held_mib))

    result = run_trial(claiming_trial(fake_nvidia_smi))

    assert result.status == "crash" and "CUDA out of memory" in result.output
    assert result.gpu_memory_share == pytest.approx(held_mib / 81920)
    assert ran_out_of_gpu_memory(result, 0.5) is retried


def test_without_nvidia_smi_the_message_decides(tmp_path, monkeypatch, trial_dir):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    result = run_trial(claiming_trial(trial_dir / "pid"))
    assert result.gpu_memory_share is None
    assert ran_out_of_gpu_memory(result, 0.5)
