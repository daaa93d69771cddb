"""A warm interpreter for pre-flight checks: torch is imported once, each check runs in a fork of it.

A cold pre-flight spends about two seconds importing torch; the check itself takes a fraction of
that. Over hundreds of candidates a night, and against a loop whose own overhead is under a second,
that import matters. So one helper process per campaign process imports torch and then forks a child
per check: the child has torch already, runs the untrusted model code in its own process group and
scratch folder, and is killed with its whole group when it overruns. The helper itself never runs
model code and never starts torch's thread pool, so forking it is safe.

Protocol (one JSON object per line): the client writes {"dir": SCRATCH, "timeout": SECONDS, "script":
NAME, "hide": [ENV NAMES], "limits": {"pids": N, "memory": BYTES}}; the helper answers {"returncode": N, "timed_out": BOOL, "sandbox": TEXT,
"verdict": TEXT} once every process the check started is gone. Each check runs contained
(sandbox.contain: writes only to SCRATCH). The check's verdict is what it wrote (at most MAX_VERDICT
bytes) to the pipe named by AUTORAYSEARCH_METRIC_FD; its stdout and stderr land in SCRATCH/output.txt,
of which the client reads the last MAX_OUTPUT_BYTES.
"""

from __future__ import annotations

import atexit
import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from autoraysearch.trials import sandbox

OUTPUT_FILE = "output.txt"
MAX_OUTPUT_BYTES = 64 * 1024  # the end of a check's output that is read back; the rest is never loaded
ANSWER_SLACK_SECONDS = 30.0  # beyond the check's own timeout, before the helper counts as stuck

# Runs after sandbox.py's source, which gives it contain(), become_subreaper() and sweep_descendants().
_HELPER_MAIN = r"""
import json, sys
import torch  # the point of this process: every check forks with torch already imported

set_parent_death_signal(signal.SIGKILL)  # the helper dies with its client
become_subreaper()  # what a check starts in a session of its own still comes back to us
make_undumpable()  # a check that gets past its sandbox still cannot read our /proc/PID/environ

MAX_VERDICT = 64 * 1024

checks = 0

def run_check(request):
    global checks
    checks += 1
    cgroups, limits_note = make_trial_cgroups(f"autoraysearch-check-{os.getpid()}-{checks}", request.get("limits") or {})
    report_read, report_write = os.pipe()
    verdict_read, verdict_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            join_cgroups(cgroups)
            os.close(report_read)
            os.close(verdict_read)
            os.environ["AUTORAYSEARCH_METRIC_FD"] = str(verdict_write)
            set_parent_death_signal(signal.SIGKILL)
            os.setsid()
            for name in request["hide"]:
                os.environ.pop(name, None)
            os.chdir(request["dir"])
            for name, relative in CACHE_ENV.items():
                os.makedirs(relative, exist_ok=True)
                os.environ[name] = os.path.join(request["dir"], relative)
            out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            isolation = isolate(writable=[request["dir"], *shared_writable()])
            note = f"{contain([request['dir']])}; {isolation}; {drop_capabilities()}"
            os.write(report_write, (note + (f"; {limits_note}" if limits_note else "")).encode())
            os.close(report_write)
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
    os.close(report_write)
    os.close(verdict_write)
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
    sweep_descendants(0, 30.0)  # whatever the model code started outlives nothing, even outside its group
    remove_cgroups(cgroups)
    with os.fdopen(report_read, "rb") as report:
        note = report.read().decode(errors="replace") or "none: the check did not start"
    os.set_blocking(verdict_read, False)  # every writer is gone, unless one escaped: never wait for it
    try:
        verdict = os.read(verdict_read, MAX_VERDICT).decode(errors="replace")
    except BlockingIOError:
        verdict = ""
    os.close(verdict_read)
    return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out, "sandbox": note,
            "verdict": verdict}

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
    output: str  # the end of what it printed (stdout and stderr)
    sandbox: str = "none"  # which containment was in force, as sandbox.contain says
    verdict: str = ""  # what it wrote to its verdict channel (AUTORAYSEARCH_METRIC_FD)


class WarmChecker:
    """Runs check scripts in forks of a helper that imported torch once; restarts the helper if it dies."""

    def __init__(self, env: dict[str, str]):
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def run(self, scratch: Path, script: str, timeout: float, hide: tuple[str, ...] = (),
            limits: dict | None = None) -> CheckOutcome:
        """Run SCRATCH/script with SCRATCH as working folder and without the `hide` variables; one at a time.

        `limits` ({"pids": n, "memory": bytes}) caps the check in a cgroup of its own, as a trial's are.
        """
        # Blank our own keys in /proc/self/environ: the check is our grandchild and may read it.
        sandbox.scrub_secrets_from_environ_block()
        sandbox.scrub_secrets_from_environ_block(hide)
        with self._lock:
            proc = self._helper()
            request = json.dumps({"dir": str(scratch), "timeout": timeout, "script": script, "hide": list(hide),
                                  "limits": limits or {}})
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
        return CheckOutcome(answer["returncode"], answer["timed_out"], read_end(scratch / OUTPUT_FILE),
                            answer.get("sandbox", "none"), answer.get("verdict", ""))

    def close(self) -> None:
        with self._lock:
            self._stop_helper()

    def _helper(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _helper_source()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, env=self._env, text=True, start_new_session=True,
            )
        return self._proc

    def _stop_helper(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def read_end(path: Path, limit: int = MAX_OUTPUT_BYTES) -> str:
    """The last `limit` bytes of a file as text; "" when it is missing (a check's output can be any size)."""
    # The model code may have swapped the file for a link, a FIFO or a device: read only a regular file.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with open(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        handle.seek(max(0, handle.seek(0, 2) - limit))
        return handle.read(limit).decode(errors="replace")


def _helper_source() -> str:
    """sandbox.py's code followed by the helper's loop."""
    return Path(sandbox.__file__).read_text(encoding="utf-8") + _HELPER_MAIN


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
