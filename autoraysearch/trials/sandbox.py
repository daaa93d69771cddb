"""Containment of untrusted candidate code on Linux: a Landlock domain and a sweep of leftover processes.

Standard library only and no package imports, because this file's source is also the first part of
the `python -I -S` supervisor that trial_process starts and of warm_check's helper: neither can
import autoraysearch (the trial's folder could shadow it, and the helper must not pay for it).

What `contain` gives a process and everything it starts afterwards:

* Landlock write rules: files may be created, changed or removed only under the given folders (the
  trial's scratch folder, a data folder it may download into) and /dev/shm, and only these device
  files may be opened for writing: /dev/null and friends, the NVIDIA/AMD GPU devices. Reading,
  executing and the network are left alone (DDP meets over TCP on localhost).
* Landlock's ptrace scoping, which holds even for root: the code cannot read /proc/PID/environ or
  /proc/PID/mem of any process outside its domain (the Ray worker, the raylet, the campaign), where
  the campaign's API keys live.
* With Landlock ABI 6 or newer, signal scoping: it cannot kill or stop processes outside its domain.

What `isolate` gives it before that, on every kernel that allows namespaces (as root, or through a
user namespace): a network of its own, the host's socket files covered (a connect is refused), a
private /dev/shm, optionally its own process numbers (a PID namespace, which the supervisor asks for
where Landlock cannot scope signals: nothing outside can be signalled or seen, and everything in it
dies with its first process), and every mount read-only except the folders it may write, so chmod,
utime, xattrs and truncate fail outside them where Landlock does not cover them. `drop_capabilities` then takes every
capability, so a root trial cannot undo those mounts or look into other users' processes.

What `hide_files` adds for the model side of a generated train.py, a process its judge starts: a
nested domain in which the given files (where the validation labels come from) cannot be read, and
from which the judge, outside it, cannot be traced, signalled or looked into through /proc.

Where Landlock is missing (old kernel, a seccomp filter), `contain` says so and changes nothing;
callers report that in their outcome.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import os
import re
import signal
import stat
import struct
import time

# Keys the campaign may hold (LLM ideators, Prefect Cloud, a Ray cluster) that model code never sees.
SECRET_ENV = frozenset({"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PREFECT_API_KEY", "RAY_AUTH_TOKEN"})
# Every variable whose name looks like a credential is hidden too (HF_TOKEN, WANDB_API_KEY, AWS_...).
SECRET_PATTERNS = ("*_KEY", "*_KEYS", "*_TOKEN", "*_SECRET", "*PASSWORD*", "*_CREDENTIALS", "AWS_*")
EXTRA_SECRETS_ENV = "AUTORAYSEARCH_SECRET_ENV"  # more names or patterns to hide, separated by commas
# Variables that name a service a trial has no business with: it gets none of them.
SERVICE_ENV_PREFIXES = ("PREFECT_", "RAY_")
# Tools that cache into $HOME or /tmp by default; a contained trial can only write to its scratch.
CACHE_ENV = {
    "TMPDIR": "tmp",
    "TORCHINDUCTOR_CACHE_DIR": "cache/torchinductor",
    "TRITON_CACHE_DIR": "cache/triton",
    "XDG_CACHE_HOME": "home/.cache",  # the trial's own home (scratch_home.py), where the user's caches show
    "MPLCONFIGDIR": "cache/matplotlib",
    "CUDA_CACHE_PATH": "cache/nv",
}
# Opened for writing by ordinary programs and by the CUDA/ROCm runtimes; every other device stays read-only.
# Folders (separated by os.pathsep) that every trial and pre-flight may write besides its scratch folder,
# e.g. a dataset cache shared by the trials of a node; set where the Ray workers run.
WRITABLE_ENV = "AUTORAYSEARCH_TRIAL_WRITABLE"
# The campaign's compile cache on this node (trials.runs.compile_cache): the model side of a generated
# train.py, contained to its scratch folder, may write there too, so torch.compile's kernels are kept.
CAMPAIGN_CACHE_ENV = "AUTORAYSEARCH_CAMPAIGN_CACHE"
WRITABLE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/kfd")
WRITABLE_DEVICE_PREFIXES = ("/dev/nvidia", "/dev/dri/")
WRITABLE_DEVICE_FOLDERS = ("/dev/shm",)

_SYS_LANDLOCK_CREATE_RULESET = 444  # the same numbers on x86_64 and aarch64
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_LANDLOCK_SCOPE_SIGNAL = 1 << 1
SIGNAL_SCOPING_ABI = 6  # the first Landlock ABI that scopes signals and abstract Unix sockets

# Landlock's filesystem rights that change something; reading and executing are never restricted.
_WRITE_FILE, _TRUNCATE = 1 << 1, 1 << 14
_READ_FILE = 1 << 2
_DIRECTORY_WRITES = sum(1 << bit for bit in range(4, 13))  # REMOVE_DIR ... MAKE_SYM
_REFER = 1 << 13
# Caps the Landlock ABI used (0 turns Landlock off): how the fallbacks for older kernels are tried on a new one.
LANDLOCK_ABI_ENV = "AUTORAYSEARCH_LANDLOCK_ABI"


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def is_secret(name: str) -> bool:
    """Whether an environment variable holds a credential: a known key, a credential-like name, or one named in EXTRA_SECRETS_ENV."""
    extra = [p.strip().upper() for p in os.environ.get(EXTRA_SECRETS_ENV, "").split(",") if p.strip()]
    upper = name.upper()
    return upper in SECRET_ENV or any(fnmatch.fnmatchcase(upper, pattern) for pattern in (*SECRET_PATTERNS, *extra))


@contextlib.contextmanager
def without_secrets():
    """Processes started inside (Ray's own, a local Prefect server) inherit none of the campaign's keys.

    Ray workers still get the Prefect key they need through the runtime environment, and hide it at once.
    """
    hidden = {name: os.environ.pop(name) for name in list(os.environ) if is_secret(name) and name != "RAY_AUTH_TOKEN"}
    try:
        yield
    finally:
        os.environ.update(hidden)


def trial_environment(environ) -> dict:
    """`environ` without credentials and without the variables that name a service (Prefect, Ray)."""
    return {k: v for k, v in environ.items() if not is_secret(k) and not k.upper().startswith(SERVICE_ENV_PREFIXES)}


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is unavailable."""
    try:
        version = _libc().syscall(_SYS_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    forced = os.environ.get(LANDLOCK_ABI_ENV, "").strip()
    return max(0, min(version, int(forced)) if forced.isdigit() else version)


def shared_writable() -> list[str]:
    """The folders every trial may write besides its own (WRITABLE_ENV)."""
    return [p for p in os.environ.get(WRITABLE_ENV, "").split(os.pathsep) if p]


def _write_rights(abi: int) -> tuple[int, int]:
    """(rights for folders, rights for single files) that this ABI knows about."""
    file_rights = _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0)
    return file_rights | _DIRECTORY_WRITES | (_REFER if abi >= 2 else 0), file_rights


def writable_devices() -> list[str]:
    """The device files and folders a contained process may write to, those that exist here."""
    found = [path for path in (*WRITABLE_DEVICES, *WRITABLE_DEVICE_FOLDERS) if os.path.exists(path)]
    for prefix in WRITABLE_DEVICE_PREFIXES:
        folder, start = os.path.split(prefix)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        found += [os.path.join(folder, name) for name in names if name.startswith(start)]
    return found


def contain(writable: list[str]) -> str:
    """Put this process (and what it starts later) in a Landlock domain; say which sandbox is in force.

    Call it in a single-threaded process (a fresh fork): Landlock restricts the calling thread only.
    """
    abi = landlock_abi()
    folder_rights, file_rights = _write_rights(abi)

    def add_rules(libc, ruleset):
        for path in [*writable, *shared_writable(), *writable_devices()]:
            _allow_writes(libc, ruleset, path, folder_rights, file_rights)

    return _restrict_self(abi, folder_rights, add_rules)


def _restrict_self(abi: int, handled: int, add_rules) -> str:
    """Create a ruleset handling `handled` (and signal scoping where the ABI has it), let `add_rules` fill it, enforce it."""
    if abi < 1:
        return "none: this kernel offers no Landlock"
    libc = _libc()
    attr = _RulesetAttr(handled, 0, _LANDLOCK_SCOPE_SIGNAL if abi >= SIGNAL_SCOPING_ABI else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the fields this kernel knows
    ruleset = libc.syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return f"none: landlock_create_ruleset failed ({os.strerror(ctypes.get_errno())})"
    try:
        add_rules(libc, ruleset)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"none: prctl(PR_SET_NO_NEW_PRIVS) failed ({os.strerror(ctypes.get_errno())})"
        if libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            return f"none: landlock_restrict_self failed ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(ruleset)
    return f"landlock ABI {abi}"


def _allow_writes(libc, ruleset: int, path: str, folder_rights: int, file_rights: int) -> None:
    """Let the domain write beneath `path` (a folder) or to it (a file); a missing path is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        rights = folder_rights if os.path.isdir(path) else file_rights
        rule = _PathBeneathAttr(rights, fd)
        if libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            os.write(2, f"autoraysearch: cannot allow writes to {path}: {os.strerror(ctypes.get_errno())}\n".encode())
    finally:
        os.close(fd)


def hide_files(hidden: list[str]) -> str:
    """Put this process in a further Landlock domain where `hidden` files and folders cannot be read.

    Only reading files is handled (listing folders and executing stay free), so every other file
    reads as before. Landlock only allows, so the rules allow reading everything beside the hidden
    paths: each sibling along the way down to them gets a rule of its own.
    """
    def add_rules(libc, ruleset):
        for path in readable_beside(hidden):
            _allow(libc, ruleset, path, _READ_FILE)

    return _restrict_self(landlock_abi(), _READ_FILE, add_rules)


def readable_beside(hidden: list[str]) -> list[str]:
    """Paths whose trees together hold every file except the `hidden` ones (real paths, symlinks resolved)."""
    hidden = {os.path.realpath(path) for path in hidden if os.path.exists(path)}
    if not hidden:
        return ["/"]
    on_the_way = set()
    for path in hidden:
        while path != "/":
            path = os.path.dirname(path)
            on_the_way.add(path)

    def covers_hidden(path: str) -> bool:
        return path in on_the_way or any(path == h or path.startswith(h.rstrip("/") + "/") for h in hidden)

    found, todo = [], ["/"]
    while todo:
        folder = todo.pop()
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in on_the_way and not os.path.islink(path):
                todo.append(path)
            elif not covers_hidden(real):
                found.append(real)
    return found


def _allow(libc, ruleset: int, path: str, rights: int) -> None:
    """Grant `rights` beneath `path` (only the file rights when it is a file); a missing path is skipped."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        rule = _PathBeneathAttr(rights, fd)
        libc.syscall(_SYS_LANDLOCK_ADD_RULE, ruleset, _LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_NEWPID = 0x00020000, 0x10000000, 0x40000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
# statvfs's flags of a mount and the mount(2) flags that keep them: a remount must not drop a locked one.
_KEPT_MOUNT_FLAGS = {0x2: _MS_NOSUID, 0x4: _MS_NODEV, 0x8: _MS_NOEXEC, 0x400: 0x400, 0x800: 0x800, 0x1000: 1 << 21}
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
NETWORK_ENV = "AUTORAYSEARCH_TRIAL_NETWORK"  # "host" keeps trials on the host's network and mounts (isolation off)
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


def isolate(private_folders=("/dev/shm",), writable=None, new_pids: bool = False) -> str:
    """A network of this process's own (loopback only) and fresh tmpfs over `private_folders`; say what holds.

    The network namespace keeps every TCP port and abstract Unix socket of the host (the Prefect API,
    Ray, local servers) out of reach, while DDP ranks still meet on their own loopback; the host's
    socket files, bound by then, are covered in the mount namespace. The mount
    namespace gives /dev/shm to this trial alone, and it vanishes with it. With `writable` (a list
    of paths), every other mount becomes read-only here. With `new_pids`, the next child forked
    is PID 1 of a namespace of its own (see run_as_init). As root this needs nothing else; otherwise a
    user namespace that maps our user to itself, where the kernel allows one.
    Call it in a single-threaded process before `contain` (Landlock forbids mounting).
    """
    if os.environ.get(NETWORK_ENV, "") == "host":
        return "host network (AUTORAYSEARCH_TRIAL_NETWORK=host)"
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    sockets = host_socket_paths()  # the list is per network namespace: read it while we are in the host's
    flags = _CLONE_NEWNET | _CLONE_NEWNS | (_CLONE_NEWPID if new_pids else 0)
    if libc.unshare(flags) != 0:
        if libc.unshare(_CLONE_NEWUSER | flags) != 0:
            return f"no network isolation: unshare failed ({os.strerror(ctypes.get_errno())})"
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
        except OSError as exc:
            return f"no network isolation: user namespace mapping failed ({exc.strerror})"
    if not _loopback_up():
        return "no network isolation: the private loopback did not come up"
    libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)  # our mounts stay ours
    shared = "private network"
    # A socket file is reached through the file system, not the network: /dev/null bound over it answers
    # every connect with "connection refused" (Ray's raylet and plasma store, docker.sock, ...).
    hidden = sum(libc.mount(b"/dev/null", path.encode(), None, _MS_BIND, None) == 0 for path in sockets)
    if hidden < len(sockets):
        shared += f" ({len(sockets) - hidden} host Unix sockets stayed reachable)"
    for folder in private_folders:
        if os.path.isdir(folder) and libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                                                 b"mode=1777") == 0:
            shared += f", private {folder}"
    if writable is not None:
        shared += ", " + read_only_except([*writable, *private_folders])
        with contextlib.suppress(OSError):
            os.chdir(os.getcwd())  # onto the writable mount now over our folder, not the read-only one beneath
    return shared + (", private processes" if new_pids else "")


def host_socket_paths() -> list[str]:
    """The paths of the Unix sockets bound in this network namespace that exist as socket files here."""
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(maxsplit=7)
        path = fields[7] if len(fields) == 8 else ""
        if path.startswith("/") and path not in found:  # abstract names start with "@"; those need no mount
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(path, follow_symlinks=False).st_mode):
                    found.append(path)
    return found


def mount_points() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount this process sees."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # " " is written \040
            found.append((point, fields[fields.index("-") + 1]))
    return found


def read_only_except(writable) -> str:
    """In this (private) mount namespace, make every mount read-only except beneath `writable`.

    chmod, utime, xattrs and truncate fail with EROFS outside those folders, which Landlock covers
    only in part (truncate from ABI 3, the others never). Each writable folder is bound onto itself
    first, so that it is a mount of its own that stays writable. Device files still open for writing.
    """
    libc = _libc()
    kept = []
    for path in writable:
        real = os.path.realpath(path)
        if os.path.exists(real) and (real in {p for p, _ in mount_points()}
                                     or libc.mount(real.encode(), real.encode(), None, _MS_BIND | _MS_REC, None) == 0):
            kept.append(real)
    stayed = 0
    for point, kind in mount_points():
        if kind == "autofs" or any(point == k or point.startswith(k.rstrip("/") + "/") for k in kept):
            continue  # an autofs point would mount on first touch; a writable folder stays writable
        try:
            current = os.statvfs(point).f_flag
        except OSError:
            stayed += 1
            continue
        keep = sum(ms for st, ms in _KEPT_MOUNT_FLAGS.items() if current & st)
        if libc.mount(None, point.encode(), None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep, None) != 0:
            stayed += 1
    return "read-only outside scratch" + (f" ({stayed} mounts stayed writable)" if stayed else "")


def mount_own_proc() -> str:
    """In a new PID namespace's first process: a /proc that shows only this namespace's processes."""
    if _libc().mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY, None) != 0:
        return f"the host's /proc (mounting our own failed: {os.strerror(ctypes.get_errno())})"
    return "own /proc"


def drop_capabilities() -> str:
    """Give up every capability, for this process and whatever it execs (root included); say how it went."""
    libc = _libc()
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:  # past the last
            break
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice 32 bits, all zero
    if libc.capset(header, data) != 0:
        return f"capabilities kept (capset failed: {os.strerror(ctypes.get_errno())})"
    return "no capabilities"


def run_as_init(child, grace: float, status_fd: int, child_fds=()) -> None:
    """Be PID 1 of the trial's namespace: run `child()` in a fork, reap, and take the rest down with us.

    The command's exit code goes to `status_fd` (PID 1 cannot die of a signal it sends itself). When
    the command ends, what it left gets SIGTERM and `grace` seconds; then we exit, and the kernel kills
    whatever is left in the namespace, daemons in sessions of their own included. Signals from outside
    are ignored here (the keeper signals the command itself), and from inside the kernel ignores them.
    `child_fds` are the command's alone: closed here once it has them.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        os.close(status_fd)
        child()
        os._exit(127)
    for fd in child_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        done, status = os.waitpid(-1, 0)
        if done == pid:
            break
    os.write(status_fd, str(os.waitstatus_to_exitcode(status)).encode())
    os.close(status_fd)
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        os._exit(0)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if done == 0:
            time.sleep(0.02)
    os._exit(0)


# Per-trial limits go in a cgroup of the trial's own beneath the launcher's, one per controller hierarchy.
_LIMIT_FILES = {  # controller: (cgroup v1 file, cgroup v2 file)
    "pids": ("pids.max", "pids.max"),
    "memory": ("memory.limit_in_bytes", "memory.max"),
}


def _cgroup_folders() -> dict[str, tuple[str, bool]]:
    """controller -> (this process's cgroup folder for it, whether that is cgroup v2), where it is mounted."""
    mounts = {}  # (v1 controller or "" for v2) -> (mount point, mount root)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            after = fields[fields.index("-") + 1 :]
            if after[0] == "cgroup2":
                mounts.setdefault("", (fields[4], fields[3]))
            elif after[0] == "cgroup":
                for option in after[2].split(","):
                    if option in _LIMIT_FILES:
                        mounts[option] = (fields[4], fields[3])
    found = {}
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in (controllers.split(",") if controllers else [""]):
                if controller not in mounts:
                    continue
                point, root = mounts[controller]
                relative = path[len(root):] if root != "/" and path.startswith(root) else path
                folder = point + relative.rstrip("/")
                if controller:
                    found[controller] = (folder, False)
                else:
                    try:
                        with open(os.path.join(folder, "cgroup.subtree_control")) as enabled:
                            for name in enabled.read().split():
                                if name in _LIMIT_FILES:
                                    found.setdefault(name, (folder, True))
                    except OSError:
                        pass
    return found


def make_trial_cgroups(name: str, limits: dict) -> tuple[list[str], str]:
    """Create cgroups named `name` with `limits` ({"pids": n, "memory": bytes}, None: none); their folders and a note.

    Where a controller is not ours to use (cgroup v2 without delegation, no permission), that limit
    is missing and the note says so; the trial runs without it.
    """
    wanted = {c: v for c, v in limits.items() if v}
    if not wanted:
        return [], ""
    try:
        available = _cgroup_folders()
    except (OSError, ValueError, IndexError):  # no /proc, or a format we do not know: no limits, said below
        available = {}
    folders, held, missing = [], [], []
    for controller, value in wanted.items():
        if controller not in available:
            missing.append(controller)
            continue
        parent, v2 = available[controller]
        folder = os.path.join(parent, name)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, _LIMIT_FILES[controller][v2]), "w") as handle:
                handle.write(str(int(value)))
            if controller == "memory" and v2 and os.path.exists(os.path.join(folder, "memory.swap.max")):
                with open(os.path.join(folder, "memory.swap.max"), "w") as handle:
                    handle.write("0")
        except OSError:
            missing.append(controller)
            continue
        if folder not in folders:
            folders.append(folder)
        held.append({"pids": f"at most {value} processes", "memory": f"at most {value // 2**20} MiB"}[controller])
    note = ", ".join(held) + (f"; no {' or '.join(missing)} limit (no cgroup of ours)" if missing else "")
    return folders, note


def join_cgroups(folders: list[str]) -> None:
    """Move this process (and so whatever it starts) into `folders`."""
    for folder in folders:
        try:
            with open(os.path.join(folder, "cgroup.procs"), "w") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            os.write(2, f"autoraysearch: cannot join {folder}: {exc.strerror}\n".encode())


def memory_kills(folders: list[str]) -> int:
    """How many processes the kernel killed for reaching the memory limit of these cgroups."""
    killed = 0
    for folder in folders:
        for name in ("memory.events", "memory.oom_control"):  # cgroup v2, v1
            try:
                with open(os.path.join(folder, name)) as handle:
                    for line in handle:
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            killed += int(value)
            except (OSError, ValueError):
                continue
    return killed


def remove_cgroups(folders: list[str], wait: float = 5.0) -> None:
    """Remove the (emptied) cgroups; a moment's wait for the last exits to be accounted."""
    deadline = time.monotonic() + wait
    for folder in folders:
        while True:
            try:
                os.rmdir(folder)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.02)


def _loopback_up() -> bool:
    """Bring up `lo` in this (new) network namespace."""
    import fcntl
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
        return True
    except OSError:
        return False


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel for `signum` when this process's parent dies; False where that failed."""
    return _libc().prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphaned descendants become our children (not PID 1's), so `sweep_descendants` can find them."""
    return _libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def process_table():
    """(pid, fields) of every process in /proc, fields being its stat after the name: state, ppid, pgrp, …"""
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as handle:
                    data = handle.read()
            except OSError:
                continue  # exited meanwhile
            # The command name may contain spaces and ')', so parse from the last ')'.
            yield int(entry.name), data[data.rfind(b")") + 2 :].split()


def live_descendants(root: int) -> list[int]:
    """Pids of the live (not zombie) processes below `root`, found through the parent links in /proc."""
    children: dict[int, list[int]] = {}
    live = set()
    for pid, fields in process_table():
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] not in (b"Z", b"X"):
            live.add(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return [pid for pid in found if pid in live]


def signal_descendants(signum: int) -> int:
    """Send `signum` to every live descendant of this process; how many there were."""
    pids = live_descendants(os.getpid())
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
    return len(pids)


def reap_children() -> None:
    """Collect every exited child, so that zombies do not pile up in a subreaper."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep_descendants(grace: float, kill_wait: float) -> bool:
    """SIGTERM every descendant, SIGKILL what is left after `grace`, reap, repeat until none; False if some survive.

    Works fully only in a subreaper with no other children it wants to keep: a process whose parent
    is killed is re-parented to us and found on the next round.
    """
    if signal_descendants(signal.SIGTERM) and grace > 0:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap_children()
            if not live_descendants(os.getpid()):
                break
            time.sleep(0.02)
    deadline = time.monotonic() + kill_wait
    while True:
        reap_children()
        if not signal_descendants(signal.SIGKILL):
            return True
        if time.monotonic() >= deadline:
            os.write(2, b"autoraysearch: processes of the trial survive SIGKILL\n")
            return False
        time.sleep(0.02)


def scrub_secrets_from_environ_block(names=None) -> int:
    """Blank the values of `names` (default: every secret, see is_secret) in this process's initial environment block.

    /proc/PID/environ shows that block, as it was at exec, to any process allowed to read it, however
    os.environ changes afterwards. Python's os.environ is a copy, so the campaign keeps its keys.
    """
    try:
        with open("/proc/self/stat", "rb") as handle:
            data = handle.read()
        fields = data[data.rfind(b")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])  # env_start and env_end (fields 50 and 51 of stat)
    except (OSError, IndexError, ValueError):
        return 0
    if not 0 < start < end:
        return 0
    block = ctypes.string_at(start, end - start)
    blanked, offset = 0, 0
    for entry in block.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        text = name.decode(errors="replace")
        if sep and value and (is_secret(text) if names is None else text in names):
            ctypes.memset(start + offset + len(name) + 1, ord("x"), len(value))
            blanked += 1
        offset += len(entry) + 1
    return blanked


def make_undumpable() -> None:
    """Only a process with CAP_SYS_PTRACE may read this one's /proc/PID/environ or mem from now on."""
    _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def hide_secrets_in_proc_environ(names=None) -> None:
    """Blank this process's keys where /proc/PID/environ shows them, keeping them for its own use.

    After the block is blanked, libc's environment still points into it; setting each key again moves
    it to memory /proc does not show, so this process and what it starts later still see the real value.
    """
    if scrub_secrets_from_environ_block(names):
        for name in [n for n in os.environ if (is_secret(n) if names is None else n in names)]:
            os.putenv(name, os.environ[name])


# The LLM keys of a campaign started from the command line live here, in this process's memory only.
LLM_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
_PRIVATE_KEYS: dict = {}


def keep_llm_keys_private() -> None:
    """Take the LLM keys out of the environment so that no process started from here inherits them.

    git (GitPython keeps `git cat-file` running), Ray and a local Prefect server are started with this
    process's environment, and any process's /proc/PID/environ is readable. The keys stay readable to
    this process through `private_key`; the other secrets stay in the environment (Prefect reads its
    key there), blanked where /proc shows the initial block.
    """
    hide_secrets_in_proc_environ()
    for name in LLM_KEYS:
        if name in os.environ:
            _PRIVATE_KEYS[name] = os.environ.pop(name)


def private_key(name: str):
    """An LLM key kept by keep_llm_keys_private, else the environment's (a flow started by other means)."""
    return _PRIVATE_KEYS.get(name) or os.environ.get(name)
