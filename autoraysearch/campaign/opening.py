"""Opening a campaign safely: the checks before a run, the lock, the branch, and rollback."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pydantic import ValidationError

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import (
    Campaign,
    ExperimentPaths,
    read_campaign_branch,
    write_campaign_branch,
)
from autoraysearch.campaign.settings import processes_for
from autoraysearch.campaign.lock import CampaignLock, read_holder
from autoraysearch.campaign.noise import pooled_noise, runs_of
from autoraysearch.campaign.model_source import check_model_source
from autoraysearch.campaign.path import CONFIRM_SEEDS, CONFIRMATION_FIRST_RUNS
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.results_log import ResultsLog, read_results_log, run_timing
from autoraysearch.campaign.resume import recover_campaign, restore_unlogged_model
from autoraysearch.campaign.settings import CampaignSettings, load_settings
from autoraysearch.trials.runs import first_run_seeds

BRANCH_PREFIX = "autoraysearch/"
# The default trial timeout follows the campaign: a multiple of how long its successful trials took.
TIMEOUT_FACTOR = 3.0
TIMEOUT_PERCENTILE = 0.9  # of the successful trials' seconds, so that one slow keep raises the limit
MIN_TRIAL_TIMEOUT = 60.0  # room for starting Python, importing torch and loading data on a busy node
UNMEASURED_TRIAL_TIMEOUT = 600.0  # when no trial of the log says how long it took
TIMED_STATUSES = ("baseline", "keep", "discard")  # trials that ran to the end and printed their metric


@dataclass(frozen=True)
class ReadyExperiment:
    """An experiment folder that passed every check a run needs."""

    paths: ExperimentPaths
    settings: CampaignSettings
    log: ResultsLog


def check_ready(experiment_dir: Path) -> ReadyExperiment:
    """Refuse, in one sentence, anything that would make a run unsafe or meaningless."""
    repo = ExperimentRepo(experiment_dir)
    paths = ExperimentPaths(repo.experiment_dir)
    settings = load_settings(paths.root)
    holder = read_holder(paths.lock)
    if holder is not None and not holder.is_me() and holder.is_alive():
        raise holder.refusal(paths.lock)
    for name in (settings.model_py, settings.train_py):
        if not (paths.root / name).exists():
            if repo.is_tracked(name):  # deleted by accident: git still has it, and setup would start over
                raise AutoraysearchError(
                    f"{paths.root / name} is missing but git still has it; bring it back with "
                    f"`git restore {name}` in {paths.root}, then run again."
                )
            raise AutoraysearchError(f"{paths.root / name} does not exist; run `autoraysearch setup` first.")
    check_model_source((paths.root / settings.model_py).read_text(), settings.model_py)
    dirty = repo.uncommitted([settings.model_py, settings.train_py])
    if dirty:
        raise AutoraysearchError(
            f"{' and '.join(dirty)} {'has' if len(dirty) == 1 else 'have'} uncommitted changes; "
            f"commit or stash them (git add {' '.join(dirty)} && git commit), then run again."
        )
    log = read_results_log(paths.results, settings.higher_is_better)
    if log.baseline is None:
        raise AutoraysearchError(
            f"{paths.results} has no baseline; run `autoraysearch setup {settings.model_py}` first."
        )
    return ReadyExperiment(paths=paths, settings=settings, log=log)


def choose_branch(repo: ExperimentRepo, paths: ExperimentPaths, tag: str | None, today: date) -> str:
    """The campaign branch: the given tag, else the one this folder's campaign used, else a new dated one."""
    if tag:
        return BRANCH_PREFIX + tag
    existing = read_campaign_branch(paths)
    if existing and repo.branch_exists(existing):
        return existing
    base = f"{BRANCH_PREFIX}{today.isoformat()}"
    name, n = base, 2
    while repo.branch_exists(name):
        name, n = f"{base}-{n}", n + 1
    return name


def default_trial_timeout(log: ResultsLog) -> float:
    """Three times the 90th percentile of the successful trials' seconds so far (baseline included), at least a minute.

    A row whose metric is the mean of several seeds counts the time of one run.
    """
    seconds = sorted(s for row in log.rows if row.status in TIMED_STATUSES and (s := trial_seconds(row)) is not None)
    if not seconds:
        return UNMEASURED_TRIAL_TIMEOUT
    typical = seconds[max(0, math.ceil(TIMEOUT_PERCENTILE * len(seconds)) - 1)]
    return max(MIN_TRIAL_TIMEOUT, TIMEOUT_FACTOR * typical)


def trial_seconds(row) -> float | None:
    """How long one training run of this row took, or None when the row does not say."""
    try:
        seconds = float(row.extra.get("seconds", "")) / max(1, int(row.extra.get("seeds", "") or 1))
    except ValueError:
        return None
    return seconds if row.metric is not None and row.readable and math.isfinite(seconds) and seconds > 0 else None


RECENT_CANDIDATES = 5  # the latest trained candidates that say how long the next one's first run takes


def first_run_seconds(log: ResultsLog, first_seeds: int | None = None) -> float | None:
    """How long a candidate's first run takes, as the latest candidates trained to the end say (the shortest
    of RECENT_CANDIDATES); before any, as setup's timing of the baseline says (its start-up and a first run's
    seeds), so that a stop time too short for even one candidate ends the campaign at once; else None.

    With seeds in one run (`first_seeds`: the seeds of a first run), a row over exactly those seeds took
    one run; otherwise each row's time for one seed is one run's.
    """
    seconds = []
    for row in log.rows:
        one = trial_seconds(row) if row.status in ("keep", "discard") else None
        if one is None:
            continue
        if first_seeds is not None:
            if row.extra.get("seeds", "1") != str(first_seeds):
                continue  # its seeds took more than one run
            one *= first_seeds
        seconds.append(one)
    if not seconds and (timing := run_timing(log.baseline)) is not None:
        return timing[0] + (first_seeds or 1) * timing[1]
    return min(seconds[-RECENT_CANDIDATES:], default=None)


def only_a_first_run(rows, iteration: int, first_seeds: int | None) -> bool:
    """Whether iteration `iteration` trained one candidate's first run (of `first_seeds` seeds, None: one) and nothing else:
    no second run, no best's seeds, no path confirmation. What it took on the clock is then what the next
    candidate's first run will take (seconds_before_stop)."""
    mine = [row for row in rows if row.iteration == str(iteration) or row.iteration.startswith(f"{iteration}.")]
    return (len(mine) == 1 and mine[0].status in ("keep", "discard")
            and (mine[0].extra.get("seeds") or "1") == str(first_seeds or 1))


def seconds_before_stop(
    log: ResultsLog, seeds: int, first_seeds: int | None = None, iteration_seconds: Sequence[float] = (),
) -> float | None:
    """What the next candidate needs before the stop time: its first run (first_run_seconds) and, where decisions
    take several seeds, time for the final path confirmation (CONFIRMATION_FIRST_RUNS more); None while the log says
    nothing of a first run's time.

    A first run counts at least what the shortest of this run's latest iterations took on the clock
    (`iteration_seconds`: ideas, commits, scheduling and the results log included), since where runs
    take seconds, those steps are a good share of every iteration and of a confirmation too.
    The confirmation is kept even when no keep awaits one: this candidate may be kept, and a keep there
    was no time to confirm would end the campaign on a claim.
    """
    first = first_run_seconds(log, first_seeds)
    if first is None:
        return None
    if iteration_seconds:
        first = max(first, min(iteration_seconds[-RECENT_CANDIDATES:]))
    return first * (1 + CONFIRMATION_FIRST_RUNS) if seeds > 1 else first


# Below this many runs of the baseline's length left after setup (30 in all, setup's 3 included), paired decisions
# found about half a greedy loop's true gain or less where runs are all training, and 0.7 × to 0.8 × from 32 runs
# on (benchmarks/results/search_quality_e<1|5>_start_up_0_budgets_12_18_24_32_48.md).
SHORT_CAMPAIGN_RUNS = 27
# With seeds in one run, below this many of a candidate's first runs left after setup: the default found 0.74 × greedy's
# gain with about 7 left (24 runs in all at 5 epochs) and 0.85 × with about 6 (12 at 1 epoch), 1.02 × and 1.18 × with
# about 10 (32 and 18 runs; benchmarks/results/search_quality_e<1|5>_budgets_12_18_24_32_48.md).
SHORT_CAMPAIGN_FIRST_RUNS = 9


def short_campaign(log: ResultsLog, seeds: int, seeds_together: bool, parallel: int, seconds_left: float) -> str | None:
    """What to tell a user whose stop time leaves a campaign of paired decisions too few runs to keep much
    (None: enough, or decisions on single runs, or a baseline whose runs' time the log does not say).

    Setup's seeds are paid already, but a keep needs paired seeds, and the final path confirmation a run per
    fresh seed of the best and of the baseline (with seeds in one run, a candidate's first run holds several
    seeds' training), so a short campaign keeps little; single runs keep more, falsely one time in five.
    """
    baseline = log.baseline
    if seeds <= 1 or baseline is None or not pooled_noise([runs_of(baseline)]).measured:
        return None
    timing = run_timing(baseline)
    per_run = sum(timing) if timing is not None else trial_seconds(baseline)  # a run of one seed
    if per_run is None:
        return None
    runs = seconds_left / per_run * parallel
    if seeds_together:
        if timing is None:
            return None  # setup did not time its seeds: the row's seconds hold two runs of several seeds
        first_seeds = first_run_seeds(seeds)
        first_runs = seconds_left / (timing[0] + first_seeds * timing[1]) * parallel
        if first_runs >= SHORT_CAMPAIGN_FIRST_RUNS:
            return None
        which = "candidate's first run" if round(first_runs) == 1 else "candidates' first runs"
        why = (f"time for about {first_runs:.0f} {which} of {first_seeds} seeds, too few for paired "
               "decisions to keep much (in benchmarks, 0.74 times a greedy loop's gain with about 7, as much with 10)")
    elif runs >= SHORT_CAMPAIGN_RUNS:
        return None
    else:
        why = (f"too few for paired decisions to keep much: each keep needs paired seeds, and the final path confirmation "
               f"{2 * CONFIRM_SEEDS} runs (in benchmarks, about half a greedy loop's gain at 24 runs, 0.7 to 0.8 times it "
               "from 32)")
    return (f"the stop time leaves about {runs:.0f} runs of the baseline's length, {why}; `run --seeds 1` decides on "
            "single runs as a greedy loop does: more keeps, about one in five of them false, and no confirmed gain")


@contextlib.contextmanager
def open_campaign(
    experiment_dir: Path,
    tag: str | None = None,
    trial_timeout: float | None = None,
    repo_node_id: str | None = None,
    say: Callable[[str], None] = print,
    **overrides: Any,
) -> Iterator[Campaign]:
    """Take the lock, check the folder, check out the campaign branch and make it agree with the results log.

    `overrides` are settings given for this run only (None: keep autoraysearch.toml's value); `say`
    reports, one line each, what an earlier crash left behind and was put right.
    """
    repo = ExperimentRepo(experiment_dir)
    paths = ExperimentPaths(repo.experiment_dir)
    paths.make_state_dir()
    with CampaignLock(paths.lock) as lock:
        if lock.stale_holder is not None:
            say(f"removed the lock of an earlier run that is gone (pid {lock.stale_holder.pid})")
        if (removed := repo.remove_stale_index_lock()) is not None:
            say(removed)
        for line in restore_unlogged_model(repo, paths):
            say(line)
        ready = check_ready(repo.experiment_dir)
        branch = choose_branch(repo, ready.paths, tag, date.today())
        repo.switch_to_branch(branch)
        write_campaign_branch(ready.paths, branch)
        for line in recover_campaign(repo, ready.paths, branch, ready.settings.model_py, ready.settings.higher_is_better):
            say(line)
        ready = replace(ready, log=read_results_log(ready.paths.results, ready.settings.higher_is_better))
        timeout = trial_timeout or ready.settings.trial_timeout  # None: follow the campaign's trial times
        settings = with_overrides(ready.settings, overrides)
        yield Campaign(
            experiment_dir=str(ready.paths.root),
            branch=branch,
            settings=settings,
            trial_timeout=timeout,
            repo_node_id=repo_node_id,
        )


def with_overrides(settings: CampaignSettings, overrides: dict[str, Any]) -> CampaignSettings:
    """The settings with this run's choices applied, validated like autoraysearch.toml itself."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return settings
    try:
        overridden = CampaignSettings(**{**settings.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        raise AutoraysearchError(f"the run option {name}={given.get(name)!r} is not valid: {error['msg']}.") from None
    refuse_gpus_train_py_would_leave_idle(settings, overridden)
    return overridden


def refuse_gpus_train_py_would_leave_idle(settings: CampaignSettings, overridden: CampaignSettings) -> None:
    """A generated single-device train.py would use one of several GPUs: the DDP one must be generated."""
    if settings.generated and processes_for(settings.gpus_per_trial) == 1 < processes_for(overridden.gpus_per_trial):
        raise AutoraysearchError(
            f"train.py was generated for one device per trial and would leave {overridden.gpus_per_trial - 1:g} of "
            f"{overridden.gpus_per_trial:g} GPUs idle: run `autoraysearch setup` again with --gpus-per-trial "
            f"{overridden.gpus_per_trial:g} for its DDP version."
        )


def roll_back(campaign: Campaign, best_sha: str) -> None:
    """Put the campaign branch and model.py back on the best commit after an interrupted iteration."""
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    if repo.current_branch() != campaign.branch:
        return
    if repo.head_sha() != best_sha or repo.uncommitted([campaign.settings.model_py]):
        repo.move_branch_to(best_sha, campaign.settings.model_py)
