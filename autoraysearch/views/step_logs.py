"""What the loop's task runs say in their logs: each proposal, each verdict, one summary per iteration.

Pure text from small values, so that a reader of the Prefect UI's log tab can follow the campaign
without opening an artifact: the lines must tell the story, not the engine's state changes.
"""

from __future__ import annotations

import difflib
import re

from autoraysearch.campaign.experiment import Ideas, TrialResult, Verdict
from autoraysearch.campaign.noise import Bar
from autoraysearch.campaign.results_log import BEST_SEEDS

FIRST_LINES = 2  # changed lines of model.py quoted per proposal
LINE_CHARS = 90


def fmt(value: float | None, signed: bool = False) -> str:
    """Numbers as the logs and tables show them: 4 significant digits, deltas signed, none as an em dash."""
    if value is None:
        return "—"
    if signed and abs(value) < 5e-5:
        return "±0"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def diff_summary(before: str, after: str) -> str:
    """`+2 −1 lines: -    nn.ReLU(), | +    nn.GELU(),` — the size of the change and its first lines."""
    changed = [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    added = sum(line.startswith("+") for line in changed)
    removed = len(changed) - added
    quoted = " | ".join(_cut(line.rstrip()) for line in changed[:FIRST_LINES])
    more = " …" if len(changed) > FIRST_LINES else ""
    return f"+{added} −{removed} lines: {quoted}{more}" if changed else "no change to the text"


def _cut(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"


def proposal_lines(ideas: Ideas, base_source: str, model_py: str = "model.py") -> list[str]:
    """One line per proposal that will be trained, and one per proposal dropped before training."""
    lines = [
        f"proposal {c.label}: {c.description} ({model_py} {diff_summary(base_source, c.model_source)})"
        for c in ideas.candidates
    ]
    lines += [f"dropped (crash): {d.description}: {d.reason}" for d in ideas.crashed]
    lines += [f"rejected: {what}: {reason}" for what, reason in ideas.rejected]
    if not lines:
        lines.append("the ideator proposed nothing this iteration")
    return lines


def needed_delta(bar: Bar, result: TrialResult) -> float | None:
    """The delta a keep needed against the best (negative for a lower-is-better metric); None with no best yet."""
    if not bar.best_runs or result.metric is None:
        return None
    needed = bar.margin(max(1, len(result.runs)))
    return needed if bar.higher_is_better else -needed


def beyond(needed: float) -> str:
    """`> +0.0518` for a metric that must rise, `< -0.0518` for one that must fall, `> 0` with no margin."""
    if abs(needed) < 5e-5:
        return "> 0" if needed >= 0 else "< 0"
    return f"> {fmt(needed, signed=True)}" if needed > 0 else f"< {fmt(needed, signed=True)}"


def failure_reason(result: TrialResult) -> str:
    """Why a trial has no verdict on its metric: the last line of its error (`pruned at epoch 1/2: …`)."""
    why = (result.error or "").strip().splitlines()
    return why[-1] if why else result.status


def verdict_line(result: TrialResult, verdict: Verdict, bar: Bar, metric: str, best_sha: str) -> str:
    """`2 keep: val_acc=0.9387 over 2 seeds (paired +0.012 ±0.006 against the best at the same seeds; a keep needs > +0.004); …`."""
    head = f"{result.label} {verdict.status}: "
    if result.metric is None:
        what = f"no {metric} ({failure_reason(result)})"
    else:
        runs = f" over {len(result.runs)} seeds" if len(result.runs) > 1 else ""
        what = f"{metric}={fmt(result.metric)}{runs}"
        needed = needed_delta(bar, result)
        if needed is not None:
            interval = f" {verdict.paired['interval']}" if verdict.paired.get("interval") else ""
            what += f" (paired {fmt(verdict.delta, signed=True)}{interval} against the best at the same seeds; " \
                    f"a keep needs {beyond(needed)})"
    return f"{head}{what}; best {metric}={fmt(verdict.best_metric)} at {best_sha[:7]}"


def candidate_line(result: TrialResult, verdict: Verdict, bar: Bar, metric: str, description: str) -> str:
    """The flow's line per candidate, with the reason of its verdict.

    `2 discard val_acc=0.9553 (+0.0157, a keep needs > +0.0518): wider conv`;
    `3 pruned val_acc=— (pruned at epoch 1/2: val_acc=0.41, the best had 0.80 there): deeper`.
    """
    head = f"{result.label} {verdict.status} {metric}={fmt(result.metric)}"
    if result.metric is None or result.status != "ok":
        return f"{head} ({failure_reason(result)}): {description}"
    needed = needed_delta(bar, result)
    why = fmt(verdict.delta, signed=True) + (f", a keep needs {beyond(needed)}" if needed is not None else "")
    if result.hopeless:
        why += f"; {result.hopeless}"
    return f"{head} ({why}): {description}"


def iteration_summary(iteration: int, statuses: list[str], best: float | None, best_sha: str, metric: str,
                      done: int, kept: int) -> str:
    """The flow's line per iteration: `iteration 4: keep, discard; best val_acc=0.94 at 1a2b3c4; 2 kept of 4 iterations`."""
    where = best_sha if best_sha == "the baseline" else best_sha[:7]
    return (f"iteration {iteration}: {', '.join(statuses) or 'nothing trained'}; best {metric}={fmt(best)} at "
            f"{where}; {kept} kept in {done} iteration{'s' * (done != 1)} of this run")


def summarize_iteration(campaign, iteration: int, done: int, kept: int) -> str:
    """The summary line of an iteration, from the rows the results log holds for it."""
    from autoraysearch.campaign.results_log import read_results_log

    settings = campaign.settings
    try:
        log = read_results_log(campaign.paths.results, settings.higher_is_better)
    except Exception as exc:  # a log line must never stop the campaign
        return f"iteration {iteration} done; the results log cannot be read ({exc})"
    mine = iteration_rows(log, iteration)
    statuses = [f"{r.iteration} {r.status}" if r.iteration != str(iteration) else r.status for r in mine]
    best = log.best()
    sha = best.commit if best is not None and best.status != "baseline" else "the baseline"
    return iteration_summary(iteration, statuses, best.metric if best else None, sha, settings.metric, done, kept)


def iteration_rows(log, iteration: int) -> list:
    """The rows logged under this iteration number (5, 5a, 5b, 5.path…) but its best-seeds row, which decided nothing."""
    return [r for r in log.rows if r.status != BEST_SEEDS and (m := re.match(r"\d+", r.iteration)) and int(m.group()) == iteration]
