"""The offline ideator: rule-based edits to a model.py, chosen bolder as the search gets stuck.

- rules: the single edits (widths, depths, activations, dropout, normalisation, kernels), small or bold;
- search: which untried edits, pairs or triples to propose next, given what failed since the last keep;
- source, reading, torch_nn, sizes, layers: the source-editing machinery the rules are made of.
"""

from autoraysearch.ideators.mutate.rules import Mutation, propose_mutations
from autoraysearch.ideators.mutate.search import choose_mutations

__all__ = ["Mutation", "choose_mutations", "propose_mutations"]
