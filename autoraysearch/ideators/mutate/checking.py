"""The build check: does a proposed model.py build, map the campaign's input to the right output, and train a step?

The number and structure rules propose edits they cannot prove from the text, so every proposal is
built before the ideator offers it. A batch of proposals is checked in one contained process (a fork
of the warm pre-flight helper, see trials.warm_check), each in its own module namespace: building a
small model takes milliseconds, a process per proposal would not. The check matches the trial
pre-flight (build, parameter cap, forward on a batch of 2, output shape, finite output) and adds one
training step, since a model that cannot take a backward pass would crash its trial.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.trials.preflight import CHECK_ENV, DEFAULT_PARAM_CAP, HIDDEN_ENV
from autoraysearch.trials import sandbox
from autoraysearch.trials.process import run_in_directory
from autoraysearch.trials.warm_check import shared_checker

BATCH = 40  # proposals per process; the cold fallback reads only its output's last lines
SCRIPT = "autoraysearch_build_check.py"
ARGUMENTS = "autoraysearch_build_check.json"
MARKER = "AUTORAYSEARCH_BUILD "
SECONDS_PER_PROPOSAL = 5.0

# Runs in the scratch folder; prints one MARKER + JSON line per proposal, in order.
_SCRIPT = r"""
import importlib.util, json, sys
import torch
torch.set_num_threads(1)
args = json.load(open("autoraysearch_build_check.json"))

def check(path):
    spec = importlib.util.spec_from_file_location("model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["model"] = module
    spec.loader.exec_module(module)
    model = module.Model(**args["model_kwargs"])
    parameters = sum(p.numel() for p in model.parameters())
    if parameters > args["param_cap"]:
        return False, f"{parameters} parameters", parameters
    if args["input_shape"] is None:
        return True, "", parameters
    torch.manual_seed(0)
    batch = torch.randn(2, *args["input_shape"])
    model.eval()
    with torch.no_grad():
        output = model(batch)
    expected = args["num_outputs"]
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or (expected and output.shape[1] != expected):
        return False, "wrong output", parameters
    if not bool(torch.isfinite(output).all()):
        return False, "non-finite output", parameters
    model.train()
    loss = model(batch).float().pow(2).mean()
    if loss.requires_grad:  # a model without parameters has nothing to train
        loss.backward()
    return True, "", parameters

for name in args["files"]:
    try:
        ok, reason, parameters = check(name)
    except BaseException as exc:
        ok, reason, parameters = False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", None
    print("AUTORAYSEARCH_BUILD " + json.dumps({"file": name, "ok": ok, "reason": reason, "parameters": parameters}), flush=True)
"""


@dataclass(frozen=True)
class Built:
    """The check's verdict on one model.py: whether it builds and trains a step, and its parameter count."""

    ok: bool
    parameters: int | None = None
    reason: str = ""


@dataclass
class BuildCheck:
    """Checks model.py texts against one campaign's input shape and arguments, remembering every verdict."""

    input_shape: list[int] | None
    model_kwargs: dict = field(default_factory=dict)
    num_outputs: int | None = None
    param_cap: int = DEFAULT_PARAM_CAP
    verdicts: dict[str, Built] = field(default_factory=dict)  # fingerprint -> verdict

    def __call__(self, sources: Sequence[str]) -> list[Built]:
        """The verdict on each source, checking only those not seen before."""
        keys = [fingerprint(source) for source in sources]
        fresh = {key: source for key, source in zip(keys, sources) if key not in self.verdicts}
        pending = list(fresh.items())
        while pending:
            batch, pending = pending[:BATCH], pending[BATCH:]
            found = self._run([source for _, source in batch])
            for index, (key, _) in enumerate(batch):
                if index in found:
                    self.verdicts[key] = found[index]
                elif index == len(found):
                    # The first proposal without a verdict hung or killed the process: it fails, the rest go again.
                    self.verdicts[key] = Built(False, reason="the check did not finish")
                else:
                    pending.insert(0, (key, fresh[key]))
        return [self.verdicts[key] for key in keys]

    def _run(self, sources: list[str]) -> dict[int, Built]:
        """Verdicts by position for one batch, in one contained process; those before any hang or crash."""
        names = [f"candidate_{index}.py" for index in range(len(sources))]
        arguments = {"files": names, "model_kwargs": self.model_kwargs, "input_shape": self.input_shape,
                     "num_outputs": self.num_outputs, "param_cap": self.param_cap}
        files = {**dict(zip(names, sources)), SCRIPT: _SCRIPT, ARGUMENTS: json.dumps(arguments)}
        output = _run_contained(files, 10 + SECONDS_PER_PROPOSAL * len(sources))
        verdicts = {}
        for line in output.splitlines():
            if line.startswith(MARKER):
                record = json.loads(line[len(MARKER):])
                verdicts[names.index(record["file"])] = Built(record["ok"], record["parameters"], record["reason"])
        return verdicts


@lru_cache(maxsize=8)
def _shared(input_shape: tuple | None, model_kwargs: str, num_outputs: int | None) -> BuildCheck:
    return BuildCheck(list(input_shape) if input_shape else None, json.loads(model_kwargs), num_outputs)


def shared_build_check(settings) -> BuildCheck:
    """One check per campaign setup in this process, so that its verdicts serve every iteration."""
    outputs = settings.model_kwargs.get("num_classes")
    shape = tuple(settings.input_shape) if settings.input_shape else None
    return _shared(shape, json.dumps(settings.model_kwargs, sort_keys=True), outputs if isinstance(outputs, int) else None)


def _run_contained(files: dict[str, str], timeout: float) -> str:
    """The check script's output, run in a fork of the warm helper, or in a fresh interpreter if that is unavailable."""
    env = {k: v for k, v in sandbox.trial_environment(os.environ).items() if k not in HIDDEN_ENV}
    env.update(CHECK_ENV)
    scratch = Path(tempfile.mkdtemp(prefix="autoraysearch-build-check-"))
    try:
        for name, text in files.items():
            (scratch / name).write_text(text)
        return shared_checker(env).run(scratch, SCRIPT, timeout, hide=HIDDEN_ENV).output
    except RuntimeError:
        cold = run_in_directory(files, [sys.executable, SCRIPT], timeout=timeout,
                                env={**{name: "" for name in HIDDEN_ENV}, **CHECK_ENV})
        return cold.output
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
