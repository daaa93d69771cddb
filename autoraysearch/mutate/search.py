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
from functools import cached_property
from typing import Iterable, Iterator

from autoraysearch.model_source import fingerprint
from autoraysearch.mutate.rules import Mutation, propose_mutations
from autoraysearch.mutate.source import BOLD_STEPS

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
    tiers = [pool.small, pool.bolder, lambda: pool.triples(rng)]
    if stuck:
        tiers = tiers[1:] + tiers[:1]
    tired = _tired_kinds(pool, [key for key in failed if key])
    seen = set(tried)
    chosen: list[Mutation] = []
    waiting: list[Mutation] = []  # tired kinds, used only when nothing fresher is left
    for tier in tiers:
        for mutation in _untried(tier(), seen, rng):
            if set(mutation.kinds) & tired:
                waiting.append(mutation)
                continue
            chosen.append(mutation)
            if len(chosen) >= count:
                return chosen
    return (chosen + waiting)[:count]


class _Pool:
    """Every proposal for one model.py, built tier by tier only when asked for."""

    def __init__(self, source: str):
        self.source = source

    def small(self) -> list[Mutation]:
        return self._small

    def bolder(self) -> list[Mutation]:
        return self._bolder

    @cached_property
    def _small(self) -> list[Mutation]:
        return propose_mutations(self.source)

    @cached_property
    def _bolder(self) -> list[Mutation]:
        """Bold single edits, then pairs; none repeating a small edit or each other."""
        known = {fingerprint(self.source)} | {fingerprint(m.source) for m in self._small}
        return _distinct([*propose_mutations(self.source, BOLD_STEPS), *self._pairs], known)

    @cached_property
    def _pairs(self) -> list[Mutation]:
        return [pair for first in self._small for pair in _extend(first)]

    def triples(self, rng: random.Random) -> Iterator[Mutation]:
        """Triples in a random order, built lazily: there can be thousands and few are needed."""
        pairs = [m for m in self._bolder if m.description.startswith(COMBINED_PREFIX)]
        rng.shuffle(pairs)
        for pair in pairs:
            extensions = _extend(pair)
            rng.shuffle(extensions)
            yield from extensions

    def kinds(self) -> set[str]:
        return {m.kind for m in self._small}


def _extend(base: Mutation) -> list[Mutation]:
    """`base` followed by each small edit, of a kind it does not have yet, of the model it makes."""
    parts = base.description.removeprefix(COMBINED_PREFIX)
    return [
        Mutation("+".join(sorted({*base.kinds, more.kind})), f"{COMBINED_PREFIX}{parts} + {more.description}", more.source)
        for more in propose_mutations(base.source)
        if more.kind not in base.kinds
    ]


def _distinct(mutations: list[Mutation], known: set[str]) -> list[Mutation]:
    """The mutations whose source is not in `known` nor repeated, first ones first."""
    kept = []
    for mutation in mutations:
        key = fingerprint(mutation.source)
        if key not in known:
            known.add(key)
            kept.append(mutation)
    return kept


def _untried(mutations: Iterable[Mutation], seen: set[str], rng: random.Random) -> Iterator[Mutation]:
    """The mutations not seen yet, marking them seen; a list is taken kind by kind in turn."""
    fresh = []
    for mutation in mutations:
        key = fingerprint(mutation.source)
        if key in seen:
            continue
        seen.add(key)
        if not isinstance(mutations, list):
            yield mutation  # a lazy stream is already shuffled
        else:
            fresh.append(mutation)
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


def _tired_kinds(pool: _Pool, failed: list[str]) -> set[str]:
    """Kinds that failed FATIGUE times since the last keep and more often than the least-failed kind."""
    kinds_of = {fingerprint(m.source): m.kinds for m in pool.small()}
    if any(key not in kinds_of for key in failed):
        # Bold or combined edits were tried: learn their kinds too (triples are too many to rebuild).
        kinds_of.update({fingerprint(m.source): m.kinds for m in pool.bolder()})
    failures = Counter(kind for key in failed for kind in kinds_of.get(key, ()))
    least = min((failures[kind] for kind in pool.kinds()), default=0)
    # Once every kind has failed FATIGUE times, the ones that failed least go first again.
    return {kind for kind in pool.kinds() if failures[kind] >= max(FATIGUE, least + 1)}
