"""The campaign's progress plot: every experiment a dot, the running best a line, kept changes labelled,
the keep bar each candidate had to clear, pruned candidates where they stopped."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from autoraysearch.campaign.results_log import BEST_SEEDS, BEST_STATUSES, ResultsLog

LABEL_CHARS = 40
MAX_TICKS = 40  # iteration labels on the x axis before only every n-th one is written
DESCRIBED_KEEPS = 12  # beyond this many kept changes, labels name only the iteration: they stay legible
STATUS_COLOURS = {"baseline": "black", "keep": "tab:green", "discard": "tab:gray"}
OTHER_COLOUR = "tab:orange"
PRUNED_COLOUR = "tab:olive"
# The description of a pruned row ends with where it stopped: "(pruned at epoch 1/2: val_acc=0.4100, best had …)".
_PRUNED_AT = re.compile(r"pruned at epoch [^:()]*: [^=\s]+=(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


@dataclass(frozen=True)
class ProgressPoints:
    """What the plot shows, computed from the results log alone."""

    scored: tuple[tuple[int, float, str], ...]  # (x, metric, status) of every experiment with a metric
    failed: tuple[int, ...]  # x of experiments without a metric (crash, timeout, stopped)
    best: tuple[tuple[int, float], ...]  # (x, best so far) from the baseline on
    kept: tuple[tuple[int, float, str], ...]  # (x, metric, label) of every kept change
    pruned: tuple[tuple[int, float], ...] = ()  # (x, where it stopped: _pruned_value) of each pruned candidate
    bars: tuple[tuple[int, float], ...] = ()  # (x, the value a keep needed to beat) where the log says


def progress_points(log: ResultsLog) -> ProgressPoints:
    """Experiments in results-log order; the best so far moves only on the baseline and kept rows."""
    scored, failed, best, kept, pruned, bars = [], [], [], [], [], []
    current: float | None = None
    better = max if log.higher_is_better else min
    for x, row in enumerate(log.rows):
        needed = _number(row.extra.get("needed", ""))
        if needed is not None and current is not None:
            bars.append((x, current + needed))  # against the best before this row
        if row.status == "pruned" and (stopped_at := _pruned_value(row)) is not None:
            pruned.append((x, stopped_at))
        elif row.metric is None:
            failed.append(x)
        else:
            scored.append((x, row.metric, row.status))
            if row.status in BEST_STATUSES:
                current = row.metric if current is None else better(current, row.metric)
            if row.status == "keep":
                kept.append((x, row.metric, row))
        if current is not None:
            best.append((x, current))
    described = len(kept) <= DESCRIBED_KEEPS
    labels = [(x, y, f"{r.iteration}: {_shorten(r.description)}" if described else r.iteration) for x, y, r in kept]
    return ProgressPoints(tuple(scored), tuple(failed), tuple(best), tuple(labels), tuple(pruned), tuple(bars))


def _pruned_value(row) -> float | None:
    """Where a pruned candidate stopped: its value at its last epoch, or, stopped between seeds, the mean of the
    seeds it trained (its metric)."""
    last_epoch = _PRUNED_AT.search(row.description)
    return float(last_epoch.group(1)) if last_epoch is not None else row.metric


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _shorten(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def progress_figure(log: ResultsLog, metric: str):
    """A matplotlib Figure of the campaign (no pyplot: safe in any thread, never opens a window).

    850 px wide, the width of the Prefect UI's artifact pane; the legend sits under the axes, where no
    label of a kept change can run into it; the x axis names the iterations (4a…); a band of ± σ (the
    campaign's seed noise) around the best so far shows which differences are noise.
    """
    from matplotlib.figure import Figure

    from autoraysearch.campaign.noise import campaign_noise

    log = ResultsLog(log.higher_is_better, tuple(r for r in log.rows if r.status != BEST_SEEDS))  # not experiments
    points = progress_points(log)
    figure = Figure(figsize=(10.625, 5.0), dpi=80)  # 850 x 400 px
    figure.subplots_adjust(left=0.08, right=0.98, top=0.91, bottom=0.25)  # fixed: a layout engine costs 0.25 s a plot
    ax = figure.add_subplot()
    if points.scored:
        xs, ys, statuses = zip(*points.scored)
        colours = [STATUS_COLOURS.get(s, OTHER_COLOUR) for s in statuses]
        ax.scatter(xs, ys, c=colours, s=28, zorder=3, label="experiment (green: kept, grey: discarded)")
    if points.pruned:
        px, py = zip(*points.pruned)
        ax.scatter(px, py, marker="v", c=PRUNED_COLOUR, s=34, zorder=3, label="pruned (at its last epoch, or its seeds' mean)")
    if points.failed:
        # No metric to place them by: crosses along the bottom edge, so every experiment shows.
        ax.scatter(points.failed, [0.0] * len(points.failed), transform=ax.get_xaxis_transform(),
                   marker="x", c="tab:red", s=28, clip_on=False, zorder=3, label="no metric (crash, timeout)")
    if points.bars:
        # The bar each candidate had to clear, as the keep rule computed it: a short dash above its dot.
        ax.scatter(*zip(*points.bars), marker="_", c="tab:green", s=160, linewidths=1.5, zorder=2,
                   label="keep bar (best + the gain a keep needed)")
    if points.best:
        bx, by = zip(*points.best)
        ax.step(bx, by, where="post", color="tab:green", linewidth=1.5, label="best so far")
        noise = campaign_noise(log.rows)
        if noise.measured and not points.bars:  # an older log without the bars: the noise is the hint left
            low = [y - noise.sigma for y in by]
            high = [y + noise.sigma for y in by]
            ax.fill_between(bx, low, high, step="post", color="tab:green", alpha=0.15, linewidth=0,
                            label=f"best ± σ (seed noise, σ={noise.sigma:.2g})")
    right = 0.7 * (len(log.rows) - 1)
    for x, y, label in points.kept:  # labels in the right part of the plot extend leftwards, inside it
        ax.annotate(label, (x, y), xytext=(-4 if x > right else 4, 6), textcoords="offset points", fontsize=8,
                    ha="right" if x > right else "left")
    best = log.best()
    experiments = len(log.experiments())
    ax.set_title(f"{metric}: best {f'{best.metric:.4g}' if best else 'none yet'} after "
                 f"{experiments} experiment{'s' * (experiments != 1)}", fontsize=11)
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    step = max(1, -(-len(log.rows) // MAX_TICKS))  # every label while they fit, then every step-th
    ticks = list(range(0, len(log.rows), step))
    ax.set_xticks(ticks, [log.rows[i].iteration for i in ticks], fontsize=8, rotation=0 if len(ticks) <= 20 else 45)
    ax.margins(x=0.04, y=0.15)  # room for the labels of kept changes
    ax.grid(alpha=0.3)
    if points.scored or points.failed or points.pruned:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)
    return figure


def progress_png(log: ResultsLog, metric: str) -> bytes:
    """The plot as PNG bytes."""
    buffer = io.BytesIO()
    progress_figure(log, metric).savefig(buffer, format="png")
    return buffer.getvalue()


def save_progress_plot(log: ResultsLog, metric: str, path: Path) -> bytes:
    """Write the plot to path (atomically) and return its PNG bytes."""
    png = progress_png(log, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(png)
    tmp.replace(path)
    return png
