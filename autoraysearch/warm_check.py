"""A warm interpreter for pre-flight checks: torch is imported once, each check runs in a fork of it.

A cold pre-flight spends about two seconds importing torch; the check itself takes a fraction of
that. Over hundreds of candidates a night, and against a loop whose own overhead is under a second,
that import matters. So one helper process per campaign process imports torch and then forks a child
per check: the child has torch already, runs the untrusted model code in its own process group and
scratch folder, and is killed with its whole group when it overruns. The helper itself never runs
model code and never starts torch's thread pool, so forking it is safe.

Protocol (one JSON object per line): the client writes {"dir": SCRATCH, "timeout": SECONDS, "script":
NAME, "hide": [ENV NAMES]}; the helper answers {"returncode": N, "timed_out": BOOL} once the check's group is gone. The
check's stdout and stderr land in SCRATCH/output.txt.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

OUTPUT_FILE = "output.txt"
ANSWER_SLACK_SECONDS = 30.0  # beyond the check's own timeout, before the helper counts as stuck

_HELPER = r"""
import ctypes, json, os, signal, sys, time
import torch  # the point of this process: every check forks with torch already imported

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # the helper dies with its client

def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True

def run_check(request):
    pid = os.fork()
    if pid == 0:
        try:
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            os.setsid()
            for name in request["hide"]:
                os.environ.pop(name, None)
            os.chdir(request["dir"])
            out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            sys.path.insert(0, request["dir"])
            sys.argv = [request["script"]]
            with open(request["script"]) as handle:
                code = compile(handle.read(), request["script"], "exec")
            exec(code, {"__name__": "__main__"})
            os._exit(0)
        except BaseException as exc:
            try:
                print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            finally:
                os._exit(1)
    deadline = time.monotonic() + request["timeout"]
    timed_out, status = False, None
    while status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
        elif time.monotonic() > deadline:
            timed_out = True
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        else:
            time.sleep(0.005)
    if group_alive(pid):  # whatever the model code started outlives nothing
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}

for line in sys.stdin:
    answer = run_check(json.loads(line))
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
"""


@dataclass(frozen=True)
class CheckOutcome:
    """How one check ended: its exit code, whether it was killed for time, and what it printed."""

    returncode: int
    timed_out: bool
    output: str


class WarmChecker:
    """Runs check scripts in forks of a helper that imported torch once; restarts the helper if it dies."""

    def __init__(self, env: dict[str, str]):
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def run(self, scratch: Path, script: str, timeout: float, hide: tuple[str, ...] = ()) -> CheckOutcome:
        """Run SCRATCH/script with SCRATCH as working folder and without the `hide` variables; one at a time."""
        with self._lock:
            proc = self._helper()
            request = json.dumps({"dir": str(scratch), "timeout": timeout, "script": script, "hide": list(hide)})
            try:
                proc.stdin.write(request + "\n")
                proc.stdin.flush()
                line = _read_line(proc, timeout + ANSWER_SLACK_SECONDS)
            except (BrokenPipeError, OSError):
                line = ""
            if not line:
                self._stop_helper()
                raise RuntimeError("the pre-flight helper process died; it is restarted on the next check")
            answer = json.loads(line)
        output_path = scratch / OUTPUT_FILE
        output = output_path.read_text(errors="replace") if output_path.exists() else ""
        return CheckOutcome(answer["returncode"], answer["timed_out"], output)

    def close(self) -> None:
        with self._lock:
            self._stop_helper()

    def _helper(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=self._env, text=True, start_new_session=True,
            )
        return self._proc

    def _stop_helper(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One answer line, or "" if the helper died or stopped answering."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


_shared: WarmChecker | None = None
_shared_lock = threading.Lock()


def shared_checker(env: dict[str, str]) -> WarmChecker:
    """This process's helper, started on first use and stopped when the process exits."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = WarmChecker(env)
            atexit.register(_shared.close)
        return _shared
