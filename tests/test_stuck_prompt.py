"""An LLM ideator is told when the search is stuck and asked for a more radical change."""

from __future__ import annotations

from pathlib import Path

from autoraysearch.campaign.experiment import Review
from autoraysearch.ideators.llm.prompt import build_prompt
from autoraysearch.campaign.settings import CampaignSettings

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py").read_text()
SETTINGS = CampaignSettings(model_kwargs={"num_classes": 10}, input_shape=[1, 8, 8])


def review_after(labels: list[str]) -> Review:
    return Review(
        model_source=EXAMPLE, train_source="", git_log=(), best_metric=0.9, best_sha="abc", tried=frozenset(),
        since_keep=tuple((label, f"f{label}") for label in labels),
    )


def test_three_iterations_without_a_keep_ask_for_a_radical_change() -> None:
    prompt = build_prompt(review_after(["5a", "5b", "6a", "6b", "7.1"]), SETTINGS, 2)
    assert "## The search is stuck" in prompt
    assert "The last 3 iterations kept nothing" in prompt and "more radical change" in prompt


def test_two_iterations_without_a_keep_are_not_stuck() -> None:
    assert "stuck" not in build_prompt(review_after(["5", "6"]), SETTINGS, 1)
