"""prefect.yaml stays true to the code: every entrypoint imports, every deployment's parameters validate."""

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
FLOW_NAMES = {"autoraysearch.flows.loop:autoraysearch_loop": "autoraysearch-loop",
              "autoraysearch.flows.setup_experiment:autoraysearch_setup": "autoraysearch-setup",
              "autoraysearch.flows.plan:autoraysearch_plan": "autoraysearch-plan"}


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
def test_every_deployment_loads_and_its_parameters_validate(deployment, monkeypatch):
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
    assert flow.name == FLOW_NAMES[deployment["entrypoint"]]
    assert flow.validate_parameters(deployment.get("parameters", {})) is not None
    assert deployment["work_pool"]["name"] == "autoraysearch"
    for schedule in deployment.get("schedules", []):
        assert len(schedule["cron"].split()) == 5


def test_every_flow_has_a_deployment():
    assert {d["entrypoint"] for d in DEPLOYMENTS} == set(FLOW_NAMES)
    flow_files = {p.stem for p in (ROOT / "flows").glob("*.py") if p.stem != "__init__"}
    assert {e.split(":")[0].rsplit(".", 1)[1] for e in FLOW_NAMES} == flow_files


def test_entrypoints_name_modules_of_the_package_ray_workers_can_import():
    """A flow loaded from a file path lives in a module Ray workers cannot import, so its tasks fail there."""
    for deployment in DEPLOYMENTS:
        module = deployment["entrypoint"].split(":")[0]
        assert module.startswith("autoraysearch.flows.") and not module.endswith(".py"), deployment["name"]


def test_the_overnight_deployment_stops_at_its_deadline():
    [overnight] = [d for d in DEPLOYMENTS if d["name"] == "overnight"]
    assert overnight["parameters"]["deadline"] == "07:00"
    assert overnight["schedules"][0]["cron"] == "0 22 * * *"


def test_flow_steps_import_from_the_installed_package():
    """Ray workers unpickle the tasks by module name: they must live in autoraysearch.tasks, not in a script."""
    from autoraysearch.flows import loop

    for step in (loop.review, loop.ideate, loop.modify, loop.commit, loop.verify, loop.decide, loop.log):
        assert step.fn.__module__.startswith("autoraysearch.tasks."), step.name
