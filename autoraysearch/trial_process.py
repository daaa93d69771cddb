"""Run one trial's command in a fresh scratch directory, streaming its output and never leaking processes.

This is the only module of autoraysearch that starts subprocesses. A trial runs inside a Ray worker,
possibly on another machine, so the guarantees below are about that worker's host:

* The trial runs in its own session / process group, so the whole tree it forks (DDP ranks,
  DataLoader workers, ...) is signalled with one ``os.killpg``.
* On timeout, on a caller interruption (Ray's cancellation raises KeyboardInterrupt in the worker
  thread) and on normal exit (stray grandchildren), the group gets SIGTERM, a grace period, then
  SIGKILL, and we wait until no live member remains.
* On Linux, if the launching worker is SIGKILLed, the tree is taken down too: the command is started
  through a tiny supervisor that asks the kernel (``prctl(PR_SET_PDEATHSIG)``) for a signal when its
  parent dies and then kills its group; since Ray SIGKILLs a dead worker's direct children at once,
  the supervisor also forks a watchdog that does the same when the supervisor itself dies. The
  supervisor is used instead of a ``preexec_fn`` because
  ``preexec_fn`` may deadlock in a threaded parent such as a Ray worker, and because a death signal set
  on the direct child alone would orphan the grandchildren. PDEATHSIG is tied to the launching
  THREAD, not the process: the tree is killed when the thread that called ``run_in_directory`` exits.
  That thread blocks in this function for the trial's whole life, so this only matters if it is
  killed from outside.

No signal handlers are installed in the calling process, so any thread may call ``run_in_directory``.

Other things a caller should know: the scratch directory, and anything the trial writes there, is
deleted afterwards, so artifacts must go to a path passed in `env`; the log file is truncated at
start; `env` may override ``PYTHONUNBUFFERED=1``; zombies (dead but unreaped, e.g. orphans under a
container PID 1 that never reaps) count as gone; a process that leaves the group itself (``setsid``)
is beyond our reach.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from autoraysearch.errors import AutoraysearchError

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "autoraysearch-trial-"
# Keys the campaign may hold (LLM ideators, Prefect Cloud) that model code never gets to see.
SECRET_ENV = frozenset({"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PREFECT_API_KEY"})
TERM_GRACE_SECONDS = 3.0  # time a trial gets between SIGTERM and SIGKILL
KILL_WAIT_SECONDS = 30.0  # after SIGKILL; dying CUDA processes can take a while to release the GPU
POLL_SECONDS = 0.05  # short sleeps keep async exceptions (Ray cancellation) responsive
READER_JOIN_SECONDS = 5.0  # only a process that escaped the group can hold the pipes longer
STDOUT_TAIL_LINES = 50
MAX_LINE_BYTES = 64 * 1024  # bounds memory for output without newlines (progress bars)

# Runs as `python -I -S -c SUPERVISOR <launcher pid> <grace> <command...>` in the trial's cwd.
# -I keeps the trial's own files (e.g. a user `signal.py`) from shadowing the stdlib here.
_SUPERVISOR = r"""
import ctypes, os, resource, signal, sys, time

PR_SET_PDEATHSIG = 1
launcher, grace, command = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]

def kill_group():
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)
    time.sleep(grace)
    os.killpg(group, signal.SIGKILL)

def on_hangup(signum, frame):
    # SIGHUP is our parent-death signal; ignore it unless the launcher really is gone.
    if os.getppid() != launcher:
        kill_group()

def report(code):
    # Exit like the command did, so the launcher sees the same returncode as without us.
    if code >= 0:
        os._exit(code)
    if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot (and need not) be reset
        signal.signal(-code, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), -code)
    os._exit(128 - code)

signal.signal(signal.SIGHUP, on_hangup)
# The launcher's SIGTERM to the group is meant for the command; stay to report its exit status.
signal.signal(signal.SIGTERM, lambda signum, frame: None)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0) != 0:
    os.write(2, b"autoraysearch: prctl(PR_SET_PDEATHSIG) failed; the trial may outlive its launcher\n")
if os.getppid() != launcher:
    os._exit(1)  # the launcher died before the death signal was armed
supervisor = os.getpid()
watchdog = os.fork()
if watchdog == 0:
    # Ray SIGKILLs a dead worker's direct children (this supervisor) before they can act. This
    # grandchild of the worker survives that, notices its parent is gone, and kills the group.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, lambda signum, frame: os.getppid() != supervisor and kill_group())
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)
    if os.getppid() != supervisor:
        kill_group()
    while True:
        signal.pause()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"autoraysearch: cannot run {command[0]!r}: {exc}\n".encode())
    os._exit(127)
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
os.kill(watchdog, signal.SIGKILL)
os.waitpid(watchdog, 0)
report(status)
"""


@dataclass(frozen=True)
class ProcessOutcome:
    """What a finished (or timed-out) trial command left behind."""

    returncode: int | None  # None when killed for timeout or interruption
    timed_out: bool
    seconds: float  # wall time
    stdout_tail: list[str]  # last non-empty stdout lines, without newlines
    output: str  # combined stdout+stderr as logged, the last max_output_bytes with a cut note
    last_error_line: str  # last non-empty stderr line, else of output; "" if none


def run_in_directory(
    files: dict[str, str],
    command: list[str],
    *,
    timeout: float | None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    max_output_bytes: int = 1_000_000,
    scratch_root: Path | None = None,
) -> ProcessOutcome:
    """Write `files` (relative name -> text) into a fresh scratch directory, run `command` there, clean up."""
    if not command:
        raise ValueError("command must not be empty")
    for name in files:
        _check_relative_name(name)
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_root))
    try:
        _write_files(scratch, files)
        return _run(command, scratch, timeout, env, log_path, max_output_bytes)
    finally:
        _remove_tree(scratch)


def kill_process_group(pgid: int, grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM the group, wait up to `grace` seconds, SIGKILL it, and wait until no live member remains."""
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to kill process group {pgid}")
    if not _signal_group(pgid, signal.SIGTERM) or _wait_group_gone(pgid, grace):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not _wait_group_gone(pgid, KILL_WAIT_SECONDS):
        log.warning("process group %d still has live members %.0f s after SIGKILL", pgid, KILL_WAIT_SECONDS)


def _check_relative_name(name: str) -> None:
    """Reject a file name that is empty, absolute or could land outside the scratch directory."""
    path = PurePosixPath(name)
    if not name or "\0" in name or path.is_absolute() or ".." in path.parts or path == PurePosixPath("."):
        raise AutoraysearchError(
            f"trial file name {name!r} is not a plain relative path; use names like 'train.py' or 'pkg/util.py'."
        )


def _write_files(scratch: Path, files: dict[str, str]) -> None:
    """Write each file's text as UTF-8, creating subdirectories as needed."""
    for name, text in files.items():
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as handle:  # newline="": keep text byte-exact
            handle.write(text)


def _remove_tree(path: Path) -> None:
    """Delete the scratch directory, even parts the trial made read-only."""

    def make_writable_and_retry(func, failed_path, _exc_info):
        os.chmod(os.path.dirname(failed_path), stat.S_IRWXU)
        if os.path.isdir(failed_path) and not os.path.islink(failed_path):
            os.chmod(failed_path, stat.S_IRWXU)
        func(failed_path)

    # Python 3.12 renamed the hook (onerror is deprecated there); the handler ignores the third argument.
    hook = {"onexc" if sys.version_info >= (3, 12) else "onerror": make_writable_and_retry}
    try:
        shutil.rmtree(path, **hook)
    except OSError:
        log.warning("could not remove trial scratch directory %s", path, exc_info=True)


def _run(
    command: list[str],
    scratch: Path,
    timeout: float | None,
    env: dict[str, str] | None,
    log_path: Path | None,
    max_output_bytes: int,
) -> ProcessOutcome:
    """Start the command in its own session, stream its output, and end it and its whole group."""
    collector = _OutputCollector(log_path, max_output_bytes)
    try:
        started = time.monotonic()
        proc = subprocess.Popen(
            _launch_argv(command),
            cwd=scratch,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killpg reaches every descendant
        )
        deadline = None if timeout is None else started + timeout
        readers: list[threading.Thread] = []
        try:
            readers = _start_readers(proc, collector)
            exited = _wait_for_exit(proc, deadline)
        except BaseException:
            _kill_after_interrupt(proc)
            _join_readers(readers)
            raise
        # After a normal exit this only removes strays; after a timeout it is the actual kill.
        kill_process_group(proc.pid)
        returncode = proc.wait()
        _join_readers(readers)
        return collector.outcome(
            returncode=returncode if exited else None,
            timed_out=not exited,
            seconds=time.monotonic() - started,
        )
    finally:
        collector.close()


def _launch_argv(command: list[str]) -> list[str]:
    """The argv to start: the command itself, behind the parent-death supervisor where Linux has one."""
    if not sys.platform.startswith("linux") or not sys.executable:
        return list(command)
    return [sys.executable, "-I", "-S", "-c", _SUPERVISOR, str(os.getpid()), str(TERM_GRACE_SECONDS), *command]


def _child_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The caller's environment, less API keys, plus `extra`; unbuffered so lines reach the log as printed."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _wait_for_exit(proc: subprocess.Popen, deadline: float | None) -> bool:
    """Sleep in short steps until the child exits (True) or the deadline passes (False)."""
    while not _has_exited(proc):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _has_exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, leaving it unreaped where possible."""
    # An unreaped zombie keeps its pid, which is the group id, from being reused while we kill strays.
    if not hasattr(os, "waitid"):
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped elsewhere (e.g. SIGCHLD ignored in this process)


def _kill_after_interrupt(proc: subprocess.Popen) -> None:
    """Kill the group after the caller was interrupted; a second interruption skips straight to SIGKILL."""
    try:
        kill_process_group(proc.pid)
        proc.wait()
    except BaseException:
        _signal_group(proc.pid, signal.SIGKILL)
        raise


def _signal_group(pgid: int, signum: int) -> bool:
    """Send `signum` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a member changed user; the others still got the signal
    return True


def _wait_group_gone(pgid: int, seconds: float) -> bool:
    """Poll until the group has no live member (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while _group_has_live_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def _group_has_live_members(pgid: int) -> bool:
    """Whether any non-zombie process is in the group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also succeeds for zombies, and orphaned zombies may never be reaped (a container's PID 1
    # often does not), so on Linux look at the members' states.
    if not os.path.isdir("/proc"):
        return True
    return any(state not in (b"Z", b"X") for state in _group_member_states(pgid))


def _group_member_states(pgid: int) -> list[bytes]:
    """The /proc states of the processes whose process group is `pgid`."""
    states = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue  # exited meanwhile
            # The command name may contain spaces and ')', so parse from the last ')': state ppid pgrp ...
            fields = data[data.rfind(b")") + 2 :].split()
            if len(fields) > 2 and int(fields[2]) == pgid:
                states.append(fields[0])
    return states


class _OutputCollector:
    """Takes lines from both pipes: writes them to the log file and keeps what the outcome needs."""

    def __init__(self, log_path: Path | None, max_output_bytes: int):
        """Open the log file (parents created) and set up bounded in-memory buffers."""
        self._lock = threading.Lock()
        self._max_bytes = max(0, max_output_bytes)
        self._tail = bytearray()
        self._total_bytes = 0
        self._stdout_tail: collections.deque[str] = collections.deque(maxlen=STDOUT_TAIL_LINES)
        self._last_stderr_line = ""
        self._last_output_line = ""
        self._closed = False
        self._log: IO[bytes] | None = None
        if log_path is not None:
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "wb")

    def add(self, line: bytes, from_stderr: bool) -> None:
        """Record one line from stdout or stderr."""
        if not line.endswith(b"\n"):
            line += b"\n"  # a final partial line must not run into the other stream's next line
        text = line.decode("utf-8", errors="replace").rstrip()
        with self._lock:
            if self._closed:
                return  # a process that escaped the group is still writing; nobody is listening
            self._write_log(line)
            self._keep_tail(line)
            if text.strip():
                self._last_output_line = text.strip()
                if from_stderr:
                    self._last_stderr_line = text.strip()
                else:
                    self._stdout_tail.append(text)

    def _write_log(self, line: bytes) -> None:
        """Append to the log file and flush so it can be followed live; give up on write errors."""
        if self._log is None:
            return
        try:
            self._log.write(line)
            self._log.flush()
        except OSError:
            # Keep draining the pipes regardless: a child blocked on a full pipe would hang the trial.
            log.warning("could not write trial log; continuing without it", exc_info=True)
            self._log = None

    def _keep_tail(self, line: bytes) -> None:
        """Keep at least the last max_output_bytes, trimming in batches to stay cheap."""
        self._tail += line
        self._total_bytes += len(line)
        if len(self._tail) > 2 * self._max_bytes + MAX_LINE_BYTES:
            del self._tail[: len(self._tail) - self._max_bytes]

    def outcome(self, returncode: int | None, timed_out: bool, seconds: float) -> ProcessOutcome:
        """Build the outcome from what was collected so far."""
        with self._lock:
            kept = bytes(self._tail[len(self._tail) - min(len(self._tail), self._max_bytes) :])
            cut = self._total_bytes - len(kept)
            output = kept.decode("utf-8", errors="replace")
            if cut:
                output = f"[... {cut} bytes cut ...]\n" + output
            return ProcessOutcome(
                returncode=returncode,
                timed_out=timed_out,
                seconds=seconds,
                stdout_tail=list(self._stdout_tail),
                output=output,
                last_error_line=self._last_stderr_line or self._last_output_line,
            )

    def close(self) -> None:
        """Stop accepting lines and close the log file."""
        with self._lock:
            self._closed = True
            if self._log is not None:
                self._log.close()
                self._log = None


def _start_readers(proc: subprocess.Popen, collector: _OutputCollector) -> list[threading.Thread]:
    """One daemon thread per pipe, so neither pipe can fill up and block the child."""
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, collector, False), daemon=True, name="trial-stdout"),
        threading.Thread(target=_pump, args=(proc.stderr, collector, True), daemon=True, name="trial-stderr"),
    ]
    for reader in readers:
        reader.start()
    return readers


def _pump(stream: IO[bytes], collector: _OutputCollector, from_stderr: bool) -> None:
    """Copy lines from one pipe into the collector until EOF."""
    try:
        for line in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
            collector.add(line, from_stderr)
    except (OSError, ValueError):
        pass  # the pipe was closed under us
    finally:
        stream.close()


def _join_readers(readers: list[threading.Thread]) -> None:
    """Wait for both pipes to reach EOF; give up on a pipe that an escaped process still holds open."""
    deadline = time.monotonic() + READER_JOIN_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
        if reader.is_alive():
            log.warning("trial output pipe still open after its process group ended; abandoning it")
