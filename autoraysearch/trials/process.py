"""Run one trial's command in a fresh scratch directory, streaming its output and never leaking processes.

This is the only module of autoraysearch that starts subprocesses. A trial runs inside a Ray worker,
possibly on another machine, so the guarantees below are about that worker's host:

* The trial runs in its own session / process group, so the whole tree it forks (DDP ranks,
  DataLoader workers, ...) is signalled with one ``os.killpg``.
* On timeout, on a caller interruption (Ray's cancellation raises KeyboardInterrupt in the worker
  thread) and on normal exit (stray grandchildren), the group gets SIGTERM, a grace period, then
  SIGKILL, and we wait until no live member remains.
* On Linux, if the launching worker is SIGKILLed, the tree is taken down too: the command is started
  through a tiny supervisor (supervisor.py) that asks the kernel (``prctl(PR_SET_PDEATHSIG)``) for a signal when its
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
is swept by the supervisor, a subreaper, and where Landlock cannot scope signals it dies with the
trial's PID namespace even if it killed the supervisor first. `limits` (TrialLimits) cap its
processes and memory in a cgroup of its own, where the host gives us one; the outcome says
`out_of_memory` only when the kernel killed it there.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue
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
from typing import IO, Callable

from autoraysearch.trials import sandbox
from autoraysearch.trials.scratch_home import prepare_home
from autoraysearch.trials.supervisor import (
    KILL_WAIT_SECONDS, OUT_OF_MEMORY, SCRATCH_PREFIX, TERM_GRACE_SECONDS, launch_argv, model_side_prefix,
)
from autoraysearch.errors import AutoraysearchError

log = logging.getLogger(__name__)

METRIC_FD_ENV = "AUTORAYSEARCH_METRIC_FD"  # names the pipe a generated train.py's judge writes its progress and metric to
CONTAIN_ENV = "AUTORAYSEARCH_CONTAIN"  # the command prefix a generated train.py's judge starts its model side with
MAX_CHANNEL_BYTES = 1_000_000  # what is kept of the metric channel; more is drained and dropped
DEFAULT_MAX_LOG_BYTES = 10_000_000  # a log file over this keeps its first half and its latest lines
# How long the launcher lets the supervisor stop the command and sweep before killing the group itself.
SUPERVISOR_STOP_SECONDS = 2 * TERM_GRACE_SECONDS + 5.0
POLL_SECONDS = 0.05  # short sleeps keep async exceptions (Ray cancellation) responsive
READER_JOIN_SECONDS = 5.0  # only a process that escaped the group can hold the pipes longer
STDOUT_TAIL_LINES = 50
MAX_LINE_BYTES = 64 * 1024  # bounds memory for output without newlines (progress bars)

@dataclass(frozen=True)
class ProcessOutcome:
    """What a finished (or timed-out) trial command left behind."""

    returncode: int | None  # None when killed for timeout or interruption
    timed_out: bool
    seconds: float  # wall time
    stdout_tail: list[str]  # last non-empty stdout lines, without newlines
    output: str  # combined stdout+stderr as logged, the last max_output_bytes with a cut note
    last_error_line: str  # last non-empty stderr line, else of output; "" if none
    channel_lines: tuple[str, ...] = ()  # what the command wrote to the metric channel (AUTORAYSEARCH_METRIC_FD)
    sandbox: str = "none"  # which containment was in force, e.g. "landlock ABI 7"; "none: why" without one
    stopped_early: bool = False  # the caller's on_line asked to stop it (returncode None, timed_out False)
    out_of_memory: bool = False  # the kernel killed a process of it at its memory limit (see TrialLimits)


@dataclass(frozen=True)
class TrialLimits:
    """What one trial may use on its node, enforced by a cgroup of its own where the host lets us make one."""

    processes: int | None = None  # processes and threads, all together
    memory_bytes: int | None = None  # resident memory of all its processes; past it the kernel kills one

    def as_config(self) -> dict:
        return {"pids": self.processes, "memory": self.memory_bytes}


def run_in_directory(
    files: dict[str, str],
    command: list[str],
    *,
    timeout: float | None,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    max_output_bytes: int = 1_000_000,
    scratch_root: Path | None = None,
    writable: list[Path] | tuple[Path, ...] = (),
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    on_line: Callable[[str], bool | None] | None = None,
    watch_channel: bool = False,
    limits: TrialLimits | None = None,
) -> ProcessOutcome:
    """Write `files` (relative name -> text) into a fresh scratch directory, run `command` there, clean up.

    On Linux the command may write only inside the scratch directory, the `writable` folders and
    /dev/shm (see sandbox.py); the outcome says which sandbox was in force.

    `on_line` gets every stdout line (without its newline) on the calling thread, within a poll
    interval of its arrival, and the last ones after the exit; returning True while the command runs
    stops it like a timeout, and the outcome says `stopped_early`. With `watch_channel` it gets the
    metric channel's lines instead: a generated train.py's judge writes its progress there, where
    the model code cannot.
    """
    if not command:
        raise ValueError("command must not be empty")
    for name in files:
        _check_relative_name(name)
    # Blank our own keys in /proc/self/environ: code that gets past the sandbox reads its ancestors'.
    sandbox.scrub_secrets_from_environ_block()
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_root))
    try:
        _write_files(scratch, files)
        writable = [str(Path(path).resolve()) for path in writable]
        return _run(command, scratch, timeout, env, log_path, max_output_bytes, writable, max_log_bytes, on_line,
                    watch_channel, limits)
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
    writable: list[str],
    max_log_bytes: int,
    on_line: Callable[[str], bool | None] | None = None,
    watch_channel: bool = False,
    limits: TrialLimits | None = None,
) -> ProcessOutcome:
    """Start the command in its own session, stream its output and metric channel, and end its whole tree."""
    watcher = _LineWatcher(on_line) if on_line is not None else None
    collector = _OutputCollector(log_path, max_output_bytes, max_log_bytes, watcher, watch_channel)
    metric_read, metric_write = os.pipe()
    report_read, report_write = os.pipe()
    try:
        started = time.monotonic()
        supervised = _supervised()
        argv = (launch_argv(command, scratch, writable, [metric_write], report_write,
                            limits.as_config() if limits else None) if supervised else command)
        proc = subprocess.Popen(
            argv,
            cwd=scratch,
            env=_child_env(env, scratch, metric_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(metric_write, report_write) if supervised else (metric_write,),
            start_new_session=True,  # its own process group: killpg reaches every descendant
        )
        os.close(metric_write)
        os.close(report_write)
        metric_write = report_write = -1
        deadline = None if timeout is None else started + timeout
        readers: list[threading.Thread] = []
        try:
            readers = _start_readers(proc, collector, metric_read)
            exited = _wait_for_exit(proc, deadline, watcher.stop_requested if watcher else None)
        except BaseException:
            _kill_after_interrupt(proc, supervised)
            _join_readers(readers)
            raise
        if not exited:
            _stop(proc, supervised)
        # After a normal exit this only removes strays the supervisor could not; after a timeout too.
        kill_process_group(proc.pid)
        returncode = proc.wait()
        seconds = time.monotonic() - started
        _join_readers(readers)
        stopped_early = watcher is not None and watcher.stopped
        if watcher is not None:
            watcher.drain(finished=True)  # the lines that came after the last poll, the metric line among them
        report = _read_report(report_read) if supervised else "none: no supervisor on this platform"
        sandbox, _, memory_kills = report.partition(f"\n{OUT_OF_MEMORY}")
        return collector.outcome(
            returncode=returncode if exited else None,
            timed_out=not exited and not stopped_early,
            seconds=seconds,
            stopped_early=stopped_early,
            sandbox=sandbox.strip(),
            out_of_memory=bool(memory_kills.strip()),
        )
    finally:
        collector.close()
        for fd in (metric_write, report_write, report_read):
            if fd >= 0:
                os.close(fd)


def _supervised() -> bool:
    """Whether the command runs behind the Linux supervisor (sandbox, sweep, parent-death handling)."""
    return sys.platform.startswith("linux") and bool(sys.executable)


def _child_env(extra: dict[str, str] | None, scratch: Path, metric_fd: int) -> dict[str, str]:
    """The caller's environment, less credentials and service addresses, caches in the scratch, plus `extra`."""
    env = sandbox.trial_environment(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for name, relative in sandbox.CACHE_ENV.items():
        folder = scratch / relative
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    env.update(prepare_home(scratch, os.environ))
    env[METRIC_FD_ENV] = str(metric_fd)
    if _supervised():
        env[CONTAIN_ENV] = json.dumps(model_side_prefix())
    env.update(extra or {})
    return env


def _read_report(fd: int) -> str:
    """What the supervisor's forked child said about the sandbox before it became the command."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip() or "none: the command did not start"


def _wait_for_exit(
    proc: subprocess.Popen, deadline: float | None, stop_requested: Callable[[], bool] | None = None
) -> bool:
    """Sleep in short steps until the child exits (True), the deadline passes or a stop is requested (False)."""
    while not _has_exited(proc):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if stop_requested is not None and stop_requested():
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


def _stop(proc: subprocess.Popen, supervised: bool) -> None:
    """SIGTERM the group and let the supervisor end the command and sweep what it started, for a while."""
    if supervised and _signal_group(proc.pid, signal.SIGTERM):
        deadline = time.monotonic() + SUPERVISOR_STOP_SECONDS
        while not _has_exited(proc) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)


def _kill_after_interrupt(proc: subprocess.Popen, supervised: bool) -> None:
    """Stop the tree after the caller was interrupted; a second interruption skips straight to SIGKILL."""
    try:
        _stop(proc, supervised)
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
    return [fields[0] for _, fields in sandbox.process_table() if len(fields) > 2 and int(fields[2]) == pgid]


class _LineWatcher:
    """Hands stdout lines, queued by the reader thread, to the caller's on_line on the launching thread."""

    def __init__(self, on_line: Callable[[str], bool | None]):
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.stopped = False
        self._on_line: Callable[[str], bool | None] | None = on_line

    def stop_requested(self) -> bool:
        """Pass on the lines that arrived since the last poll; whether one of them asked to stop."""
        self.drain()
        return self.stopped

    def drain(self, finished: bool = False) -> None:
        """Call on_line for each queued line; once the command has finished a True asks for nothing."""
        while self._on_line is not None:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            try:
                stop = self._on_line(line)
            except Exception:  # the watcher's failure must not cost the trial its result
                log.warning("the trial's line callback failed; no longer calling it", exc_info=True)
                self._on_line = None
                return
            if stop and not finished:
                self.stopped = True


class _OutputCollector:
    """Takes lines from both pipes: writes them to the log file and keeps what the outcome needs."""

    def __init__(self, log_path: Path | None, max_output_bytes: int, max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
                 watcher: _LineWatcher | None = None, watch_channel: bool = False):
        """Open the log file (parents created) and set up bounded in-memory buffers."""
        self._watcher = watcher
        self._watch_channel = watch_channel
        self._channel_partial = b""
        self._lock = threading.Lock()
        self._log_cap = max(2, max_log_bytes)
        self._log_head = 0  # bytes of the log's first part, kept whatever follows
        self._log_tail = bytearray()  # what the log holds after its first part (and a cut note)
        self._log_cut = 0
        self._metric = bytearray()
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
                    if self._watcher is not None and not self._watch_channel:
                        self._watcher.lines.put(text)

    def _write_log(self, line: bytes) -> None:
        """Append to the log file and flush so it can be followed live; give up on write errors."""
        if self._log is None:
            return
        try:
            if self._log_head < self._log_cap // 2:
                self._log_head += len(line)
            else:
                self._log_tail += line
            self._log.write(line)
            if self._log_head + len(self._log_tail) > self._log_cap:
                self._cut_log()
            self._log.flush()
        except OSError:
            # Keep draining the pipes regardless: a child blocked on a full pipe would hang the trial.
            log.warning("could not write trial log; continuing without it", exc_info=True)
            self._log = None

    def _cut_log(self) -> None:
        """Rewrite the log after its first part as a cut note and the latest lines: errors and the metric come last."""
        keep = self._log_tail[-(self._log_cap // 4) :]
        keep = keep[keep.find(b"\n") + 1 :] if b"\n" in keep[:-1] else keep  # start at a whole line
        self._log_cut += len(self._log_tail) - len(keep)
        self._log_tail = bytearray(keep)
        self._log.seek(self._log_head)
        self._log.truncate()
        self._log.write(f"[... {self._log_cut} bytes of output cut from this log ...]\n".encode())
        self._log.write(keep)

    def add_channel(self, data: bytes) -> None:
        """Keep what arrived on the metric channel, up to MAX_CHANNEL_BYTES; pass whole lines to a channel watcher."""
        with self._lock:
            kept = data[: max(0, MAX_CHANNEL_BYTES - len(self._metric))]
            self._metric += kept
            if self._watcher is not None and self._watch_channel:
                *lines, self._channel_partial = (self._channel_partial + kept).split(b"\n")
                for line in lines:
                    if line.strip():
                        self._watcher.lines.put(line.decode(errors="replace").strip())

    def _keep_tail(self, line: bytes) -> None:
        """Keep at least the last max_output_bytes, trimming in batches to stay cheap."""
        self._tail += line
        self._total_bytes += len(line)
        if len(self._tail) > 2 * self._max_bytes + MAX_LINE_BYTES:
            del self._tail[: len(self._tail) - self._max_bytes]

    def outcome(
        self, returncode: int | None, timed_out: bool, seconds: float, sandbox: str = "none", stopped_early: bool = False,
        out_of_memory: bool = False,
    ) -> ProcessOutcome:
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
                channel_lines=tuple(line.strip() for line in self._metric.decode(errors="replace").splitlines()),
                sandbox=sandbox,
                stopped_early=stopped_early,
                out_of_memory=out_of_memory,
            )

    def close(self) -> None:
        """Stop accepting lines and close the log file."""
        with self._lock:
            self._closed = True
            if self._log is not None:
                self._log.close()
                self._log = None


def _start_readers(proc: subprocess.Popen, collector: _OutputCollector, metric_fd: int) -> list[threading.Thread]:
    """One daemon thread per pipe, so no pipe can fill up and block the child."""
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, collector, False), daemon=True, name="trial-stdout"),
        threading.Thread(target=_pump, args=(proc.stderr, collector, True), daemon=True, name="trial-stderr"),
        threading.Thread(target=_pump_metric, args=(metric_fd, collector), daemon=True, name="trial-metric"),
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


def _pump_metric(fd: int, collector: _OutputCollector) -> None:
    """Read the metric channel until EOF; it owns (and closes) the read end."""
    with open(fd, "rb", buffering=0) as stream:
        try:
            while data := stream.read(4096):
                collector.add_channel(data)
        except OSError:
            pass


def _join_readers(readers: list[threading.Thread]) -> None:
    """Wait for both pipes to reach EOF; give up on a pipe that an escaped process still holds open."""
    deadline = time.monotonic() + READER_JOIN_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
        if reader.is_alive():
            log.warning("trial output pipe still open after its process group ended; abandoning it")
