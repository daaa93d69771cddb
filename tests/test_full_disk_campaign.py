"""A campaign whose experiment folder fills up: one sentence, nothing lost, and the next run carries on.

The experiment lives on a small tmpfs (root only). The disk fills either before the run starts (its
first steps: review, ideate, modify, commit) or while the first candidate trains (the steps after it:
decide, roll back or keep, log): the trial itself writes the filler, as a full disk at night would be
filled by something else. After the filler is removed, the next run must resume cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLE_MODEL, counting_train_py, git, fill_disk, make_repo, setup, small_tmpfs

from autoraysearch.campaign.results_log import read_results_log

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs is Linux")]

FILL = """
with open({filler!r}, "wb") as handle:
    try:
        while True:
            handle.write(b"\\0" * 65536)
            handle.flush()
    except OSError:
        pass
print("val_acc=0.9")
"""


@pytest.fixture
def small_disk(trial_dir: Path):
    """A 24 MiB tmpfs that trials may write (it is under their shared writable folder)."""
    with small_tmpfs(trial_dir / "disk", "24m") as mount:
        yield mount


def run_once(exp: Path) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    return subprocess.run(
        [sys.executable, "-m", "autoraysearch.cli", "run", str(exp), "--max-iterations", "1", "--trial-timeout", "120"],
        env=env, capture_output=True, text=True, timeout=400,
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("when", ["before the run", "while the candidate trains"])
def test_a_full_disk_is_one_sentence_and_the_next_run_resumes(when, services, small_disk: Path, trial_dir: Path):
    filler = small_disk / "filler"
    exp = make_repo(small_disk / "exp", {"model.py": EXAMPLE_MODEL.read_text()})
    candidate = FILL.format(filler=str(filler)) if when == "while the candidate trains" else 'print("val_acc=0.4")'
    (exp / "train.py").write_text(counting_train_py(trial_dir / "calls", 'print("val_acc=0.5")', candidate,
                                                    later='print("val_acc=0.4")'))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py")
    setup(exp, train_py="train.py")
    if when == "before the run":
        fill_disk(filler)

    full = run_once(exp)

    said = full.stdout + full.stderr
    assert full.returncode != 0, said
    assert "Traceback" not in said, said
    last = [line for line in said.splitlines() if line.strip()][-1]
    assert "space" in last.lower() and "disk" in last.lower(), last
    # Nothing is lost: the log still reads, with the baseline first.
    assert read_results_log(exp / "autoraysearch-results.tsv", True).rows[0].status == "baseline"

    filler.unlink()
    again = run_once(exp)

    assert again.returncode == 0, again.stdout + again.stderr
    rows = read_results_log(exp / "autoraysearch-results.tsv", True).rows
    assert rows[0].status == "baseline" and len(rows) >= 2, rows
    assert git(exp, "status", "--porcelain", "--untracked-files=no") == ""
    best = max((r for r in rows if r.status in ("baseline", "keep")), key=lambda r: r.metric)
    assert git(exp, "rev-parse", "HEAD").startswith(best.commit) or best.status == "baseline"
