"""The campaign lock: one run at a time per experiment folder, with stale locks detected."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from autoraysearch.errors import AutoraysearchError


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started: str

    def refusal(self, lock_path: Path) -> AutoraysearchError:
        """The one sentence telling a second run who holds the campaign."""
        return AutoraysearchError(
            f"another autoraysearch run (pid {self.pid} on {self.host}, started {self.started}) "
            f"holds this campaign; stop it first, or delete {lock_path} if it is gone."
        )

    def is_me(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def is_alive(self) -> bool:
        """Whether the holding process still runs (a lock from another host is assumed alive)."""
        if self.host != socket.gethostname():
            return True
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def read_holder(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text())
        return LockHolder(pid=int(data["pid"]), host=str(data["host"]), started=str(data["started"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Unreadable: a crash mid-write; nobody can be holding it.
        return LockHolder(pid=-1, host=socket.gethostname(), started="?")


class CampaignLock:
    """Context manager holding `.autoraysearch/run.lock` for the life of a run."""

    def __init__(self, path: Path):
        self.path = path
        self.stale_holder: LockHolder | None = None  # the gone run whose lock was removed, if any

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_holder(self.path)
                if holder is not None and holder.is_alive():
                    raise holder.refusal(self.path) from None
                self.stale_holder = holder
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            return
        raise AutoraysearchError(f"could not take the campaign lock {self.path}; try again.")

    def release(self) -> None:
        holder = read_holder(self.path)
        if holder is not None and holder.pid == os.getpid():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "CampaignLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
