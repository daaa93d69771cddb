"""log: append the experiment's row to the results log and keep its training output."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from autoraysearch.experiment import Campaign, Candidate, TrialResult, Verdict
from autoraysearch.results_log import ResultRow, append_result, clean_text
from autoraysearch.settings import write_atomically

ERROR_CHARS = 200


def result_row(candidate: Candidate, verdict: Verdict, result: TrialResult, short_sha: str) -> ResultRow:
    """The results-log row for one experiment; failures end their description with the error."""
    description = candidate.description
    if result.error:
        description += f" ({result.status}: {clean_text(result.error)[-ERROR_CHARS:]})"
    if result.note:
        description += f" ({result.note})"
    return ResultRow(
        iteration=candidate.label,
        commit=short_sha if verdict.status == "keep" else "-",
        metric=result.metric,
        delta=verdict.delta,
        status=verdict.status,
        description=description,
        extra={"candidate": candidate.fingerprint, "seconds": f"{result.seconds:g}", "node": (result.node_id or "")[:8]},
    )


def save_trial_output(campaign: Campaign, result: TrialResult) -> None:
    """Keep the trial's output under .autoraysearch/logs unless it was streamed there already."""
    if result.log_written:
        return
    path = campaign.paths.trial_log(result.label)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, result.output)


def log_experiment(campaign: Campaign, row: ResultRow, result: TrialResult | None) -> None:
    if result is not None:
        save_trial_output(campaign, result)
    append_result(campaign.paths.results, row, campaign.settings.higher_is_better)


@task(name="log", task_run_name="log-{row.iteration}", cache_policy=NO_CACHE)
def log(campaign: Campaign, row: ResultRow, result: TrialResult | None) -> None:
    """Append one row to the results log."""
    log_experiment(campaign, row, result)
