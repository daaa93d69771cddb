"""CPU pre-flight of a candidate model.py: import it, build `Model`, count parameters, map a tiny batch.

A candidate that cannot even do this would crash on the cluster after waiting for resources; catching
it here costs a fork of a warm interpreter (see warm_check) and gives the ideator a precise reason.
The check runs in its own process because the code is untrusted and may hang, crash the interpreter
or leak memory; `trial_process.run_in_directory` gives it a scratch folder, a timeout and a clean
kill of everything it starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from autoraysearch.campaign.settings import CampaignSettings
from autoraysearch.trials import sandbox
from autoraysearch.trials.process import TrialLimits, run_in_directory
from autoraysearch.trials.runs import trial_limits
from autoraysearch.trials.warm_check import CheckOutcome, shared_checker

log = logging.getLogger(__name__)

CHECK_SCRIPT = "autoraysearch_preflight.py"
ARGUMENTS_FILE = "autoraysearch_preflight.json"
MAX_REASON_CHARS = 300
DEFAULT_PARAM_CAP = 200_000_000
DEFAULT_TIMEOUT_S = 60.0
# Credentials the untrusted model code must not be able to read (and print into a reason).
HIDDEN_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
CHECK_ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}  # a CPU check; leave the GPUs alone
# What a model that moves itself to the GPU in its own code (`.cuda()` in __init__) fails with on the CPU.
_NEEDS_A_GPU = re.compile(
    r"Torch not compiled with CUDA|No CUDA GPUs are available|Found no NVIDIA driver|no CUDA-capable device"
    r"|CUDA driver initialization failed", re.IGNORECASE,
)

# Runs in the scratch folder next to model.py; writes its verdict, one JSON line, to the pipe named by
# AUTORAYSEARCH_METRIC_FD (taken before model.py is imported; printing cannot forge it). Every stage
# catches its own failure so the reason names the stage; the model is imported before torch so that
# an import error or a hang at import is reported without paying for torch first.
_CHECK = r"""
import importlib, json, os, sys

VERDICT = os.fdopen(int(os.environ.pop("AUTORAYSEARCH_METRIC_FD")), "w")

def finish(**result):
    # os._exit: no SystemExit for the except below to catch, no atexit hooks of the model's code.
    VERDICT.write(json.dumps(result) + "\n")
    VERDICT.flush()
    os._exit(0)

def describe(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

with open("autoraysearch_preflight.json") as handle:
    args = json.load(handle)
stage = "import"
parameters = None
try:
    module = importlib.import_module("model")
    Model = getattr(module, "Model", None)
    if Model is None:
        finish(ok=False, stage=stage, reason="model.py defines no `Model`", parameters=None)
    import torch
    torch.set_num_threads(1)
    stage = "build"
    try:
        # Count on the meta device first: a model far over the cap is refused without allocating it.
        with torch.device("meta"):
            parameters = sum(p.numel() for p in Model(**args["model_kwargs"]).parameters())
    except Exception:
        parameters = None  # some models cannot be built on meta; the real build below decides
    if parameters is not None and parameters > args["param_cap"]:
        finish(ok=False, stage="parameters", parameters=parameters,
               reason=f"{parameters:,} parameters, more than the cap of {args['param_cap']:,}")
    model = Model(**args["model_kwargs"])
    parameters = sum(p.numel() for p in model.parameters())
    if parameters > args["param_cap"]:
        finish(ok=False, stage="parameters", parameters=parameters,
               reason=f"{parameters:,} parameters, more than the cap of {args['param_cap']:,}")
    if args["input_shape"] is not None:
        stage = "forward"
        batch = torch.randn(2, *args["input_shape"])
        model.eval()
        with torch.no_grad():
            output = model(batch)
        stage = "output"
        if not isinstance(output, torch.Tensor):
            finish(ok=False, stage=stage, parameters=parameters,
                   reason=f"forward returned {type(output).__name__}, not a tensor")
        expected = args["num_outputs"]
        if expected is not None and tuple(output.shape) != (2, expected):
            finish(ok=False, stage=stage, parameters=parameters,
                   reason=f"output shape is {tuple(output.shape)} for a batch of shape {tuple(batch.shape)}, "
                          f"expected (2, {expected})")
        if output.is_floating_point() and not bool(torch.isfinite(output).all()):
            finish(ok=False, stage=stage, parameters=parameters, reason="the output holds NaN or infinity")
    finish(ok=True, stage="done", reason="", parameters=parameters)
except BaseException as exc:  # SystemExit or KeyboardInterrupt raised by the model's code too
    finish(ok=False, stage=stage, reason=describe(exc), parameters=parameters)
"""


@dataclass(frozen=True)
class PreflightResult:
    """Whether a candidate model.py survived the CPU check, and if not, the error's last line."""

    ok: bool
    reason: str
    seconds: float
    parameters: int | None
    stage: str = ""  # import, build, parameters, forward, output, timeout, done

    def describe(self) -> str:
        """The failure as one phrase for a person or an LLM, saying where it happened."""
        where = {
            "import": "while importing model.py",
            "build": "while building Model",
            "forward": "in the forward pass on a batch of 2",
        }.get(self.stage)
        return f"{self.reason} ({where})" if where and self.reason else self.reason


def preflight(
    model_source: str,
    model_kwargs: dict,
    input_shape: list[int] | None,
    num_outputs: int | None,
    param_cap: int = DEFAULT_PARAM_CAP,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    hidden_env: tuple[str, ...] = (),
    warm: bool = True,
) -> PreflightResult:
    """Import, build and (given input_shape) run model.py on a (2, *input_shape) batch in another process.

    warm=True forks the check from a helper that has torch imported already (a few tenths of a second
    instead of seconds); warm=False, or a helper that died, runs it in a fresh interpreter.
    """
    arguments = {
        "model_kwargs": dict(model_kwargs),
        "input_shape": list(input_shape) if input_shape is not None else None,
        "num_outputs": num_outputs,
        "param_cap": param_cap,
    }
    files = {"model.py": model_source, CHECK_SCRIPT: _CHECK, ARGUMENTS_FILE: json.dumps(arguments)}
    hidden = (*HIDDEN_ENV, *hidden_env)
    started = time.monotonic()
    limits = trial_limits(1.0)  # one CPU's share of the node, as a one-CPU trial gets
    outcome = _run_warm(files, timeout_s, hidden, limits) if warm else None
    if outcome is None:
        # run_in_directory can only overlay the environment, so secrets are blanked rather than removed.
        env = {name: "" for name in hidden}
        env.update(CHECK_ENV)
        cold = run_in_directory(files, [sys.executable, CHECK_SCRIPT], timeout=timeout_s, env=env, limits=limits)
        outcome = CheckOutcome(cold.returncode, cold.timed_out, cold.output, cold.sandbox,
                               "\n".join(cold.channel_lines))
        last_error = cold.last_error_line
    else:
        last_error = _last_line(outcome.output)
    seconds = round(time.monotonic() - started, 2)
    if outcome.timed_out:
        return PreflightResult(False, f"did not finish within {timeout_s:g} s", seconds, None, "timeout")
    result, problem = read_verdict(outcome.verdict)
    if result is None:
        # No verdict: the interpreter died (segfault, os._exit, out of memory) before writing one.
        reason = problem or last_error or f"the check exited with code {outcome.returncode} without a result"
        return PreflightResult(False, _clip(reason), seconds, None, "crash")
    return PreflightResult(
        ok=bool(result.get("ok")),
        reason=_clip(str(result.get("reason", ""))),
        seconds=seconds,
        parameters=result.get("parameters"),
        stage=str(result.get("stage", "")),
    )


def preflight_sources(
    sources: list[str],
    settings: CampaignSettings,
    param_cap: int = DEFAULT_PARAM_CAP,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    hidden_env: tuple[str, ...] = (),
) -> list[PreflightResult]:
    """Pre-flight candidate model.py texts with the arguments and input shape the campaign's train.py uses."""
    num_outputs = settings.model_kwargs.get("num_classes")
    results = [
        preflight(
            source, settings.model_kwargs, settings.input_shape, num_outputs if isinstance(num_outputs, int) else None,
            param_cap=param_cap, timeout_s=timeout_s, hidden_env=hidden_env,
        )
        for source in sources  # one at a time: a warm check takes a few hundredths of a second
    ]
    return [passed_for_its_gpu(r) if settings.gpus_per_trial > 0 else r for r in results]


def passed_for_its_gpu(result: PreflightResult) -> PreflightResult:
    """A model that failed only because the CPU check has no GPU passes: its trials get one, and judge it there."""
    if result.ok or result.stage not in ("import", "build", "forward") or not _NEEDS_A_GPU.search(result.reason):
        return result
    return replace(result, ok=True, reason=f"needs a GPU in its own code, checked on the GPU it trains on ({result.reason})",
                   stage="gpu")


def _run_warm(files: dict[str, str], timeout_s: float, hidden: tuple[str, ...], limits: TrialLimits) -> CheckOutcome | None:
    """The check in a fork of this process's warm helper, or None when the helper is unavailable."""
    env = {k: v for k, v in sandbox.trial_environment(os.environ).items() if k not in hidden}
    env.update(CHECK_ENV)
    scratch = Path(tempfile.mkdtemp(prefix="autoraysearch-preflight-"))
    try:
        for name, text in files.items():
            (scratch / name).write_text(text)
        return shared_checker(env).run(scratch, CHECK_SCRIPT, timeout_s, hide=hidden, limits=limits.as_config())
    except RuntimeError as exc:
        log.warning("pre-flight falls back to a fresh interpreter: %s", exc)
        return None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def read_verdict(text: str) -> tuple[dict | None, str]:
    """(the check's verdict, "") from its channel, or (None, why not): it must be exactly one JSON object."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None, ""
    if len(lines) > 1:
        return None, "the model code wrote to the pre-flight's verdict channel"
    try:
        verdict = json.loads(lines[0])
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict):
        return None, "the pre-flight's verdict channel held no verdict"
    return verdict, ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."
