"""The offline ideator: edits to a model.py found from its structure, checked by building it, ranked by what helped.

- rules: every single edit, small or bold (numbers, sizes, depths, activations, norms, dropout, layers, residuals, pooling);
- checking: builds each proposal on the campaign's input shape and drops what fails;
- learning: which (kind, direction) of edit helped, read from the results log;
- search: which untried edits, pairs or combinations to propose next;
- arms, numbers, structure, source, reading, torch_nn, sizes, layers: what the rules are made of.
"""

from autoraysearch.ideators.mutate.checking import BuildCheck, shared_build_check
from autoraysearch.ideators.mutate.rules import Mutation, propose_mutations
from autoraysearch.ideators.mutate.search import choose_mutations, space_size

__all__ = ["BuildCheck", "Mutation", "choose_mutations", "propose_mutations", "shared_build_check", "space_size"]
