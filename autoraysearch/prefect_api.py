"""The Prefect API a campaign reports to: the configured server, or a local one started for the run."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

# The first start creates and migrates the database: slow on a small machine.
SERVER_START_TIMEOUT_S = 180


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
        yield str(url)
        return
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=SERVER_START_TIMEOUT_S)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                drain_to_api()
    finally:
        server.stop()


def drain_to_api() -> None:
    """Send the logs and events still queued in this process before the server goes away."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)
