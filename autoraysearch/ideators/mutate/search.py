"""Choosing what to try next: the most promising untried edits that build, bolder and combined ones when the simple ones are used up.

Proposals come in tiers, each used when the ones before it have nothing untried left:

1. single edits with small steps (x2 widths, one block more, a swapped activation, a norm added...),
   and pairs of near misses: the changes of the best discards, tried together;
2. single edits with bold steps (x4 widths, two more layers, dropout +-0.2...);
3. pairs of single edits of different kinds, the second found on the model the first one made;
4. triples, then random combinations of three or four edits, for as long as new ones can be built.

When the search is stuck (the caller decides: several iterations without a keep) the bold tiers
come before the small one: in digits campaigns with the paired keep rule, trying pairs of small
edits first instead found less in 48 runs (benchmarks/search_quality.py) and no more in 40 iterations
(benchmarks/ideator_campaigns.py). Within a tier, proposals are ranked by what the results log taught
(see learning): the value of their (kind, direction) arms, their parameter count against the
current model's, a kind tired by FATIGUE failures since the last keep, a bonus for near-miss pairs
and a seeded jitter; the ranking takes kinds in turn so that parallel candidates explore different
directions, and kinds far behind the best (shrinking, by default) wait until the others are used up. Every proposal
passes the build check (when one is given) before it is offered.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from itertools import islice
from typing import Callable, Iterable, Iterator, Sequence

from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate.arms import COMBINED_PREFIX, arms
from autoraysearch.ideators.mutate.checking import Built
from autoraysearch.ideators.mutate.learning import Learner
from autoraysearch.ideators.mutate.rules import Mutation, propose_mutations
from autoraysearch.ideators.mutate.source import BOLD_STEPS

FATIGUE = 3  # failures since the last keep after which a kind of edit lets the others go first
TIRED_PENALTY = 3.0
NEAR_MISS_BONUS = 1.5  # two changes that each almost helped: worth a try together
NEAR_MISS_PAIRS = 3  # near-miss pairs boosted at a time, the closest misses first
JITTER = 0.3  # seeded noise in the ranking: different seeds explore different equally good edits
SIZE_WEIGHT = 0.15  # per doubling of the parameter count
NO_NORM_BONUS = 1.0  # a model with no normalization layer at all: adding one is the likeliest structural help
CHECK_CHUNK = 12  # proposals built per check while filling the wanted count
LAG = 0.9  # arms scoring this far below the best one come after all the others
WINDOW = 300  # proposals of a long tier ranked together (triples are too many to rank all at once)
COMBINATION_TRIES = 60  # random combinations attempted per call once everything else is used up

Check = Callable[[Sequence[str]], list[Built]]


def choose_mutations(
    source: str, *, tried: set[str], seed: int, count: int = 1, failed: Iterable[str] = (), stuck: bool = False,
    history: Iterable = (), higher_is_better: bool = True, goal: str = "", check: Check | None = None,
    diverse: int = 0,
) -> list[Mutation]:
    """Up to `count` untried edits that pass `check`, the most promising first; same inputs -> same answer.

    The first `diverse` are of different kinds where the choice allows: parallel candidates are different directions.

    `failed` holds the fingerprints of the candidates tried since the last keep (their kinds get
    tired); `history` the results log's rows, which the ranking learns from.
    """
    if count < 1:
        return []
    rng = random.Random(seed)
    learner = Learner.from_rows(history, higher_is_better, goal)
    pool = Pool(source, check)
    ranking = _Ranking(learner, _tired_kinds(pool, [key for key in failed if key]), rng, pool)
    near_misses = list(islice(pool.near_miss_pairs(learner.near_misses()), NEAR_MISS_PAIRS))
    ranking.boosted = {_key(m.source) for m in near_misses}
    small = lambda: [*pool.small(), *near_misses]  # noqa: E731
    tiers = [pool.bolder, pool.pairs, small] if stuck else [small, pool.bolder, pool.pairs]
    tiers += [pool.triples, lambda: pool.random_combinations(rng)]
    seen = set(tried) | {_key(source)}
    chosen: list[Mutation] = []
    for tier in tiers:
        for mutation in ranking.ranked(tier(), seen):
            chosen.append(mutation)
            if len(chosen) == count:
                return kinds_first(chosen, diverse)
    return kinds_first(chosen, diverse)


def kinds_first(chosen: list[Mutation], diverse: int) -> list[Mutation]:
    """The same mutations, the first `diverse` of them of different kinds where the list has them (parallel slots)."""
    lead: list[Mutation] = []
    for mutation in chosen:
        if len(lead) < diverse and mutation.kind not in {m.kind for m in lead}:
            lead.append(mutation)
    return lead + [m for m in chosen if m not in lead]


def space_size(source: str, check: Check | None = None) -> dict[str, int]:
    """How many distinct single, bold and paired edits can be built for a model.py (triples and more not counted)."""
    pool = Pool(source, check)
    pairs = sum(1 for _ in pool.pairs())
    bold = sum(1 for built in pool.builds(list(pool.bolder())) if built)
    return {"single": len(pool.small()), "bold": bold, "pairs": pairs}


class Pool:
    """Every proposal for one model.py, tier by tier, built only when asked for; with a check, only those that build."""

    def __init__(self, source: str, check: Check | None = None):
        self.source = source
        self.check = check
        # Parameter counts of what this pool has built. Scoring reads only these, never the check's memory of
        # earlier calls, so that the answer does not depend on what else this process has checked.
        self.parameters: dict[str, int | None] = {}

    def small(self) -> list[Mutation]:
        return self._small

    @cached_property
    def has_norm(self) -> bool:
        """Whether the model has any normalization layer (BatchNorm, LayerNorm, GroupNorm, …)."""
        return re.search(r"\b\w*Norm\w*\s*\(", self.source) is not None

    def bolder(self) -> Iterator[Mutation]:
        known = {_key(self.source)} | {_key(m.source) for m in self._all_small}
        return (m for m in propose_mutations(self.source, BOLD_STEPS) if _key(m.source) not in known)

    def pairs(self) -> Iterator[Mutation]:
        """Each single edit followed by each other one of a different kind, as found on the model the first makes."""
        for first in self._small:
            yield from self._extend(first)

    def triples(self) -> Iterator[Mutation]:
        for pair in self.pairs():
            yield from self._extend(pair)

    def near_miss_pairs(self, near_misses: list[str]) -> Iterator[Mutation]:
        """Pairs of single edits that both match a near miss's change, as it applies to this model."""
        matching = [m for miss in near_misses for m in self._small if _same_change(m.description, miss)]
        for first in matching:
            others = {m.description for m in matching if m is not first and m.kinds != first.kinds}
            yield from self._extend(first, only=others)

    def random_combinations(self, rng: random.Random) -> Iterator[Mutation]:
        """Three or four single edits of different kinds applied one after another, drawn at random."""
        if len({m.kind for m in self._small}) < 3:
            return
        for _ in range(COMBINATION_TRIES):
            current = rng.choice(self._small)
            for _ in range(rng.choice((2, 3))):
                options = [m for m in propose_mutations(current.source)
                           if m.description in self._descriptions and not set(m.kinds) & set(current.kinds)]
                if not options:
                    break
                current = _combine(current, rng.choice(options))
            else:
                yield current

    @cached_property
    def base_parameters(self) -> int | None:
        if self.check is None:
            return None
        return self.check([self.source])[0].parameters

    def builds(self, mutations: list[Mutation]) -> list[bool]:
        if self.check is None or not mutations:
            return [True] * len(mutations)
        verdicts = self.check([m.source for m in mutations])
        self.parameters.update((_key(m.source), built.parameters) for m, built in zip(mutations, verdicts))
        return [built.ok for built in verdicts]

    @cached_property
    def _all_small(self) -> list[Mutation]:
        return propose_mutations(self.source)

    @cached_property
    def _small(self) -> list[Mutation]:
        """The small single edits that build: every combination starts from them."""
        return [m for m, ok in zip(self._all_small, self.builds(self._all_small)) if ok]

    @cached_property
    def _descriptions(self) -> set[str]:
        return {m.description for m in self._small}

    def _extend(self, base: Mutation, only: set[str] | None = None) -> Iterator[Mutation]:
        """`base` followed by each small edit that builds on its own, of a kind `base` does not have yet."""
        wanted = self._descriptions if only is None else only
        for more in propose_mutations(base.source):
            if more.description in wanted and not set(more.kinds) & set(base.kinds):
                yield _combine(base, more)


def _combine(base: Mutation, more: Mutation) -> Mutation:
    parts = base.description.removeprefix(COMBINED_PREFIX)
    kinds = "+".join(sorted({*base.kinds, *more.kinds}))
    return Mutation(kinds, f"{COMBINED_PREFIX}{parts} + {more.description}", more.source)


def _same_change(description: str, logged: str) -> bool:
    """True when a logged part (which may carry what the log step appended) is this proposal's change."""
    return logged == description or logged.startswith(description + " (")


@dataclass
class _Ranking:
    """Orders a tier's proposals by promise and yields those untried that build."""

    learner: Learner
    tired: frozenset[str]
    rng: random.Random
    pool: Pool
    score_of: dict = field(default_factory=dict)
    kind_jitter: dict = field(default_factory=dict)
    boosted: set = field(default_factory=set)  # near-miss pairs

    def ranked(self, mutations: Iterable[Mutation], seen: set[str]) -> Iterator[Mutation]:
        """The untried proposals that build, best first; a long stream is ranked a window at a time."""
        stream = iter(mutations)
        while True:
            fresh = []
            for mutation in stream:
                key = _key(mutation.source)
                if key not in seen:
                    seen.add(key)  # a proposal that fails the check is not offered again either
                    fresh.append(mutation)
                    if len(fresh) == WINDOW:
                        break
            if not fresh:
                return
            ordered = self._interleave(fresh)
            for start in range(0, len(ordered), CHECK_CHUNK):
                chunk = ordered[start : start + CHECK_CHUNK]
                for mutation, ok in zip(chunk, self.pool.builds(chunk)):
                    if ok:
                        yield mutation

    def score(self, mutation: Mutation) -> float:
        mine = arms(mutation.description) or ((mutation.kind, "swap"),)
        value = sum(self.learner.value(arm) for arm in mine) / len(mine)
        value -= TIRED_PENALTY * len(self.tired.intersection(mutation.kinds))
        if ("norm", "add") in mine and not self.pool.has_norm:
            value += NO_NORM_BONUS
        if _key(mutation.source) in self.boosted:
            value += NEAR_MISS_BONUS
        base, parameters = self.pool.base_parameters, self.pool.parameters.get(_key(mutation.source))
        if base and parameters:
            doublings = math.log2(parameters / base)
            value -= SIZE_WEIGHT * (-doublings if self.learner.smaller_wanted else max(0.0, doublings))
        # One draw per kind, so that a kind with many edits is not first more often than one with few.
        if mutation.kind not in self.kind_jitter:
            self.kind_jitter[mutation.kind] = self.rng.uniform(0, JITTER)
        return value + self.kind_jitter[mutation.kind] + self.rng.uniform(0, JITTER / 10)

    def _interleave(self, mutations: list[Mutation]) -> list[Mutation]:
        """Best first, taking kinds in turn so that a few picks cover several directions."""
        scored = sorted(((self.score(m), index, m) for index, m in enumerate(mutations)), key=lambda t: (-t[0], t[1]))
        self.score_of = {id(m): score for score, _, m in scored}
        by_arm: dict[str, list[Mutation]] = {}
        for _, _, mutation in scored:
            by_arm.setdefault(mutation.kind, []).append(mutation)
        # Kinds whose best is far behind the best of all (shrinking, by default) wait for the promising ones.
        top = {arm: self.score_of[id(queue[0])] for arm, queue in by_arm.items()}
        best = max(top.values(), default=0.0)
        ordered = []
        for promising in (True, False):
            queues = [queue for arm, queue in by_arm.items() if (top[arm] >= best - LAG) == promising]
            while queues:
                ordered += [queue.pop(0) for queue in queues]
                queues = [queue for queue in queues if queue]
        return ordered


def _tired_kinds(pool: Pool, failed: list[str]) -> frozenset[str]:
    """Kinds that failed FATIGUE times since the last keep and more often than the least-failed kind."""
    if not failed:
        return frozenset()
    kinds_of = {_key(m.source): m.kinds for m in pool.small()}
    if any(key not in kinds_of for key in failed):
        kinds_of.update({_key(m.source): m.kinds for m in pool.bolder()})
    kinds = {m.kind for m in pool.small()}
    failures = Counter(kind for key in failed for kind in kinds_of.get(key, ()))
    least = min((failures[kind] for kind in kinds), default=0)
    return frozenset(kind for kind in kinds if failures[kind] >= max(FATIGUE, least + 1))


@lru_cache(maxsize=16384)
def _key(source: str) -> str:
    """The fingerprint of a source, remembered: each proposal is compared several times."""
    return fingerprint(source)
