"""Turning a candidate into a Trial, and waiting for it on Ray without ever leaving it running."""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from statistics import median

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import Campaign, Candidate, Trial, TrialResult
from autoraysearch.campaign.pruning import PruneRule
from autoraysearch.trials.gpu_memory import NEAR_SHARE
from autoraysearch.trials.process import TrialLimits
from autoraysearch.trials.sandbox import CAMPAIGN_CACHE_ENV

# A fractional trial caps its GPU memory a little under its share, so neighbours never collide.
GPU_MEMORY_HEADROOM = 0.95
GPU_FRACTION_ENV = "AUTORAYSEARCH_GPU_MEMORY_FRACTION"  # train.py caps its GPU memory at this share
CANCEL_GRACE_S = 5.0
REPO_STEP_GRACE_S = 10.0  # a repository step interrupted mid-way gets this long to finish before the rollback
SIGNAL_POLL_S = 0.5
_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.IGNORECASE)


def trial_env(cpus: float, gpus: float) -> dict[str, str]:
    """Environment train.py reads: its thread count, its GPU memory cap when it has a fraction, and the split.

    Decisions are always made on the validation split, whatever the caller's environment says: the test
    split is for judging a campaign afterwards (benchmarks/search_quality.py), never for steering it.
    """
    env = {"AUTORAYSEARCH_NUM_THREADS": str(max(1, math.floor(cpus))), "AUTORAYSEARCH_EVAL_SPLIT": "validation"}
    if 0 < gpus < 1:
        env[GPU_FRACTION_ENV] = f"{gpus * GPU_MEMORY_HEADROOM:.3f}"
    return env


PROCESSES_PER_CPU = 256  # processes and threads a trial may have per CPU it reserves (DDP ranks, loader workers)
MIN_PROCESSES = 512
MIN_MEMORY_BYTES = 4 * 2**30
MEMORY_ENV = "AUTORAYSEARCH_TRIAL_MEMORY"  # a trial's memory limit in GiB where the Ray workers run; 0: none


def trial_limits(cpus: float, environ=None) -> TrialLimits:
    """A trial's share of its node: processes by its CPUs, memory by its CPUs' share of the node's RAM.

    The memory share is never under MIN_MEMORY_BYTES; MEMORY_ENV sets it instead (in GiB, 0 for none).
    """
    environ = os.environ if environ is None else environ
    processes = max(MIN_PROCESSES, math.ceil(cpus) * PROCESSES_PER_CPU)
    configured = environ.get(MEMORY_ENV, "").strip()
    if configured:
        gib = float(configured)
        return TrialLimits(processes=processes, memory_bytes=int(gib * 2**30) if gib > 0 else None)
    try:
        node_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return TrialLimits(processes=processes)
    share = min(1.0, cpus / max(1, os.cpu_count() or 1))
    return TrialLimits(processes=processes, memory_bytes=min(node_memory, max(MIN_MEMORY_BYTES, int(share * node_memory))))


COMPILE_CACHE_ENV = "AUTORAYSEARCH_COMPILE_CACHE"  # where a node keeps each campaign's compile caches; "off": none


def campaign_cache_key(campaign: Campaign) -> str:
    """A name for the campaign's compile cache: one per experiment folder and branch."""
    return hashlib.sha256(f"{campaign.experiment_dir}\0{campaign.branch}".encode()).hexdigest()[:16]


def compile_cache(key: str, environ=None) -> tuple[Path | None, dict[str, str]]:
    """This node's folder for one campaign's torch.compile and Triton caches, and the environment pointing there.

    Kernels compiled by one trial are found by the next trials of the same campaign on this node; each
    campaign writes only its own folder (the trial's sandbox allows that one), so a candidate can never
    touch another campaign's cache. None and no variables: the caches stay in the trial's scratch.
    """
    environ = os.environ if environ is None else environ
    root = environ.get(COMPILE_CACHE_ENV, "").strip()
    if not key or not re.fullmatch(r"[0-9a-f]+", key) or root == "off":
        return None, {}
    folder = Path(root or Path.home() / ".cache" / "autoraysearch" / "compile") / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None, {}
    return folder, {"TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"), "TRITON_CACHE_DIR": str(folder / "triton"),
                    CAMPAIGN_CACHE_ENV: str(folder)}


def make_trial(campaign: Campaign, candidate: Candidate, train_source: str, label: str | None = None) -> Trial:
    """The candidate's model.py and the campaign's train.py, as data the trial's node writes itself.

    Without an explicit timeout (campaign.trial_timeout None) the limit follows the results log as it
    stands now: a multiple of how long the campaign's successful trials took (campaign.default_trial_timeout).
    """
    settings = campaign.settings
    label = label or candidate.label
    files = {Path(settings.model_py).name: candidate.model_source, Path(settings.train_py).name: train_source}
    if settings.generated and settings.data_module:
        # A custom dataset's module travels with the candidate like model.py: trials never read the repo.
        files[settings.data_module] = (campaign.paths.root / settings.data_module).read_text()
    timeout = campaign.trial_timeout
    if not timeout:
        from autoraysearch.campaign.opening import default_trial_timeout
        from autoraysearch.campaign.results_log import read_results_log

        timeout = default_trial_timeout(read_results_log(campaign.paths.results, settings.higher_is_better))
    return Trial(
        label=label,
        files=files,
        metric=settings.metric,
        timeout=timeout,
        env=trial_env(settings.cpus_per_trial, settings.gpus_per_trial),
        cpus=settings.cpus_per_trial,
        log_path=str(campaign.paths.trial_log(label)),
        repo_node_id=campaign.repo_node_id,
        trusted_channel=settings.generated,
        cache_key=campaign_cache_key(campaign),
    )


SEED_ENV = "AUTORAYSEARCH_SEED"
LABEL_ENV = "AUTORAYSEARCH_TRIAL_LABEL"  # which run this is (5, 5b, 5-seed2), for a train.py that logs elsewhere


def seeded(trial: Trial, seed: int, label: str, pruning: PruneRule | None = None) -> Trial:
    """The same trial with another training seed, under its own label (and log file); pruned only by `pruning`."""
    log_path = str(Path(trial.log_path).with_name(f"{label}.log")) if trial.log_path else None
    env = {**trial.env, SEED_ENV: str(seed), LABEL_ENV: label}
    return replace(trial, label=label, env=env, log_path=log_path, pruning=pruning)


SEEDS_ENV = "AUTORAYSEARCH_SEEDS"  # several seeds in one run of a generated train.py, each trained apart
SEED_TIMEOUT_ENV = "AUTORAYSEARCH_SEED_TIMEOUT"  # the seconds each of those seeds may take
# With seeds in one run, setup's default --seeds: between these, chosen from the baseline's timing (seeds_for_one_run).
# benchmarks/search_quality.py chose them: on digits at 1 epoch, 24 seeds found more than 8 or 16 at the same cost.
FEWEST_SEEDS_IN_ONE_RUN = 8
MOST_SEEDS_IN_ONE_RUN = 24
FIRST_RUN_SHARE = 3  # a candidate's first run trains a third of its seeds; the rest only if the rule asks
FIRST_RUN_LEAST = 8  # but at least this many (or all it has): the seeds a keep may be decided on


def seeds_for_one_run(start_up: float, per_seed: float) -> int:
    """How many seeds a candidate may get when they train in one run: as many as train in about one start-up's time.

    A candidate costs a start-up whatever it trains, so seeds are cheap until their training costs as
    much again; past that, a new candidate is worth more than more seeds of this one.
    """
    if per_seed <= 0:
        return MOST_SEEDS_IN_ONE_RUN
    return max(FEWEST_SEEDS_IN_ONE_RUN, min(MOST_SEEDS_IN_ONE_RUN, round(start_up / per_seed)))


def first_run_seeds(seeds: int) -> int:
    """The seeds of a candidate's first run, of its `seeds` in one run: a third, at least FIRST_RUN_LEAST.

    A keep can come after the first run, so it must hold enough paired seeds to be trusted: on digits
    at 5 epochs (8 seeds), 8 of 53 keeps after first runs of 3 were truly no better, 2 of 40 after
    first runs of all 8 (benchmarks/search_quality.py, 48 runs). Past 8, the rest only if the rule
    asks: the screen spares most losers two thirds of their seeds.
    """
    return a_share_of(seeds, FIRST_RUN_LEAST)


def confirmation_seeds(seeds: int) -> int:
    """The fresh seeds of each model in a path confirmation, of a candidate's `seeds` in one run: a third, at least 3."""
    return a_share_of(seeds, 3)


def a_share_of(seeds: int, least: int) -> int:
    """A third of `seeds` (FIRST_RUN_SHARE), at least `least`, never more than `seeds`."""
    return min(seeds, max(least, seeds // FIRST_RUN_SHARE))


def seeds_together(trial: Trial, seeds: list[int], label: str) -> Trial:
    """The same trial training `seeds` in one run of train.py, one after another; never pruned.

    For runs that are mostly start-up: the seeds after the first cost their training time alone. Its
    result's `runs` are the seeds' metrics in this order, its metric their mean.
    """
    one = seeded(trial, seeds[0], label)
    if len(seeds) == 1:
        return one
    env = {name: value for name, value in one.env.items() if name != SEED_ENV}
    # Each seed gets the trial's limit inside train.py; the run as a whole, the sum of theirs.
    env = {**env, SEEDS_ENV: ",".join(map(str, seeds)), SEED_TIMEOUT_ENV: f"{trial.timeout:g}"}
    return replace(one, env=env, timeout=trial.timeout * len(seeds))


def joined_runs(first: TrialResult, more: TrialResult) -> TrialResult:
    """A candidate's result over the seeds of two runs, in order: the mean, both runs' seconds; a failed run fails it."""
    from statistics import fmean

    seconds = round(first.seconds + more.seconds, 2)
    if more.status != "ok":
        return replace(first, status=more.status, metric=None, seconds=seconds, error=f"its second run: {more.error}")
    runs = first.values + more.values
    return replace(first, metric=fmean(runs), runs=runs, seconds=seconds,
                   seed_seconds=(first.seed_seconds or 0.0) + (more.seed_seconds or 0.0))


def held_out(result: TrialResult, kept: int) -> tuple[TrialResult, tuple[float, ...]]:
    """A run of seeds split in two: the result over its first `kept` seeds, and the values of the rest, held out."""
    from statistics import fmean

    if result.status != "ok" or len(result.values) <= kept:
        return result, ()
    runs = result.values[:kept]
    return replace(result, metric=fmean(runs), runs=runs), result.values[kept:]


def fits_before(stop_time: datetime | None, seconds: float, now: datetime | None = None) -> bool:
    """Whether work of these seconds ends before the campaign's stop time (none: always)."""
    if stop_time is None:
        return True
    return (now or datetime.now()).timestamp() + seconds <= stop_time.timestamp()


def start_up_and_training(results: list[TrialResult]) -> tuple[float, float] | None:
    """The median seconds these runs took to start, and to train and evaluate their seeds; None if none says how long
    its seeds took. Evaluation is no start-up: every seed in one run pays it again."""
    timed = [(r.seconds, r.seed_seconds) for r in results if r.status == "ok" and r.seed_seconds is not None]
    if not timed:
        return None
    return median(s - t for s, t in timed), median(t for _, t in timed)


def mostly_start_up(results: list[TrialResult]) -> bool:
    """Whether these runs' seeds trained and were evaluated in less time than the runs took to start (medians):
    their seeds are cheaper in one run."""
    timing = start_up_and_training(results)
    return timing is not None and timing[1] < timing[0]


def confirmation_trials(trial: Trial, first_seed: int, seeds: int) -> dict[str, Trial]:
    """The runs that confirm a screened candidate: every seed after the first, labelled 5-seed2, 5-seed3 …"""
    return {f"{trial.label}-seed{n}": seeded(trial, first_seed + n - 1, f"{trial.label}-seed{n}") for n in range(2, seeds + 1)}


def merge_runs(screen: TrialResult, confirmations: list[TrialResult]) -> TrialResult:
    """One candidate's result over all its seeds: the mean, every run's seconds; a failed seed fails it."""
    from statistics import fmean

    total = round(screen.seconds + sum(r.seconds for r in confirmations), 2)
    failed = next((r for r in confirmations if r.status != "ok"), None)
    if failed is not None:
        error = f"seed run {failed.label.rsplit('-seed', 1)[-1]} of {len(confirmations) + 1}: {failed.error}"
        return replace(screen, status=failed.status, metric=None, seconds=total, error=error, screen=screen.metric)
    runs = (screen.metric, *(r.metric for r in confirmations))
    return replace(screen, metric=fmean(runs), seconds=total, runs=runs, screen=screen.metric)


class StopTimeReached(Exception):
    """The campaign's deadline (or its hours) came while trials were running; they were cancelled."""


def wait_for_trial(future, label: str, until: datetime | None = None) -> TrialResult:
    """The trial's result; a lost Ray worker becomes a crash, an interruption or `until` cancels the trial."""
    return wait_for_trials({label: future}, until)[label]


def wait_for_trials(futures: dict[str, object], until: datetime | None = None) -> dict[str, TrialResult]:
    """Every trial's result once all have ended; each one's failure stays its own."""
    try:
        wait_interruptibly(list(futures.values()), until)
    except BaseException:
        cancel_trials(list(futures.values()))
        raise
    return {label: result_of(future, label) for label, future in futures.items()}


def result_of(future, label: str) -> TrialResult:
    """A finished trial's result; a lost Ray worker becomes a crash row (its future made the task run Crashed)."""
    try:
        return future.result()
    except Exception as exc:  # infrastructure: the worker died, the node went away
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        message = f"the Ray task running the trial failed: {first}"
        return TrialResult(label=label, status="crash", metric=None, seconds=0.0, error=message)


def wait_interruptibly(futures: list, until: datetime | None = None) -> None:
    """Block until every trial ends, returning to Python often so Ctrl-C and SIGTERM are handled.

    An unbounded ray.get blocks in C++ where SIGTERM's Python handler never gets to run.
    """
    import ray

    refs = [f.wrapped_future for f in futures if getattr(f, "wrapped_future", None) is not None]
    if not refs or not ray.is_initialized():
        return
    while True:
        if until is not None and datetime.now() >= until:
            raise StopTimeReached(f"stopped at {until:%H:%M}, the campaign's time limit")
        try:
            if len(ray.wait(refs, num_returns=len(refs), timeout=SIGNAL_POLL_S)[0]) == len(refs):
                return
        except SystemError as exc:
            # A signal handler that raised inside Ray's C++ wait surfaces as SystemError
            # (Ctrl-C, or the SIGTERM that Prefect's flow engine turns into TerminationSignal).
            original = exc.__cause__ or exc.__context__
            if isinstance(original, BaseException) and not isinstance(original, Exception):
                raise original from None
            raise


def step_result(future, cancel: bool = False):
    """A loop step's result, waited for so that Ctrl-C, SIGTERM and a cancel are handled within a second.

    On an interruption a step that may be abandoned (ideate: an LLM call, a command, a pre-flight) is
    cancelled; a step that writes the repository (commit, decide, log) is given a moment to finish,
    so the rollback that follows never races a half-done git operation.
    """
    try:
        wait_interruptibly([future])
    except BaseException:
        if cancel:
            cancel_trials([future])
        else:
            let_finish([future])
        raise
    return future.result()


def let_finish(futures: list) -> None:
    import ray

    refs = [f.wrapped_future for f in futures if getattr(f, "wrapped_future", None) is not None]
    if refs and ray.is_initialized():
        try:
            ray.wait(refs, num_returns=len(refs), timeout=REPO_STEP_GRACE_S)
        except Exception:
            pass  # Ray is going down; the rollback still runs


def cancel_trials(futures: list) -> None:
    """Stop running trials: an interrupt first (their process trees are killed), then the workers."""
    import ray

    refs = [f.wrapped_future for f in futures if getattr(f, "wrapped_future", None) is not None]
    if not refs or not ray.is_initialized():
        return
    try:
        for ref in refs:
            ray.cancel(ref, force=False)
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in pending:
            ray.cancel(ref, force=True)
    except Exception:
        pass  # the tasks already finished or Ray is going down; nothing is left to stop


def ran_out_of_gpu_memory(result: TrialResult, gpus: float) -> bool:
    """A crash whose output shows CUDA running out of memory, and whose processes did hold most of their share.

    What a trial prints is its own claim; the measured peak (trials.gpu_memory) is not. Without a
    measurement (no nvidia-smi) the message alone decides.
    """
    said = result.status == "crash" and bool(_OOM.search(result.output or "") or _OOM.search(result.error))
    return said and (result.gpu_memory_share is None or result.gpu_memory_share >= NEAR_SHARE * gpus)


def whole_gpu_trial(trial: Trial) -> Trial:
    """The same trial without a GPU memory cap, for a retry on a whole GPU."""
    env = {k: v for k, v in trial.env.items() if k != GPU_FRACTION_ENV}
    return replace(trial, env=env)


def fits_on_a_node(nodes: list[dict[str, float]], cpus: float, gpus: float) -> bool:
    """Whether some node of the cluster could ever place one trial (Ray would queue it forever otherwise)."""
    return any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes)


def check_trial_fits(cpus: float, gpus: float) -> None:
    """Refuse, in one sentence, trial resources that no node of the cluster has."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if fits_on_a_node(nodes, cpus, gpus):
        return
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    raise AutoraysearchError(
        f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs but no node of the Ray cluster has that much "
        f"(the largest has {most_cpus:g} CPUs and {most_gpus:g} GPUs); lower --cpus-per-trial/--gpus-per-trial."
    )
