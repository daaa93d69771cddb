"""The experiment's own files, checked around every trial: what candidate code changed is undone and named.

Trials run sandboxed where the kernel allows (see trial_process), so writes into the experiment
folder should fail. This is the second line of defence, and the only one without a sandbox: train.py,
model.py, the settings, the results log, the journal and the campaign branch are read before the
trials start and compared after they end. Anything changed is put back, and the trials that could
have done it are logged as crashes that say what they touched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from autoraysearch.campaign.experiment import Campaign, TrialResult
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.settings import RESULTS_FILE, SETTINGS_FILE


@dataclass(frozen=True)
class Snapshot:
    """The guarded files' bytes (None: absent) and the campaign branch's commit, before the trials."""

    root: str
    files: dict[str, bytes | None]
    branch: str
    branch_sha: str


def guarded_names(campaign: Campaign) -> list[str]:
    settings = campaign.settings
    names = [settings.model_py, settings.train_py, SETTINGS_FILE, RESULTS_FILE, ".gitignore",
             ".autoraysearch/pending.json", ".autoraysearch/campaign.json"]
    if settings.data_module:
        names.append(settings.data_module)
    return names


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def take_snapshot(campaign: Campaign) -> Snapshot:
    root = Path(campaign.experiment_dir)
    repo = ExperimentRepo(root)
    return Snapshot(
        root=str(root),
        files={name: _read(root / name) for name in guarded_names(campaign)},
        branch=campaign.branch,
        branch_sha=repo.branch_sha(campaign.branch),
    )


def undo_tampering(snapshot: Snapshot) -> list[str]:
    """Put back every guarded file and the branch as the snapshot has them; the names of what had changed."""
    root = Path(snapshot.root)
    changed = []
    for name, before in snapshot.files.items():
        path = root / name
        if _read(path) == before:
            continue
        changed.append(name)
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(before)
    repo = ExperimentRepo(root)
    if repo.branch_sha(snapshot.branch) != snapshot.branch_sha:
        changed.append(f"branch {snapshot.branch}")
        repo.set_branch(snapshot.branch, snapshot.branch_sha)
    return changed


def blame(results: dict[str, TrialResult], changed: list[str], repo_node_id: str | None) -> dict[str, TrialResult]:
    """The results with every trial that could have made the change turned into a crash that names it.

    Only a trial on the node that holds the experiment folder could write to it; when none is known
    to have run there, every trial of the batch is suspect.
    """
    if not changed:
        return results
    suspects = [label for label, r in results.items() if repo_node_id is None or r.node_id == repo_node_id]
    suspects = suspects or list(results)
    error = f"tampered with {', '.join(changed)} (the change was undone)"
    return {
        label: replace(r, status="crash", metric=None, error=error) if label in suspects else r
        for label, r in results.items()
    }


def checked_results(snapshot: Snapshot, results: dict[str, TrialResult], repo_node_id: str | None) -> dict[str, TrialResult]:
    """Undo what the trials changed in the experiment folder and mark the trials that may have done it."""
    return blame(results, undo_tampering(snapshot), repo_node_id)
