"""ideate: propose changes to model.py (the offline `mutate` ideator by default)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.errors import AutoraysearchError
from autoraysearch.experiment import Candidate, Review
from autoraysearch.model_source import fingerprint
from autoraysearch.mutate import choose_mutations
from autoraysearch.settings import CampaignSettings


class IdeasExhausted(AutoraysearchError):
    """The ideator has nothing left that was not tried already."""


def propose_candidates(review: Review, settings: CampaignSettings, iteration: int, labels: list[str]) -> list[Candidate]:
    """One candidate per label, each a different untried change to the current best model.py."""
    # Seed per iteration: a resumed campaign does not replay the choices of the last run.
    mutations = choose_mutations(
        review.model_source, tried=set(review.tried), seed=settings.seed * 1_000_003 + iteration, count=len(labels)
    )
    if not mutations:
        raise IdeasExhausted(
            "the mutate ideator has tried every change it knows for this model.py; "
            "edit model.py by hand or use another ideator to go on."
        )
    return [
        Candidate(label=label, description=m.description, model_source=m.source, fingerprint=fingerprint(m.source), kind=m.kind)
        for label, m in zip(labels, mutations)
    ]


@task(name="ideate", task_run_name="ideate-{iteration}", cache_policy=NO_CACHE)
def ideate(review: Review, settings: CampaignSettings, iteration: int, labels: list[str]) -> list[Candidate]:
    """Propose one atomic change to model.py per label."""
    return propose_candidates(review, settings, iteration, labels)
