"""The offline ideator never runs dry: bolder and combined edits when the small ones are used up or
the search is stuck, kinds that keep failing wait their turn, and it gives up only with nothing left."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Review
from autoraysearch.campaign.model_source import fingerprint
from autoraysearch.ideators.mutate import choose_mutations, propose_mutations
from autoraysearch.ideators.mutate.source import BOLD_STEPS
from autoraysearch.campaign.results_log import ResultRow
from autoraysearch.campaign.settings import CampaignSettings
from autoraysearch.tasks.ideate import IdeasExhausted, propose_mutations as propose_candidates_offline
from autoraysearch.tasks.review import since_last_keep

EXAMPLE = (Path(__file__).resolve().parents[1] / "examples" / "digits" / "model.py").read_text()
SETTINGS = CampaignSettings(model_kwargs={"num_classes": 10}, input_shape=[1, 8, 8])
BOLD = ("bold: ", "combined: ")

# Nothing any rule can change: no layer at all.
NOTHING_TO_EDIT = '''import torch
from torch import nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]
'''

# One thing to edit (a dropout rate): no combination of different kinds can be built.
ONLY_DROPOUT = '''import torch
from torch import nn


class Model(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.head = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))[:, :10]
'''

GRU = (Path(__file__).resolve().parents[1] / "benchmarks" / "model_styles" / "gru.py").read_text()


def row(iteration: str, status: str, metric: float | None, delta: float | None, description: str, **extra: str) -> ResultRow:
    return ResultRow(iteration, "-", metric, delta, status, description, dict(extra))


def review_of(source: str, tried: set[str], since_keep: list[tuple[str, str]]) -> Review:
    return Review(
        model_source=source, train_source="", git_log=(), best_metric=0.9, best_sha="abc",
        tried=frozenset(tried | {fingerprint(source)}), since_keep=tuple(since_keep),
    )


def discard_everything(source: str, iterations: int, parallel: int = 1) -> tuple[list[list[str]], int]:
    """Run the loop's ideate step `iterations` times, every candidate discarded; the descriptions per iteration, and the pre-flight drops."""
    tried: set[str] = set()
    since_keep: list[tuple[str, str]] = []
    labels = [f"{letter}" for letter in "abcd"[:parallel]]
    proposed, crashed = [], 0
    for iteration in range(1, iterations + 1):
        review = review_of(source, tried, since_keep)
        ideas = propose_candidates_offline(review, SETTINGS, iteration, [f"{iteration}{x}" for x in labels])
        assert ideas.candidates, f"ran dry at iteration {iteration}"
        for candidate in ideas.candidates:
            assert candidate.fingerprint not in tried
            tried.add(candidate.fingerprint)
            since_keep.append((candidate.label, candidate.fingerprint))
        for number, dropped in enumerate(ideas.crashed, start=1):  # logged as crashes: tried too
            tried.add(dropped.fingerprint)
            since_keep.append((f"{iteration}.{number}", dropped.fingerprint))
        proposed.append([candidate.description for candidate in ideas.candidates])
        crashed += len(ideas.crashed)
    return proposed, crashed


# --- never running dry --------------------------------------------------------------------------


def test_thirty_iterations_without_a_keep_never_run_dry_and_go_bold_after_three() -> None:
    """The loop's sequence on the demo model, every candidate discarded; pure, without the build check."""
    tried, failed, proposed = {fingerprint(EXAMPLE)}, [], []
    for iteration in range(1, 31):
        stuck = iteration - 1 >= 3
        chosen = choose_mutations(EXAMPLE, tried=tried, seed=iteration, count=3, failed=failed, stuck=stuck)
        assert chosen, f"ran dry at iteration {iteration}"
        key = fingerprint(chosen[0].source)
        assert key not in tried
        tried.add(key)
        failed.append(key)
        proposed.append(chosen[0].description)
    assert not any(d.startswith(BOLD) for d in proposed[:3])  # small steps while the search moves
    assert all(d.startswith(BOLD) for d in proposed[3:])  # 3 iterations without a keep: bold


def test_a_gru_gets_sixty_candidates_that_all_build_and_none_is_dropped() -> None:
    proposed, crashed = discard_everything(GRU, 30, parallel=2)
    assert all(len(iteration) == 2 for iteration in proposed)
    assert len({d for iteration in proposed for d in iteration}) == 60
    assert crashed == 0  # the build check already dropped what the pre-flight would have


def test_small_edits_used_up_turn_into_bold_ones_then_into_combinations() -> None:
    tried = {fingerprint(m.source) for m in propose_mutations(EXAMPLE)}
    chosen = choose_mutations(EXAMPLE, tried=tried, seed=0, count=4)
    assert len(chosen) == 4 and all(m.description.startswith("bold: ") for m in chosen)
    tried |= {fingerprint(m.source) for m in propose_mutations(EXAMPLE, BOLD_STEPS)}
    chosen = choose_mutations(EXAMPLE, tried=tried, seed=0, count=4)
    assert len(chosen) == 4 and all(m.description.startswith("combined: ") for m in chosen)


def test_bold_steps_are_bigger_and_combinations_name_their_parts() -> None:
    small = {fingerprint(m.source) for m in propose_mutations(EXAMPLE)}
    bold = {m.description for m in choose_mutations(EXAMPLE, tried=small, seed=0, count=400)}
    assert ("bold: width up: classifier[1] Linear out_features 64 -> 256 "
            "(with classifier[4] Linear in_features 64 -> 256)") in bold
    assert "bold: dropout up: classifier[3] Dropout p 0.25 -> 0.45" in bold
    assert "bold: layer up: classifier[1] Linear followed by 2 more Linear(64, 64)" in bold
    assert any(d.startswith("combined: ") and d.count(" + ") == 1 for d in bold)


def test_a_combination_applies_its_edits_one_after_another() -> None:
    [dropout] = [m for m in propose_mutations(EXAMPLE) if m.description == "dropout up: classifier[3] Dropout p 0.25 -> 0.35"]
    gelu = [m for m in propose_mutations(dropout.source) if m.description == "activation swap: activation ReLU -> GELU (3 places)"][0]
    chosen = choose_mutations(EXAMPLE, tried=set(), seed=0, count=5,
                              history=[row("1", "discard", 0.9, -0.001, dropout.description), row("2", "discard", 0.9, -0.002, gelu.description),
                                       *[row(str(n), "discard", 0.8, -0.1, "number up: elsewhere 1 -> 2") for n in range(3, 7)]])
    [pair] = [m for m in chosen if fingerprint(m.source) == fingerprint(gelu.source)]
    assert pair.kind == "activation+dropout" and pair.kinds == ("activation", "dropout")
    assert "nn.Dropout(0.35)" in pair.source and "nn.GELU()" in pair.source and "ReLU" not in pair.source


def test_an_edit_discarded_before_a_keep_is_proposed_again_on_the_new_best() -> None:
    small = propose_mutations(EXAMPLE)
    discarded = {fingerprint(m.source) for m in small}
    kept = next(m for m in small if m.kind == "activation")  # the new best model
    again = choose_mutations(kept.source, tried=discarded | {fingerprint(kept.source)}, seed=0, count=200)
    dropout = [m.description for m in again if m.kind == "dropout"]
    assert "dropout up: classifier[3] Dropout p 0.25 -> 0.35" in dropout  # the same edit, a new model


# --- set aside after failures -------------------------------------------------------------------


def test_a_kind_that_failed_three_times_waits_while_other_kinds_remain() -> None:
    small = propose_mutations(EXAMPLE)
    widths = [m for m in small if m.kind == "width"]
    failed = [fingerprint(m.source) for m in widths[:3]]
    others = len([m for m in small if m.kind != "width"])
    for seed in range(3):
        chosen = choose_mutations(EXAMPLE, tried=set(failed), seed=seed, count=others, failed=failed)
        assert not any("width" in m.kinds for m in chosen)
    # Set aside, not lost: once the other small edits are tried, the width edits come back.
    tried = set(failed) | {fingerprint(m.source) for m in small if m.kind != "width"}
    rest = choose_mutations(EXAMPLE, tried=tried, seed=0, count=len(widths) - 3, failed=failed)
    assert rest and all(m.kind == "width" for m in rest)


def test_two_failures_are_not_enough_to_set_a_kind_aside() -> None:
    widths = [m for m in propose_mutations(EXAMPLE) if m.kind == "width"]
    failed = [fingerprint(m.source) for m in widths[:2]]
    firsts = {m.kind for s in range(10) for m in choose_mutations(EXAMPLE, tried=set(failed), seed=s, count=3, failed=failed)}
    assert "width" in firsts


# --- stuck, history and giving up ---------------------------------------------------------------


def test_since_last_keep_counts_iterations_after_the_last_keep_only() -> None:
    def row(iteration: str, status: str, candidate: str = "") -> ResultRow:
        return ResultRow(iteration, "-", None, None, status, "x", {"candidate": candidate} if candidate else {})

    rows = [
        row("0", "baseline"), row("1", "discard", "f1"), row("2a", "keep", "f2a"), row("2b", "discard", "f2b"),
        row("3a", "discard", "f3a"), row("3b", "crash", "f3b"), row("3.1", "crash", "f31"), row("4", "rejected"),
    ]
    since_keep = since_last_keep(rows)
    assert since_keep == (("3a", "f3a"), ("3b", "f3b"), ("3.1", "f31"), ("4", ""))
    assert review_of(EXAMPLE, set(), list(since_keep)).iterations_without_keep == 2
    assert since_last_keep(rows[:3]) == ()


def test_stuck_after_follows_the_setting() -> None:
    small = propose_mutations(EXAMPLE)
    failed = [fingerprint(m.source) for m in small[:1]]
    review = review_of(EXAMPLE, set(failed), [("1", failed[0]), ("2", ""), ("3", ""), ("4", "")])
    stuck = propose_candidates_offline(review, SETTINGS, 5, ["5"]).candidates[0]
    patient = propose_candidates_offline(review, SETTINGS.model_copy(update={"stuck_after": 10}), 5, ["5"]).candidates[0]
    assert stuck.description.startswith(BOLD) and not patient.description.startswith(BOLD)


def test_ideas_are_exhausted_only_when_nothing_can_be_built() -> None:
    assert choose_mutations(NOTHING_TO_EDIT, tried=set(), seed=0, count=4) == []
    with pytest.raises(IdeasExhausted) as raised:
        propose_candidates_offline(review_of(NOTHING_TO_EDIT, set(), []), SETTINGS, 1, ["1"])
    message = str(raised.value)
    assert "0 single, 0 bold and 0 paired edits" in message
    assert "edit model.py by hand or use another ideator" in message

    # A model with a single dropout rate: two small steps, then two bold ones, then nothing at all.
    everything = choose_mutations(ONLY_DROPOUT, tried=set(), seed=0, count=100)
    assert sorted(m.description for m in everything) == [
        "bold: dropout down: head Dropout p 0.5 -> 0.3", "bold: dropout up: head Dropout p 0.5 -> 0.7",
        "dropout down: head Dropout p 0.5 -> 0.4", "dropout up: head Dropout p 0.5 -> 0.6",
    ]
    assert not everything[0].description.startswith("bold: ")  # small steps first
    tried = {fingerprint(m.source) for m in everything}
    with pytest.raises(IdeasExhausted) as raised:
        propose_candidates_offline(review_of(ONLY_DROPOUT, tried, []), SETTINGS, 9, ["9"])
    assert "2 single, 2 bold and 0 paired edits" in str(raised.value)


def test_a_model_without_normalization_is_offered_one_first():
    draft = (Path(__file__).resolve().parents[1] / "examples" / "digits_draft" / "model.py").read_text()
    for seed in range(5):
        [first] = choose_mutations(draft, tried=set(), seed=seed)
        assert first.kind == "norm" and first.description.startswith("norm add"), first.description
    # A model that has one already gets no such push: its first proposals vary with the seed.
    kinds = {choose_mutations(EXAMPLE, tried=set(), seed=seed)[0].kind for seed in range(5)}
    assert kinds != {"norm"}


def test_the_answer_does_not_depend_on_what_the_check_built_for_other_calls() -> None:
    """The build check is shared by every campaign of a worker process (and starts empty after a resume): what it
    remembers from other calls must not change which edits come first."""
    from autoraysearch.ideators.mutate import BuildCheck
    from autoraysearch.ideators.mutate.search import Pool

    warm = BuildCheck([1, 8, 8], {}, 10)
    warm([m.source for m in Pool(EXAMPLE, warm).bolder()])  # as an earlier stuck campaign would have left it
    for seed in range(3):
        answers = [[m.description for m in choose_mutations(EXAMPLE, tried=set(), seed=seed, count=4, stuck=True,
                                                             check=check, diverse=4)]
                   for check in (BuildCheck([1, 8, 8], {}, 10), warm)]
        assert answers[0] == answers[1]
