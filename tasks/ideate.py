"""ideate: propose changes to model.py, each pre-flighted on CPU before it may take a trial slot.

The offline `mutate` ideator is the default; `openai`, `anthropic` and `command` ask an LLM (see
llm_ideator). Whatever the ideator, a candidate that cannot import, build or map a tiny batch to the
right output shape is dropped here, logged as a crash, and never reaches the cluster.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import Candidate, Dropped, Ideas, Review
from autoraysearch.ideators.llm.ideator import config_from_settings, propose_with_llm
from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate import choose_mutations, shared_build_check, space_size
from autoraysearch.trials.preflight import preflight_sources
from autoraysearch.campaign.settings import CampaignSettings
from autoraysearch.cluster import sends_its_logs
from autoraysearch.views.step_logs import proposal_lines

SPARES = 3  # mutations drawn per slot, so that a pre-flight failure has a replacement at hand
# An LLM endpoint that is down or rate-limited past the client's own retries: the loop waits, then asks
# again, for as long as the campaign's stop conditions allow (see outage_wait).
OUTAGE_WAITS_S = (10, 60, 300)  # after the first, second, third… failed attempt in a row; then every 300 s


class IdeasExhausted(AutoraysearchError):
    """The ideator has nothing left that was not tried already."""


def propose_candidates(
    review: Review, settings: CampaignSettings, iteration: int, labels: list[str], api_key: str | None = None
) -> Ideas:
    """One candidate per label (fewer if the ideator could not produce them), each different and pre-flighted."""
    if settings.ideator == "mutate":
        return propose_mutations(review, settings, iteration, labels)
    return propose_with_llm(review, settings, labels, config_from_settings(settings), api_key)


def propose_mutations(review: Review, settings: CampaignSettings, iteration: int, labels: list[str]) -> Ideas:
    """The offline ideator: untried rule-based edits, bolder when stuck, the first ones that pass pre-flight."""
    stuck_after = settings.stuck_after
    check = shared_build_check(settings)
    # Seed per iteration: a resumed campaign does not replay the choices of the last run.
    mutations = choose_mutations(
        review.model_source, tried=set(review.tried), seed=settings.seed * 1_000_003 + iteration,
        count=len(labels) * SPARES, failed=[key for _, key in review.since_keep],
        stuck=review.iterations_without_keep >= stuck_after,
        history=review.results, higher_is_better=settings.higher_is_better, goal=settings.goal, check=check,
        diverse=len(labels) if len(labels) > 1 else 0,
    )
    if not mutations:
        space = space_size(review.model_source, check)
        raise IdeasExhausted(
            f"the mutate ideator has tried every change it can build for this model.py: {space['single']} single, "
            f"{space['bold']} bold and {space['pairs']} paired edits, and every triple and random combination; "
            "edit model.py by hand or use another ideator to go on."
        )
    candidates: list[Candidate] = []
    crashed: list[Dropped] = []
    # One at a time, in the ideator's order: spares are only checked while a slot is still empty.
    for mutation in mutations:
        if len(candidates) == len(labels):
            break
        [result] = preflight_sources([mutation.source], settings)
        if result.ok:
            candidates.append(Candidate(
                label=labels[len(candidates)], description=mutation.description, model_source=mutation.source,
                fingerprint=fingerprint(mutation.source), kind=mutation.kind,
            ))
        else:
            crashed.append(Dropped(mutation.description, f"pre-flight: {result.describe()}", "crash",
                                   fingerprint(mutation.source)))
    return Ideas(candidates=candidates, crashed=crashed)


def outage_wait(attempt: int, longest: float) -> float:
    """Seconds to wait after the `attempt`-th (0-based) ideate step in a row that found the LLM unavailable."""
    return min(longest, OUTAGE_WAITS_S[min(attempt, len(OUTAGE_WAITS_S) - 1)])


# Not retried here: an LLM outage is waited out by the loop, bounded by the campaign's stop conditions.
@task(name="ideate", task_run_name="ideate-{iteration}", cache_policy=NO_CACHE)
@sends_its_logs
def ideate(
    review: Review, settings: CampaignSettings, iteration: int, labels: list[str], api_key: SecretStr | None = None
) -> Ideas:
    """Propose one atomic change to model.py per label and pre-flight each on CPU."""
    key = api_key.get_secret_value() if api_key is not None else None
    ideas = propose_candidates(review, settings, iteration, labels, key)
    logger = get_run_logger()
    for line in proposal_lines(ideas, review.model_source, settings.model_py):
        logger.info(line)
    return ideas
