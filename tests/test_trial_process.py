"""Tests for trial_process: real subprocesses, real signals, no mocks."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import is_running, wait_until

from autoraysearch.errors import AutoraysearchError
from autoraysearch.trials.process import kill_process_group, run_in_directory

PYTHON = [sys.executable, "train.py"]

# A trial that forks a grandchild, reports both pids and its group, then hangs (120 s: far longer than any
# wait below, so that no process ends of itself in time to pass for one killed; the leftovers fixture ends it).
TREE_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(f"pids {os.getpid()} {grandchild.pid} {os.getpgrp()}")
    time.sleep(120)
    """
)

# Runs one trial in its own process, so the tests can SIGINT or SIGKILL the launcher.
DRIVER_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from autoraysearch.trials.process import run_in_directory
    # A shell's background job starts with SIGINT ignored; the test needs Python's KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    script, log_path, scratch_root = sys.argv[1:]
    run_in_directory({"train.py": Path(script).read_text()}, [sys.executable, "train.py"],
                     timeout=60, log_path=Path(log_path), scratch_root=Path(scratch_root))
    """
)


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in the group."""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                try:
                    fields = Path(entry.path, "stat").read_bytes()
                except OSError:
                    continue
                fields = fields[fields.rfind(b")") + 2 :].split()
                if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                    return True
    return False


def _pids_from_log(log_path: Path, seconds: float = 60.0) -> list[int]:
    """Wait for the TREE_SCRIPT's `pids ...` line in a trial log."""

    def find():
        text = log_path.read_text() if log_path.exists() else ""
        return [line for line in text.splitlines() if line.startswith("pids ")]

    assert wait_until(find, seconds), "trial never reported its pids"
    return [int(x) for x in find()[0].split()[1:]]


def _pids_from_tail(lines: list[str]) -> list[int]:
    """The TREE_SCRIPT's pids from an outcome's stdout tail."""
    return [int(x) for x in next(line for line in lines if line.startswith("pids ")).split()[1:]]


def _start_driver(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """Start a launcher process running TREE_SCRIPT; return it, its trial log and its scratch root."""
    (tmp_path / "tree.py").write_text(TREE_SCRIPT)
    (tmp_path / "driver.py").write_text(DRIVER_SCRIPT)
    log_path, scratch_root = tmp_path / "logs" / "trial.log", tmp_path / "scratch"
    scratch_root.mkdir()
    driver = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "tree.py"), str(log_path), str(scratch_root)],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # our SIGINT must reach only the driver
    )
    return driver, log_path, scratch_root


def test_success_streams_output_and_removes_scratch(tmp_path):
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    train = textwrap.dedent(
        """
        import os
        from pkg.helper import EPOCHS
        print("cwd", os.getcwd())
        print("flag", os.environ["TRIAL_FLAG"], os.environ["PYTHONUNBUFFERED"])
        for epoch in range(EPOCHS):
            print(f"epoch {epoch} loss={1.0 / (epoch + 1):.3f}")
            print()
        print("val_acc=0.9000")
        """
    )
    files = {"train.py": train, "pkg/__init__.py": "", "pkg/helper.py": "EPOCHS = 3\n"}
    log_path = tmp_path / "logs" / "deep" / "trial.log"

    outcome = run_in_directory(
        files, PYTHON, timeout=30, env={"TRIAL_FLAG": "on"}, log_path=log_path, scratch_root=scratch_root
    )

    assert outcome.returncode == 0 and not outcome.timed_out
    assert outcome.stdout_tail[-1] == "val_acc=0.9000"
    assert "" not in outcome.stdout_tail
    assert outcome.stdout_tail[1] == "flag on 1"
    assert outcome.stdout_tail[0].startswith(f"cwd {scratch_root / 'autoraysearch-trial-'}")
    log_text = log_path.read_text()
    assert "epoch 2 loss=0.333" in log_text and log_text.rstrip().endswith("val_acc=0.9000")
    assert outcome.output == log_text
    assert 0 < outcome.seconds < 30
    assert list(scratch_root.iterdir()) == []


def test_failure_reports_exception_line(tmp_path):
    script = 'print("starting")\nraise ValueError("learning rate too high")\n'

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=tmp_path)

    assert outcome.returncode == 1 and not outcome.timed_out
    assert outcome.last_error_line == "ValueError: learning rate too high"
    assert "Traceback (most recent call last):" in outcome.output
    assert outcome.stdout_tail == ["starting"]


def test_death_by_signal_is_reported_like_popen(tmp_path):
    script = 'import os, signal\nprint("about to die")\nos.kill(os.getpid(), signal.SIGKILL)\n'

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=tmp_path)

    assert outcome.returncode == -signal.SIGKILL
    assert outcome.last_error_line == "about to die"  # no stderr: falls back to the output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor reports this on Linux")
def test_missing_command_exits_127(tmp_path):
    outcome = run_in_directory({}, ["autoraysearch-no-such-command"], timeout=30, scratch_root=tmp_path)

    assert outcome.returncode == 127
    assert "cannot run 'autoraysearch-no-such-command'" in outcome.last_error_line


def test_stray_grandchild_is_killed_after_normal_exit(tmp_path, leftovers):
    script = textwrap.dedent(
        """
        import subprocess, sys
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(40)"])
        print(f"pids {grandchild.pid}")
        print("val_acc=0.5000")
        """
    )
    started = time.monotonic()

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=tmp_path)

    (grandchild,) = _pids_from_tail(outcome.stdout_tail)
    leftovers.append(grandchild)
    assert outcome.returncode == 0 and not outcome.timed_out
    assert time.monotonic() - started < 20  # it holds our pipes: without the kill we would wait its 40 s
    assert not is_running(grandchild)


def test_timeout_kills_child_and_grandchild(tmp_path, leftovers):
    started = time.monotonic()

    # 5 s: the trial starts and prints its pids well before, even on a busy machine
    outcome = run_in_directory({"train.py": TREE_SCRIPT}, PYTHON, timeout=5, scratch_root=tmp_path)

    elapsed = time.monotonic() - started
    child, grandchild, pgid = _pids_from_tail(outcome.stdout_tail)
    leftovers += [child, grandchild]
    assert outcome.timed_out and outcome.returncode is None
    assert 5 <= elapsed < 25 and 5 <= outcome.seconds < 25  # never early, and far from the trial's 120 s
    assert not is_running(child) and not is_running(grandchild)
    assert not _group_alive(pgid)
    assert list(tmp_path.iterdir()) == []


def test_timeout_kills_child_that_ignores_sigterm(tmp_path, leftovers):
    script = textwrap.dedent(
        """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"pids {os.getpid()}")
        time.sleep(40)
        """
    )
    started = time.monotonic()

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=5, scratch_root=tmp_path)

    (child,) = _pids_from_tail(outcome.stdout_tail)
    leftovers.append(child)
    assert outcome.timed_out and outcome.returncode is None
    assert time.monotonic() - started < 25  # 5 s timeout + 3 s grace, far from the trial's 40 s
    assert not is_running(child)


def test_sigint_to_launcher_kills_trial_tree_and_reraises(tmp_path, leftovers):
    driver, log_path, scratch_root = _start_driver(tmp_path)
    leftovers.append(driver.pid)
    child, grandchild, pgid = _pids_from_log(log_path)
    leftovers += [child, grandchild]

    os.kill(driver.pid, signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)

    assert driver.returncode != 0 and "KeyboardInterrupt" in stderr
    assert not is_running(child) and not is_running(grandchild) and not _group_alive(pgid)
    assert list(scratch_root.iterdir()) == []


def test_async_interrupt_in_worker_thread_kills_trial_tree(tmp_path, leftovers):
    # This is how Ray cancels a task: KeyboardInterrupt raised asynchronously in the executing thread.
    log_path = tmp_path / "trial.log"
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    raised: list[BaseException] = []

    def work():
        try:
            run_in_directory(
                {"train.py": TREE_SCRIPT}, PYTHON, timeout=60, log_path=log_path, scratch_root=scratch_root
            )
        except BaseException as exc:  # noqa: BLE001 - the test inspects exactly what escaped
            raised.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    child, grandchild, pgid = _pids_from_log(log_path)
    leftovers += [child, grandchild]

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(KeyboardInterrupt))
    worker.join(60)

    assert not worker.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt)
    assert not is_running(child) and not is_running(grandchild) and not _group_alive(pgid)
    assert list(scratch_root.iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sigkilled_launcher_takes_trial_tree_down(tmp_path, leftovers):
    driver, log_path, _ = _start_driver(tmp_path)
    leftovers.append(driver.pid)
    child, grandchild, pgid = _pids_from_log(log_path)
    leftovers += [child, grandchild]

    os.kill(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=60)

    assert wait_until(lambda: not is_running(child) and not is_running(grandchild), 30)
    assert wait_until(lambda: not _group_alive(pgid), 30)


def test_output_is_capped_to_its_tail(tmp_path):
    script = 'import sys\nfor i in range(5000):\n    print(f"line {i:05d} " + "x" * 20)\nprint("oops", file=sys.stderr)\n'
    log_path = tmp_path / "trial.log"

    outcome = run_in_directory(
        {"train.py": script}, PYTHON, timeout=30, log_path=log_path, max_output_bytes=10_000, scratch_root=tmp_path
    )

    total = log_path.stat().st_size
    assert total > 100_000  # the log keeps everything
    note, kept = outcome.output.split("\n", 1)
    assert note == f"[... {total - 10_000} bytes cut ...]"
    assert len(kept.encode()) == 10_000
    assert log_path.read_text().endswith(kept)
    assert "line 04999 " in kept and "line 00000 " not in kept
    assert len(outcome.stdout_tail) == 50 and outcome.stdout_tail[-1].startswith("line 04999 ")
    assert outcome.last_error_line == "oops"


@pytest.mark.parametrize("name", ["/etc/evil.py", "../train.py", "pkg/../../train.py", "", ".", "a\0b"])
def test_bad_file_names_are_rejected(tmp_path, name):
    with pytest.raises(AutoraysearchError):
        run_in_directory({name: "print(1)\n"}, PYTHON, timeout=30, scratch_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_kill_process_group_refuses_own_group():
    with pytest.raises(ValueError):
        kill_process_group(os.getpgrp())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_launcher_and_its_direct_children_sigkilled_together_still_take_the_tree_down(tmp_path, leftovers):
    """What Ray does when a worker dies: it SIGKILLs the worker's direct children (our supervisor) too."""
    driver, log_path, _ = _start_driver(tmp_path)
    leftovers.append(driver.pid)
    child, grandchild, pgid = _pids_from_log(log_path)
    leftovers += [child, grandchild]
    supervisor = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the child's parent
    assert supervisor != driver.pid

    os.kill(driver.pid, signal.SIGKILL)
    os.kill(supervisor, signal.SIGKILL)
    driver.communicate(timeout=60)

    assert wait_until(lambda: not is_running(child) and not is_running(grandchild), 30)
    assert wait_until(lambda: not _group_alive(pgid), 30)


def test_api_keys_never_reach_the_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SENTINEL-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-SENTINEL-anthropic")
    script = "import os\nprint(sorted(k for k, v in os.environ.items() if 'SENTINEL' in v))\n"

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=tmp_path, env={"X": "1"})

    assert outcome.stdout_tail == ["[]"]
