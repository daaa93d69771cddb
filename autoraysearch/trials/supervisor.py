"""The programs that stand between a trial's launcher and the untrusted code it runs.

Each is sandbox.py's source followed by a small main, run as `python -I -S -c SOURCE CONFIG ...`: it
imports nothing of ours (the trial's folder could shadow it) and contains itself before it execs
what it was given.

* The supervisor (process.py starts every trial through it on Linux) contains the trial, survives
  its launcher's death long enough to kill what the trial started and to remove its scratch folder.
* The model-side wrapper (AUTORAYSEARCH_CONTAIN) is what a generated train.py's judge, which holds
  the validation labels, starts its model side with: a further domain that cannot read the raw data,
  write the judge's data folder, or reach the judge through /proc or signals.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from autoraysearch.trials import sandbox

SCRATCH_PREFIX = "autoraysearch-trial-"
TERM_GRACE_SECONDS = 3.0  # time a trial gets between SIGTERM and SIGKILL
KILL_WAIT_SECONDS = 30.0  # after SIGKILL; dying CUDA processes can take a while to release the GPU

# The supervisor's own part; it runs after sandbox.py's source as
# `python -I -S -c SOURCE CONFIG_JSON <command...>` in the trial's cwd. -I keeps the trial's own files
# (e.g. a user `signal.py`) from shadowing the stdlib here. Two processes: the outer one is the
# launcher's direct child, which Ray SIGKILLs at once when a worker dies; the keeper, its child,
# survives that, and is the one that runs the command, sweeps what it leaves and removes the scratch.
_SUPERVISOR_MAIN = r"""
import json, shutil, stat, sys

config, command = json.loads(sys.argv[1]), sys.argv[2:]
launcher, grace, kill_wait = config["launcher"], config["grace"], config["kill_wait"]
OUT_OF_MEMORY = config["out_of_memory"]

def exit_like(code):
    # Exit like the command did, so the launcher sees the same returncode as without us.
    if code >= 0:
        os._exit(code)
    if -code not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot (and need not) be reset
        signal.signal(-code, signal.SIG_DFL)
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), -code)
    os._exit(128 - code)

def close_command_fds():
    for fd in config["fds"]:
        try:
            os.close(fd)
        except OSError:
            pass

def remove_scratch():
    # The launcher died before its own clean-up; the folder must not pile up night after night.
    def retry(func, path, _):
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        func(path)
    if os.path.basename(config["scratch"]).startswith(config["prefix"]):
        shutil.rmtree(config["scratch"], onerror=retry)

def exec_command():
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"autoraysearch: cannot run {command[0]!r}: {exc}\n".encode())
    os._exit(127)

def wait_for_init(init, status_read):
    # Between the keeper and the trial's PID 1: exit like the command did; if we die, PID 1 does too.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # meant for the command, which the keeper signals itself
    close_command_fds()
    os.close(config["report_fd"])
    status = os.waitpid(init, 0)[1]
    reported = os.read(status_read, 64)
    exit_like(int(reported) if reported.strip() else os.waitstatus_to_exitcode(status))

def run_command(cgroups, limits_note):
    # In the forked child: limit, isolate and contain it, tell the launcher how, and become the command.
    join_cgroups(cgroups)
    # Where Landlock cannot scope signals, process numbers of its own: nothing outside can be named or signalled.
    new_pids = landlock_abi() < SIGNAL_SCOPING_ABI
    isolation = isolate(writable=[*config["writable"], *shared_writable()], new_pids=new_pids)
    status_write = None
    if isolation.endswith("private processes"):
        status_read, status_write = os.pipe()
        init = os.fork()  # PID 1 of the trial's own namespace
        if init:
            os.close(status_write)
            wait_for_init(init, status_read)
        os.close(status_read)
        set_parent_death_signal(signal.SIGKILL)  # and with it, everything in the namespace
        isolation += f", {mount_own_proc()}"
    note = f"{contain(config['writable'])}; {isolation}; {drop_capabilities()}" + (f"; {limits_note}" if limits_note else "")
    os.write(config["report_fd"], note.encode())
    os.close(config["report_fd"])
    if status_write is None:
        exec_command()
    run_as_init(exec_command, grace, status_write, config["fds"])

def keeper(supervisor):
    stop = {"at": None, "orphaned": False}
    def on_term(signum, frame):
        stop["at"] = stop["at"] or time.monotonic()
    def on_hangup(signum, frame):
        stop["orphaned"] = True  # the outer supervisor died or says the launcher did
        on_term(signum, frame)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_hangup)
    set_parent_death_signal(signal.SIGHUP)
    if os.getppid() != supervisor:
        on_hangup(None, None)
    become_subreaper()
    make_undumpable()
    cgroups, limits_note = make_trial_cgroups(f"{config['prefix']}{os.getpid()}", config.get("limits") or {})
    child = os.fork()
    if child == 0:
        run_command(cgroups, limits_note)
    close_command_fds()
    termed = killed = False
    while True:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            break
        if stop["at"] is not None and not termed:
            signal_descendants(signal.SIGTERM)  # also those that left the process group
            termed = True
        elif termed and not killed and time.monotonic() - stop["at"] >= grace:
            signal_descendants(signal.SIGKILL)
            killed = True
        time.sleep(0.05)
    sweep_descendants(0 if killed else grace, kill_wait)
    # Judged from the kernel's count, which the trial cannot write: a line it prints proves nothing.
    memory_killed = memory_kills(cgroups)
    remove_cgroups(cgroups)
    if memory_killed:
        os.write(config["report_fd"], f"\n{OUT_OF_MEMORY} {memory_killed}".encode())
    if stop["orphaned"] or os.getppid() != supervisor:
        remove_scratch()
    exit_like(os.waitstatus_to_exitcode(status))

def supervise():
    state = {"launcher_gone": False, "keeper": None}
    def on_hangup(signum, frame):
        # SIGHUP is our parent-death signal; ignore it unless the launcher really is gone.
        if os.getppid() != launcher:
            state["launcher_gone"] = True
            tell_keeper()
    def tell_keeper():
        try:
            if state["keeper"]:
                os.kill(state["keeper"], signal.SIGHUP)
        except ProcessLookupError:
            pass  # already reaped
    signal.signal(signal.SIGHUP, on_hangup)
    # The launcher's SIGTERM to the group is meant for the command; the keeper acts on it.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if not set_parent_death_signal(signal.SIGHUP):
        os.write(2, b"autoraysearch: prctl(PR_SET_PDEATHSIG) failed; the trial may outlive its launcher\n")
    if os.getppid() != launcher:
        os._exit(1)  # the launcher died before the death signal was armed
    become_subreaper()  # if the keeper is killed, what it ran comes to us
    make_undumpable()
    supervisor = os.getpid()
    child = os.fork()
    if child == 0:
        keeper(supervisor)
    state["keeper"] = child
    if state["launcher_gone"]:
        tell_keeper()
    close_command_fds()
    os.close(config["report_fd"])
    status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    state["keeper"] = None
    sweep_descendants(0, kill_wait)  # only when the keeper itself was killed
    if state["launcher_gone"] or os.getppid() != launcher:
        remove_scratch()
    exit_like(status)

supervise()
"""

# What a generated train.py's judge starts its model side with (`AUTORAYSEARCH_CONTAIN`), after
# sandbox.py's source: `python -I -S -c SOURCE CONFIG_JSON <command...>`, in the trial's scratch
# folder. It execs the model side in Landlock domains of its own: writes only to the scratch folder
# (not to a data folder the judge may download into), and no reading of the raw data the validation
# labels come from.
_MODEL_SIDE_MAIN = r"""
import json, sys

config, command = json.loads(sys.argv[1]), sys.argv[2:]
cache = os.environ.get(CAMPAIGN_CACHE_ENV, "")  # the campaign's compile cache, which the model side may write too
if contain([os.getcwd(), *([cache] if os.path.isabs(cache) else [])]).startswith("landlock"):
    hide_files([path for path in config.get("hide", []) if isinstance(path, str)])
os.execvp(command[0], command)
"""


def supervisor_source() -> str:
    """sandbox.py's code followed by the supervisor's: one program that imports nothing of ours."""
    return Path(sandbox.__file__).read_text(encoding="utf-8") + _SUPERVISOR_MAIN


def model_side_prefix() -> list[str]:
    """The command prefix that contains a generated train.py's model side (see _MODEL_SIDE_MAIN)."""
    return [sys.executable, "-I", "-S", "-c", Path(sandbox.__file__).read_text(encoding="utf-8") + _MODEL_SIDE_MAIN]



OUT_OF_MEMORY = "out-of-memory-kills:"  # how the keeper's report says the kernel killed the trial at its memory limit


def launch_argv(command: list[str], scratch: Path, writable: list[str], fds: list[int], report_fd: int,
                limits: dict | None = None) -> list[str]:
    """The argv that starts the command behind the supervisor; `limits`: {"pids": n, "memory": bytes}, None for none."""
    config = {
        "launcher": os.getpid(),
        "grace": TERM_GRACE_SECONDS,
        "kill_wait": KILL_WAIT_SECONDS,
        "scratch": str(scratch),
        "prefix": SCRATCH_PREFIX,
        "writable": [str(scratch), *writable],
        "fds": fds,
        "report_fd": report_fd,
        "limits": limits or {},
        "out_of_memory": OUT_OF_MEMORY,
    }
    return [sys.executable, "-I", "-S", "-c", supervisor_source(), json.dumps(config), *command]
