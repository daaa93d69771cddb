"""The Ray cluster already running on this machine, if any, and whether a person started it.

`ray start --head` records its address in Ray's temp folder; so does a program's own cluster (a test
suite's `ray.cluster_utils.Cluster`, say), which may vanish at any moment. Only the first is one to
attach to: its GCS server outlives the `ray start` that launched it (or runs under `ray start --block`),
while a private cluster's GCS server is the child of the Python program that owns it. Linux's /proc
tells them apart; where it cannot be read, the cluster is taken as the user's, as Ray itself does.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # a listening socket's state in /proc/net/tcp
COMMAND_CHARS = 80


@dataclass(frozen=True)
class FoundCluster:
    """A cluster answering at address; owner names the program it belongs to when that is not `ray start`."""

    address: str
    owner: str | None = None


def found_local_cluster() -> FoundCluster | None:
    """The cluster the last `ray start --head` (or a program's own head node) on this machine recorded, if it answers."""
    import ray  # noqa: F401  first: importing ray._common.utils before ray leaves ray half-initialised
    from ray._common.utils import get_ray_address_file

    try:
        address = Path(get_ray_address_file(None)).read_text().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:  # the file outlives a cluster whose machine restarted
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return None
    return FoundCluster(address, cluster_owner(int(port)))


def cluster_owner(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid 1234: python -m pytest …` when the GCS server on port is a program's own child; None for `ray start`."""
    gcs = listening_process(port, proc)
    if gcs is None:
        return None
    parent = parent_pid(gcs, proc)
    command = command_line(parent, proc) if parent else []
    if started_by_user(parent, command):
        return None
    return f"pid {parent}: {' '.join(command)[:COMMAND_CHARS]}"


def started_by_user(parent: int | None, command: list[str]) -> bool:
    """Whether a GCS server with this parent belongs to `ray start`, not to a Python program's own cluster.

    `ray start` exits once the cluster runs (its servers are adopted by init or a subreaper), or stays
    as their parent with --block; a program's own cluster keeps that program, a Python process, as parent.
    """
    if not parent or parent == 1 or not command:
        return True
    if "start" in command and any(Path(part).name == "ray" or part.endswith("scripts.py") for part in command):
        return True
    return not Path(command[0]).name.startswith("python")


def listening_process(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of a GCS server of ours listening on port (None: none found, or not ours to read)."""
    inodes = listening_inodes(port, proc)
    if not inodes:
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        command = command_line(int(entry.name), proc)
        if not command or not Path(command[0]).name.startswith("gcs_server"):
            continue
        files = open_files(entry)
        if any(f"socket:[{inode}]" in files for inode in inodes):
            return int(entry.name)
    return None


def open_files(process: Path) -> set[str]:
    """What a process's descriptors point at; one it closes while we read is skipped, not the whole process
    (a busy GCS server opens and closes sockets all the time, and missing it would make its cluster look
    like one `ray start` left behind)."""
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:
        return set()
    found = set()
    for descriptor in descriptors:
        try:
            found.add(descriptor.readlink().name)
        except OSError:
            continue
    return found


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """The inodes of the sockets listening on port, from /proc/net/tcp and tcp6."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def parent_pid(pid: int, proc: Path = Path("/proc")) -> int | None:
    try:
        return int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def command_line(pid: int, proc: Path = Path("/proc")) -> list[str]:
    try:
        return [part for part in (proc / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0") if part]
    except OSError:
        return []
