"""The setup flow: generate (or check) train.py, dry-run it on Ray and record the baseline."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from prefect import flow, get_run_logger

from autoraysearch.views.artifacts import publish_setup_artifacts
from autoraysearch.views.identity import setup_run_name
from autoraysearch.views.step_logs import fmt
from autoraysearch.cluster import CampaignTaskRunner, cluster_summary, default_gpus_per_trial, with_trial_resources
from autoraysearch.campaign.experiment import Candidate, TrialResult
from autoraysearch.campaign.settings import SETTINGS_FILE
from autoraysearch.setup.folder import (
    SetupPlan, baseline_failure, baseline_out_of_memory, go_summary, plan_setup, record_setup, refuse_model_failing_preflight, setup_campaign,
)
from autoraysearch.campaign.lock import CampaignLock
from autoraysearch.setup.options import chosen
from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.tasks.log import save_trial_output
from autoraysearch.tasks.verify import verify
from autoraysearch.campaign.noise import pooled_noise
from autoraysearch.campaign.path import fresh_seeds
from autoraysearch.trials.runs import (
    confirmation_seeds, confirmation_trials, first_run_seeds, held_out, joined_runs, make_trial, merge_runs, mostly_start_up,
    ran_out_of_gpu_memory, seeded, seeds_for_one_run, seeds_together, start_up_and_training, wait_for_trials, whole_gpu_trial,
)


@dataclass(frozen=True)
class SetupSummary:
    experiment_dir: str
    metric: str
    baseline: float | None
    seconds: float
    archived_results: str | None
    noise: str = ""  # the noise the baseline's seeds measured, in words
    summary: tuple[str, ...] = ()  # the confirm-and-go summary: goal, model, cluster, GPUs, baseline, scope, mode


@flow(name="autoraysearch-setup", flow_run_name=setup_run_name, task_runner=CampaignTaskRunner(), log_prints=True)
def autoraysearch_setup(
    experiment_dir: str = ".",
    model_py: str = "model.py",
    dataset: str = "digits",
    epochs: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    seeds: int | None = None,
    metric: str = "val_acc",
    direction: str = "higher",
    train_py: str | None = None,
    goal: str = "",
    trial_timeout: float | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float | None = None,
    data_dir: str | None = None,
    data_module: str | None = None,
    download: bool = False,
    model_kwargs: dict | None = None,
    batch_size: int = 64,
    learning_rate: float | None = None,
    compile: bool = False,
    optimizer: str | None = None,
    schedule: str | None = None,
    weight_decay: float | None = None,
) -> SetupSummary:
    """Write train.py and autoraysearch.toml, run train.py once and record its metric as iteration 0."""
    options = chosen(locals())  # every parameter but the folder, as plan_setup takes them (test_setup_options)
    cluster = cluster_summary()
    gpus_per_trial = default_gpus_per_trial(gpus_per_trial)  # None: 1 on a cluster with GPUs, else 0
    cluster_lines = cluster.lines(cpus_per_trial, gpus_per_trial)
    for line in cluster_lines:
        get_run_logger().info(line)
    plan = plan_setup(Path(experiment_dir), **{**options, "gpus_per_trial": gpus_per_trial})
    refuse_model_failing_preflight(plan)  # a wrong output shape is named in a second, before any training
    plan.paths.make_state_dir()
    with CampaignLock(plan.paths.lock):
        campaign = setup_campaign(plan, trial_timeout)
        current = Candidate(label="0", description="baseline", model_source=plan.model_source,
                            fingerprint=fingerprint(plan.model_source))
        trial = seeded(make_trial(campaign, current, plan.train_source, label="baseline"), seed, "baseline")
        first_alone = plan.settings.seeds_can_go_together  # its timing decides how the other seeds train
        trials = {"baseline": trial} if first_alone else {"baseline": trial, **confirmation_trials(trial, seed, plan.settings.seeds)}
        results = train_baseline(campaign, plan.settings, trials, batch_size)
        timing = start_up_and_training(list(results.values()))  # what a run of k seeds costs, for the loop
        plan = with_seeds_decided(plan, list(results.values()), seeds_given=seeds is not None)
        result = merge_runs(results.pop("baseline"), list(results.values()))
        ahead: tuple[float, ...] = ()
        if first_alone:
            result, ahead = baseline_at_other_seeds(campaign, plan.settings, trial, result, batch_size)
        row, archived = record_setup(plan, result, ahead, timing)
    noise = pooled_noise([result.runs])
    logger = get_run_logger()
    if plan.settings.seeds > 1 and not noise.measured:
        logger.warning("the %d baseline runs gave identical metrics (train.py ignores AUTORAYSEARCH_SEED?): "
                       "decisions will use single runs", plan.settings.seeds)
    publish_setup_artifacts(campaign)  # the baseline, under the keys of the campaign that follows
    logger.info("baseline %s=%s in %.1f s; %s", plan.settings.metric, fmt(row.metric), result.seconds, noise.describe())
    noise_text = noise.describe() if plan.settings.seeds > 1 else "single runs (--seeds 1)"
    return SetupSummary(
        summary=tuple(go_summary(
            plan.settings, cluster_lines, f"{plan.settings.metric}={fmt(row.metric)} ({noise_text})",
            "one candidate per iteration (autoraysearch run), or --parallel N to try N at once",
            sandbox=result.sandbox,
        )),
        experiment_dir=str(plan.paths.root),
        metric=plan.settings.metric,
        baseline=row.metric,
        seconds=result.seconds,
        archived_results=str(archived) if archived else None,
        noise=noise.describe() if plan.settings.seeds > 1 else "single runs (--seeds 1)",
    )


def train_baseline(campaign, settings, trials: dict, batch_size: int) -> dict[str, TrialResult]:
    """The baseline's runs, at once; a run that failed or ran out of GPU memory stops setup with what to do."""
    with with_trial_resources(settings.cpus_per_trial, settings.gpus_per_trial):
        futures = {label: verify.submit(t) for label, t in trials.items()}  # the seeds train at once
    results = wait_for_trials(futures)
    results.update(retry_baseline_on_whole_gpus(settings, trials, results))
    for label, result in results.items():
        save_trial_output(campaign, result)
        if ran_out_of_gpu_memory(result, settings.gpus_per_trial):
            raise baseline_out_of_memory(settings, batch_size, campaign.paths.trial_log(label))
        if result.status != "ok":
            raise baseline_failure(result, campaign.paths.trial_log(label))
    return results


def baseline_at_other_seeds(campaign, settings, trial, first: TrialResult,
                            batch_size: int) -> tuple[TrialResult, tuple[float, ...]]:
    """The baseline at its seeds after the first, and its values held out for the first path confirmation.

    In one run where its first run was mostly start-up, else a run each. In one run they cost one
    start-up where runs apart would cost one each. There the baseline gets the seeds of a candidate's
    first run (first_run_seeds) and no more: most candidates are decided on those, and the first
    comparison that asks for more trains the baseline at the rest and logs them (a best-seeds row). The
    same run trains it ahead at the first path confirmation's seeds (campaign.path), which then trains
    the best alone: a few seeds' training in place of a start-up. A model that trains longer than it
    starts pays one run's wait here.
    """
    if settings.seeds <= 1:
        return first, ()
    if settings.seeds_together:
        rest = [settings.seed + i for i in range(1, first_run_seeds(settings.seeds))]
        ahead = fresh_seeds(settings.seed, (), confirmation_seeds(settings.seeds))
        more = train_baseline(campaign, settings, {"baseline-seeds": seeds_together(trial, rest + ahead, "baseline-seeds")},
                              batch_size)
        kept, held = held_out(more["baseline-seeds"], len(rest))
        return (joined_runs(first, kept) if rest else first), held
    more = train_baseline(campaign, settings, confirmation_trials(trial, settings.seed, settings.seeds), batch_size)
    return merge_runs(first, list(more.values())), ()


def with_seeds_decided(plan: SetupPlan, baseline_runs: list[TrialResult], seeds_given: bool) -> SetupPlan:
    """The plan with seeds_in_one_run chosen from the baseline's timing: on where its runs were mostly start-up.

    Only a generated train.py with one training process can train several seeds in one run. Then a
    further seed costs its training alone, so a candidate gets as many seeds as train in about one
    start-up's time, 8 to 24 (unless --seeds was given), all in one run (a third first in a race).
    """
    settings = plan.settings
    together = settings.seeds_can_go_together and mostly_start_up(baseline_runs)
    seeds = settings.seeds
    if together:
        timing = start_up_and_training(baseline_runs)
        seeds = seeds if seeds_given else max(seeds, seeds_for_one_run(*timing))
        get_run_logger().info(
            "the baseline's runs took %.1f s to start and %.1f s to train (medians): a candidate's seeds will train in "
            "one run, each in a fork of its own, up to %d of them (seeds_in_one_run and seeds in %s)", *timing, seeds,
            SETTINGS_FILE)
    return replace(plan, settings=settings.model_copy(update={"seeds_in_one_run": together, "seeds": seeds}))


def retry_baseline_on_whole_gpus(settings, trials: dict, results: dict) -> dict:
    """Baseline runs that ran out of GPU memory at a fraction of a GPU, once more on a whole GPU, as trials are."""
    if not 0 < settings.gpus_per_trial < 1:
        return {}
    again = {label: whole_gpu_trial(trials[label]) for label, r in results.items()
             if ran_out_of_gpu_memory(r, settings.gpus_per_trial)}
    if not again:
        return {}
    get_run_logger().warning("the baseline ran out of GPU memory at %g GPU; retrying on a whole GPU", settings.gpus_per_trial)
    with with_trial_resources(settings.cpus_per_trial, 1):
        return wait_for_trials({label: verify.submit(trial) for label, trial in again.items()})


if __name__ == "__main__":
    autoraysearch_setup()
