"""How a campaign is named in Prefect: its flow run's name and tags, its artifact keys, its event resource.

Two experiments on one Prefect server must never share a name: the identity is the experiment folder
(its name, plus a short hash of its full path, since many folders are called `exp`) and the campaign's
tag (the branch without `autoraysearch/`). Everything here is pure but `tag_flow_run`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import date
from pathlib import Path

BRANCH_PREFIX = "autoraysearch/"
PRODUCT_TAG = "autoraysearch"
KEY_CHARS = 100  # well under Prefect's limits, and still readable in the UI's Artifacts list


def slug(text: str) -> str:
    """Text as Prefect artifact keys allow it: lowercase letters, digits and single dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def campaign_tag(branch: str) -> str:
    """The part of the branch the user chose (or the date): `autoraysearch/2026-11-30` -> `2026-11-30`."""
    return branch[len(BRANCH_PREFIX):] if branch.startswith(BRANCH_PREFIX) else branch


def folder_hash(experiment_dir: str | Path) -> str:
    return hashlib.sha1(str(Path(experiment_dir).resolve()).encode()).hexdigest()[:4]


def campaign_id(experiment_dir: str | Path, branch: str) -> str:
    """`digits-exp-2026-11-30-3f2a`: folder, tag, path hash; without a branch (set-up) folder and hash only."""
    parts = [Path(experiment_dir).resolve().name, campaign_tag(branch) if branch else "", folder_hash(experiment_dir)]
    return slug("-".join(p for p in parts if p))


def artifact_key(experiment_dir: str | Path, branch: str, kind: str) -> str:
    """The key of one of the campaign's artifacts (kind: results, progress, best-diff, plot, final)."""
    base = campaign_id(experiment_dir, branch)[: KEY_CHARS - len(kind) - 1].rstrip("-")
    return f"{base}-{slug(kind)}"


def run_name(experiment_dir: str | Path, branch: str) -> str:
    """What the UI lists the flow run as: `digits-exp/2026-11-30`."""
    name = Path(experiment_dir).resolve().name
    return f"{name}/{campaign_tag(branch)}" if branch else f"{name}/set-up"


def expected_branch(experiment_dir: str | Path, tag: str | None, today: date | None = None) -> str:
    """The branch a run will most likely use, known before it opens the campaign (for the run's name)."""
    if tag:
        return BRANCH_PREFIX + tag
    try:
        from autoraysearch.campaign.experiment import ExperimentPaths, read_campaign_branch

        existing = read_campaign_branch(ExperimentPaths(Path(experiment_dir).resolve()))
    except Exception:
        existing = None
    return existing or f"{BRANCH_PREFIX}{(today or date.today()).isoformat()}"


def loop_run_name() -> str:
    """The loop flow's `flow_run_name`: read from the run's parameters when Prefect creates it."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    folder = parameters.get("experiment_dir") or "."
    return run_name(folder, expected_branch(folder, parameters.get("tag")))


def run_tags(branch: str) -> list[str]:
    return [PRODUCT_TAG, f"campaign:{campaign_tag(branch)}"] if branch else [PRODUCT_TAG]


def tag_flow_run(experiment_dir: str, branch: str) -> None:
    """Name and tag the current flow run after the campaign, now that its branch is known. Never fatal."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        current = context.flow_run
        tags = sorted(set(current.tags or []) | set(run_tags(branch)))
        with get_client(sync_client=True) as client:
            client.update_flow_run(current.id, name=run_name(experiment_dir, branch), tags=tags)
    except Exception as exc:  # a name is a view: it must never stop the campaign
        logging.getLogger("autoraysearch").warning("could not name the flow run after the campaign: %s", exc)
