"""decide: keep the candidate's commit if it beat the best, else move the branch back."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from autoraysearch.campaign.experiment import Campaign, TrialResult, Verdict
from autoraysearch.campaign.noise import Bar, is_kept, paired_columns
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.cluster import sends_its_logs
from autoraysearch.views.run_states import verdict_state, verdicts_state
from autoraysearch.views.step_logs import verdict_line


def judge(result: TrialResult, bar: Bar) -> tuple[str, float | None]:
    """(status, delta): keep a paired gain larger than the noise allows (see noise); a failed trial keeps its status.

    The delta is the paired one: the mean, over the seeds both ran, of the candidate minus the best at that seed.
    """
    if result.status != "ok":
        return result.status, None
    if not bar.best_runs:
        return "keep", None
    runs = result.values
    sign = 1.0 if bar.higher_is_better else -1.0
    delta = sign * fmean(bar.differences(runs))
    if result.hopeless:  # stopped between seeds: it could no longer clear the keep bar (seed_watch)
        return "pruned", delta
    return ("keep" if is_kept(runs, bar) else "discard"), delta


def apply_verdict(campaign: Campaign, status: str, candidate_sha: str, best_sha: str) -> str:
    """Make the branch match the verdict; return the SHA the branch now points at."""
    if status == "keep":
        return candidate_sha
    ExperimentRepo(Path(campaign.experiment_dir)).move_branch_to(best_sha, campaign.settings.model_py)
    return best_sha


def decide_candidate(campaign: Campaign, result: TrialResult, candidate_sha: str, bar: Bar, best_sha: str) -> Verdict:
    status, delta = judge(result, bar)
    branch_sha = apply_verdict(campaign, status, candidate_sha, best_sha)
    return Verdict(
        status=status,
        delta=delta,
        best_metric=result.metric if status == "keep" else best_mean(bar),
        best_sha=branch_sha,
        paired=paired_cells(result, bar),
    )


def paired_cells(result: TrialResult, bar: Bar) -> dict[str, str]:
    """The diffs/gain/interval columns of a trained candidate compared with the best."""
    if result.status != "ok" or not bar.best_runs:
        return {}
    return paired_columns(result.values, bar)


def best_mean(bar: Bar) -> float | None:
    return bar.best_mean if bar.best_runs else None


# Never retried: moving a branch is not an operation to repeat blindly.
@task(name="decide", task_run_name="decide-{result.label}", cache_policy=NO_CACHE, retries=0)
@sends_its_logs
def decide(campaign: Campaign, result: TrialResult, candidate_sha: str, bar: Bar, best_sha: str) -> Verdict:
    """Keep a gain the noise cannot explain; roll anything else back to the previous best."""
    verdict = decide_candidate(campaign, result, candidate_sha, bar, best_sha)
    get_run_logger().info(verdict_line(result, verdict, bar, campaign.settings.metric, verdict.best_sha))
    return verdict_state(verdict)  # the run's state is named after the verdict: Kept, Discarded, Pruned…


def choose_winner(results: list[TrialResult], bar: Bar) -> str | None:
    """The label of the kept result with the largest paired mean gain (over 2+ seeds when measured; ties: the first)."""
    kept = [r for r in results if judge(r, bar)[0] == "keep"]
    return max(kept, key=lambda r: _gain(r, bar)).label if kept else None


def _gain(result: TrialResult, bar: Bar) -> float:
    """How much better the result is: against the best's mean, or by its own value when there is no best yet."""
    if bar.best_runs:
        return fmean(bar.differences(result.values))
    return result.metric if bar.higher_is_better else -result.metric


def decide_parallel_candidates(
    campaign: Campaign, results: list[TrialResult], shas: dict[str, str], bar: Bar, best_sha: str
) -> dict[str, Verdict]:
    """Keep at most one candidate (the largest gain), discard the rest, delete every candidate branch."""
    from autoraysearch.tasks.commit import candidate_branch

    winner = choose_winner(results, bar)
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    if winner is not None:
        repo.move_branch_to(shas[winner], campaign.settings.model_py)
    repo.delete_branches([candidate_branch(campaign, label) for label in shas])
    new_best = next((r.metric for r in results if r.label == winner), best_mean(bar))
    branch_sha = shas[winner] if winner else best_sha
    verdicts = {}
    for result in results:
        status, delta = judge(result, bar)
        if status == "keep" and result.label != winner:
            status = "discard"  # it improved, but another candidate of this iteration did better
        verdicts[result.label] = Verdict(status=status, delta=delta, best_metric=new_best, best_sha=branch_sha,
                                         paired=paired_cells(result, bar))
    return verdicts


@task(name="decide", task_run_name="decide-{iteration}", cache_policy=NO_CACHE, retries=0)
@sends_its_logs
def decide_parallel(
    campaign: Campaign, results: list[TrialResult], shas: dict[str, str], bar: Bar, best_sha: str, iteration: int,
) -> dict[str, Verdict]:
    """Keep the best candidate whose gain the noise cannot explain; discard every other one."""
    verdicts = decide_parallel_candidates(campaign, results, shas, bar, best_sha)
    logger = get_run_logger()
    for result in results:
        verdict = verdicts[result.label]
        logger.info(verdict_line(result, verdict, bar, campaign.settings.metric, verdict.best_sha))
    return verdicts_state(verdicts)
