"""The experiment's own files, checked around every trial: what changed is saved, undone and named.

Trials run sandboxed where the kernel allows (see trials/process.py), so writes into the experiment
folder should fail. This is the second line of defence, and the only one without a sandbox: train.py,
model.py, the settings, the results log, the journal, git's hooks and configuration and the campaign
branch are read (bytes and modes) before the trials start and compared after they end.

Who changed it decides what happens. When a trial could have written the folder (it ran on this
node without Landlock), the change is put back and those trials are logged as crashes that say what
they touched. When no trial could have (every one ran under Landlock, or elsewhere), the change is a
person's: nothing is blamed on a candidate, and the campaign stops with one sentence (UserChange).
Either way, whatever is undone is first saved under .autoraysearch/undone/ and named.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoraysearch.campaign.experiment import Campaign, TrialResult
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.settings import RESULTS_FILE, SETTINGS_FILE
from autoraysearch.errors import AutoraysearchError

UNDONE_DIR = ".autoraysearch/undone"
GIT_GUARDED = (".git/config", ".git/info/attributes", ".git/info/exclude")
GIT_GUARDED_FOLDERS = (".git/hooks", ".git/refs/replace")  # every file in them, and any new one
GUARDED_FOLDERS = (".", ".git", ".autoraysearch")  # their modes: a chmod 000 would lock the campaign out


class UserChange(AutoraysearchError):
    """The experiment folder changed while trials ran, and no trial could have changed it."""


@dataclass(frozen=True)
class Snapshot:
    """The guarded files' bytes and modes (None: absent) and the campaign branch's commit, before the trials."""

    root: str
    files: dict[str, tuple[bytes, int] | None]
    branch: str
    branch_sha: str
    folder_modes: dict[str, int] = field(default_factory=dict)  # the experiment folder's and git's own


def guarded_names(campaign: Campaign) -> list[str]:
    """The files a trial must never change, relative to the experiment folder."""
    settings = campaign.settings
    root = Path(campaign.experiment_dir)
    names = [settings.model_py, settings.train_py, SETTINGS_FILE, RESULTS_FILE, ".gitignore",
             ".autoraysearch/pending.json", ".autoraysearch/campaign.json", *GIT_GUARDED]
    if settings.data_module:
        names.append(settings.data_module)
    for folder in GIT_GUARDED_FOLDERS:
        if (root / folder).is_dir():
            names += sorted(str(p.relative_to(root)) for p in (root / folder).rglob("*") if not p.is_dir())
    return names


def _read(path: Path) -> tuple[bytes, int] | None:
    """A file's bytes and mode, without following a symlink (a link reads as its target's name)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return os.readlink(path).encode(), info.st_mode
    with open(path, "rb") as handle:
        return handle.read(), stat.S_IMODE(info.st_mode)


def take_snapshot(campaign: Campaign) -> Snapshot:
    root = Path(campaign.experiment_dir)
    repo = ExperimentRepo(root)
    return Snapshot(
        root=str(root),
        files={name: _read(root / name) for name in guarded_names(campaign)},
        branch=campaign.branch,
        branch_sha=repo.branch_sha(campaign.branch),
        folder_modes={name: stat.S_IMODE(os.lstat(root / name).st_mode) for name in GUARDED_FOLDERS
                      if (root / name).is_dir()},
    )


def restore_folder_modes(snapshot: Snapshot) -> list[str]:
    """Give the guarded folders their modes back first (everything else is read through them); which changed."""
    changed = []
    for name, mode in snapshot.folder_modes.items():
        path = Path(snapshot.root) / name
        if path.is_dir() and stat.S_IMODE(os.lstat(path).st_mode) != mode:
            os.chmod(path, mode)
            changed.append(f"the mode of {name if name != '.' else 'the experiment folder'}")
    return changed


def changed_names(snapshot: Snapshot) -> list[str]:
    """The guarded files that differ from the snapshot (content, mode or kind), and files new in guarded git folders.

    Folders whose mode changed get it back at once, and are named first.
    """
    root = Path(snapshot.root)
    changed = restore_folder_modes(snapshot)
    changed += [name for name, before in snapshot.files.items() if _read(root / name) != before]
    for folder in GIT_GUARDED_FOLDERS:
        if (root / folder).is_dir():
            changed += sorted(name for p in (root / folder).rglob("*")
                              if not p.is_dir() and (name := str(p.relative_to(root))) not in snapshot.files)
    return changed


def save_and_restore(snapshot: Snapshot, names: list[str]) -> Path | None:
    """Save the changed files as they are now under .autoraysearch/undone/<time>/, then put back the snapshot's."""
    root = Path(snapshot.root)
    saved = root / UNDONE_DIR / time.strftime("%Y%m%d-%H%M%S") if names else None
    for name in [n for n in names if n in snapshot.files or not n.startswith("the mode of")]:
        path = root / name
        now = _read(path)
        if now is not None:
            copy = saved / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(now[0])
        before = snapshot.files.get(name)
        if os.path.lexists(path) and (before is None or os.path.islink(path) or now is None or now[1] != before[1]):
            path.unlink()  # a link is removed, never written through; a changed mode goes with the file
        if before is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, before[1])
            with open(fd, "wb") as handle:
                handle.write(before[0])
            os.chmod(path, before[1])
    return saved


def undo_tampering(snapshot: Snapshot, changed: list[str] | None = None) -> list[str]:
    """Put back every guarded file and the branch as the snapshot has them (saving what was there); what had changed."""
    changed = changed_names(snapshot) if changed is None else list(changed)
    save_and_restore(snapshot, changed)
    repo = ExperimentRepo(Path(snapshot.root))
    if repo.branch_sha(snapshot.branch) != snapshot.branch_sha:
        changed.append(f"branch {snapshot.branch}")
        repo.set_branch(snapshot.branch, snapshot.branch_sha)
    return changed


def undo_preflight_changes(snapshot: Snapshot, sandboxed: bool = False) -> str | None:
    """Pre-flight runs candidate code too: undo what changed since `snapshot` (saved first); a sentence naming it, or None.

    The snapshot is taken before the ideate step, whose pre-flights run every proposal's model.py
    (at import, build and forward); no candidate is blamed, since any of them could have done it.
    When the pre-flights were `sandboxed` (Landlock here) none of them could have: the change is a
    person's, and the campaign stops with UserChange, their version saved.
    """
    changed = changed_names(snapshot)
    repo = ExperimentRepo(Path(snapshot.root))
    moved = repo.branch_sha(snapshot.branch) != snapshot.branch_sha
    if not changed and not moved:
        return None
    saved = save_and_restore(snapshot, changed)
    what = ", ".join([*changed, *([f"branch {snapshot.branch}"] if moved else [])])
    where = f"; what was there is saved in {saved}" if saved else ""
    if sandboxed:
        raise UserChange(
            f"{what} changed in {snapshot.root} while candidates were pre-flighted, and no pre-flight could have "
            f"written there (they are sandboxed){where}. The campaign stopped so that nothing of yours is lost: "
            "commit your change on another branch, or put it back, and run again."
        )
    if moved:
        repo.set_branch(snapshot.branch, snapshot.branch_sha)
    return f"{what} changed while candidates were pre-flighted, and the change was undone{where}."


def could_write_here(result: TrialResult, repo_node_id: str | None) -> bool:
    """Whether the trial could have written the experiment folder: it ran on its node (or anywhere, if unknown) unsandboxed."""
    here = repo_node_id is None or result.node_id is None or result.node_id == repo_node_id
    return here and not result.sandbox.startswith("landlock")


def blame(results: dict[str, TrialResult], changed: list[str], repo_node_id: str | None) -> dict[str, TrialResult]:
    """The results with every trial that could have made the change turned into a crash that names it."""
    if not changed:
        return results
    suspects = [label for label, r in results.items() if could_write_here(r, repo_node_id)]
    error = f"tampered with {', '.join(changed)} (the change was undone; what it wrote is in {UNDONE_DIR})"
    return {
        label: replace(r, status="crash", metric=None, error=error) if label in suspects else r
        for label, r in results.items()
    }


def checked_results(snapshot: Snapshot, results: dict[str, TrialResult], repo_node_id: str | None) -> dict[str, TrialResult]:
    """Undo what changed in the experiment folder and mark the trials that may have done it; a person's change stops."""
    changed = changed_names(snapshot)
    moved = ExperimentRepo(Path(snapshot.root)).branch_sha(snapshot.branch) != snapshot.branch_sha
    if not changed and not moved:
        return results
    if not any(could_write_here(r, repo_node_id) for r in results.values()):
        saved = save_and_restore(snapshot, changed)
        what = ", ".join([*changed, *([f"branch {snapshot.branch}"] if moved else [])])
        where = f"; your version is saved in {saved}" if saved else ""
        raise UserChange(
            f"{what} changed in {snapshot.root} while trials ran, and no trial could have written there (they are "
            f"sandboxed){where}. The campaign stopped so that nothing of yours is lost: commit your change on "
            "another branch, or put it back, and run again."
        )
    return blame(results, undo_tampering(snapshot, changed), repo_node_id)
