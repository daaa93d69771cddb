"""Resuming a campaign from its results log, whatever state a crash or a SIGKILL left the repository in.

The results log is the truth: the best commit is the last `keep` in it (or the commit the campaign
started from). Anything the log does not account for (a candidate committed but never logged, the
branch of an interrupted parallel candidate) is undone and logged as `stopped` before the next run
builds on it. An iteration writes a small journal (`.autoraysearch/pending.json`) naming its
candidates before it commits them, so that even a candidate whose commit was already rolled back
gets its row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.experiment import Candidate, ExperimentPaths
from autoraysearch.campaign.repository import ExperimentRepo
from autoraysearch.campaign.results_log import ResultRow, ResultsLog, append_result, read_results_log
from autoraysearch.campaign.settings import write_atomically

# Every commit the loop makes for a candidate reads `autoraysearch <label>: <description>`.
CANDIDATE_COMMIT = re.compile(r"^autoraysearch (\d+[a-z]?): (.*)$")
CRASH_NOTE = "stopped: interrupted by a crash of the previous run"


@dataclass(frozen=True)
class Unaccounted:
    """A candidate the log has no row for: from the journal, or from a commit left on the branch."""

    label: str
    description: str
    fingerprint: str = ""


# ---- the journal ----

def pending_path(paths: ExperimentPaths) -> Path:
    return paths.state_dir / "pending.json"


def write_pending(paths: ExperimentPaths, candidates: list[Candidate]) -> None:
    """Name the iteration's candidates before any of them is committed."""
    entries = [{"label": c.label, "description": c.description, "candidate": c.fingerprint} for c in candidates]
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(pending_path(paths), json.dumps(entries) + "\n")


def clear_pending(paths: ExperimentPaths) -> None:
    """Every candidate of the iteration has its row."""
    pending_path(paths).unlink(missing_ok=True)


def read_pending(paths: ExperimentPaths) -> list[Unaccounted]:
    try:
        entries = json.loads(pending_path(paths).read_text())
        return [Unaccounted(str(e["label"]), str(e["description"]), str(e.get("candidate", ""))) for e in entries]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        return []  # a crash mid-write: the commits on the branch still tell what happened


# ---- the best commit, as the log says ----

def baseline_commit(repo: ExperimentRepo, branch: str) -> str:
    """The commit the campaign started from: the newest commit of the branch that is not a candidate's."""
    for sha, subject in repo.first_parent_history(branch):
        if not CANDIDATE_COMMIT.match(subject):
            return sha
    raise AutoraysearchError(f"branch {branch} holds only candidate commits; run `autoraysearch setup` again.")


def logged_best_commit(repo: ExperimentRepo, log: ResultsLog, branch: str) -> str:
    """The commit of the log's best (its last `keep`, unless a `rollback` named an earlier one), or the campaign's
    starting commit when that is the baseline."""
    best = log.best()
    if best is None or best.status != "keep" or best.commit in ("", "-"):
        return baseline_commit(repo, branch)
    sha = repo.resolve(best.commit)
    if sha is None:
        raise AutoraysearchError(
            f"the results log keeps iteration {best.iteration} at commit {best.commit}, which this repository "
            "does not have; restore the branch that holds it, or move the results log away to start over."
        )
    return sha


def commits_above(repo: ExperimentRepo, branch: str, best_sha: str) -> tuple[str, list[tuple[str, str]]]:
    """(where the branch should be, the candidate commits above it) walking down from the branch tip.

    The walk stops at the log's best commit, or at a commit of the user's own (a hand edit of model.py
    committed on the branch is kept: it was not made by the loop).
    """
    above: list[tuple[str, str]] = []
    for sha, subject in repo.first_parent_history(branch):
        if sha == best_sha or not CANDIDATE_COMMIT.match(subject):
            return sha, above
        above.append((sha, subject))
    return best_sha, above


# ---- putting it right ----

def recover_campaign(repo: ExperimentRepo, paths: ExperimentPaths, branch: str, model_py: str,
                     higher_is_better: bool) -> list[str]:
    """Make the branch and the log agree after any interruption; one line per thing put right."""
    said: list[str] = []
    leftovers = [b for b in repo.branches_under(f"{branch}-exp/")]
    if leftovers:
        repo.delete_branches(leftovers)
        said.append(f"deleted {len(leftovers)} leftover candidate branch(es) of an interrupted parallel iteration")
    log = read_results_log(paths.results, higher_is_better)
    best_sha = logged_best_commit(repo, log, branch)
    target, above = commits_above(repo, branch, best_sha)
    if above:
        repo.move_branch_to(target, model_py)
        for sha, subject in above:
            said.append(f"rolled back {sha[:7]} ({subject[:60]}): the results log does not account for it")
    logged = {r.iteration for r in log.rows}
    missing = unaccounted(read_pending(paths), above, logged)
    for candidate in missing:
        append_result(paths.results, stopped_row(candidate), higher_is_better)
        said.append(f"logged {candidate.label} as stopped: it was interrupted by a crash of the previous run")
    clear_pending(paths)
    return said


def unaccounted(pending: list[Unaccounted], above: list[tuple[str, str]], logged: set[str]) -> list[Unaccounted]:
    """The candidates with no row: those of the journal, then those only a rolled-back commit names."""
    found = {c.label: c for c in pending}
    for _, subject in reversed(above):
        match = CANDIDATE_COMMIT.match(subject)
        if match and match.group(1) not in found:
            found[match.group(1)] = Unaccounted(match.group(1), match.group(2))
    return [c for label, c in found.items() if label not in logged]


def stopped_row(candidate: Unaccounted) -> ResultRow:
    extra = {"candidate": candidate.fingerprint} if candidate.fingerprint else {}
    return ResultRow(
        iteration=candidate.label, commit="-", metric=None, delta=None, status="stopped",
        description=f"{candidate.description} ({CRASH_NOTE})", extra=extra,
    )


def restore_unlogged_model(repo: ExperimentRepo, paths: ExperimentPaths) -> list[str]:
    """A crash between writing a candidate's model.py and committing it leaves it uncommitted: put it back.

    Only a model.py that is exactly a journalled candidate, on the campaign's own branch, is restored;
    any other uncommitted change is the user's and is refused later with advice instead.
    """
    from autoraysearch.campaign.experiment import read_campaign_branch
    from autoraysearch.campaign.model_source import fingerprint
    from autoraysearch.campaign.settings import load_settings

    pending = {c.fingerprint for c in read_pending(paths) if c.fingerprint}
    branch = read_campaign_branch(paths)
    if not pending or branch is None or repo.current_branch() != branch:
        return []
    model_py = load_settings(paths.root).model_py
    path = paths.root / model_py
    if not path.exists() or not repo.uncommitted([model_py]) or fingerprint(path.read_text()) not in pending:
        return []
    repo.restore_file(model_py)
    return [f"restored {model_py} from {branch}: it held a candidate that was never committed"]
