"""model.py's text as `ast` addresses it, the edits a rule makes to it, and how big a step a rule takes."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterable, NamedTuple


@dataclass(frozen=True)
class Steps:
    """How far a rule moves a number: the usual small steps, or the bold ones tried when the search is stuck."""

    width_factor: int = 2  # sizes x and / by this
    depth: int = 1  # blocks added or removed
    rate: float = 0.1  # dropout rate up and down
    kernel: int = 2  # kernel size up and down (within 3, 5, 7)

    @property
    def bold(self) -> bool:
        return self != Steps()


SMALL_STEPS = Steps()
BOLD_STEPS = Steps(width_factor=4, depth=2, rate=0.2, kernel=4)


class Edit(NamedTuple):
    """Replace bytes [start, end) of the UTF-8 source with `text` (start == end inserts)."""

    start: int
    end: int
    text: str


class Change(NamedTuple):
    """A rule's proposal before it is applied: kind, description, edits."""

    kind: str
    description: str
    edits: tuple[Edit, ...]
    direction: str = ""  # "up", "down", "add", "swap"; "" to read it from the description's "old -> new"


class Source:
    """model.py's text, addressed as `ast` addresses it: line numbers and UTF-8 byte columns."""

    def __init__(self, text: str):
        self.data = text.encode()
        self._line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))

    def start(self, node: ast.AST) -> int:
        """Byte offset where a node's text begins."""
        return self._line_starts[node.lineno - 1] + node.col_offset

    def end(self, node: ast.AST) -> int:
        """Byte offset just past a node's text."""
        return self._line_starts[node.end_lineno - 1] + node.end_col_offset

    def segment(self, node: ast.AST) -> str:
        """The exact source text of a node."""
        return self.data[self.start(node) : self.end(node)].decode()

    def preview(self, node: ast.AST, edit: Edit) -> str:
        """The text of `node` once `edit`, which lies inside it, is made."""
        start, text = self.start(node), self.data[self.start(node) : self.end(node)]
        return (text[: edit.start - start] + edit.text.encode() + text[edit.end - start :]).decode()

    def replace(self, node: ast.AST, text: str) -> Edit:
        """An edit replacing a node's text."""
        return Edit(self.start(node), self.end(node), text)

    def apply(self, edits: Iterable[Edit]) -> str:
        """The whole text with every edit made; identical edits count once, others must not overlap."""
        pieces, cursor = [], 0
        for edit in sorted(set(edits)):
            if edit.start < cursor:
                raise ValueError(f"mutate produced overlapping edits at byte {edit.start}")
            pieces += [self.data[cursor : edit.start], edit.text.encode()]
            cursor = edit.end
        pieces.append(self.data[cursor:])
        return b"".join(pieces).decode()
