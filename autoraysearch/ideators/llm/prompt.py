"""Build what an LLM ideator reads: the first prompt and the follow-up after a rejected answer (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoraysearch.campaign.experiment import Review
from autoraysearch.setup.rendering import ENVIRONMENT
from autoraysearch.campaign.settings import CampaignSettings

PROMPT_TEMPLATE = "ideate_prompt.j2"
REPAIR_TEMPLATE = "ideate_repair.j2"
# Commit subjects written by tasks/commit.py: "autoraysearch <label>: <description>".
_COMMIT_SUBJECT = re.compile(r"^[0-9a-f]{4,40} autoraysearch (\S+): (.*)$")


@dataclass(frozen=True)
class PromptContext:
    """Everything the first prompt shows, already formatted."""

    goal: str
    metric: str
    direction: str
    best_metric: str | None
    training: tuple[str, ...]
    model_source: str
    fence: str
    recent: tuple[str, ...]
    git_log: tuple[str, ...]
    tried: tuple[str, ...]
    count: int
    parallel: bool
    model_call: str
    input_shape: tuple[int, ...] | None
    num_outputs: int | None
    stuck_for: int = 0  # iterations without a keep, when that is enough to call the search stuck; else 0
    past_diffs: tuple[tuple[str, str], ...] = ()  # (summary line, diff of model.py) of telling past candidates
    diff_fence: str = "```"


@dataclass(frozen=True)
class RepairContext:
    """What the follow-up turn says: why proposals were rejected, what was accepted, how many are missing."""

    rejected: tuple[tuple[str, str], ...]
    accepted: tuple[str, ...]
    missing: int


def build_prompt(review: Review, settings: CampaignSettings, count: int) -> str:
    """The first message: goal, metric, training set-up, model.py, history, what was tried, answer format."""
    return ENVIRONMENT.get_template(PROMPT_TEMPLATE).render(p=prompt_context(review, settings, count))


def build_repair(rejected: list[tuple[str, str]], accepted: list[str], missing: int) -> str:
    """The follow-up message after an answer that did not give enough usable candidates."""
    context = RepairContext(tuple(rejected), tuple(accepted), missing)
    return ENVIRONMENT.get_template(REPAIR_TEMPLATE).render(r=context)


def prompt_context(review: Review, settings: CampaignSettings, count: int) -> PromptContext:
    num_outputs = settings.model_kwargs.get("num_classes")
    return PromptContext(
        goal=settings.goal.strip() or f"Improve {settings.metric} ({settings.direction} is better).",
        metric=settings.metric,
        direction=settings.direction,
        best_metric=None if review.best_metric is None else f"{review.best_metric:.6g}",
        training=training_summary(settings),
        model_source=review.model_source.rstrip("\n"),
        fence=fence_for(review.model_source),
        recent=tuple(review.recent),
        git_log=tuple(review.git_log),
        tried=tried_descriptions(review),
        count=count,
        parallel=count > 1,
        model_call=model_call(settings.model_kwargs),
        input_shape=tuple(settings.input_shape) if settings.input_shape else None,
        num_outputs=num_outputs if isinstance(num_outputs, int) else None,
        stuck_for=stuck_for(review, settings),
        past_diffs=tuple(review.past_diffs),
        diff_fence=fence_for("\n".join(diff for _, diff in review.past_diffs)),
    )


def stuck_for(review: Review, settings: CampaignSettings) -> int:
    """Iterations without a keep once they reach the campaign's `stuck_after` (default 3), else 0."""
    waiting = review.iterations_without_keep
    return waiting if waiting >= settings.stuck_after else 0


def training_summary(settings: CampaignSettings) -> tuple[str, ...]:
    """A few read-only facts about how train.py judges a candidate, from the campaign settings."""
    if not settings.generated:
        lines = ["train.py is the user's own training script; only its metric line is read"]
    else:
        lines = [f"dataset: {describe_dataset(settings)}"]
    if settings.time_budget is not None:
        lines.append(f"a fixed time budget of {settings.time_budget:g} s of training per candidate")
    elif settings.epochs is not None:
        lines.append(f"{settings.epochs} epochs per candidate")
    if settings.input_shape:
        lines.append(f"one input sample has shape {list(settings.input_shape)}")
    lines.append(f"the model is built as {model_call(settings.model_kwargs)}")
    lines.append(f"seed {settings.seed}, fixed for every candidate")
    return tuple(lines)


IMAGE_SETS = {
    "digits": "scikit-learn's digits (8x8 grey-scale images of handwritten digits, 10 classes)",
    "mnist": "MNIST (28x28 grey-scale images of handwritten digits, 10 classes)",
    "fashionmnist": "Fashion-MNIST (28x28 grey-scale images of clothing, 10 classes)",
    "cifar10": "CIFAR-10 (32x32 colour images, 10 classes), training batches randomly shifted and flipped",
    "cifar100": "CIFAR-100 (32x32 colour images, 100 classes), training batches randomly shifted and flipped",
}


def describe_dataset(settings: CampaignSettings) -> str:
    """The generated train.py's data in a phrase an ideator can reason about."""
    if settings.dataset in IMAGE_SETS:
        return IMAGE_SETS[settings.dataset]
    if settings.dataset == "custom":
        classes = f", {settings.num_classes} classes" if settings.num_classes else ""
        return f"the user's own data module {settings.data_module or 'data.py'} (read-only{classes})"
    return f"arrays X_train, y_train, X_val, y_val from {settings.dataset.removeprefix('npz:')}"


def model_call(model_kwargs: dict) -> str:
    return "Model(" + ", ".join(f"{name}={value!r}" for name, value in model_kwargs.items()) + ")"


def tried_descriptions(review: Review) -> tuple[str, ...]:
    """Descriptions of every change tried so far, from the results rows and the commit subjects."""
    found: list[str] = []
    for line in review.recent:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] != "baseline":
            found.append(_strip_error(parts[3], parts[1]))
    for line in review.git_log:
        match = _COMMIT_SUBJECT.match(line)
        if match and match.group(1) != "setup":
            found.append(match.group(2))
    return tuple(dict.fromkeys(d for d in found if d))  # unique, in order


def _strip_error(description: str, status: str) -> str:
    """A row's description without the " (crash: ...)" tail the results log adds to failures."""
    marker = f" ({status}: "
    cut = description.rfind(marker)
    return description[:cut] if cut > 0 and description.endswith(")") else description


def fence_for(text: str) -> str:
    """A Markdown code fence longer than any run of backticks inside the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def flatten_conversation(messages: list[dict[str, str]]) -> str:
    """One text holding a whole conversation, for a command-line ideator that reads a single prompt."""
    parts = []
    for message in messages:
        if message["role"] == "assistant":
            parts.append(f"--- your previous answer ---\n{message['content']}\n--- end of your previous answer ---")
        else:
            parts.append(message["content"])
    return "\n\n".join(parts)
