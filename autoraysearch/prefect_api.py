"""The Prefect API a campaign reports to: the configured server, or a local one started for the run."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from typing import Iterator

from autoraysearch.errors import AutoraysearchError

# The first start creates and migrates the database: slow on a small machine.
SERVER_START_TIMEOUT_S = 180
# How long a crashed trial's task run may take to show up on the server.
TASK_RUN_APPEAR_S = 15.0
PR_SET_PDEATHSIG = 1
# A configured API that does not answer this fast is down (or the URL is wrong), not slow.
API_CHECK_TIMEOUT_S = 5.0
# Where Prefect's engine logs a flow or task run's exception, with its traceback.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
TASK_RUN_LOGGER = "prefect.task_runs"
# Prefect's background queues of log lines and events: each logs under its class name.
DRAINED_QUEUES = ("APILogWorker", "EventsWorker")


def current_api_url() -> str | None:
    """The API URL this process reports to, including Prefect's own temporary local server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    # A flow run with no PREFECT_API_URL uses this singleton; point workers at it too.
    server = SubprocessASGIServer()
    return server.api_url if server.running else None


@contextlib.contextmanager
def local_prefect_api() -> Iterator[str]:
    """Use $PREFECT_API_URL when set; otherwise start a local Prefect server for the duration."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    url = get_current_settings().api.url
    if url:
        refuse_unreachable_api(str(url))
        yield str(url)
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.server.api.server import SubprocessASGIServer

    from autoraysearch.trials.sandbox import without_secrets

    server = SubprocessASGIServer()
    with server_in_own_session(), without_secrets():
        server.start(timeout=SERVER_START_TIMEOUT_S)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                drain_to_api()
    finally:
        server.stop()


def refuse_unreachable_api(url: str) -> None:
    """A configured Prefect API nobody answers at fails at once, not after Ray started and three tracebacks."""
    import httpx

    try:
        # Any HTTP answer, even 401 or 404, means a server is there; only no answer at all is refused.
        httpx.get(url.rstrip("/") + "/health", timeout=API_CHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__
        raise AutoraysearchError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({problem}); start that server "
            "(`prefect server start`), or unset PREFECT_API_URL to let autoraysearch start a local one."
        ) from None


class HideRefusalTracebacks(logging.Filter):
    """Drop Prefect's "Encountered exception" record, traceback and all, when the exception is our own refusal.

    The CLI prints such a refusal as one sentence; the traceback above it would only bury it. Other
    exceptions (bugs, crashes) keep their tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.name.startswith(RUN_LOGGERS) and isinstance(exc, AutoraysearchError))


class QuietCompletedTaskRuns(logging.Filter):
    """Turn Prefect's "Finished in state Completed()" line of every task run into a debug line.

    A campaign runs seven steps per iteration: overnight that is hundreds of lines burying the
    campaign's own. Only the completed ones go: a failure, a crash or a retry is logged at a higher
    level and still shows. The line comes back with PREFECT_LOGGING_LEVEL=DEBUG.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not str(record.msg).startswith("Finished in state"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_completed_task_runs() -> None:
    """Install QuietCompletedTaskRuns on Prefect's task-run logger of this process, once."""
    logger = logging.getLogger(TASK_RUN_LOGGER)
    if not any(isinstance(f, QuietCompletedTaskRuns) for f in logger.filters):
        logger.addFilter(QuietCompletedTaskRuns())


class WithoutTraceback(logging.Formatter):
    """Another formatter's lines without the traceback: the CLI ends every failure with one sentence of its own
    and writes the traceback to a file; the API handlers (the Prefect UI) still get it."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


@contextlib.contextmanager
def hide_refusal_tracebacks() -> Iterator[None]:
    """The terminal's log handlers: no record of our own refusals (HideRefusalTracebacks), no traceback of anything."""
    import prefect.main  # noqa: F401  configures Prefect's logging, which would drop a filter added before it

    hiding = HideRefusalTracebacks()
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    formatters = [h.formatter for h in handlers]
    for handler in handlers:
        handler.addFilter(hiding)
        handler.setFormatter(WithoutTraceback(handler.formatter))
    try:
        yield
    finally:
        for handler, formatter in zip(handlers, formatters):
            handler.removeFilter(hiding)
            handler.setFormatter(formatter)


@contextlib.contextmanager
def server_in_own_session() -> Iterator[None]:
    """Processes started meanwhile get a session of their own and die with this process.

    Ctrl-C at a terminal signals the whole foreground process group; the campaign's clean-up after it
    (stopped rows, artifacts, the final event) still needs the API, so the local server must not be
    in that group. It is stopped by us at the end, or by the kernel if we die first.
    """
    real_popen = subprocess.Popen

    class OwnSessionPopen(real_popen):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("start_new_session", True)
            kwargs.setdefault("preexec_fn", _die_with_parent)
            super().__init__(*args, **kwargs)

    subprocess.Popen = OwnSessionPopen
    try:
        yield
    finally:
        subprocess.Popen = real_popen


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def drain_to_api() -> None:
    """Send the logs and events still queued in this process before the server goes away."""
    from prefect.events.worker import EventsWorker

    send_queued_logs()
    with quiet_drain():
        EventsWorker.drain_all(timeout=5)


class QuietDrainProgress(logging.Filter):
    """Drop Prefect's "Still processing items: N items remaining..." while a queue is emptied on purpose.

    It is a progress note of a wait we asked for, not a problem; a full queue dropping items still warns.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Still processing items")


@contextlib.contextmanager
def quiet_drain() -> Iterator[None]:
    """QuietDrainProgress on Prefect's log and event queues for the duration of a drain."""
    quiet = QuietDrainProgress()
    loggers = [logging.getLogger(name) for name in DRAINED_QUEUES]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def send_queued_logs() -> None:
    """Send the log lines queued in this process now, instead of with the next batch."""
    from prefect.logging.handlers import APILogWorker

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with quiet_drain():
            APILogWorker.drain_all(timeout=5)  # only outside an event loop: inside one, a drain would block it


def mark_task_run_crashed(task_run_id, message: str, wait_s: float = TASK_RUN_APPEAR_S) -> None:
    """Give a task run whose Ray worker died a final state; nobody else will, and it would stay Running.

    Task runs reach the server as events, so a run whose worker died early may appear only after a
    moment: wait for it, then force the Crashed state.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    deadline = time.monotonic() + wait_s
    try:
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.read_task_run(task_run_id)
                    break
                except ObjectNotFound:
                    if time.monotonic() > deadline:
                        return  # never reached the server: nothing shows as Running
                    time.sleep(0.5)
            client.set_task_run_state(task_run_id, Crashed(message=message), force=True)
    except Exception:  # the API may be unreachable too; the campaign goes on regardless
        pass
