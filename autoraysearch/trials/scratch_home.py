"""A home folder inside the trial's scratch: the user's caches readable through it, every write kept there.

Model code may load pretrained weights from `~/.cache/torch`, `~/.cache/huggingface`, `$TORCH_HOME`,
`$HF_HOME`, `~/.keras` or `~/.torch`, and may write there when something is missing. A contained
trial cannot write the real home, so it gets a home of its own: the folders of those caches are
recreated in it a few levels deep, and everything deeper is a symbolic link to the real entry.
Reading an existing file works as before; a new download lands in the scratch folder and goes with
it. Nothing a trial does reaches the real home.
"""

from __future__ import annotations

import os
from pathlib import Path

MIRRORED_DEPTH = 3  # folders recreated this deep (hub/checkpoints/ in torch's cache); deeper entries are links
MAX_LINKS = 20_000  # a cache larger than this is mirrored in part; reading beyond it falls back to a download
HOME_CACHES = (".cache/torch", ".cache/huggingface", ".keras", ".torch")


def cache_sources(environ: dict[str, str]) -> dict[str, Path]:
    """Where the user's caches are (relative name in the trial's home -> real folder), for those that exist."""
    home = Path(environ.get("HOME") or Path.home())
    found = {name: home / name for name in HOME_CACHES}
    if environ.get("TORCH_HOME"):
        found[".cache/torch"] = Path(environ["TORCH_HOME"])
    if environ.get("HF_HOME"):
        found[".cache/huggingface"] = Path(environ["HF_HOME"])
    return {name: path for name, path in found.items() if path.is_dir()}


def prepare_home(scratch: Path, environ: dict[str, str]) -> dict[str, str]:
    """Make SCRATCH/home with the user's caches mirrored into it; the environment that points there."""
    home = scratch / "home"
    home.mkdir(exist_ok=True)
    budget = [MAX_LINKS]
    for name, source in cache_sources(environ).items():
        _mirror(source, home / name, MIRRORED_DEPTH, budget)
    return {"HOME": str(home), "TORCH_HOME": str(home / ".cache/torch"), "HF_HOME": str(home / ".cache/huggingface")}


def _mirror(source: Path, target: Path, depth: int, budget: list[int]) -> None:
    """Recreate `source` as real folders `depth` levels deep, linking every file and every deeper folder."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        entries = list(os.scandir(source))
    except OSError:
        return
    for entry in entries:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        if entry.is_dir(follow_symlinks=False) and depth > 1:
            _mirror(Path(entry.path), target / entry.name, depth - 1, budget)
        else:
            try:
                (target / entry.name).symlink_to(entry.path)
            except OSError:
                pass
