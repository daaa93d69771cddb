"""Which Ray cluster the loop uses and where each kind of step runs on it."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from prefect_ray import RayTaskRunner
from prefect_ray.context import RemoteOptionsContext, remote_options
from prefect_ray.task_runners import PrefectRayFuture

from autoraysearch.errors import AutoraysearchError
from autoraysearch.trials import sandbox
from autoraysearch.local_cluster import found_local_cluster
from autoraysearch.prefect_api import current_api_url, mark_task_run_crashed, quiet_completed_task_runs, send_queued_logs

ADDRESS_ENV = "AUTORAYSEARCH_RAY_ADDRESS"
CONNECT_CHECK_S = 5.0
LOCAL_WORKERS_KEPT = 16
# Environment a Ray worker needs to report task runs to the same Prefect API as the flow.
_FORWARDED_ENV = (
    "PREFECT_API_KEY", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_LOGGING_LEVEL", "PREFECT_HOME",
    "AUTORAYSEARCH_TRIAL_WRITABLE", "AUTORAYSEARCH_TRIAL_MEMORY",
)


def resolve_address(address: str | None) -> str:
    """The Ray address to use: the one given, else the environment's, else a cluster `ray start --head` left
    running on this machine, else a fresh local Ray."""
    return address or os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS") or running_local_cluster() or "local"


def running_local_cluster() -> str | None:
    """The address of the cluster a user started on this machine with `ray start --head`, while it answers."""
    found = found_local_cluster()
    return found.address if found is not None and found.owner is None else None


def describe_address(address: str | None) -> str:
    """One line on which Ray cluster a command uses, and why."""
    if address or os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS"):
        resolved = resolve_address(address)
        return "Ray: a private local cluster for this command" if resolved == "local" else f"Ray: the cluster at {resolved}"
    found = found_local_cluster()
    if found is None:
        return "Ray: a private local cluster for this command (no cluster runs on this machine)"
    if found.owner is not None:
        return (f"Ray: a private local cluster for this command (the cluster at {found.address} belongs to another "
                f"program, {found.owner}, and is left alone)")
    return (f"Ray: attaching to the cluster `ray start` left running on this machine at {found.address} "
            "(--ray-address local for a private one)")


def cluster_stopped(address: str) -> bool:
    """Whether an attached cluster no longer answers at its address (a private one never counts as stopped)."""
    host, _, port = address.rpartition(":")
    if address == "local" or "://" in address or not host or not port.isdigit():
        return False
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError:
        return True
    return False


@dataclass(frozen=True)
class NodeSummary:
    """One live node of the cluster: its host name and what it offers."""

    host: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class ClusterSummary:
    """The cluster a campaign runs on and how many of its trials fit at once."""

    nodes: tuple[NodeSummary, ...]

    @property
    def gpus(self) -> float:
        return sum(node.gpus for node in self.nodes)

    def trials_at_once(self, cpus_per_trial: float, gpus_per_trial: float) -> int:
        """Trials of these resources the cluster runs side by side (each on one node)."""
        fits = 0
        for node in self.nodes:
            by_cpu = int(node.cpus / cpus_per_trial + 1e-9) if cpus_per_trial > 0 else 10**6
            by_gpu = int(node.gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else 10**6
            fits += min(by_cpu, by_gpu)
        return fits

    def lines(self, cpus_per_trial: float, gpus_per_trial: float) -> list[str]:
        """What setup and plan print: the nodes, and the trials that fit at once."""
        per_node = "; ".join(f"{node.host}: {node.cpus:g} CPUs, {node.gpus:g} GPUs" for node in self.nodes)
        total_cpus = sum(node.cpus for node in self.nodes)
        return [
            f"cluster: {len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}, {total_cpus:g} CPUs, "
            f"{self.gpus:g} GPUs ({per_node})",
            f"trials at once: {self.trials_at_once(cpus_per_trial, gpus_per_trial)} "
            f"({cpus_per_trial:g} CPU{'s' if cpus_per_trial != 1 else ''} and {gpus_per_trial:g} GPU{'s' if gpus_per_trial != 1 else ''} each)",
        ]


def cluster_summary() -> ClusterSummary:
    """The live nodes of the connected Ray cluster."""
    import ray

    nodes = [
        NodeSummary(short_host(n.get("NodeManagerHostname") or n.get("NodeManagerAddress", "?")),
                    n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
        for n in ray.nodes() if n.get("Alive")
    ]
    return ClusterSummary(tuple(nodes))


def short_host(hostname: str) -> str:
    """A host name without its domain (an IP address stays whole)."""
    return hostname if hostname.replace(".", "").isdigit() else hostname.split(".")[0]


def default_gpus_per_trial(gpus_per_trial: float | None) -> float:
    """GPUs per trial: the value given, else 1 on a cluster with GPUs, else 0 (needs a connected Ray)."""
    if gpus_per_trial is not None:
        return gpus_per_trial
    return 1.0 if cluster_summary().gpus > 0 else 0.0


def enable_token_auth_if_needed(address: str) -> None:
    """Clusters from `ray start --head` (Ray >= 2.5x) require token auth of drivers that attach to them.

    Ray turns it on by itself only for `auto`; for an explicit address we do the same when a token
    is available (~/.ray/auth_token, $RAY_AUTH_TOKEN or $RAY_AUTH_TOKEN_PATH) and the user has not
    chosen a mode in $RAY_AUTH_MODE.
    """
    if address == "local" or "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    # Ray caches its configuration when imported; this refreshes it as well as setting the variable.
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def ask_for_token_auth() -> None:
    """Token authentication for a new local cluster, asked for explicitly; a mode the user chose stands.

    Ray turns it on for every new cluster anyway, and then warns that it did, on every command.
    Asked for, it is the same protection without the warning.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # a Ray without token authentication
        return
    _enable_token_auth()  # sets RAY_AUTH_MODE=token and refreshes the configuration Ray cached at import


def worker_env() -> dict[str, str]:
    """Environment variables every Ray worker of a campaign gets."""
    env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
    api_url = current_api_url()
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return env


class CampaignTaskRunner(RayTaskRunner):
    """RayTaskRunner that picks its cluster when the flow starts, not when the module is imported.

    Address: the argument, else $AUTORAYSEARCH_RAY_ADDRESS, else $RAY_ADDRESS, else a new local
    Ray (`address="local"` never attaches to somebody else's cluster). Workers are pointed at the
    flow's Prefect API, so they never start temporary servers of their own on one sqlite file.
    """

    def __init__(self, address: str | None = None, init_kwargs: dict[str, Any] | None = None):
        super().__init__(address=address, init_kwargs=init_kwargs)

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        """Submit to Ray with the step's lost-worker policy; its future gives a lost task run a final state."""
        options = RemoteOptionsContext.get().current_remote_options
        policy = {} if "max_retries" in options else {"max_retries": lost_worker_retries(task.retries)}
        with remote_options(**policy):
            future = super().submit(task, parameters, wait_for=wait_for, dependencies=dependencies)
        return CampaignFuture(task_run_id=future.task_run_id, wrapped_future=future.wrapped_future)

    @staticmethod
    def _run_prefect_task(*upstream_refs: Any, context: dict[str, Any], **kwargs: Any) -> Any:
        """Run the task in the Ray worker, reusing the Prefect settings hydrated for earlier tasks."""
        _hide_worker_secrets()
        quiet_completed_task_runs()
        context = dict(context)
        settings = context.pop("settings_context", None)
        with _worker_prefect(settings):
            return RayTaskRunner._run_prefect_task(*upstream_refs, context=context, **kwargs)

    def __enter__(self):
        import ray

        quiet_completed_task_runs()  # for a step run in this process; each worker installs its own
        starts_ray = not ray.is_initialized()
        if starts_ray:
            self.address, self.init_kwargs = ray_init_arguments(self.address, self.init_kwargs)
            connect(self.address, self.init_kwargs)  # so a bad address is one sentence, not a traceback
        super().__enter__()
        self._owns_ray = starts_ray  # connected here, so disconnected at exit
        return self


def _hide_worker_secrets() -> None:
    """A worker is started with the Prefect key it forwards in its environment: hide it from /proc, once."""
    if not _WORKER_PREFECT.get("secrets_hidden"):
        from autoraysearch.trials.sandbox import hide_secrets_in_proc_environ

        hide_secrets_in_proc_environ()
        _WORKER_PREFECT["secrets_hidden"] = True


def lost_worker_retries(task_retries: int | None) -> int:
    """How often Ray re-runs a step whose worker was lost: as often as the step allows retries at all.

    Ray's own default re-runs every task three times. Steps declared safe to repeat (review, modify) are
    re-run; a commit, a branch move or a log append is never repeated blindly, and ideate is not retried
    here (an LLM outage is waited out by the loop, within the campaign's stop conditions).
    """
    return max(0, task_retries or 0)


# Steps that only read the repository or rewrite model.py whole may be repeated after a fault.
REPEATABLE_STEP_RETRIES = 2


def infrastructure_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: an infrastructure error (a file system, a connection) is retried, a user mistake is not."""
    try:
        state.result()
    except AutoraysearchError:
        return False
    except Exception:
        return True
    return False


def sends_its_logs(step: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a step so that its queued log lines reach the Prefect API before it returns.

    A Ray worker sends log lines in batches every two seconds and is stopped without ceremony when the
    campaign ends, so without this the last steps' lines (the verdict, the log row) never reach the UI.
    (A Prefect hook would do it too, but Prefect logs two lines of its own for every hook it runs.)
    """
    @functools.wraps(step)
    def step_then_send(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        finally:
            send_queued_logs()

    return step_then_send


class CampaignFuture(PrefectRayFuture):
    """A step's future; when Ray lost the step, its task run is given a final state before the error."""

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        try:
            return super().result(timeout=timeout, raise_on_failure=raise_on_failure)
        except TimeoutError:
            raise
        except Exception as exc:
            if self._final_state is None:  # no state came back from Ray: the worker or its node was lost
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                mark_task_run_crashed(self.task_run_id, f"the Ray worker running it was lost: {first}")
            raise


# Per Ray worker process: Prefect settings and an API client, built once and reused by every task
# run. Rebuilding them for each task costs ~0.25 s (settings) plus ~0.1 s (two clients loading CA
# certificates), the bulk of a loop step's overhead; a campaign's settings never change.
_WORKER_PREFECT: dict[str, Any] = {}


@contextlib.contextmanager
def _worker_prefect(serialized_settings: dict[str, Any] | None) -> Iterator[None]:
    """Enter the cached settings and the shared client for one task run in this worker."""
    if not serialized_settings:
        yield
        return
    from prefect.context import SettingsContext, SyncClientContext

    key = json.dumps(serialized_settings, sort_keys=True, default=str)
    if _WORKER_PREFECT.get("key") != key:
        if "client" in _WORKER_PREFECT:
            _WORKER_PREFECT["client"].client.__exit__(None, None, None)
        settings = SettingsContext(**serialized_settings)
        with settings.model_copy():
            client_context = SyncClientContext()
        client_context.client.__enter__()  # held open for the worker's life: nested uses never close it
        _WORKER_PREFECT.update(key=key, settings=settings, client=client_context)
    with _WORKER_PREFECT["settings"].model_copy():
        token = SyncClientContext.__var__.set(_WORKER_PREFECT["client"])
        try:
            yield
        finally:
            SyncClientContext.__var__.reset(token)


def ray_init_arguments(address: str | None, init_kwargs: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The address and `ray.init` keyword arguments a campaign's driver uses."""
    address = resolve_address(address)
    enable_token_auth_if_needed(address)
    kwargs = dict(init_kwargs or {})
    runtime_env = dict(kwargs.get("runtime_env") or {})
    runtime_env["env_vars"] = {**worker_env(), **runtime_env.get("env_vars", {})}
    kwargs["runtime_env"] = runtime_env
    kwargs.setdefault("namespace", "prefect")
    kwargs.setdefault("logging_level", logging.WARNING)
    kwargs.setdefault("log_to_driver", False)
    if address == "local":
        ask_for_token_auth()
        # A small local Ray starts faster and lighter without its dashboard.
        kwargs.setdefault("include_dashboard", False)
        # Fractional trials need more worker processes than CPUs; by default Ray kills the idle
        # ones beyond the CPU count, and restarting one (importing Prefect) costs seconds.
        kwargs.setdefault("_system_config", {"num_workers_soft_limit": LOCAL_WORKERS_KEPT})
    return address, kwargs


@contextlib.contextmanager
def keeping_sigterm_handler() -> Iterator[None]:
    """Keep the SIGTERM handler in charge across ray.init, which installs a bare sys.exit of its own.

    In a deployment run that handler is Prefect's cancellation bridge: a cancelled run then ends as
    Cancelled after the loop's clean-up, not as a crash.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def refuse_unreachable(address: str) -> None:
    """A HOST:PORT nobody listens on fails at once (ray.init would retry it for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        raise AutoraysearchError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with "
            f"`ray start --head --port={port}` there, or leave --ray-address out to use a local Ray."
        ) from None


@contextlib.contextmanager
def local_ray_in_own_session(local: bool) -> Iterator[None]:
    """Start a local Ray's processes in a session of their own, as Ray itself does on Windows.

    A Prefect worker cancels a flow run by signalling the flow's whole process group. A local Ray in
    that group would die at once, before the loop has cancelled its trials through it and shut it
    down; outside it, Ray's kernel fate-sharing (PR_SET_PDEATHSIG) still ends it with the flow.
    """
    from ray._private import services
    from ray._private.utils import detect_fate_sharing_support

    if not local or not sys.platform.startswith("linux") or not detect_fate_sharing_support():
        yield  # without fate-sharing, Ray's reaper relies on its processes sharing our group
        return
    popen = services.ConsolePopen

    class SessionPopen(popen):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, start_new_session=True, **kwargs)

    services.ConsolePopen = SessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = popen


def connect(address: str, kwargs: dict[str, Any]) -> None:
    """ray.init, turning a cluster that cannot be reached into one sentence saying what to check."""
    import ray

    refuse_unreachable(address)
    try:
        with local_ray_in_own_session(address == "local"), keeping_sigterm_handler(), sandbox.without_secrets():
            ray.init(None if address == "auto" else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        ray.shutdown()
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AutoraysearchError(
            f"could not connect to the Ray cluster at {address} ({detail}); check that `ray start --head` "
            "runs there and the address is right (a cluster with token auth also needs ~/.ray/auth_token)."
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """One Ray connection shared by every flow the CLI runs (setup, then the loop)."""
    import ray

    if ray.is_initialized():  # already connected (a test session, an embedding program)
        yield
        return
    address, kwargs = ray_init_arguments(address)
    connect(address, kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def driver_node_id() -> str | None:
    """The Ray node of the process running the flow (None in Ray Client mode, where it has none)."""
    import ray

    if not ray.is_initialized():
        return None
    with contextlib.suppress(Exception):
        from ray.util.client import ray as client_ray

        if client_ray.is_connected():
            return None
    return ray.get_runtime_context().get_node_id()


def current_node_id() -> str | None:
    """The Ray node this code runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


@contextlib.contextmanager
def on_repo_node(node_id: str | None) -> Iterator[None]:
    """Steps that read or write the repository run on the node that holds it, using no CPU slot."""
    options: dict[str, Any] = {"num_cpus": 0}
    if node_id:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    with remote_options(**options):
        yield


@contextlib.contextmanager
def with_trial_resources(cpus: float, gpus: float) -> Iterator[None]:
    """A trial runs wherever Ray finds these resources free; a model that kills its worker is not retried."""
    with remote_options(num_cpus=cpus, num_gpus=gpus, max_retries=0):
        yield
