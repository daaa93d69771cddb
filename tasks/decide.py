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
    ExperimentRepo(Path(campaign.experiment_dir)).move_branch_back(best_sha, campaign.settings.model_py)
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
