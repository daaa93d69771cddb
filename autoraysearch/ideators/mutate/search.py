"""Choosing what to try next: small single edits first, bolder ones when the search is stuck, guided by what failed.

The offline ideator must not run dry while anything new can still be built, so its proposals come
in tiers of boldness:

1. single edits with small steps (x2 widths, one block more or fewer, dropout +-0.1...);
2. single edits with bold steps (x4 widths, two blocks, dropout +-0.2...) and pairs of small edits
   of different kinds, the second found on the model the first one made;
3. triples of small edits of different kinds, built the same way.

The tiers are used in this order, each when the one before is used up; once the search is stuck
(the caller decides: several iterations without a keep) the bold tiers come first. A kind of edit
that has failed FATIGUE times since the last keep waits until the other kinds have had their turn.

Tried versions are fingerprints of whole sources, so an edit discarded before the last keep is new
again once the model it applies to has changed: nothing here needs to remember it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Set
from functools import cached_property, lru_cache
from typing import Iterable, Iterator

from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate.rules import Mutation, propose_mutations
from autoraysearch.ideators.mutate.source import BOLD_STEPS

FATIGUE = 3  # failures since the last keep after which a kind of edit lets the others go first
COMBINED_PREFIX = "combined: "


def choose_mutations(
    source: str, *, tried: set[str], seed: int, count: int = 1, failed: Iterable[str] = (), stuck: bool = False,
) -> list[Mutation]:
    """Up to `count` untried edits, of different kinds where possible; same inputs -> same answer.

    `failed` holds the fingerprints of the candidates tried since the last keep (their kinds get
    tired); `stuck` says that several iterations kept nothing, so bold proposals go first.
    """
    if count < 1:
        return []
    rng = random.Random(seed)
    pool = _Pool(source)
    tired = _tired_kinds(pool, [key for key in failed if key])
    # Stuck: every bold proposal, tired or not, before going back to small steps.
    stages = [[pool.bolder, pool.triples], [pool.small]] if stuck else [[pool.small, pool.bolder, pool.triples]]
    seen = set(tried)
    chosen: list[Mutation] = []
    for stage in stages:
        for avoid in (tired, frozenset()):  # fresh kinds first, then the tired ones rather than nothing
            for tier in stage:
                for mutation in _untried(tier(rng, avoid), seen, rng):
                    chosen.append(mutation)
                    if len(chosen) == count:
                        return chosen
    return chosen


class _Pool:
    """Every proposal for one model.py, built tier by tier only when asked for; each tier leaves out kinds to avoid."""

    def __init__(self, source: str):
        self.source = source

    def small(self, rng: random.Random, avoid: Set[str]) -> list[Mutation]:
        return _without(self._small, avoid)

    def bolder(self, rng: random.Random, avoid: Set[str]) -> list[Mutation]:
        return _without(self._bolder, avoid)

    def triples(self, rng: random.Random, avoid: Set[str]) -> Iterator[Mutation]:
        """Triples in a random order, built lazily: there can be thousands and few are needed."""
        pairs = _without([m for m in self._bolder if m.description.startswith(COMBINED_PREFIX)], avoid)
        rng.shuffle(pairs)
        for pair in pairs:
            extensions = _extend(pair, avoid)
            rng.shuffle(extensions)
            yield from extensions

    def kinds(self) -> set[str]:
        return {m.kind for m in self._small}

    @cached_property
    def _small(self) -> list[Mutation]:
        return propose_mutations(self.source)

    @cached_property
    def _bolder(self) -> list[Mutation]:
        """Bold single edits, then pairs; none repeating a small edit or each other."""
        known = {_key(self.source)} | {_key(m.source) for m in self._small}
        pairs = [pair for first in self._small for pair in _extend(first, frozenset())]
        return _distinct([*propose_mutations(self.source, BOLD_STEPS), *pairs], known)


def _extend(base: Mutation, avoid: Set[str]) -> list[Mutation]:
    """`base` followed by each small edit, of a kind it does not have yet, of the model it makes."""
    parts = base.description.removeprefix(COMBINED_PREFIX)
    return [
        Mutation("+".join(sorted({*base.kinds, more.kind})), f"{COMBINED_PREFIX}{parts} + {more.description}", more.source)
        for more in propose_mutations(base.source)
        if more.kind not in base.kinds and more.kind not in avoid
    ]


def _without(mutations: list[Mutation], avoid: Set[str]) -> list[Mutation]:
    return [m for m in mutations if not avoid.intersection(m.kinds)]


def _distinct(mutations: list[Mutation], known: set[str]) -> list[Mutation]:
    """The mutations whose source is not in `known` nor repeated, first ones first."""
    kept = []
    for mutation in mutations:
        key = _key(mutation.source)
        if key not in known:
            known.add(key)
            kept.append(mutation)
    return kept


def _untried(mutations: Iterable[Mutation], seen: set[str], rng: random.Random) -> Iterator[Mutation]:
    """The mutations not seen yet, marking them seen; a list is taken kind by kind in turn, a stream as it comes."""
    if not isinstance(mutations, list):
        for mutation in mutations:
            if _key(mutation.source) not in seen:
                seen.add(_key(mutation.source))
                yield mutation
        return
    fresh = [m for m in mutations if _key(m.source) not in seen]
    seen.update(_key(m.source) for m in fresh)
    yield from _round_robin(fresh, rng)


def _round_robin(mutations: list[Mutation], rng: random.Random) -> list[Mutation]:
    """Mutations ordered one kind after another, so that several candidates explore different directions."""
    by_kind: dict[str, list[Mutation]] = {}
    for mutation in mutations:
        by_kind.setdefault(mutation.kind, []).append(mutation)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    for kind in kinds:
        rng.shuffle(by_kind[kind])
    ordered = []
    while any(by_kind.values()):
        ordered += [by_kind[kind].pop(0) for kind in kinds if by_kind[kind]]
    return ordered


def _tired_kinds(pool: _Pool, failed: list[str]) -> frozenset[str]:
    """Kinds that failed FATIGUE times since the last keep and more often than the least-failed kind."""
    everything = frozenset()
    kinds_of = {_key(m.source): m.kinds for m in pool.small(None, everything)}
    if any(key not in kinds_of for key in failed):
        # Bold or combined edits were tried: learn their kinds too (triples are too many to rebuild).
        kinds_of.update({_key(m.source): m.kinds for m in pool.bolder(None, everything)})
    failures = Counter(kind for key in failed for kind in kinds_of.get(key, ()))
    least = min((failures[kind] for kind in pool.kinds()), default=0)
    # Once every kind has failed FATIGUE times, the ones that failed least go first again.
    return frozenset(kind for kind in pool.kinds() if failures[kind] >= max(FATIGUE, least + 1))


@lru_cache(maxsize=8192)
def _key(source: str) -> str:
    """The fingerprint of a source, remembered: each proposal is compared several times."""
    return fingerprint(source)
