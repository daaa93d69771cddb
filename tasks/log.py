"""log: append the experiment's row to the results log and keep its training output."""

from __future__ import annotations

import json

import logging
from dataclasses import replace
from pathlib import Path
from statistics import fmean

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.campaign.memory import RememberedCandidate, model_diff, remember
from autoraysearch.campaign.experiment import Campaign, Candidate, Ideas, TrialResult, Verdict
from autoraysearch.campaign.noise import Bar, format_runs, seed_columns, summary
from autoraysearch.campaign.results_log import (
    BEST_SEEDS, ResultRow, append_result, clean_text, format_number, node_columns,
)
from autoraysearch.campaign.settings import write_atomically
from autoraysearch.views.run_states import completed_as, state_name
from autoraysearch.views.step_logs import needed_delta

ERROR_CHARS = 200
# A row that sums up many rejections stays readable in a table.
REJECTED_CHARS = 600


def result_row(
    candidate: Candidate, verdict: Verdict, result: TrialResult, short_sha: str, bar: Bar | None = None,
) -> ResultRow:
    """The results-log row for one experiment; failures end their description with the error.

    With the bar it was judged against, the row's `needed` column holds the delta a keep needed.
    """
    description = candidate.description
    if result.status == "pruned":  # the error says where: "pruned at epoch 2/6: val_acc=0.41, best had 0.80 there"
        description += f" ({clean_text(result.error)[-ERROR_CHARS:]})"
    elif result.error:
        description += f" ({result.status}: {clean_text(result.error)[-ERROR_CHARS:]})"
    if result.hopeless:  # "stopped after 3 of 8 seeds: paired gain -0.012, a 1.2% chance to be kept after all 8"
        description += f" ({result.hopeless})"
    if result.note:
        description += f" ({result.note})"
    confirmed = "confirmed" if verdict.status == "keep" else "not confirmed"
    if result.runs and result.screen is not None:  # screened, then confirmed over every seed
        description += f" (screen {result.screen:.4f}, {summary(result.runs)}: {confirmed})"
    elif len(result.runs) > 1:  # its seeds trained in one run (seeds_in_one_run): no screen chose it
        description += f" ({summary(result.runs)} trained together: {confirmed})"
    return ResultRow(
        iteration=candidate.label,
        commit=short_sha if verdict.status == "keep" else "-",
        metric=result.metric,
        delta=verdict.delta,
        status=verdict.status,
        description=description,
        extra={"candidate": candidate.fingerprint, "seconds": f"{result.seconds:g}",
               **node_columns(result.host, result.node_id), **seed_columns(result.runs),
               **needed_column(bar, result), **verdict.paired},
    )


def best_seeds_row(iteration: int, best: ResultRow, runs: tuple[float, ...], at: int) -> ResultRow:
    """The row that keeps the best's runs at the paired seeds it lacked (from seed number `at`) for later comparisons."""
    last = at + len(runs) - 1
    where = "the baseline" if best.status == "baseline" else f"iteration {best.iteration}"
    return ResultRow(
        iteration=f"{iteration}.seeds", commit=best.commit, metric=fmean(runs), delta=None, status=BEST_SEEDS,
        description=f"{where} at paired seed{'s' if len(runs) > 1 else ''} {at}{f'-{last}' if last > at else ''}, "
                    f"to compare iteration {iteration} with it",
        extra={**seed_columns(runs), "runs": format_runs(runs), "at": str(at)},
    )


def needed_column(bar: Bar | None, result: TrialResult) -> dict[str, str]:
    """The `needed` cell: the delta a keep needed (in the TSV's own number format); none without a best or a metric."""
    needed = needed_delta(bar, result) if bar is not None else None
    return {"needed": format_number(needed, signed=True)} if needed is not None else {}


def dropped_rows(ideas: Ideas, iteration: int, wanted: int) -> list[ResultRow]:
    """Rows for what never reached a trial: each pre-flight failure, then each slot the ideator left empty.

    They are labelled 5.1, 5.2 … so that iteration 5's trained candidates keep their usual labels.
    Every reason an answer was rejected for appears on one of the empty slots' rows.
    """
    rows = [
        ResultRow(
            iteration="", commit="-", metric=None, delta=None, status="crash",
            description=clean_text(f"{d.description} ({clean_text(d.reason)[-ERROR_CHARS:]})"),
            extra={"candidate": d.fingerprint},
        )
        for d in ideas.crashed
    ]
    empty_slots = max(0, wanted - len(ideas.candidates) - len(ideas.crashed))
    reasons = [r for r in ideas.rejected if not r[1].startswith("pre-flight:")]
    for share in _shares(reasons, empty_slots):
        rows.append(ResultRow(
            iteration="", commit="-", metric=None, delta=None, status="rejected", description=rejected_description(share),
        ))
    return [replace(row, iteration=f"{iteration}.{n}") for n, row in enumerate(rows, start=1)]


def _shares(reasons: list[tuple[str, str]], slots: int) -> list[list[tuple[str, str]]]:
    """The rejections split over the empty slots in order, as evenly as they go (a slot may get none)."""
    if slots == 0:
        return []
    size, extra = divmod(len(reasons), slots)
    shares, start = [], 0
    for n in range(slots):
        end = start + size + (n < extra)
        shares.append(reasons[start:end])
        start = end
    return shares


def rejected_description(rejections: list[tuple[str, str]]) -> str:
    """One row's description: its single rejection as before, or every distinct reason with its count."""
    if not rejections:
        return "answer (rejected: the ideator proposed too few changes)"
    if len(rejections) == 1:
        [(what, reason)] = rejections
        return clean_text(f"{what} (rejected: {clean_text(reason)[-ERROR_CHARS:]})")
    counts: dict[str, int] = {}
    for what, reason in rejections:
        shown = clean_text(reason) if what in ("answer", "no answer") else clean_text(f"{what}: {reason}")
        shown = shown[:ERROR_CHARS]
        counts[shown] = counts.get(shown, 0) + 1
    parts = [reason if n == 1 else f"{reason} (x{n})" for reason, n in counts.items()]
    text = f"{len(rejections)} answers rejected: " + "; ".join(parts)
    return text if len(text) <= REJECTED_CHARS else text[: REJECTED_CHARS - 1] + "…"


def usage_cell(usage: dict[str, int]) -> dict[str, str]:
    """The tokens an LLM ideator spent in one iteration, as the `tokens` column (input+output); none for mutate."""
    spent = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {"tokens": f"{spent[0]}+{spent[1]}"} if any(spent) else {}


def with_tokens(row: ResultRow, tokens: dict[str, str]) -> ResultRow:
    return replace(row, extra={**row.extra, **tokens}) if tokens else row


def save_trial_output(campaign: Campaign, result: TrialResult) -> None:
    """Keep the trial's output (unless it was streamed there already) and its curve under .autoraysearch/logs."""
    campaign.paths.logs.mkdir(parents=True, exist_ok=True)
    write_atomically(campaign.paths.trial_curve(result.label), json.dumps(list(result.curve)))
    if not result.log_written:
        write_atomically(campaign.paths.trial_log(result.label), result.output)


def log_experiment(
    campaign: Campaign, row: ResultRow, result: TrialResult | None,
    candidate: Candidate | None = None, base_source: str | None = None,
) -> None:
    """Append the row; a trained (or stopped) candidate is also remembered with its diff, whatever the verdict.

    candidate and base_source (the best model.py it was built on) give the diff directly; without them
    it is read from the candidate's commit while git still reaches it.
    """
    if result is not None:
        save_trial_output(campaign, result)
    append_result(campaign.paths.results, row, campaign.settings.higher_is_better)
    if result is not None or candidate is not None:
        try:
            remember(campaign.paths, remembered_candidate(campaign, row, result, candidate, base_source))
        except OSError as exc:  # the row is what counts; a memory that cannot be written only loses detail
            logging.getLogger(__name__).warning("could not remember candidate %s: %s", row.iteration, exc)


def remembered_candidate(
    campaign: Campaign, row: ResultRow, result: TrialResult | None,
    candidate: Candidate | None = None, base_source: str | None = None,
) -> RememberedCandidate:
    """What the candidate memory keeps of one experiment: its row, its error and its diff of model.py."""
    commit, sources = "", None
    if candidate is not None and base_source is not None:
        sources = (base_source, candidate.model_source)
    else:
        found = candidate_commit(campaign, row.iteration)
        if found is not None:
            commit, git_base, git_source = found
            sources = (base_source or git_base, candidate.model_source if candidate else git_source)
    return RememberedCandidate(
        label=row.iteration,
        status=row.status,
        metric=row.metric,
        delta=row.delta,
        description=row.description,
        seconds=result.seconds if result is not None else None,
        fingerprint=row.extra.get("candidate", "") or (candidate.fingerprint if candidate else ""),
        commit=commit,
        error=result.error if result is not None else "",
        diff=model_diff(*sources, name=Path(campaign.settings.model_py).name) if sources else "",
    )


def candidate_commit(campaign: Campaign, label: str) -> tuple[str, str, str] | None:
    """(sha, base model.py, candidate model.py) of the candidate's commit, where git still reaches it.

    A kept candidate is the branch's tip; a sequential one that was rolled back is the tip before the
    rollback (the branch's reflog); a parallel one is on its own branch until decide deletes it.
    """
    from autoraysearch.campaign.repository import ExperimentRepo
    from autoraysearch.tasks.commit import candidate_branch

    if not campaign.branch:
        return None
    model_py = campaign.settings.model_py
    subject = f"autoraysearch {label}: "
    try:
        repo = ExperimentRepo(Path(campaign.experiment_dir))
        for ref in (campaign.branch, f"{campaign.branch}@{{1}}", candidate_branch(campaign, label)):
            if repo.resolve(ref) is None:
                continue
            for sha, found in repo.first_parent_history(ref, limit=1):
                if found.startswith(subject):
                    return sha, repo.file_at(f"{sha}^", model_py), repo.file_at(sha, model_py)
    except Exception:  # best effort: git may keep nothing of it, and the row is written already
        return None
    return None


@task(name="log", task_run_name="log-{row.iteration}", cache_policy=NO_CACHE)
def log(
    campaign: Campaign, row: ResultRow, result: TrialResult | None,
    candidate: Candidate | None = None, base_source: str | None = None,
):
    """Append one row to the results log and remember the candidate behind it; the run is named after its status."""
    log_experiment(campaign, row, result, candidate, base_source)
    return completed_as(state_name(row.status))
