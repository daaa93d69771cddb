"""Reading a trial's metric and judging it against the best so far."""

from __future__ import annotations

import math
import re

_METRIC_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-/]*)\s*=\s*(\S+)\s*$")


def parse_metric(last_line: str, name: str) -> float:
    """The value of `NAME=VALUE` on train.py's last stdout line; ValueError says why not."""
    match = _METRIC_LINE.match(last_line or "")
    if not match:
        shown = (last_line or "").strip()[:120] or "nothing"
        raise ValueError(f"the last line of output is not {name}=VALUE (it was: {shown})")
    found, text = match.groups()
    if found != name:
        raise ValueError(f"the last line reports {found}, not the campaign metric {name}")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}={text} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is {text}, not a finite number")
    return value


def seed_line(line: str) -> tuple[int, str] | None:
    """(seed, the rest) of a judge's line for one seed's end, `seed=3 val_acc=0.9712`; None for any other line,
    a seed's progress lines (`seed=3 epoch=…`) too. ValueError when the seed is not a number."""
    head, _, rest = line.partition(" ")
    if not head.startswith("seed=") or rest.startswith("epoch="):
        return None
    return int(head.removeprefix("seed=")), rest


def is_improvement(metric: float | None, best: float | None, higher_is_better: bool) -> bool:
    """Strictly better than the best so far (a tie is not an improvement)."""
    if metric is None:
        return False
    if best is None:
        return True
    return metric > best if higher_is_better else metric < best
