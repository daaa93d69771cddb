"""modify: write the candidate's model.py into the experiment folder."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.cluster import REPEATABLE_STEP_RETRIES, infrastructure_fault
from autoraysearch.campaign.experiment import Campaign, Candidate
from autoraysearch.campaign.model_source import check_model_source
from autoraysearch.campaign.settings import write_atomically


def write_candidate(campaign: Campaign, candidate: Candidate) -> Path:
    """Replace model.py with the candidate's version; nothing else in the folder is touched."""
    check_model_source(candidate.model_source, campaign.settings.model_py)
    path = Path(campaign.experiment_dir) / campaign.settings.model_py
    write_atomically(path, candidate.model_source)
    return path


# Rewrites model.py whole: repeated after an infrastructure fault or a lost Ray worker.
@task(name="modify", task_run_name="modify-{candidate.label}", cache_policy=NO_CACHE,
      retries=REPEATABLE_STEP_RETRIES, retry_condition_fn=infrastructure_fault)
def modify(campaign: Campaign, candidate: Candidate) -> str:
    """Write the candidate's model.py."""
    return str(write_candidate(campaign, candidate))
