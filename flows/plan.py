"""The plan flow: the set-up wizard in the Prefect UI, each question a paused flow run waiting for an answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ConfigDict, Field
from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from autoraysearch.cluster import ray_session
from autoraysearch.setup.folder import plan_setup
from autoraysearch.flows.loop import CampaignSummary, autoraysearch_loop
from autoraysearch.flows.setup_experiment import autoraysearch_setup
from autoraysearch.setup.wizard import (
    Question,
    ask_all,
    launch_steps,
    loop_options,
    prepare_model,
    run_command,
    setup_options,
    setup_steps,
)
from autoraysearch.campaign.repository import ExperimentRepo

# How often a paused run looks for an answer: a person in the UI never notices 2 s.
ANSWER_POLL_S = 2


class Answer(RunInput):
    """The form the UI shows on a paused plan run: one text box, filled with the default answer."""

    answer: str = ""


def _answer_required(schema: dict) -> None:
    schema["required"] = ["answer"]


class RequiredAnswer(Answer):
    """An answer box the UI does not call optional: its question has a default, so an answer always exists."""

    model_config = ConfigDict(json_schema_extra=_answer_required)


@dataclass(frozen=True)
class PlanSummary:
    experiment_dir: str
    baseline: float | None
    launched: bool
    run_command: str
    campaign: CampaignSummary | None = None


@flow(name="autoraysearch-plan", log_prints=True)
def autoraysearch_plan(experiment_dir: str = ".", answer_timeout: int = 3600) -> PlanSummary:
    """Ask for the goal, model, train.py and run settings in the UI; record the baseline; launch the loop."""
    root = ExperimentRepo(Path(experiment_dir)).experiment_dir

    def ask(question: Question, reason: str | None) -> str:
        return ask_in_ui(question, reason, answer_timeout)

    answers = ask_all(setup_steps(root), ask, accepted=log_answer)
    prepare_model(root, answers)
    options = setup_options(answers)
    plan_setup(root, **options)  # everything checkable without training, before Ray starts
    with ray_session():  # one Ray for the baseline and the campaign
        setup = autoraysearch_setup(experiment_dir=str(root), **options)
        print(f"baseline {setup.metric}={setup.baseline} ({setup.seconds:.1f} s)")
        for line in setup.summary:
            print(f"  {line}")
        launch = ask_all(launch_steps(), ask, accepted=log_answer)
        command = run_command(root, launch)
        if not launch["launch"]:
            print(f"not launched; start it later with: {command}")
            return PlanSummary(str(root), setup.baseline, launched=False, run_command=command)
        campaign = autoraysearch_loop(experiment_dir=str(root), **loop_options(launch))
    return PlanSummary(str(root), setup.baseline, launched=True, run_command=command, campaign=campaign)


def ask_in_ui(question: Question, reason: str | None, timeout: int) -> str:
    """Pause this flow run until someone answers the question in the UI (or through the resume API)."""
    logger = get_run_logger()
    if reason:
        logger.warning("answer to %r not accepted: %s", question.key, reason)
    logger.info("question %s: %s (default: %r)", question.key, question.text, question.default)
    return pause_flow_run(wait_for_input=answer_form(question, reason), timeout=timeout,
                          poll_interval=ANSWER_POLL_S).answer


def answer_form(question: Question, reason: str | None) -> type[Answer]:
    """The paused run's form: the question above one box named after it, filled with the default.

    The box is marked optional only where an empty answer means something (no train.py of your own,
    no stop condition).
    """
    base = RequiredAnswer if question.default else Answer
    box = Field(default=question.default, title=question.label)
    return base.with_initial_data(description=question_markdown(question, reason), answer=box)


def log_answer(question: Question, text: str) -> None:
    get_run_logger().info("answer %s: %s = %r", question.key, question.label, text)


def question_markdown(question: Question, reason: str | None) -> str:
    """What the UI shows above the answer box: the reason a previous answer was refused, then the question."""
    refused = f"**Not accepted:** {reason}\n\n" if reason else ""
    default = f"\n\nDefault: `{question.default}`" if question.default else ""
    return f"{refused}### {question.text}{default}"


if __name__ == "__main__":
    autoraysearch_plan()
