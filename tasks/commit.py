"""commit: record the candidate as a commit on the campaign branch before it is trained."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.campaign.experiment import Campaign, Candidate
from autoraysearch.campaign.repository import ExperimentRepo


def commit_message(candidate: Candidate) -> str:
    return f"autoraysearch {candidate.label}: {candidate.description}"


def commit_candidate(campaign: Campaign, candidate: Candidate) -> str:
    """Commit model.py alone on the campaign branch; return the new SHA."""
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    if repo.current_branch() != campaign.branch:
        raise RuntimeError(f"expected branch {campaign.branch} to be checked out, found {repo.current_branch()}")
    return repo.commit_files([campaign.settings.model_py], commit_message(candidate))


# Never retried: a commit that half-happened must be looked at, not repeated.
@task(name="commit", task_run_name="commit-{candidate.label}", cache_policy=NO_CACHE, retries=0)
def commit(campaign: Campaign, candidate: Candidate) -> str:
    """Commit the candidate's model.py."""
    return commit_candidate(campaign, candidate)


def candidate_branch(campaign: Campaign, label: str) -> str:
    """Where a parallel candidate lives until decide: beside the campaign branch, never checked out."""
    return f"{campaign.branch}-exp/{label}"


def commit_candidates_beside(campaign: Campaign, candidates: list[Candidate], base_sha: str) -> dict[str, str]:
    """Commit each candidate's model.py on its own branch off the best commit; label -> SHA."""
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    return {
        c.label: repo.commit_file_beside(
            base_sha, campaign.settings.model_py, c.model_source, commit_message(c), candidate_branch(campaign, c.label)
        )
        for c in candidates
    }


@task(name="commit", task_run_name="commit-{iteration}", cache_policy=NO_CACHE, retries=0)
def commit_parallel(campaign: Campaign, candidates: list[Candidate], base_sha: str, iteration: int) -> dict[str, str]:
    """Commit every candidate of a parallel iteration on its own branch."""
    return commit_candidates_beside(campaign, candidates, base_sha)
