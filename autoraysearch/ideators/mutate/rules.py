"""The offline ideator's single edits, found by reading model.py's syntax tree.

Every rule finds spots in the source (a layer size, an activation, a dropout rate...) and
rewrites only the text of those spots, so the user's comments and layout survive. The first rules
make an edit only when they can tell from the code that the model still builds (a layer made wider
carries its new size to the layers that consume it); the number and structure rules propose more
freely and leave the verdict to the build check (see checking). Nothing here runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from autoraysearch.campaign.model_source import check_model_source, defines_model, fingerprint, parse_python
from autoraysearch.ideators.mutate.arms import BOLD_PREFIX, describe, direction_from
from autoraysearch.ideators.mutate.layers import activation_rule, dropout_rule, kernel_rule, norm_rule
from autoraysearch.ideators.mutate.numbers import number_rule, optional_keyword_rule, sequence_length_changes
from autoraysearch.ideators.mutate.reading import ModelFile
from autoraysearch.ideators.mutate.sizes import depth_rule, width_rule
from autoraysearch.ideators.mutate.source import SMALL_STEPS, Change, Steps
from autoraysearch.ideators.mutate.structure import (
    dropout_insert_rule, head_rule, layer_insert_rule, named_choice_rule, norm_insert_rule, pooling_rule,
    recurrent_rule, residual_rule,
)

Rule = Callable[[ModelFile], Iterator[Change]]
# Rules whose edits build whenever the model did: they prove it from the code.
PROVEN_RULES: tuple[Rule, ...] = (width_rule, depth_rule, activation_rule, dropout_rule, norm_rule, kernel_rule)
RULES: tuple[Rule, ...] = (
    *PROVEN_RULES,
    # Rules that propose wherever an edit could fit: the build check has the last word.
    number_rule,
    optional_keyword_rule,
    sequence_length_changes,
    named_choice_rule,
    pooling_rule,
    norm_insert_rule,
    dropout_insert_rule,
    layer_insert_rule,
    head_rule,
    recurrent_rule,
    residual_rule,
)


@dataclass(frozen=True)
class Mutation:
    """One proposed change: its rule group, what exactly changed, and the complete new model.py."""

    kind: str  # "width", or "activation+width" for edits combined
    description: str
    source: str

    @property
    def kinds(self) -> tuple[str, ...]:
        """The rule groups the change is made of."""
        return tuple(self.kind.split("+"))


def propose_mutations(source: str, steps: Steps = SMALL_STEPS, rules: tuple[Rule, ...] = RULES) -> list[Mutation]:
    """Every single edit the rules can make to this model.py, in a deterministic order; not all need build."""
    return list(_proposals(source, steps, rules))


@lru_cache(maxsize=4096)
def _proposals(source: str, steps: Steps, rules: tuple[Rule, ...]) -> tuple[Mutation, ...]:
    """propose_mutations, remembered: combining edits reads the same models again and again."""
    model = ModelFile(source, check_model_source(source), steps)
    prefix = BOLD_PREFIX if steps.bold else ""
    seen = {fingerprint(source)}
    mutations = []
    for rule in rules:
        for change in rule(model):
            new_source = model.text.apply(change.edits)
            key = fingerprint(new_source)
            if key in seen or not _still_a_model(new_source):
                continue
            seen.add(key)
            direction = change.direction or direction_from(change.description)
            mutations.append(Mutation(change.kind, prefix + describe(change.kind, direction, change.description), new_source))
    return tuple(mutations)


def _still_a_model(source: str) -> bool:
    """True when an edited model.py parses and still binds `Model`."""
    try:
        return defines_model(parse_python(source))
    except SyntaxError:
        return False
