"""How many distinct candidates the mutate ideator can propose for one model.py before it runs dry.

    .venv/bin/python benchmarks/mutate_reach.py [model.py] [--before PATH_TO_OLD_MUTATE_PY]

Counts, for the model as it stands (no keep in between), the untried proposals the ideator gives
one after another until it has none, by tier: small single edits, bold single edits, pairs, triples.
With --before, the same count for an older single-file mutate.py, side by side.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections import Counter
from pathlib import Path

from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate import choose_mutations

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py"


def tier(description: str) -> str:
    if description.startswith("bold: "):
        return "bold"
    if description.startswith("combined: "):
        return "pair" if description.count(" + ") == 1 else "triple"
    return "small"


def reach(choose, source: str) -> tuple[Counter, float]:
    """Proposals per tier until choose() returns nothing, asking for everything at once."""
    started = time.perf_counter()
    everything = choose(source, tried={fingerprint(source)}, seed=0, count=1_000_000)
    assert len({fingerprint(m.source) for m in everything}) == len(everything)
    return Counter(tier(m.description) for m in everything), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=str(EXAMPLE))
    parser.add_argument("--before", help="an older autoraysearch/mutate.py to compare with")
    args = parser.parse_args()
    source = Path(args.model).read_text()
    rows = [("now", *reach(choose_mutations, source))]
    if args.before:
        spec = importlib.util.spec_from_file_location("mutate_before", args.before)
        before = sys.modules["mutate_before"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(before)
        rows.insert(0, ("before", *reach(before.choose_mutations, source)))
    print(f"{'ideator':8} {'small':>6} {'bold':>6} {'pairs':>6} {'triples':>8} {'total':>7} {'seconds':>8}")
    for name, counts, seconds in rows:
        print(f"{name:8} {counts['small']:6} {counts['bold']:6} {counts['pair']:6} {counts['triple']:8} "
              f"{sum(counts.values()):7} {seconds:8.2f}")


if __name__ == "__main__":
    main()
