"""The experiment folder's layout and the small values the loop steps hand each other."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from autoraysearch.campaign.noise import Bar
from autoraysearch.campaign.pruning import PruneRule
from autoraysearch.campaign.seed_watch import SeedStop
from autoraysearch.campaign.settings import RESULTS_FILE, SETTINGS_FILE, STATE_DIR, CampaignSettings, write_atomically


@dataclass(frozen=True)
class ExperimentPaths:
    """Where each file of an experiment folder lives."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def results(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def lock(self) -> Path:
        return self.state_dir / "run.lock"

    @property
    def campaign_state(self) -> Path:
        return self.state_dir / "campaign.json"

    def make_state_dir(self) -> Path:
        """Create .autoraysearch/, ignored by git from the inside so it never shows as untracked."""
        self.logs.mkdir(parents=True, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        return self.state_dir

    def trial_log(self, label: str) -> Path:
        return self.logs / f"{label}.log"

    def trial_curve(self, label: str) -> Path:
        """The trial's metric after each epoch, as its trusted progress said (JSON list): what pruning compares with."""
        return self.logs / f"{label}.curve.json"


@dataclass(frozen=True)
class Campaign:
    """Everything a loop step needs to find and judge the experiment; small and picklable."""

    experiment_dir: str
    branch: str
    settings: CampaignSettings
    trial_timeout: float | None  # the explicit limit in seconds, or None: follow the trial times so far
    repo_node_id: str | None = None

    @property
    def paths(self) -> ExperimentPaths:
        return ExperimentPaths(Path(self.experiment_dir))


@dataclass(frozen=True)
class Review:
    """What the ideator sees: the current best model, the history, and what was tried."""

    model_source: str
    train_source: str
    git_log: tuple[str, ...]
    best_metric: float | None
    best_sha: str
    tried: frozenset[str]
    recent: tuple[str, ...] = ()
    node_id: str | None = None  # the Ray node that read the repository
    bar: Bar = Bar()  # what a candidate must beat: the best's runs and the campaign's noise
    # (iteration label, candidate fingerprint) of every experiment since the last keep: how stuck the search is.
    since_keep: tuple[tuple[str, str], ...] = ()
    # (summary line, diff of model.py) of the most telling past candidates: recent keeps, closest misses.
    past_diffs: tuple[tuple[str, str], ...] = ()
    # Every row of the results log (ResultRow), oldest first: what the offline ideator learns from.
    results: tuple = ()

    @property
    def iterations_without_keep(self) -> int:
        """Iterations run since the last keep; parallel rows 5a, 5b and dropped ones 5.1 count once."""
        return len({m.group() for label, _ in self.since_keep if (m := re.match(r"\d+", label))})


@dataclass(frozen=True)
class Candidate:
    """One proposed change: the whole new model.py and a sentence saying what changed."""

    label: str
    description: str
    model_source: str
    fingerprint: str
    kind: str = ""


@dataclass(frozen=True)
class Dropped:
    """A proposal that never took a trial slot: it failed pre-flight (crash) or the answer checks (rejected)."""

    description: str
    reason: str
    status: str  # "crash" or "rejected"
    fingerprint: str = ""  # of the model.py it would have been, when there was one


@dataclass(frozen=True)
class Ideas:
    """One iteration's proposals: the candidates to train, what was dropped before training, tokens spent."""

    candidates: list[Candidate]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (what, reason) for every answer turned down
    crashed: list[Dropped] = field(default_factory=list)  # candidates that failed pre-flight
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})


@dataclass(frozen=True)
class Trial:
    """One training run to do: the files it needs as data, and its limits."""

    label: str
    files: dict[str, str]
    metric: str
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    log_path: str | None = None
    repo_node_id: str | None = None
    pruning: PruneRule | None = None  # the best's curve a screen run is stopped against; None: run to the end
    seed_stop: SeedStop | None = None  # a run of several seeds: stopped once it cannot be kept (seed_watch); None: never
    # A generated train.py reports its progress and metric on a channel the model code cannot reach;
    # a user's own train.py is judged by its last stdout line (forgeable by the model code).
    trusted_channel: bool = False
    cpus: float = 1.0  # what Ray reserves for it; its process and memory limits follow (see trials.runs.trial_limits)
    cache_key: str = ""  # the campaign's compile cache on the trial's node (trials.runs.compile_cache); "": none


@dataclass(frozen=True)
class TrialResult:
    """How a trial ended: status ok, crash, timeout or pruned; the metric when ok; the error (or where it was pruned) when not."""

    label: str
    status: str
    metric: float | None
    seconds: float
    error: str = ""
    output: str = ""
    node_id: str | None = None
    host: str = ""  # the short host name of the machine that trained it
    log_written: bool = False
    note: str = ""  # something the results log should say about how the trial ran (a retry…)
    runs: tuple[float, ...] = ()  # the metric of each seed trained, when more than the screen ran
    screen: float | None = None  # the first seed's metric, when confirmation runs followed it
    curve: tuple[float, ...] = ()  # the metric after each epoch, as the trial's progress lines said
    sandbox: str = ""  # the containment it ran in ("landlock ABI 7; private network, ..."); "" when unknown
    # At a fraction of a GPU: the peak share of the GPU's memory its processes held, measured from outside it
    # (trials.gpu_memory); None when not measured.
    gpu_memory_share: float | None = None
    seed_seconds: float | None = None  # of `seconds`, its seeds' training and evaluation, as its judge said; None when unknown
    # Why a run of several seeds was stopped before its last one (seed_watch); its runs are the seeds it trained,
    # and it is logged pruned with them. "" when it ran them all.
    hopeless: str = ""

    @property
    def values(self) -> tuple[float, ...]:
        """The metric of each seed it trained: its runs, or its one metric."""
        return self.runs or (self.metric,)


@dataclass(frozen=True)
class Verdict:
    """The decision on one candidate and the best metric after it."""

    status: str  # keep, discard, crash, timeout, stopped
    delta: float | None
    best_metric: float | None
    best_sha: str
    paired: dict[str, str] = field(default_factory=dict)  # the diffs/gain/interval cells of its results-log row


def read_campaign_branch(paths: ExperimentPaths) -> str | None:
    """The branch of the campaign in this folder, if one was started."""
    try:
        return json.loads(paths.campaign_state.read_text())["branch"]
    except (FileNotFoundError, KeyError, ValueError):
        return None


def write_campaign_branch(paths: ExperimentPaths, branch: str) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(paths.campaign_state, json.dumps({"branch": branch}) + "\n")
