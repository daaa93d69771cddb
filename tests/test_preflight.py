"""CPU pre-flight of candidate model.py files, in a real subprocess with real torch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import is_running

from autoraysearch.trials.preflight import preflight
from autoraysearch.trials.warm_check import WarmChecker

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py").read_text()
KWARGS = {"num_classes": 10}
SHAPE = [1, 8, 8]
EXAMPLE_PARAMETERS = 38_378  # counted by hand from the layers: conv 160+4640, bn 32+64, linear 32832+650


def check(source: str, **overrides):
    arguments = {"model_kwargs": KWARGS, "input_shape": SHAPE, "num_outputs": 10, **overrides}
    result = preflight(source, **arguments)
    print(f"\npre-flight: {result.seconds:.2f} s, ok={result.ok}, {result.describe() or 'passed'}")
    return result


def test_the_example_passes_with_its_parameter_count():
    result = check(EXAMPLE)
    assert (result.ok, result.reason, result.parameters, result.stage) == (True, "", EXAMPLE_PARAMETERS, "done")
    assert result.seconds < 15


def test_a_shape_error_is_caught_in_seconds_with_its_last_line():
    result = check(EXAMPLE.replace("nn.Linear(32 * 4 * 4, 64)", "nn.Linear(256, 64)"))
    assert not result.ok and result.stage == "forward"
    assert result.reason == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x512 and 256x64)"
    assert result.seconds < 15


def test_a_wrong_number_of_outputs_is_caught():
    result = check(EXAMPLE.replace("nn.Linear(64, num_classes)", "nn.Linear(64, 5)"))
    assert not result.ok and result.stage == "output"
    assert result.reason == "output shape is (2, 5) for a batch of shape (2, 1, 8, 8), expected (2, 10)"


@pytest.mark.parametrize(
    "source, kwargs, stage, reason",
    [
        ("import not_a_module\n", KWARGS, "import", "ModuleNotFoundError: No module named 'not_a_module'"),
        ("x = 1\n", KWARGS, "import", "model.py defines no `Model`"),
        ("import sys\nsys.exit(4)\n", KWARGS, "import", "SystemExit: 4"),
        (EXAMPLE, {"num_classes": 10, "depth": 3}, "build", "TypeError: Model.__init__() got an unexpected keyword argument 'depth'"),
    ],
    ids=["import-error", "no-Model", "exit-at-import", "bad-kwargs"],
)
def test_failures_before_the_forward_pass(source, kwargs, stage, reason):
    result = check(source, model_kwargs=kwargs)
    assert (result.ok, result.stage, result.reason) == (False, stage, reason)


def test_without_input_shape_only_import_build_and_count():
    broken_forward = EXAMPLE.replace("return self.classifier(self.features(x))", "raise RuntimeError('never called')")
    result = check(broken_forward, input_shape=None)
    assert result.ok and result.parameters == EXAMPLE_PARAMETERS


def test_parameter_cap():
    result = check(EXAMPLE, param_cap=10_000)
    assert (result.ok, result.stage, result.parameters) == (False, "parameters", EXAMPLE_PARAMETERS)
    assert result.reason == "38,378 parameters, more than the cap of 10,000"


def test_a_hang_is_killed_at_the_timeout():
    result = check("import time\ntime.sleep(600)\n", timeout_s=2)
    assert (result.ok, result.stage, result.reason) == (False, "timeout", "did not finish within 2 s")
    assert result.seconds < 10


def test_model_code_cannot_read_api_keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SENTINEL-preflight")
    monkeypatch.setenv("MY_KEY", "sk-SENTINEL-preflight")
    source = "import os\nraise RuntimeError(repr([os.environ.get('OPENAI_API_KEY'), os.environ.get('MY_KEY')]))\n"
    result = check(source, hidden_env=("MY_KEY",))
    assert result.reason in ("RuntimeError: ['', '']", "RuntimeError: [None, None]")
    cold = check(source, hidden_env=("MY_KEY",), warm=False)
    assert cold.reason in ("RuntimeError: ['', '']", "RuntimeError: [None, None]")


def test_the_warm_helper_hides_named_variables_kills_overruns_and_restarts(tmp_path):
    env = {**os.environ, "MY_KEY": "sk-SENTINEL-warm"}
    checker = WarmChecker(env)
    try:
        (tmp_path / "show.py").write_text("import os\nprint(os.environ.get('MY_KEY'), os.environ.get('OTHER'))\n")
        shown = checker.run(tmp_path, "show.py", timeout=30, hide=("MY_KEY",))
        assert (shown.returncode, shown.timed_out, shown.output.strip()) == (0, False, "None None")

        # A check that starts a grandchild and hangs: both are killed with the check's process group.
        (tmp_path / "hang.py").write_text(
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n"
        )
        hung = checker.run(tmp_path, "hang.py", timeout=1.0)
        assert hung.timed_out
        grandchild = int(hung.output.split()[0])
        deadline = time.monotonic() + 5
        while is_running(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not is_running(grandchild)

        # The helper itself died: the next check starts a new one.
        checker._proc.kill()
        checker._proc.wait()
        after = checker.run(tmp_path, "show.py", timeout=30)
        assert after.returncode == 0 and after.output.strip() == "sk-SENTINEL-warm None"
    finally:
        checker.close()


FRAGILE_MODEL = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        if self.conv.kernel_size != (3, 3) or type(self.act) is not nn.ReLU:
            raise ValueError("this model only works with 3x3 kernels and ReLU")
        return self.head(self.act(self.conv(x)).flatten(1))
'''


@pytest.mark.slow
def test_mutations_that_would_fail_preflight_are_never_proposed_or_trained(services, tmp_path):
    from autoraysearch.flows.loop import autoraysearch_loop
    from autoraysearch.flows.setup_experiment import autoraysearch_setup
    from autoraysearch.campaign.results_log import read_results_log
    from helpers import make_repo

    exp = make_repo(tmp_path / "exp", {"model.py": FRAGILE_MODEL})
    autoraysearch_setup(experiment_dir=str(exp), epochs=1)
    summary = autoraysearch_loop(experiment_dir=str(exp), max_iterations=1)
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    # The ideator's build check dropped every kernel and activation change (they raise in forward):
    # the iteration trained a change that works, never a crash.
    # (a keep is followed by its path check, 1.path)
    assert [r.iteration for r in rows if not r.iteration.endswith(".path")] == ["0", "1"] and summary.iterations == 1
    assert rows[1].status in ("keep", "discard", "pruned"), rows[1].description
    assert "kernel_size" not in rows[1].description and "activation" not in rows[1].description


CUDA_IN_INIT = """
import torch.nn as nn

class Model(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)).cuda()

    def forward(self, x):
        return self.net(x)
"""


def test_a_model_that_moves_itself_to_the_gpu_passes_only_where_trials_get_one():
    from autoraysearch.campaign.settings import CampaignSettings
    from autoraysearch.trials.preflight import preflight_sources

    common = dict(model_kwargs={"num_classes": 10}, input_shape=[1, 8, 8])
    [on_cpu] = preflight_sources([CUDA_IN_INIT], CampaignSettings(gpus_per_trial=0, **common))
    [on_gpu] = preflight_sources([CUDA_IN_INIT], CampaignSettings(gpus_per_trial=1, **common))
    assert not on_cpu.ok and on_cpu.stage == "build"
    assert on_gpu.ok and on_gpu.stage == "gpu" and "needs a GPU" in on_gpu.reason
