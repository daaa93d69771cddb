"""Candidate code is contained: no secrets, no writes outside its scratch, no leftovers (forged scores: test_forged_scores).

Each test runs a hostile train.py or model.py in real processes, the way a trial or a pre-flight does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest
from helpers import processes_with, wait_until

from autoraysearch.trials.preflight import preflight
from autoraysearch.trials.sandbox import landlock_abi
from autoraysearch.trials.process import run_in_directory

PYTHON = [sys.executable, "train.py"]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the supervisor is Linux-only")
needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="this kernel offers no Landlock")

# Walks up its parent chain and prints every secret it can read from /proc/PID/environ.
SNOOP = textwrap.dedent(
    """
    import os
    def parent(pid):
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    found, pid = [], os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                found += [e.decode() for e in handle.read().split(b"\\0") if b"sk-test-secret" in e]
        except OSError as exc:
            found.append(f"denied {pid}: {exc.strerror}")
        pid = parent(pid)
    print("FOUND", found)
    """
)

# Starts a process in a session of its own (out of the trial's process group), named by a marker:
# trials have process numbers of their own, so the test finds it by its command line.
ESCAPE = textwrap.dedent(
    """
    import subprocess, sys, time
    escaped = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "{marker}"],
                               start_new_session=True)
    """
)


# ---- secrets ----

@linux_only
def test_trial_cannot_read_the_launchers_keys_from_proc(tmp_path):
    driver = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from autoraysearch.trials.process import run_in_directory
        outcome = run_in_directory({{"train.py": {SNOOP!r}}}, [sys.executable, "train.py"], timeout=60,
                                   scratch_root=Path({str(tmp_path)!r}))
        print(outcome.stdout_tail[-1])
        """
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-secret", "PREFECT_API_KEY": "sk-test-secret-prefect"}

    shown = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=120)

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("FOUND")
    assert "sk-test-secret" not in shown.stdout


@linux_only
def test_preflight_model_code_cannot_read_the_campaigns_keys_from_proc():
    model = SNOOP.replace('print("FOUND", found)', 'raise RuntimeError(f"FOUND {found}")')
    driver = textwrap.dedent(
        f"""
        from autoraysearch.trials.preflight import preflight
        print(preflight({model!r}, {{}}, None, None, timeout_s=60).reason)
        """
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-secret"}

    shown = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=120)

    assert shown.returncode == 0, shown.stderr
    assert "FOUND" in shown.stdout and "sk-test-secret" not in shown.stdout


# ---- writes ----

WRITE_OUTSIDE = textwrap.dedent(
    """
    import sys
    target = sys.argv[1] if len(sys.argv) > 1 else {target!r}
    try:
        with open(target, "a") as handle:
            handle.write("tampered\\n")
        print("WROTE")
    except OSError as exc:  # Landlock says EACCES; the read-only mounts, where they come first, EROFS
        print("DENIED", exc.strerror)
    try:
        with open({sibling!r}, "w") as handle:
            handle.write("new file\\n")
        print("CREATED")
    except OSError:
        print("CREATE DENIED")
    with open("inside.txt", "w") as handle:  # its scratch stays writable
        handle.write("ok")
    import tempfile
    with tempfile.NamedTemporaryFile() as scratch_file:  # TMPDIR points into the scratch
        print("TMP", scratch_file.name)
    """
)


@linux_only
@needs_landlock
def test_trial_cannot_write_into_the_experiment_folder(tmp_path):
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    results = experiment / "results.tsv"
    results.write_text("commit\tmetric\n")
    script = WRITE_OUTSIDE.format(target=str(results), sibling=str(tmp_path / "dropped.py"))
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=scratch_root)

    assert outcome.returncode == 0, outcome.output
    assert outcome.stdout_tail[0] in ("DENIED Permission denied", "DENIED Read-only file system")
    assert outcome.stdout_tail[1] == "CREATE DENIED"
    assert outcome.stdout_tail[2].startswith(f"TMP {scratch_root}")
    assert results.read_text() == "commit\tmetric\n"
    assert not (tmp_path / "dropped.py").exists()
    assert outcome.sandbox.startswith("landlock ABI")


@linux_only
@needs_landlock
def test_a_folder_passed_as_writable_can_be_written(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    script = f"open({str(data / 'download.bin')!r}, 'w').write('x')\n"

    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=30, scratch_root=tmp_path, writable=[data])

    assert outcome.returncode == 0, outcome.output
    assert (data / "download.bin").read_text() == "x"


@linux_only
@needs_landlock
def test_preflight_model_code_cannot_write_outside_its_scratch(tmp_path):
    target = tmp_path / "model.py"
    target.write_text("original\n")
    model = f"open({str(target)!r}, 'a').write('tampered')\nclass Model: pass\n"

    warm = preflight(model, {}, None, None, timeout_s=60)
    cold = preflight(model, {}, None, None, timeout_s=60, warm=False)

    for result in (warm, cold):
        assert "PermissionError" in result.reason or "Read-only file system" in result.reason, result.reason
    assert target.read_text() == "original\n"


# ---- score forgery ----

# ---- orphans and leftovers ----

@linux_only
@pytest.mark.parametrize("hang", [False, True], ids=["exits", "times-out"])
def test_a_process_that_left_the_session_is_gone_after_the_trial(tmp_path, leftovers, hang):
    marker = f"autoraysearch-escaped-{uuid.uuid4().hex}"
    script = ESCAPE.replace("{marker}", marker) + ("time.sleep(600)\n" if hang else "")
    script += "print('STARTED', flush=True)\n"
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    outcome = run_in_directory({"train.py": script}, PYTHON, timeout=3 if hang else 30, scratch_root=scratch_root)

    assert outcome.timed_out is hang
    assert hang or "STARTED" in outcome.output
    assert wait_until(lambda: not processes_with(marker), 1.0)


@linux_only
def test_preflight_leaves_no_process_that_left_its_session(leftovers):
    model = textwrap.dedent(
        """
        import subprocess, sys
        escaped = subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "MARKER"],
                                   start_new_session=True)
        raise RuntimeError(f"ESCAPED {escaped.pid}")
        """
    )
    marker = f"autoraysearch-escaped-{uuid.uuid4().hex}"

    result = preflight(model.replace("MARKER", marker), {}, None, None, timeout_s=60)

    assert "ESCAPED" in result.reason
    assert wait_until(lambda: not processes_with(marker), 1.0)


@linux_only
def test_scratch_is_removed_when_the_launcher_is_killed(tmp_path, leftovers):
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    marker = f"autoraysearch-trial-{uuid.uuid4().hex}"
    driver = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from autoraysearch.trials.process import run_in_directory
        script = "import os, sys, time\\nprint('started', flush=True)\\ntime.sleep(600)\\n"
        run_in_directory({{"train.py": script}}, [sys.executable, "train.py", {marker!r}], timeout=600,
                         scratch_root=Path({str(scratch_root)!r}), log_path=Path({str(tmp_path / 'log')!r}))
        """
    )
    launcher = subprocess.Popen([sys.executable, "-c", driver], start_new_session=True)
    leftovers.append(launcher.pid)
    log = tmp_path / "log"
    assert wait_until(lambda: log.exists() and "started" in log.read_text(), 30)
    trial = processes_with(marker)  # the trial's command and the supervisor's processes above it
    leftovers.extend(trial)
    assert trial and list(scratch_root.iterdir())

    launcher.kill()  # the launcher dies before its own clean-up can run
    launcher.wait()

    assert wait_until(lambda: not processes_with(marker) and not list(scratch_root.iterdir()), 10)


def test_a_flood_of_output_gives_a_capped_log_that_keeps_its_start_and_end(tmp_path):
    script = 'import sys\nfor i in range(100_000):\n    print(f"line {i:06d} " + "x" * 40)\nprint("val_acc=0.5000")\n'
    log_path = tmp_path / "trial.log"

    outcome = run_in_directory(
        {"train.py": script}, PYTHON, timeout=60, log_path=log_path, scratch_root=tmp_path, max_log_bytes=200_000,
    )

    text = log_path.read_text()
    assert outcome.returncode == 0
    assert len(text.encode()) <= 200_000 + 100  # the cap, plus the cut note
    assert text.startswith("line 000000 ") and text.endswith("line 099999 " + "x" * 40 + "\nval_acc=0.5000\n")
    assert "bytes of output cut from this log ...]" in text
    assert outcome.stdout_tail[-1] == "val_acc=0.5000"


def test_the_command_ideator_gets_none_of_the_campaigns_keys(tmp_path, monkeypatch):
    """An agent command is a program too: it sees no LLM, Prefect or Ray key of the campaign."""
    from autoraysearch.ideators.llm.clients import CommandChat

    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PREFECT_API_KEY", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(name, f"sk-test-{name.lower()}")
    agent = tmp_path / "agent.py"
    agent.write_text("import os, sys\nsys.stdin.read()\nprint(sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k))\n")
    reply = CommandChat(f"{sys.executable} {agent}", timeout_s=60).complete([{"role": "user", "content": "hi"}])
    assert "sk-test" not in reply.text
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PREFECT_API_KEY", "RAY_AUTH_TOKEN"):
        assert name not in reply.text
