"""review: read the current best model.py, the campaign's git log and its results."""

from __future__ import annotations

import re
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.campaign.memory import informative_diffs
from autoraysearch.campaign.experiment import Campaign, Review
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.results_log import BEST_STATUSES, read_results_log
from autoraysearch.campaign.noise import bar_from_log
from autoraysearch.campaign.resume import commits_above, logged_best_commit
from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.cluster import REPEATABLE_STEP_RETRIES, current_node_id, infrastructure_fault

RECENT_ROWS = 10


def review_experiment(campaign: Campaign) -> Review:
    """What the ideator needs to know, read from the repository and the results log."""
    settings = campaign.settings
    repo = ExperimentRepo(Path(campaign.experiment_dir))
    log = read_results_log(campaign.paths.results, settings.higher_is_better)
    best = log.best()
    # The log decides where the campaign stands; train.py is read as committed, never from the working tree.
    best_sha = commits_above(repo, campaign.branch, logged_best_commit(repo, log, campaign.branch))[0]
    model_source = (Path(campaign.experiment_dir) / settings.model_py).read_text()
    train_source = repo.file_at(best_sha, settings.train_py)
    recent = tuple(
        f"{r.iteration} {r.status} {r.metric if r.metric is not None else '-'} {r.description}"
        for r in log.rows[-RECENT_ROWS:]
    )
    return Review(
        model_source=model_source,
        train_source=train_source,
        git_log=tuple(repo.log_lines(campaign.branch)),
        best_metric=best.metric if best else None,
        best_sha=best_sha,
        bar=bar_from_log(log, settings.min_delta, together=settings.seeds_together),
        tried=frozenset(log.tried_candidates() | {fingerprint(model_source)}),
        recent=recent,
        node_id=current_node_id(),
        since_keep=since_last_keep(log.rows),
        past_diffs=informative_diffs(campaign.paths, log),
        results=log.rows,
    )


def since_last_keep(rows) -> tuple[tuple[str, str], ...]:
    """(iteration, candidate fingerprint) of the experiments after the last keep, all tried on today's best."""
    last = max((_iteration_number(r.iteration) for r in rows if r.status in BEST_STATUSES), default=-1)
    return tuple((r.iteration, r.extra.get("candidate", "")) for r in rows if _iteration_number(r.iteration) > last)


def _iteration_number(label: str) -> int:
    """5 for "5", "5a" (parallel) and "5.1" (dropped before training); -1 for a label without one."""
    match = re.match(r"\d+", label)
    return int(match.group()) if match else -1


# Only reads: repeated after an infrastructure fault or a lost Ray worker.
@task(name="review", task_run_name="review-{label}", cache_policy=NO_CACHE,
      retries=REPEATABLE_STEP_RETRIES, retry_condition_fn=infrastructure_fault)
def review(campaign: Campaign, label: str) -> Review:
    """Read model.py, git log and results log."""
    return review_experiment(campaign)
