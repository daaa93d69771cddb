"""What kind of change a proposal is, written into its description so that the results log remembers it.

A description reads "width up: features[0] Conv2d out_channels 16 -> 32"; a combined one joins its
parts with " + " after "combined: ". The (kind, direction) pairs are the arms the ideator learns
about: they are read back from the log's descriptions, so a resumed campaign learns from every row.
"""

from __future__ import annotations

import re

BOLD_PREFIX = "bold: "
COMBINED_PREFIX = "combined: "
SHRINKING = {("width", "down"), ("depth", "down"), ("heads", "down"), ("layer", "down")}

_ARM = re.compile(r"^(?P<kind>[a-z]+)(?: (?P<direction>up|down|add|swap))?: ")
_CHANGE = re.compile(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)\)? -> [a-z]*\(?(-?\d+(?:\.\d+)?(?:e-?\d+)?)")

Arm = tuple[str, str]


def describe(kind: str, direction: str, text: str) -> str:
    """A single edit's description: its kind and direction, then what changed."""
    return f"{kind} {direction}: {text}" if direction else f"{kind}: {text}"


def change_text(description: str) -> str:
    """A single edit's description without its kind and direction: what changed."""
    match = _ARM.match(description.removeprefix(BOLD_PREFIX))
    return description.removeprefix(BOLD_PREFIX)[match.end():] if match else description


def direction_from(text: str) -> str:
    """"up" or "down" from the first "old -> new" of numbers in a description, else "swap"."""
    match = _CHANGE.search(text)
    if match is None:
        return "swap"
    old, new = float(match.group(1)), float(match.group(2))
    return "up" if new > old else "down" if new < old else "swap"


def parts(description: str) -> list[str]:
    """The single edits a description is made of, each as the single edit's own description."""
    text = description.removeprefix(COMBINED_PREFIX)
    pieces: list[str] = []
    for piece in text.split(" + "):
        piece = piece.removeprefix(BOLD_PREFIX)
        if pieces and not _ARM.match(piece):
            pieces[-1] += " + " + piece  # a " + " inside one edit's own text
        else:
            pieces.append(piece)
    return pieces


def arms(description: str) -> tuple[Arm, ...]:
    """The (kind, direction) of each part of a description; () for one the ideator did not write."""
    found = []
    for piece in parts(description):
        match = _ARM.match(piece)
        if match:
            found.append((match.group("kind"), match.group("direction") or "swap"))
    return tuple(found)
