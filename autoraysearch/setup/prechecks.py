"""Refusals of bad input before anything starts: option values, the campaign tag, a local Ray's temp folder.

Each check is cheap and runs before Ray and Prefect start, so a mistake costs the user a second and
one sentence instead of a minute of start-up and a traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Any, Callable

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.settings import setting_problem

# Iteration labels of a parallel iteration are 5a … 5z.
PARALLEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_PARALLEL = len(PARALLEL_LETTERS)
# Linux's limit on an AF_UNIX socket path (108 bytes with its terminating NUL), which Ray enforces.
SOCKET_PATH_MAX = 107
# The longest socket a local Ray makes under its temp folder: a session named by date, microseconds and pid.
RAY_LONGEST_SOCKET = "/ray/session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store"


def check_option(flag: str, value: Any, setting: str | None = None,
                 rule: Callable[[Any], bool] | None = None, allowed: str = "") -> None:
    """Refuse one option's value, naming the flag and what it allows.

    Options that become campaign settings (`setting`) are judged by CampaignSettings' own rule, so the
    CLI, autoraysearch.toml and deployment parameters accept exactly the same values.
    """
    if value is None:
        return
    if setting is not None:
        problem = setting_problem(setting, value)
    else:
        problem = None if rule is not None and rule(value) else f"must be {allowed}"
    if problem:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise AutoraysearchError(f"{flag} {shown} is not valid: it {problem}.")


def check_parallel(parallel: int) -> None:
    check_option("--parallel", parallel, rule=lambda v: 1 <= v <= MAX_PARALLEL, allowed=f"between 1 and {MAX_PARALLEL}")


def positive_finite(value: float) -> bool:
    return math.isfinite(value) and value > 0


def check_tag(tag: str | None, branch_prefix: str, cwd: Path) -> None:
    """The campaign branch must be a name git accepts, or switching to it fails after the services started."""
    if not tag:
        return
    branch = branch_prefix + tag
    # git knows its own rules best (no "..", "~", "^", ":", spaces, trailing ".lock" …).
    checked = subprocess.run(
        ["git", "check-ref-format", "--branch", branch], cwd=cwd if cwd.is_dir() else None,
        capture_output=True, text=True,
    )
    if checked.returncode != 0:
        raise AutoraysearchError(
            f"--tag {tag!r} does not make a valid git branch name ({branch}); use letters, digits, '-', '_' "
            "and single '/' or '.', e.g. --tag wider-convs."
        )


def ray_temp_base(environ: dict[str, str] | None = None) -> str:
    """The folder a local Ray puts its sockets under, chosen the way Ray chooses it on Linux."""
    environ = os.environ if environ is None else environ
    return environ.get("RAY_TMPDIR") or environ.get("TMPDIR") or "/tmp"


def refuse_long_ray_temp_dir(address: str) -> None:
    """A local Ray cannot start when its socket paths would pass the AF_UNIX limit: say so before trying."""
    if address != "local":
        return  # an existing cluster already has its sockets
    base = ray_temp_base().rstrip("/") or "/"
    length = len(base.encode()) + len(RAY_LONGEST_SOCKET)
    if length > SOCKET_PATH_MAX:
        room = SOCKET_PATH_MAX - len(RAY_LONGEST_SOCKET)
        raise AutoraysearchError(
            f"the temporary folder {base} is too long for a local Ray's sockets ({len(base.encode())} characters, "
            f"at most {room} fit): set a shorter TMPDIR or RAY_TMPDIR, e.g. `export RAY_TMPDIR=/tmp`."
        )
