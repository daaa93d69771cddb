"""The one exception type for mistakes a user can fix."""

import errno


class AutoraysearchError(Exception):
    """A user-facing problem: its message is one sentence saying what is wrong and how to fix it."""


def describe_failure(exc: BaseException) -> str:
    """One sentence for a failure nobody planned for: git, the disk, the OS or a lost cluster, and what to do."""
    name = type(exc).__name__
    if name == "GitCommandError":  # GitPython's; not imported here, so this module stays dependency-free
        lines = [line.strip() for line in str(getattr(exc, "stderr", "") or "").splitlines() if line.strip()]
        command = " ".join(str(part) for part in (getattr(exc, "command", None) or ["git"])[:2])
        why = lines[-1].removeprefix("stderr:").strip(" '") if lines else str(exc).splitlines()[0]
        return f"`{command}` failed: {why}; fix that (free disk space, remove a stale .git/index.lock) and run again"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f", writing {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"the disk is full ({exc.strerror or exc}{where}); free some space and run again"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"the system refused an operation: {exc.strerror or exc}{where}; fix that and run again"
    text = " ".join(str(exc).split())[:300] or name
    if "ray" in type(exc).__module__.lower() or "GCS" in text or "raylet" in text:
        return f"the Ray cluster stopped answering ({text}); check that it is up, or use --ray-address local, and run again"
    return f"an unexpected {name}: {text}"
