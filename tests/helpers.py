"""What many test modules share: real git repositories, scripted train.py files, running a campaign in-process,
and watching processes come and go. Test modules import from here, never from each other or from conftest."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from autoraysearch.campaign.results_log import read_results_log

EXAMPLE_MODEL = Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py"


def git(repo: Path, *args: str) -> str:
    """Run git in repo as a user would, with a fixed identity."""
    result = subprocess.run(
        ["git", "-c", "user.name=Test User", "-c", "user.email=test@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).write_text(text)
    git(path, "add", *files)
    git(path, "commit", "-q", "-m", "initial")
    return path


# A train.py that never loads the model: what a run does comes from its number (from 0, the baseline first).
# Parallel trials start together, so each claims its number by creating a file of that name, atomically.
COUNTING_TRAIN_PY = '''
import os, subprocess, sys, time


def load_model():  # setup wants train.py to import Model; never called, so no run pays for torch
    from model import Model


os.makedirs({counter!r}, exist_ok=True)
calls = 0
while True:
    try:
        os.close(os.open(os.path.join({counter!r}, str(calls)), os.O_CREAT | os.O_EXCL))
        break
    except FileExistsError:
        calls += 1
'''


def counting_train_py(counter: Path, *runs: str, later: str) -> str:
    """A train.py whose run n executes the Python lines runs[n] and every later run `later` (which may read `calls`,
    the run's number); the runs are counted in the folder `counter`."""
    def block(code: str) -> str:
        return textwrap.indent(code.rstrip("\n") + "\n", "    " if runs else "")

    branches = "".join(f"{'if' if n == 0 else 'elif'} calls == {n}:\n" + block(code) for n, code in enumerate(runs))
    return COUNTING_TRAIN_PY.format(counter=str(counter)) + branches + ("else:\n" if runs else "") + block(later)


def hang(pids: Path, child: bool = True) -> str:
    """Python lines for a run that sleeps ten minutes, after starting a sleeping child of its own unless told not to.
    It first writes its pid and the child's to `pids`, or to a file named by its pid in there if `pids` is a folder,
    by a rename, so that a file that exists is complete."""
    return (f"PIDS = {str(pids)!r}\n"
            + ('child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])\n' if child else "")
            + textwrap.dedent(f"""\
                path = os.path.join(PIDS, str(os.getpid())) if os.path.isdir(PIDS) else PIDS
                with open(f"{{PIDS}}.{{os.getpid()}}.part", "w") as f:
                    f.write({'f"{os.getpid()} {child.pid}"' if child else 'str(os.getpid())'})
                os.replace(f.name, path)
                time.sleep(600)
            """))


def hanging_experiment(exp: Path, trial_dir: Path, pids: Path) -> str:
    """Commit a train.py whose baseline scores val_acc=0.5 and whose every later run hangs (see hang), and set the
    campaign up; returns the set-up commit, the campaign's best until something is kept."""
    (exp / "train.py").write_text(counting_train_py(trial_dir / "calls", 'print("val_acc=0.5")', later=hang(pids)))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "train.py that hangs for every candidate")
    setup(exp, train_py="train.py")
    return git(exp, "rev-parse", "HEAD")


def agent_proposing(tmp_path: Path, *candidates: dict) -> str:
    """A command ideator that always answers with these candidates."""
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""\
        import json, sys
        sys.stdin.read()
        print(json.dumps({{"candidates": {json.dumps(list(candidates))}}}))
    """))
    return f"{sys.executable} {agent}"


def agent_answering_in_turn(tmp_path: Path, *candidates: dict) -> str:
    """A command ideator that proposes these candidates one per call, in turn, then the last one again."""
    answers = tmp_path / "answers"
    answers.mkdir()
    for n, candidate in enumerate(candidates, start=1):
        (answers / f"{n}.json").write_text(json.dumps({"candidates": [candidate]}))
    agent = tmp_path / "agent.py"
    agent.write_text(textwrap.dedent(f"""\
        import pathlib, sys
        sys.stdin.read()
        counter = pathlib.Path({str(tmp_path / "calls")!r})
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
        print(pathlib.Path({str(answers)!r}, f"{{min(n, {len(candidates)})}}.json").read_text())
    """))
    return f"{sys.executable} {agent}"


# Every campaign a test sets up kills a hung trial after this long (far above any test trial's few
# seconds), instead of the relative rule's first ten minutes; a test of that rule passes None.
TEST_TRIAL_TIMEOUT_S = 120.0


def setup(experiment: Path, **options):
    """The setup flow on an experiment folder; single runs unless a test asks for seeds."""
    from autoraysearch.flows.setup_experiment import autoraysearch_setup

    options.setdefault("seeds", 1)  # single runs, as scripted train.py files expect; the noise tests ask for more
    options.setdefault("trial_timeout", TEST_TRIAL_TIMEOUT_S)
    return autoraysearch_setup(experiment_dir=str(experiment), **options)


def loop(experiment: Path, **options):
    from autoraysearch.flows.loop import autoraysearch_loop

    return autoraysearch_loop(experiment_dir=str(experiment), **options)


def results(experiment: Path, higher_is_better: bool = True):
    return read_results_log(experiment / "autoraysearch-results.tsv", higher_is_better)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger where PID 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def processes_with(marker: str) -> list[int]:
    """Pids of the live processes whose command line holds `marker`: trials number their processes in a namespace of their own."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes() and is_running(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(predicate, seconds: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds (True) or `seconds` pass (False)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str):
    """A tmpfs of `size` (e.g. "1m") mounted on the new folder `mount` for the block; skips the test unless root."""
    import pytest

    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(path: Path) -> None:
    """Write zeros to the file `path` until its file system is full."""
    with open(path, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
