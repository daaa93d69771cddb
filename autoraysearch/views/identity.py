"""How a campaign is named in Prefect: its flow run's name and tags, its artifact keys, its event resource.

Two experiments on one Prefect server must never share a name: the identity is the experiment folder
(its name, plus a short hash of its full path, since many folders are called `exp`) and the campaign's
tag (the branch without `autoraysearch/`). Everything here is pure but what asks the Prefect API
(`unique_run_name`, `tag_flow_run`).
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


def numbered_name(base: str, taken: list[str]) -> str:
    """`alpha/2026-12-04`, or `alpha/2026-12-04 #2` (#3 …) when other runs already carry that name."""
    numbers = set()
    for name in taken:
        if name == base:
            numbers.add(1)
        elif match := re.fullmatch(re.escape(base) + r" #(\d+)", name):
            numbers.add(int(match.group(1)))
    return f"{base} #{max(numbers) + 1}" if numbers else base


def is_numbered(name: str, base: str) -> bool:
    """Whether name is base itself or base with a run number."""
    return name == base or re.fullmatch(re.escape(base) + r" #\d+", name) is not None


def unique_run_name(base: str, own_id) -> str:
    """base, numbered after the other flow runs of that name on the Prefect server (base itself if it cannot be asked)."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=base)))
        return numbered_name(base, [r.name for r in runs if str(r.id) != str(own_id)])
    except Exception as exc:  # a name is a view: it must never stop the campaign
        logging.getLogger("autoraysearch").warning("could not number the flow run's name: %s", exc)
        return base


def loop_run_name() -> str:
    """The loop flow's `flow_run_name`, read from the run's parameters when Prefect starts it: `alpha/2026-12-04 #2`."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    folder = parameters.get("experiment_dir") or "."
    return unique_run_name(run_name(folder, expected_branch(folder, parameters.get("tag"))), flow_run.id)


def setup_run_name() -> str:
    """The setup flow's `flow_run_name`: `alpha/set-up`, so that even its first log line names the experiment."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    return unique_run_name(run_name(parameters.get("experiment_dir") or ".", ""), flow_run.id)


def run_tags(experiment_dir: str | Path, branch: str) -> list[str]:
    """`autoraysearch`, `experiment:alpha` and `campaign:2026-12-04` (or `set-up`): a filter for each."""
    experiment = f"experiment:{Path(experiment_dir).resolve().name}"
    return [PRODUCT_TAG, experiment, f"campaign:{campaign_tag(branch)}" if branch else "set-up"]


def tag_flow_run(experiment_dir: str, branch: str) -> None:
    """Name and tag the current flow run after the campaign, now that its branch is known. Never fatal."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        if context is None or context.flow_run is None:
            return
        current = context.flow_run
        base = run_name(experiment_dir, branch)
        name = current.name if is_numbered(current.name, base) else unique_run_name(base, current.id)
        tags = sorted(set(current.tags or []) | set(run_tags(experiment_dir, branch)))
        with get_client(sync_client=True) as client:
            client.update_flow_run(current.id, name=name, tags=tags)
    except Exception as exc:  # a name is a view: it must never stop the campaign
        logging.getLogger("autoraysearch").warning("could not name the flow run after the campaign: %s", exc)
