"""decide: keep the candidate's commit if it beat the best, else move the branch back."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.experiment import Campaign, TrialResult, Verdict
from autoraysearch.metric import is_improvement
from autoraysearch.repository import ExperimentRepo


def judge(result: TrialResult, best_metric: float | None, higher_is_better: bool) -> tuple[str, float | None]:
    """(status, delta): keep only a strict improvement; a failed trial keeps its own status."""
    if result.status != "ok":
        return result.status, None
    delta = result.metric - best_metric if best_metric is not None else None
    return ("keep" if is_improvement(result.metric, best_metric, higher_is_better) else "discard"), delta


def apply_verdict(campaign: Campaign, status: str, candidate_sha: str, best_sha: str) -> str:
    """Make the branch match the verdict; return the SHA the branch now points at."""
    if status == "keep":
        return candidate_sha
    ExperimentRepo(Path(campaign.experiment_dir)).move_branch_to(best_sha, campaign.settings.model_py)
    return best_sha


def decide_candidate(
    campaign: Campaign, result: TrialResult, candidate_sha: str, best_metric: float | None, best_sha: str
) -> Verdict:
    status, delta = judge(result, best_metric, campaign.settings.higher_is_better)
    branch_sha = apply_verdict(campaign, status, candidate_sha, best_sha)
    return Verdict(
        status=status,
        delta=delta,
        best_metric=result.metric if status == "keep" else best_metric,
        best_sha=branch_sha,
    )


# Never retried: moving a branch is not an operation to repeat blindly.
@task(name="decide", task_run_name="decide-{result.label}", cache_policy=NO_CACHE, retries=0)
def decide(campaign: Campaign, result: TrialResult, candidate_sha: str, best_metric: float | None, best_sha: str) -> Verdict:
    """Keep a strict improvement; roll anything else back to the previous best."""
    return decide_candidate(campaign, result, candidate_sha, best_metric, best_sha)


def choose_winner(results: list[TrialResult], best_metric: float | None, higher_is_better: bool) -> str | None:
    """The label of the best result that strictly beats the best so far, if any (ties: the first)."""
    winner: TrialResult | None = None
    for result in results:
        if result.status == "ok" and is_improvement(result.metric, best_metric, higher_is_better):
            if winner is None or is_improvement(result.metric, winner.metric, higher_is_better):
                winner = result
    return winner.label if winner else None


def decide_parallel_candidates(
    campaign: Campaign, results: list[TrialResult], shas: dict[str, str], best_metric: float | None, best_sha: str
) -> dict[str, Verdict]:
    """Keep at most one candidate (the best improvement), discard the rest, delete every candidate branch."""
    from autoraysearch.tasks.commit import candidate_branch

    higher = campaign.settings.higher_is_better
    winner = choose_winner(results, best_metric, higher)
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    if winner is not None:
        repo.move_branch_to(shas[winner], campaign.settings.model_py)
    repo.delete_branches([candidate_branch(campaign, label) for label in shas])
    new_best = next((r.metric for r in results if r.label == winner), best_metric)
    branch_sha = shas[winner] if winner else best_sha
    verdicts = {}
    for result in results:
        status, delta = judge(result, best_metric, higher)
        if status == "keep" and result.label != winner:
            status = "discard"  # it improved, but another candidate of this iteration did better
        verdicts[result.label] = Verdict(status=status, delta=delta, best_metric=new_best, best_sha=branch_sha)
    return verdicts


@task(name="decide", task_run_name="decide-{iteration}", cache_policy=NO_CACHE, retries=0)
def decide_parallel(
    campaign: Campaign, results: list[TrialResult], shas: dict[str, str], best_metric: float | None, best_sha: str,
    iteration: int,
) -> dict[str, Verdict]:
    """Keep the best candidate that beat the best so far; discard every other one."""
    return decide_parallel_candidates(campaign, results, shas, best_metric, best_sha)
