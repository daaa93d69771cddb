"""The autoraysearch loop: review, ideate, modify, commit, verify, decide, log, repeat."""

from __future__ import annotations

from dataclasses import dataclass, replace
import itertools
import time
from statistics import fmean
from datetime import datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import SecretStr

from autoraysearch.views.artifacts import publish_campaign_artifacts
from autoraysearch.campaign.opening import only_a_first_run, open_campaign, roll_back, seconds_before_stop, short_campaign
from autoraysearch.views.ending import close_stopped_campaign, publish_final_artifact
from autoraysearch.views.identity import loop_run_name
from autoraysearch.views.step_logs import candidate_line, fmt, summarize_iteration
from autoraysearch.views.events import announce_campaign_finished, announce_new_best
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.cluster import CampaignTaskRunner, driver_node_id, on_repo_node, with_trial_resources
from autoraysearch.campaign.experiment import Campaign, Candidate, Ideas, Review, Trial, TrialResult, Verdict
from autoraysearch.views.live_view import watching_trials
from autoraysearch.ideators.llm.clients import LLMUnavailable
from autoraysearch.ideators.llm.ideator import campaign_api_key, config_from_settings
from autoraysearch.campaign.settings import CampaignSettings
from autoraysearch.campaign.stopping import Progress, StopConditions, parse_deadline, validate
from autoraysearch.tasks.commit import candidate_branch, commit, commit_parallel
from autoraysearch.tasks.decide import decide, decide_parallel
from autoraysearch.tasks.ideate import IdeasExhausted, ideate, outage_wait
from autoraysearch.tasks.log import (
    best_seeds_row, dropped_rows, log, log_experiment, result_row, save_trial_output, usage_cell, with_tokens,
)
from autoraysearch.tasks.modify import modify
from autoraysearch.tasks.review import review
from autoraysearch.tasks.verify import verify
from autoraysearch.campaign.integrity import checked_results, take_snapshot, undo_preflight_changes, undo_tampering
from autoraysearch.campaign.resume import clear_pending, write_pending
from autoraysearch.campaign.noise import Bar, bar_from_log, format_runs, next_step, parse_runs, worth_confirming
from autoraysearch.campaign.path import (
    CONFIRM_EVERY, CONFIRM_SEEDS, CONFIRMATION_FIRST_RUNS, describe_confirmed, fresh_seeds, keeps_since_confirmed, last_confirmed,
    next_fresh_seeds, runs_ahead,
)
from autoraysearch.campaign.path import verdict as path_verdict
from autoraysearch.campaign.results_log import ResultRow
from autoraysearch.campaign.pruning import EXPLORE_AFTER, EXPLORE_Z
from autoraysearch.campaign.reference_curves import campaign_rule
from autoraysearch.campaign.seed_watch import seed_stop_for
from autoraysearch.setup.prechecks import PARALLEL_LETTERS, check_parallel
from autoraysearch.trials.sandbox import landlock_abi
from autoraysearch.trials.runs import (
    check_trial_fits,
    make_trial,
    confirmation_seeds,
    first_run_seeds,
    fits_before,
    merge_runs,
    seeds_together,
    seeded,
    ran_out_of_gpu_memory,
    step_result,
    wait_for_trials,
    StopTimeReached,
    whole_gpu_trial,
)



RACE_TOP = 2  # of several candidates, the screens that go on to paired seeds


@dataclass(frozen=True)
class CampaignSummary:
    """How a run of the loop ended."""

    branch: str
    iterations: int
    kept: int
    best_metric: float | None
    best_sha: str
    stop_reason: str


@flow(name="autoraysearch-loop", flow_run_name=loop_run_name, task_runner=CampaignTaskRunner(), log_prints=True)
def autoraysearch_loop(
    experiment_dir: str = ".",
    max_iterations: int | None = None,
    deadline: str | None = None,
    max_hours: float | None = None,
    target: float | None = None,
    patience: int | None = None,
    tag: str | None = None,
    trial_timeout: float | None = None,
    parallel: int = 1,
    cpus_per_trial: float | None = None,
    gpus_per_trial: float | None = None,
    ideator: str | None = None,
    llm_model: str | None = None,
    llm_base_url: str | None = None,
    llm_command: str | None = None,
    api_key_block: str | None = None,
    goal: str | None = None,
    seeds: int | None = None,
    min_delta: float | None = None,
    stuck_after: int | None = None,
    early_stop: bool | None = None,
    seeds_in_one_run: bool | None = None,
) -> CampaignSummary:
    """Improve model.py, `parallel` candidates per iteration, until a stop condition holds (none given: forever).

    ideator, llm_model, llm_base_url, llm_command, api_key_block and goal override autoraysearch.toml
    for this run, as do seeds, min_delta, stuck_after, early_stop (False: no candidate is pruned) and
    seeds_in_one_run (False: a run per seed, screened first, as for long runs); API keys come from OPENAI_API_KEY / ANTHROPIC_API_KEY or the named Prefect Secret block.
    """
    logger = get_run_logger()
    started = datetime.now()
    conditions = validate(
        StopConditions(
            max_iterations=max_iterations,
            deadline=parse_deadline(deadline, started) if deadline else None,
            max_hours=max_hours,
            target=target,
            patience=patience,
        )
    )
    check_parallel(parallel)
    node = driver_node_id()
    overrides = dict(
        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, ideator=ideator, llm_model=llm_model,
        llm_base_url=llm_base_url, llm_command=llm_command, api_key_block=api_key_block, goal=goal,
        seeds=seeds, min_delta=min_delta, stuck_after=stuck_after, early_stop=early_stop,
        seeds_in_one_run=seeds_in_one_run,
    )
    with open_campaign(
        Path(experiment_dir), tag=tag, trial_timeout=trial_timeout, repo_node_id=node, say=logger.warning, **overrides
    ) as campaign:
        check_trial_fits(campaign.settings.cpus_per_trial, campaign.settings.gpus_per_trial)
        api_key = ideator_key(campaign.settings)
        first = review_step(campaign, node, "start")
        best_metric, best_sha = first.best_metric, first.best_sha
        progress = Progress(iterations=0, started=started, best=best_metric, iterations_since_keep=0)
        iteration = next_iteration_number(campaign)
        kept = 0
        logger.info("campaign %s: best %s=%s at %s", campaign.branch, campaign.settings.metric, fmt(best_metric), best_sha[:7])
        publish_campaign_artifacts(campaign, progress, conditions)
        stop_time = conditions.stop_time(started)  # an overnight run ends by its deadline, mid-iteration if need be
        if stop_time is not None and (short := short_campaign(
                read_log(campaign), campaign.settings.seeds, campaign.settings.seeds_together, parallel,
                (stop_time - datetime.now()).total_seconds())):
            logger.warning(short)
        iteration_seconds: list[float] = []  # of this run's iterations that trained a first run alone (only_a_first_run)
        # The seeds of a candidate's first run where they train in one run; None where each seed is a run of its own.
        first_seeds = first_run_seeds(campaign.settings.seeds) if campaign.settings.seeds_together else None
        try:
            while (reason := conditions.reason_to_stop(progress, datetime.now(), campaign.settings.higher_is_better)) is None:
                if (reason := no_time_for_a_candidate(campaign, stop_time, first_seeds, iteration_seconds)) is not None:
                    break
                began, number = time.monotonic(), iteration
                try:
                    if parallel == 1:
                        verdict = run_iteration(campaign, node, iteration, api_key, stop_time)
                    else:
                        verdict = run_parallel_iteration(campaign, node, iteration, parallel, api_key, stop_time)
                except IdeasExhausted as exc:
                    reason = str(exc)
                    break
                except StopTimeReached as exc:  # the running candidates were stopped and logged as such
                    now = datetime.now()
                    reason = conditions.reason_to_stop(progress, now, campaign.settings.higher_is_better) or str(exc)
                    break
                kept += verdict.status == "keep"
                if verdict.status == "keep" and due_for_confirmation(campaign):
                    verdict = replace(verdict, **confirm_path(campaign, stop_time))
                progress = Progress(
                    iterations=progress.iterations + 1,
                    started=started,
                    best=verdict.best_metric,
                    iterations_since_keep=0 if verdict.status == "keep" else progress.iterations_since_keep + 1,
                )
                best_metric, best_sha = verdict.best_metric, verdict.best_sha
                iteration += 1
                logger.info(summarize_iteration(campaign, iteration - 1, progress.iterations, kept))
                if verdict.status == "keep":
                    announce_new_best(campaign)
                publish_campaign_artifacts(campaign, progress, conditions)
                if stop_time is not None and only_a_first_run(read_log(campaign).rows, number, first_seeds):
                    iteration_seconds.append(time.monotonic() - began)
        except BaseException as exc:
            # Cancelled, interrupted or failed: the iteration already put the branch back on its best.
            close_stopped_campaign(campaign, progress, conditions, exc)
            raise
        best_metric, best_sha = best_after_confirmation(campaign, stop_time, best_metric, best_sha)
        logger.info("stopping: %s; best %s=%s at %s; %s", reason, campaign.settings.metric, fmt(best_metric), best_sha[:7],
                    describe_confirmed(read_log(campaign).rows))
        publish_campaign_artifacts(campaign, progress, conditions, stop_reason=reason)
        publish_final_artifact(campaign, reason)
        announce_campaign_finished(campaign, reason)
        return CampaignSummary(
            branch=campaign.branch,
            iterations=progress.iterations,
            kept=kept,
            best_metric=best_metric,
            best_sha=best_sha,
            stop_reason=reason,
        )


def read_log(campaign: Campaign):
    from autoraysearch.campaign.results_log import read_results_log

    return read_results_log(campaign.paths.results, campaign.settings.higher_is_better)


def due_for_confirmation(campaign: Campaign) -> bool:
    return campaign.settings.seeds > 1 and keeps_since_confirmed(read_log(campaign).rows) >= CONFIRM_EVERY


def no_time_for_a_candidate(
    campaign: Campaign, stop_time: datetime | None, first_seeds: int | None, iteration_seconds: list[float],
) -> str | None:
    """Why no candidate is started before the stop time: its first run, and the final path confirmation it would need
    if kept, would end after it (none: go on). The stop time would cancel them: the campaign would end on a claim.
    `first_seeds`: a first run's seeds (None: a run per seed); `iteration_seconds`: what this run's iterations of a
    first run alone took on the clock, every step included."""
    if stop_time is None:
        return None
    settings = campaign.settings
    log = read_log(campaign)
    seconds = seconds_before_stop(log, settings.seeds, first_seeds, iteration_seconds)
    if seconds is None or fits_before(stop_time, seconds):
        return None
    after = " and the path confirmation a keep would need after it" if settings.seeds > 1 else ""
    return f"the stop time {stop_time:%H:%M:%S} leaves no time for another candidate's first run{after} (about {seconds:.0f} s)"


def best_after_confirmation(campaign: Campaign, stop_time: datetime | None, best_metric, best_sha: str):
    """The campaign's end: its path confirmed on fresh seeds (rolled back if it does not hold); the best then."""
    if campaign.settings.seeds <= 1:
        return best_metric, best_sha
    if stop_time is None or datetime.now() < stop_time:
        try:
            moved = confirm_path(campaign, stop_time, final=True)
            return moved.get("best_metric", best_metric), moved.get("best_sha", best_sha)
        except StopTimeReached:
            pass
    if unconfirmed := keeps_since_confirmed(read_log(campaign).rows):
        get_run_logger().warning("the stop time came before the final path confirmation ended: the %d keep(s) since the "
                                 "last confirmation are not confirmed (the next run's path confirmation covers them)", unconfirmed)
    return best_metric, best_sha


def confirm_path(campaign: Campaign, stop_time: datetime | None, final: bool = False) -> dict:
    """Train the best and the last point that held on fresh paired seeds; log it, roll back if it does not hold.

    Where seeds train in one run, the point is not trained again if it was trained ahead at these seeds,
    and the best, unless this is the campaign's last confirmation (`final`), is trained ahead at the
    next one's in the same run (campaign.path). Returns the verdict fields that changed (nothing, or the
    point rolled back to).
    """
    settings = campaign.settings
    log = read_log(campaign)
    best = log.best()
    point = last_confirmed(log.rows)
    if best is None or best.status == "baseline" or best.commit == point.commit:
        return {}
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    first_keep = next(r for r in log.rows if r.status == "keep")
    best_sha = repo.resolve(best.commit)
    point_sha = repo.resolve(point.commit) if point.commit else repo.resolve(f"{first_keep.commit}^")
    if best_sha is None or point_sha is None:
        get_run_logger().warning("path not confirmed: %s or the point before it is no longer in git", best.commit)
        return {}
    train_source = (campaign.paths.root / settings.train_py).read_text()
    label = f"{log.next_iteration() - 1}.path"
    count = confirmation_seeds(settings.seeds) if settings.seeds_together else CONFIRM_SEEDS
    seeds = fresh_seeds(settings.seed, log.rows, count)
    point_ahead = runs_ahead(log.rows, count) if settings.seeds_together else None
    best_ahead = next_fresh_seeds(settings.seed, log.rows, count) if settings.seeds_together and not final else []
    trials = {}
    for name, sha in (("best", best_sha), ("point", point_sha)):
        if name == "point" and point_ahead is not None:
            continue
        model = Candidate(label=f"{label}-{name}", description="", model_source=repo.file_at(sha, settings.model_py),
                          fingerprint="")
        trial = make_trial(campaign, model, train_source)
        if settings.seeds_together:
            run_seeds = seeds + (best_ahead if name == "best" else [])
            trials[f"{label}-{name}-seeds"] = seeds_together(trial, run_seeds, f"{label}-{name}-seeds")
            continue
        for n, seed in enumerate(seeds, 1):
            trials[f"{label}-{name}-seed{n}"] = seeded(trial, seed, f"{label}-{name}-seed{n}")
    done = train_all(campaign, trials, stop_time)
    if any(r.status != "ok" for r in done.values()):
        get_run_logger().warning("path not confirmed: a fresh-seed run of %s failed", best.commit)
        return {}
    runs = {name: tuple(x for key, r in done.items() if f"-{name}-seed" in key for x in r.values)
            for name in ("best", "point")}
    runs["best"], ahead = runs["best"][:len(seeds)], runs["best"][len(seeds):]
    if point_ahead is not None:
        runs["point"] = point_ahead
    bar = bar_from_log(log)
    status, cells = path_verdict(runs["best"], runs["point"], bar)
    point_short = repo.short(point_sha)
    gain = fmean(parse_runs(cells["diffs"]))  # unrounded for the log; the `gain` cell is rounded for reading
    row = ResultRow(
        iteration=label, commit=best.commit if status == "confirmed" else point_short,
        metric=fmean(runs["best"]), delta=gain if bar.higher_is_better else -gain,
        status=status,
        description=f"path: {best.iteration} ({best.commit}) against {point.label} ({point_short}) on "
                    f"{len(runs['best'])} fresh seeds: {'holds' if status == 'confirmed' else 'does not hold, rolled back'}",
        extra={"seconds": f"{sum(r.seconds for r in done.values()):g}", **cells,
               **({"ahead": format_runs(ahead)} if status == "confirmed" and ahead else {})},
    )
    if status == "rollback":
        repo.move_branch_to(point_sha, settings.model_py)
    log_experiment(campaign, row, None)
    get_run_logger().info("%s %s: %s (paired %s %s)", label, status, row.description, cells["gain"], cells.get("interval", ""))
    if status == "rollback":
        rolled = read_log(campaign).best()
        return {"best_sha": point_sha, "best_metric": rolled.metric if rolled else None}
    return {}


def review_step(campaign: Campaign, node: str | None, label: str) -> Review:
    with on_repo_node(node):
        return step_result(review.submit(campaign, label), cancel=True)


def next_iteration_number(campaign: Campaign) -> int:
    from autoraysearch.campaign.results_log import read_results_log

    return read_results_log(campaign.paths.results, campaign.settings.higher_is_better).next_iteration()


def ideator_key(settings: CampaignSettings) -> SecretStr | None:
    """The LLM ideator's API key, checked before the first iteration; masked wherever Prefect shows it."""
    if settings.ideator == "mutate":
        return None
    key = campaign_api_key(config_from_settings(settings), settings.api_key_block)
    return SecretStr(key) if key else None


def ideate_step(campaign: Campaign, node: str | None, current: Review, iteration: int, labels: list[str],
                api_key: SecretStr | None, stop_time: datetime | None = None) -> tuple[Ideas, dict[str, str]]:
    """Ask the ideator, log what it dropped before training; the tokens it spent go on the first row logged.

    Its pre-flights run candidate code: what they change in the experiment folder is undone and saved
    (a change none of them could have made, under Landlock, is a person's and stops the campaign).
    """
    guard = take_snapshot(campaign)
    try:
        ideas = ask_ideator(campaign, node, current, iteration, labels, api_key, stop_time)
    finally:
        if undone := undo_preflight_changes(guard, sandboxed=landlock_abi() >= 1):
            get_run_logger().warning("ideate-%d: %s", iteration, undone)
    with on_repo_node(node):
        dropped = dropped_rows(ideas, iteration, len(labels))
        tokens = usage_cell(ideas.usage)
        for row in dropped:
            step_result(log.submit(campaign, with_tokens(row, tokens), None))
            tokens = {}
    for row in dropped:
        get_run_logger().info("%s %s: %s", row.iteration, row.status, row.description)
    return ideas, tokens


def ask_ideator(campaign: Campaign, node: str | None, current: Review, iteration: int, labels: list[str],
                api_key: SecretStr | None, stop_time: datetime | None) -> Ideas:
    """The ideate step's proposals; an LLM that is down is waited out and asked again, never failing the run.

    The waits grow (10 s, 60 s, then llm_outage_wait) and end with the campaign's time limit.
    """
    for attempt in itertools.count():
        try:
            with on_repo_node(node):
                return step_result(ideate.submit(current, campaign.settings, iteration, labels, api_key), cancel=True)
        except LLMUnavailable as exc:
            wait = outage_wait(attempt, campaign.settings.llm_outage_wait)
            if stop_time is not None and datetime.now() + timedelta(seconds=wait) >= stop_time:
                raise StopTimeReached(f"the ideator was still unavailable at the campaign's time limit ({exc})") from None
            get_run_logger().warning("ideate-%d: the ideator is unavailable (%s); asking again in %g s", iteration, exc, wait)
            time.sleep(wait)  # Ctrl-C, SIGTERM and a cancel interrupt the wait
    raise AssertionError("unreachable")


def nothing_to_train(current: Review, ideas: Ideas) -> Verdict:
    """The verdict of an iteration whose every proposal was dropped before training."""
    status = "crash" if ideas.crashed else "rejected"
    return Verdict(status=status, delta=None, best_metric=current.best_metric, best_sha=current.best_sha)


def run_iteration(
    campaign: Campaign, node: str | None, iteration: int, api_key: SecretStr | None = None,
    stop_time: datetime | None = None,
) -> Verdict:
    """One candidate from idea to logged verdict; an interruption leaves the branch on the best commit."""
    label = str(iteration)
    current = review_step(campaign, node, label)
    candidate: Candidate | None = None
    try:
        ideas, tokens = ideate_step(campaign, node, current, iteration, [label], api_key, stop_time)
        if not ideas.candidates:
            return nothing_to_train(current, ideas)
        [candidate] = ideas.candidates
        write_pending(campaign.paths, [candidate])  # a crash from here on still gets the candidate its row
        with on_repo_node(node):
            step_result(modify.submit(campaign, candidate))
            sha = step_result(commit.submit(campaign, candidate))
        trial = make_trial(campaign, candidate, current.train_source)
        results, bar = screen_then_confirm(campaign, {label: trial}, current.bar, stop_time, best_trial(campaign, current))
        log_best_seeds(campaign, iteration, current.bar, bar)
        result = results[label]
        with on_repo_node(node):
            verdict = step_result(decide.submit(campaign, result, sha, bar, current.best_sha))
            row = with_tokens(result_row(candidate, verdict, result, sha[:7], bar), tokens)
            step_result(log.submit(campaign, row, result, candidate=candidate, base_source=current.model_source))
        clear_pending(campaign.paths)
    except BaseException as exc:
        # Ctrl-C, SIGTERM, cancellation, the stop time or a failed step: never leave a candidate on the branch.
        roll_back(campaign, current.best_sha)
        if candidate is not None:
            log_stopped(campaign, [candidate], current, why_stopped(exc))
        raise
    get_run_logger().info(candidate_line(result, verdict, current.bar, campaign.settings.metric, candidate.description))
    return verdict


def screen_then_confirm(
    campaign: Campaign, trials: dict[str, Trial], bar: Bar, stop_time: datetime | None, best: Trial | None = None,
) -> tuple[dict[str, TrialResult], Bar]:
    """Screen each candidate at the campaign's seed; those whose paired screen passes get more paired seeds.

    The first extra seed comes at once, then one at a time while the keep rule asks for more (see noise).
    Of several candidates (racing), only the RACE_TOP best screens go on, and after two seeds only the
    leader by paired mean. The best is trained at a seed it lacks (`best`), so every comparison stays
    paired; the bar comes back with those runs. Each result is the mean over its seeds, its seconds
    count every run. A screen run with no realistic chance of clearing the bar is stopped early and
    comes back `pruned`; confirmation runs never are (see pruning).
    """
    settings = campaign.settings
    if settings.seeds_together:
        return train_seeds_together(campaign, trials, bar, stop_time, best)
    rule = campaign_rule(campaign, bar)
    if rule is not None and rule.exploring:
        get_run_logger().info("early stopping: the last %d or more screens were stopped between epochs; "
                              "this iteration's are stopped only where the line puts them %g prediction errors "
                              "below the bar, so it meets a fresh screen", EXPLORE_AFTER, EXPLORE_Z)
    screens = train_all(
        campaign, {label: seeded(t, settings.seed, label, pruning=rule) for label, t in trials.items()}, stop_time
    )
    passed = [label for label, r in screens.items() if r.status == "ok" and worth_confirming(r.metric, bar, settings.seeds)]
    going = sorted(passed, key=lambda label: -bar.differences([screens[label].metric])[0])[:RACE_TOP]
    extra: dict[str, list[TrialResult]] = {label: [] for label in going}
    seeds = 1
    while going and seeds < settings.seeds:
        # Another seed, and the path confirmation a keep would need after it, before the stop time.
        if not fits_before(stop_time, (1 + CONFIRMATION_FIRST_RUNS) * max(screens[label].seconds for label in going)):
            get_run_logger().info("another paired seed and a path confirmation after it would end after the stop time: "
                                  "decided on %d", seeds)
            break
        seeds += 1
        batch = {f"{label}-seed{seeds}": seeded(trials[label], settings.seed + seeds - 1, f"{label}-seed{seeds}")
                 for label in going}
        best_label = f"{next(iter(trials))}-best-seed{seeds}"
        if len(bar.best_runs) < seeds and best is not None:
            batch[best_label] = seeded(best, settings.seed + seeds - 1, best_label)
        for label in going:
            get_run_logger().info("%s: paired seed %d of up to %d", label, seeds, settings.seeds)
        done = train_all(campaign, batch, stop_time)
        for result in done.values():
            save_trial_output(campaign, result)
        if len(bar.best_runs) < seeds:
            if best_label not in done or done[best_label].status != "ok":
                break  # the best cannot be paired at this seed: decide on the seeds both have
            bar = replace(bar, best_runs=bar.best_runs + (done[best_label].metric,))
        for label in going:
            extra[label].append(done[f"{label}-seed{seeds}"])
        going = still_open(going, screens, extra, bar, settings.seeds)
    results = {label: merge_runs(screen, extra[label]) if extra.get(label) else screen
               for label, screen in screens.items()}
    return results, bar


def train_seeds_together(
    campaign: Campaign, trials: dict[str, Trial], bar: Bar, stop_time: datetime | None, best: Trial | None = None,
) -> tuple[dict[str, TrialResult], Bar]:
    """Each candidate at its first seeds (a third of the campaign's, at least 8) in one run, and decided on them.

    For campaigns whose runs are mostly start-up (settings.seeds_in_one_run): every paired seed after
    the first in a run costs its training time alone, so a candidate is decided on several seeds at
    once instead of a screen and then one seed at a time. A candidate the keep rule is unsure of gets
    no second run: the rest of its seeds, and the best's beside them, would cost another start-up and
    twice the first run's training, more than a fresh candidate's first run, and fresh candidates find
    more in that time (benchmarks/search_quality.py). The best is trained at the seeds it lacks in the
    same batch; the bar comes back with those runs.
    """
    settings = campaign.settings
    first = [settings.seed + i for i in range(first_run_seeds(settings.seeds))]
    return train_seeds_run(campaign, trials, first, bar, stop_time, best)


def train_seeds_run(
    campaign: Campaign, trials: dict[str, Trial], seeds: list[int], bar: Bar, stop_time: datetime | None,
    best: Trial | None,
) -> tuple[dict[str, TrialResult], Bar]:
    """One run per trial at these seeds (the campaign's, in order from where the best's runs reach), the best's missing ones beside.

    A candidate's run is stopped once it can no longer be kept (seed_watch), unless early stopping is off.
    """
    # The bar's runs are the best's from the campaign's first seed: a run from there can be paired seed by seed.
    paired_from_first = seeds[0] == campaign.settings.seed
    stop = seed_stop_for(bar, len(seeds), campaign.settings.early_stop) if paired_from_first else None
    batch = {label: replace(seeds_together(t, seeds, label), seed_stop=stop) for label, t in trials.items()}
    best_label = f"{next(iter(trials))}-best"
    have = len(bar.best_runs) - (seeds[0] - campaign.settings.seed)  # of these seeds, how many the best has
    missing = seeds[max(0, have):]
    if missing and best is not None and have >= 0:
        batch[best_label] = seeds_together(best, missing, best_label)
    done = train_all(campaign, batch, stop_time)
    for result in done.values():
        save_trial_output(campaign, result)
    if best_label in done and done[best_label].status == "ok":
        bar = replace(bar, best_runs=bar.best_runs + done[best_label].values)
    return {label: done[label] for label in trials}, bar


def log_best_seeds(campaign: Campaign, iteration: int, before: Bar, after: Bar) -> None:
    """Log the best's runs at the seeds this iteration trained it at, so that no later comparison trains them again."""
    new = after.best_runs[len(before.best_runs):]
    if not new:
        return
    best = read_log(campaign).best()
    if best is not None:
        log_experiment(campaign, best_seeds_row(iteration, best, new, len(before.best_runs) + 1), None)


def still_open(labels: list[str], screens: dict[str, TrialResult], extra: dict[str, list[TrialResult]], bar: Bar,
               seeds: int) -> list[str]:
    """The candidates that need another paired seed: only the leader by paired mean, if the rule asks for more."""
    merged = {label: merge_runs(screens[label], extra[label]) for label in labels}
    ok = [label for label in labels if merged[label].status == "ok"]
    if not ok:
        return []
    leader = max(ok, key=lambda label: fmean(bar.differences(merged[label].runs)))
    return [leader] if next_step(bar.differences(merged[leader].runs), bar, seeds) == "more" else []


def best_trial(campaign: Campaign, current: Review) -> Trial:
    """The best model.py as a trial, for the paired seeds it has not been trained at."""
    best = Candidate(label="best", description="the best so far", model_source=current.model_source, fingerprint="")
    return make_trial(campaign, best, current.train_source)


def train_all(campaign: Campaign, trials: dict[str, Trial], stop_time: datetime | None) -> dict[str, TrialResult]:
    """Train every trial at once on Ray; what they changed in the experiment folder is undone and blamed."""
    settings = campaign.settings
    guard = take_snapshot(campaign)
    try:
        with with_trial_resources(settings.cpus_per_trial, settings.gpus_per_trial):
            futures = {label: verify.submit(trial) for label, trial in trials.items()}
        with watching_trials(trials):  # what `autoraysearch run` shows while they train
            results = wait_for_trials(futures, stop_time)
            results.update(retry_out_of_memory(campaign, trials, results, stop_time))
    except BaseException:
        undo_tampering(guard)  # even a stopped trial's changes are undone
        raise
    return checked_results(guard, results, campaign.repo_node_id)


def run_parallel_iteration(
    campaign: Campaign, node: str | None, iteration: int, parallel: int, api_key: SecretStr | None = None,
    stop_time: datetime | None = None,
) -> Verdict:
    """N candidates on N slices of the cluster; the best one that beats the best so far is kept."""
    labels = [f"{iteration}{letter}" for letter in PARALLEL_LETTERS[:parallel]]
    current = review_step(campaign, node, str(iteration))
    candidates: list[Candidate] = []
    settings = campaign.settings
    try:
        ideas, tokens = ideate_step(campaign, node, current, iteration, labels, api_key, stop_time)
        if not ideas.candidates:
            return nothing_to_train(current, ideas)
        candidates = ideas.candidates
        write_pending(campaign.paths, candidates)
        with on_repo_node(node):
            shas = step_result(commit_parallel.submit(campaign, candidates, current.best_sha, iteration))
        trials = {c.label: make_trial(campaign, c, current.train_source) for c in candidates}
        results, bar = screen_then_confirm(campaign, trials, current.bar, stop_time, best_trial(campaign, current))
        log_best_seeds(campaign, iteration, current.bar, bar)
        ordered = [results[c.label] for c in candidates]
        with on_repo_node(node):
            verdicts = step_result(decide_parallel.submit(
                campaign, ordered, shas, bar, current.best_sha, iteration
            ))
            for candidate, result in zip(candidates, ordered):
                verdict = verdicts[candidate.label]
                row = with_tokens(result_row(candidate, verdict, result, shas[candidate.label][:7], bar), tokens)
                step_result(log.submit(campaign, row, result, candidate=candidate, base_source=current.model_source))
                tokens = {}
        clear_pending(campaign.paths)
    except BaseException as exc:
        roll_back(campaign, current.best_sha)
        discard_candidate_branches(campaign, [c.label for c in candidates])
        log_stopped(campaign, candidates, current, why_stopped(exc))
        raise
    for candidate, result in zip(candidates, ordered):
        get_run_logger().info(candidate_line(result, verdicts[candidate.label], current.bar, settings.metric,
                                             candidate.description))
    kept = [v for v in verdicts.values() if v.status == "keep"]
    return kept[0] if kept else next(iter(verdicts.values()))


def retry_out_of_memory(
    campaign: Campaign, trials: dict[str, Trial], results: dict[str, TrialResult], stop_time: datetime | None = None
) -> dict[str, TrialResult]:
    """Trials that ran out of GPU memory at a fraction of a GPU, run once more on a whole GPU."""
    gpus = campaign.settings.gpus_per_trial
    if not 0 < gpus < 1:
        return {}
    again = {label: whole_gpu_trial(trials[label]) for label, r in results.items() if ran_out_of_gpu_memory(r, gpus)}
    if not again:
        return {}
    with with_trial_resources(campaign.settings.cpus_per_trial, 1):
        retried = wait_for_trials({label: verify.submit(trial) for label, trial in again.items()}, stop_time)
    note = f"retried on a whole GPU after running out of memory at {gpus:g} GPU"
    return {label: replace(result, note=note) for label, result in retried.items()}


def discard_candidate_branches(campaign: Campaign, labels: list[str]) -> None:
    ExperimentRepo(Path(campaign.experiment_dir)).delete_branches([candidate_branch(campaign, l) for l in labels])


def why_stopped(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, StopTimeReached) else "run interrupted"


def log_stopped(campaign: Campaign, candidates: list[Candidate], current: Review, why: str = "run interrupted") -> None:
    """Record the interrupted candidates that have no row yet, so the results log accounts for every one."""
    from autoraysearch.campaign.results_log import read_results_log

    logged = {r.iteration for r in read_results_log(campaign.paths.results, campaign.settings.higher_is_better).rows}
    for candidate in candidates:
        if candidate.label in logged:
            continue
        stopped = TrialResult(label=candidate.label, status="stopped", metric=None, seconds=0.0, error=why)
        verdict = Verdict(status="stopped", delta=None, best_metric=current.best_metric, best_sha=current.best_sha)
        log_experiment(campaign, result_row(candidate, verdict, stopped, "-"), None, candidate=candidate,
                       base_source=current.model_source)
    clear_pending(campaign.paths)


if __name__ == "__main__":
    autoraysearch_loop()
