"""Whether a decision rule finds real gains: many campaigns replayed over cached real training runs.

    nice -n 10 .venv/bin/python benchmarks/search_quality.py --epochs 1 --campaigns 6
    nice -n 10 .venv/bin/python benchmarks/search_quality.py --epochs 5 --campaigns 3 --rules greedy,paired,racing
    nice -n 10 .venv/bin/python benchmarks/search_quality.py --epochs 1 --campaigns 10 --rules greedy,together --first-run all

A campaign here is the product's loop without Prefect, Ray and git: the offline ideator
(`choose_mutations`, fed the way the ideate step feeds it) proposes edits of the current best model.py,
and a decision rule trains what it needs and keeps or discards. Every training run is the generated
digits train.py, run for real in this process and cached by (model.py hash, seed, epochs, split) in
benchmarks/results/cache/ (training_cache.py), so that a rerun costs nothing and rules that train the
same model at the same seed share the run; each campaign is still charged for every run it uses.

Rules compared, each over the same campaign seeds:

* greedy: one run per candidate at the campaign's seed, kept when it beats the best's run there
  (`--seeds 1`);
* unpaired: the previous default: the screen against the best's mean, then K = 3 seeds and a pooled
  two-sample t-test;
* paired: the default (campaign/noise.py): paired screen, a second paired seed at once, the sequential
  keep rule on a robust σ_d, the best trained on demand at a seed it lacks, and the path confirmed on
  fresh seeds every CONFIRM_EVERY keeps and at the end (rolled back to the last point that holds); a
  screen run stopped between epochs once it has no realistic chance of clearing the screen's bar
  (campaign/pruning.py, on the best's curve, the campaign's past screens and its seed curves, as the
  loop stops it: it pays the start-up and the epochs it trained, and is logged `pruned`);
* racing: paired with `--parallel 4`: four candidates screened, the top two continued with a paired
  seed, the winner by paired mean over two seeds;
* together: the default where runs are mostly start-up, as on digits (seeds_in_one_run, and as many
  seeds as train in one start-up's time, 8 to 24, both chosen by setup from the baseline's timing: 24
  at 1 epoch, 8 at 5): the baseline at its first seed alone, then at the rest of a first run's seeds in
  one run, as setup trains it; every candidate trained at a third of them (at least 8: all of them at
  5 epochs) in one run, and decided on them (no second run: `--second-run` sizes one); a run stopped
  after any seed but its first and last once its chance to end kept is below 5 % (campaign/seed_watch.py:
  it pays the start-up and the seeds it trained, and is discarded on them); the path
  confirmed on fresh seeds (a third, at least 3) in one run per model, the point not trained again
  where it was trained ahead at them (the baseline in setup's run of its seeds, a best that held in
  its confirmation's run, as the loop does);
* racing-together: together with `--parallel 4`: all four at their first seeds, the winner by paired
  mean among those the keep rule keeps;
* racing-shared (a what-if, not a rule of the loop's: `--rules greedy,racing-shared`, written to
  search_quality_e<epochs>_what_if.md): racing-together with the four first runs in one run, one
  start-up for all of them, as a train.py that trained several candidates in one run would charge;
* paired-rotating (a what-if: `--rules greedy,paired,paired-rotating --start-up 0`): paired with each
  candidate's screen at the next of the best's seeds in turn (its further paired seeds going round them),
  where the loop screens every candidate at the campaign's seed: a best whose run there was lucky makes
  every screen look worse than it is, and stops most of them between epochs;
* paired-luck (a what-if, in the same file as paired-rotating): paired with the screen's bar lowered by
  the share of the best's luck at the campaign's seed that a paired difference keeps, (1 − ρ) × (its run
  there − its mean over its seeds), 1 − ρ = σ_d² / 2σ²; keeps are decided as paired's.

What a run costs is measured, not assumed: benchmarks/seeds_in_one_run.py times contained trials of
this train.py and writes a run's start-up and the extra cost of each further seed in one run to
benchmarks/results/seeds_in_one_run.json. A run of one seed costs the start-up plus its training; a run
of k seeds the start-up, their training and k − 1 times the extra. Budgets: 12 and 48 single runs'
worth of those seconds (a single run of the baseline is 1; the baseline's seeds included; a campaign
stops at the last iteration that fits). The rules that confirm their path (paired, racing and the
together rules) know their budget, as the loop knows its stop time, so each budget is a campaign of its
own for them: a candidate whose second run would not fit is decided on its first run's seeds, as the
loop decides one whose second run would end after the stop time. Path confirmations spend the budget as
search runs do (their runs are also counted apart, `confirm runs`), and these rules keep room for the
final one, as the loop keeps time for it before its stop time: no candidate starts, and no second run,
that would leave too little for it.
Truth: every model a table needs, retrained with test seeds 1000…1009 on the digits test split,
which no decision sees. Written to benchmarks/results/search_quality.md and .json.

Side runs, to size a change before the loop makes it (each written to a file of its own, never into
the default tables): `--first-run all` or `--first-run N` (a candidate's first run at all its seeds, or
at N), `--second-run rest` or `--second-run N` (when the keep rule asks for more, the leader's second
run at the rest of its seeds, or at N of them, the best beside at the seeds it lacks),
`--baseline-free` (setup's runs of the baseline left out of every rule's budget), `--start-up 0`
(every run's start-up free: a model whose runs are all training, as long runs are, where each seed is a
run of its own and the loop uses the paired rule), `--no-early-stop` (every first run trained to its
last seed, and every screen to its last epoch), and
`--noise NAME=VALUE,…` (constants of campaign/noise.py set for this process only, e.g.
KEEP_CONFIDENCE=0.8), `--pruning NAME=VALUE,…` (the same for campaign/pruning.py, e.g. STOP_Z=1.5), `--seeds N`
(the product's --seeds where each seed is a run of its own: the baseline's seeds and the most a candidate gets),
`--budgets N,M,…` (other budgets than 12 and 48: how the rules compare as a campaign grows).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import re
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import fmean, stdev

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import training_cache  # noqa: E402
from autoraysearch.campaign import noise, pruning  # noqa: E402
from autoraysearch.campaign.path import CONFIRM_EVERY, CONFIRM_SEEDS as CONFIRM_FRESH, FRESH_STRIDE  # noqa: E402
from autoraysearch.campaign.model_source import fingerprint  # noqa: E402
from autoraysearch.campaign.results_log import ResultRow  # noqa: E402
from autoraysearch.campaign.settings import DEFAULT_SEEDS  # noqa: E402
from autoraysearch.trials.runs import confirmation_seeds, first_run_seeds, seeds_for_one_run  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
TRUTH_SEEDS = 10  # test-split seeds per model for the truth, unless --truth-seeds says more
TRUTH_Z = 1.96  # a false keep is clearly false when its true delta is below zero by this many paired errors
DEFAULT_BUDGETS = (12, 48)
BUDGETS = DEFAULT_BUDGETS  # in runs of the baseline, unless --budgets says others
SEEDS = DEFAULT_SEEDS  # the product's default --seeds (3), unless --seeds says otherwise
STUCK_AFTER = 3  # the product's default stuck_after
RACE_TOP = 2  # racing: candidates continued after the screen
DISCARD_SAMPLE = 1  # discards per campaign re-scored on the test split (for power)
FRESH_BASE = 5000  # fresh confirmation seeds start here, far from the campaigns' own
CAMPAIGN_STRIDE = 10  # campaign c's first seeds are 10c, 10c + 1 … (its seed is 10c)
EXTRA_SEED_BASE = 20000  # a campaign's seeds past its first CAMPAIGN_STRIDE: never shared with another campaign
TOGETHER_FRESH_BASE = 40000  # fresh confirmation seeds where they train in one run (more of them: FRESH_STRIDE apart)
RULES = ("greedy", "unpaired", "paired", "racing", "together", "racing-together")
FIRST_RUNS = {"third": first_run_seeds, "all": lambda seeds: seeds}  # --first-run, besides a number of seeds
SHARED = ("racing-shared",)
ROTATING = ("paired-rotating",)
LUCK = ("paired-luck",)
WHAT_IF = (*SHARED, *ROTATING, *LUCK)  # rules the loop does not have yet, to size them: never in the default tables
TOGETHER = ("together", "racing-together", *SHARED)
SEEDS_APART = ("paired", "racing", *ROTATING, *LUCK)  # screen first, a run per seed
CONFIRMING = (*SEEDS_APART, *TOGETHER)  # rules that confirm their path: each keeps room for the final confirmation
COSTS = RESULTS_DIR / "seeds_in_one_run.json"


def first_run_rule(name: str):
    """--first-run: the loop's (a third, at least 8), all of a candidate's seeds, or a fixed number of them."""
    if name in FIRST_RUNS:
        return FIRST_RUNS[name]
    if not name.isdigit() or int(name) < 1:
        raise argparse.ArgumentTypeError(f"--first-run takes third, all or a number of seeds, not {name!r}")
    return lambda seeds: min(seeds, int(name))


def second_run_rule(text: str) -> int | None:
    """--second-run: none (the loop's: no second run), rest (0: all the rest of a candidate's seeds) or a number of them."""
    if text == "none":
        return None
    if text == "rest":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"takes none, rest or a number of seeds, not {text!r}")
    return int(text)


def start_up_seconds(text: str) -> float:
    """--start-up: what a run's start-up costs in seconds, zero or more."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"takes a number of seconds, zero or more, not {text!r}")
    return seconds


def budgets_list(text: str) -> tuple[int, ...]:
    """--budgets N,M,…: the budgets to report, in runs of the baseline, each a whole number of 4 or more (setup alone
    takes up to 4)."""
    try:
        budgets = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        budgets = ()
    if not budgets or budgets[0] < 4:
        raise argparse.ArgumentTypeError(f"takes whole numbers of runs, 4 or more, separated by commas, not {text!r}")
    return budgets


def noise_overrides(text: str) -> dict[str, float]:
    """--noise NAME=VALUE,…: constants of campaign/noise.py to set for a side run; only numbers it already has."""
    return constant_overrides(noise, text)


def pruning_overrides(text: str) -> dict[str, float]:
    """--pruning NAME=VALUE,…: constants of campaign/pruning.py (early stopping between epochs), as --noise."""
    return constant_overrides(pruning, text)


def constant_overrides(module, text: str) -> dict[str, float]:
    overrides = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if not isinstance(getattr(module, name, None), (int, float)) or not name.isupper():
            where = module.__name__.removeprefix("autoraysearch.").replace(".", "/")
            raise argparse.ArgumentTypeError(f"{where}.py has no numeric constant {name!r}")
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} needs a number, not {value!r}") from None
        # a count (PRIOR_SCREENS, EXPLORE_AFTER) stays a whole number
        overrides[name] = int(number) if isinstance(getattr(module, name), int) and number.is_integer() else number
    return overrides


def run_costs() -> tuple[float, float]:
    """(a run's start-up, the extra cost of each further seed in one run) in seconds, as seeds_in_one_run.py measured."""
    if not COSTS.exists():
        raise SystemExit(f"{COSTS} is missing: run `python benchmarks/seeds_in_one_run.py` first, it measures what a run costs")
    figures = json.loads(COSTS.read_text())
    return figures["startup_s"], figures["extra_per_seed_s"]


# ---- training, cached ----

class Trainer:
    """Real runs of the generated train.py, each trained once across every campaign of this process."""

    def __init__(self, epochs: int, truth_seeds: int = TRUTH_SEEDS, first_run=first_run_seeds, second_run: int | None = None,
                 baseline_free: bool = False, startup: float | None = None, early_stop: bool = True):
        self.epochs = epochs
        self.first_run = first_run  # of a candidate's seeds in one run, those of its first run (the product's: a third)
        self.second_run = second_run  # the most seeds a second run trains (0: all the rest; None, the loop's: none)
        self.baseline_free = baseline_free  # setup's runs of the baseline left out of every rule's budget
        self.early_stop = early_stop  # a candidate's run of seeds stopped once it can no longer be kept, as the loop's
        self.test_seeds = [training_cache.TEST_SEED_BASE + i for i in range(truth_seeds)]
        self.runs = training_cache.load_runs(epochs)
        self.startup, self.extra = run_costs()
        if startup is not None:  # --start-up: a model whose runs start in that time (0: all training, as long runs are)
            self.startup = startup
        self.scratch = Path(tempfile.mkdtemp(prefix="search-quality-"))
        (self.scratch / "train.py").write_text(training_cache.render_train(epochs))
        self.out = training_cache.cache_path(epochs).open("a")
        self.trained = 0
        self.pool_seconds = None  # by model hash, the pool's training seconds (train_seconds)
        self.baseline_seconds = 0.0

    def run(self, source: str, seed: int, split: str = "validation") -> training_cache.Run | None:
        key = training_cache.model_hash(source)
        if (key, seed, split) not in self.runs:
            model = training_cache.PoolModel(key, "", "edit", source)
            try:
                run = training_cache.train_once(self.scratch, model, seed, split, self.epochs)
            except Exception:  # a candidate that does not train is a crash, as in a campaign
                run = training_cache.Run(key, seed, self.epochs, split, float("nan"), (), 0.0)
            self.runs[(key, seed, split)] = run
            self.out.write(json.dumps({**run.__dict__, "curve": list(run.curve)}) + "\n")
            self.out.flush()
            self.trained += 1
        run = self.runs[(key, seed, split)]
        return None if math.isnan(run.metric) else run

    def train_seconds(self, source: str) -> float:
        """What one seed of this model costs to train: the median of its runs at validation seeds 0-7 when it is one
        of the pool's (benchmarks/training_cache.py trained those one after another in one quiet process), else the
        baseline's.

        Never a run's own recorded seconds: those are wall time, and a run first trained while the machine
        was busy took several times longer, which would make its campaign pay for the machine's load.
        """
        if self.pool_seconds is None:
            pool = json.loads((training_cache.CACHE_DIR / "pool.json").read_text())
            seconds = {}
            for (key, seed, split), run in self.runs.items():
                if key in pool and split == "validation" and seed < 8:
                    seconds.setdefault(key, []).append(run.seconds)
            self.pool_seconds = {key: sorted(s)[len(s) // 2] for key, s in seconds.items()}
            self.baseline_seconds = self.pool_seconds[training_cache.model_hash(training_cache.EXAMPLE.read_text())]
        return self.pool_seconds.get(training_cache.model_hash(source), self.baseline_seconds)

    def truth(self, source: str) -> float:
        runs = [self.run(source, s, "test") for s in self.test_seeds]
        return fmean(r.metric for r in runs if r is not None) if all(runs) else float("nan")

    def paired_error(self, source: str, before: str) -> float:
        """The standard error of truth(source) − truth(before), paired over the test seeds."""
        runs = [(self.run(source, s, "test"), self.run(before, s, "test")) for s in self.test_seeds]
        differences = [a.metric - b.metric for a, b in runs if a is not None and b is not None]
        return stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else float("nan")


# ---- one simulated campaign ----

@dataclass
class Step:
    """One decided candidate: the model, the best it was compared with, and what happened."""

    model: str
    predecessor: str
    kept: bool
    claimed: float = 0.0
    crashed: bool = False


@dataclass
class State:
    rule: str
    campaign: int
    baseline: str
    best: str
    confirmed: str
    seed: int
    known: dict = field(default_factory=dict)  # (model hash, seed) -> value this campaign trained
    baseline_runs: list = field(default_factory=list)  # the baseline's values at the seeds setup trained it at
    runs: int = 0
    cost: float = 0.0  # search runs' seconds, in single runs of the baseline (what the budgets count)
    unit: float = 1.0  # the seconds of one single run of the baseline
    seconds: float = 0.0  # every run's seconds, start-up included
    training: float = 0.0  # of those, the training alone
    wall: float = 0.0
    confirm_runs: int = 0
    diffs: list = field(default_factory=list)  # paired comparisons with two or more seeds
    screens: list = field(default_factory=list)  # every screened candidate's first paired difference (together: (mean, n))
    keep_chances: list = field(default_factory=list)  # each keep's chance of a true gain (the false-keep budget spent)
    groups: list = field(default_factory=list)  # multi-seed runs of one model (unpaired σ)
    curve_groups: list = field(default_factory=list)  # their curves: the per-epoch noise early stopping starts from
    screen_history: list = field(default_factory=list)  # (screen curve, its best's) of each screen run to its end
    steps: list = field(default_factory=list)
    tried: set = field(default_factory=set)
    since_keep: list = field(default_factory=list)
    stale: int = 0  # iterations since the last keep
    iteration: int = 0
    keeps_unconfirmed: int = 0
    segments: list = field(default_factory=list)  # (gain, variance) of each confirmed stretch of the path
    rollbacks: int = 0
    exhausted: bool = False
    budget: float = math.inf  # what a rule that looks at its budget may spend (together rules: the stop time's stand-in)
    rows: list = field(default_factory=list)  # the results log the ideate step would read
    descriptions: dict = field(default_factory=dict)  # model hash -> the ideator's description

    @property
    def pruned(self) -> int:
        """Screens stopped between epochs (a `pruned` row each)."""
        return sum(row.status == "pruned" for row in self.rows)


def train(state: State, trainer: Trainer, source: str, seed: int, confirm: bool = False) -> float | None:
    """The model's value at this seed, trained (and paid for) the first time this campaign needs it."""
    return train_together(state, trainer, source, [seed], confirm)[0]


def train_together(state: State, trainer: Trainer, source: str, seeds: list[int], confirm: bool = False) -> list:
    """The model's values at these seeds; those this campaign lacks are trained in one run and paid for.

    The run costs the measured start-up, each seed's training, and the extra of every seed after the
    first; `state.last_seconds` is that run's wall time.
    """
    keys = [(training_cache.model_hash(source), seed) for seed in seeds]
    state.last_seconds = 0.0
    missing = [(key, seed) for key, seed in zip(keys, seeds) if key not in state.known]
    if missing:
        training = 0.0
        per_seed = trainer.train_seconds(source)
        for key, seed in missing:
            run = trainer.run(source, seed)
            state.known[key] = None if run is None else run.metric
            training += per_seed if run is not None else 0.0
        pay(state, trainer.startup + trainer.extra * (len(missing) - 1), training, len(missing), confirm)
    return [state.known[key] for key in keys]


def pay(state: State, overhead: float, training: float, seeds: int, confirm: bool = False) -> None:
    """Charge one run (its start-up and extras, and its training) to the campaign; `state.last_seconds` is its wall time."""
    seconds = overhead + training
    state.seconds += seconds
    state.training += training
    state.last_seconds = seconds
    if confirm:
        state.confirm_runs += seeds
    else:
        state.runs += seeds
    state.cost += seconds / state.unit  # a confirmation spends the budget as a search run does


def propose(state: State, count: int) -> list[str]:
    """The offline ideator's next `count` edits of the best, fed as the ideate step feeds it: build check, log."""
    from autoraysearch.ideators.mutate import choose_mutations

    mutations = choose_mutations(state.best, tried=state.tried, seed=state.campaign * 1_000_003 + state.iteration,
                                 count=count, failed=state.since_keep, stuck=state.stale >= STUCK_AFTER,
                                 history=state.rows, check=training_cache.build_check(), diverse=count if count > 1 else 0)
    for m in mutations:
        state.tried.add(fingerprint(m.source))
        state.descriptions[training_cache.model_hash(m.source)] = m.description
    return [m.source for m in mutations]


def log_row(state: State, candidate: str, kept: bool, pruned: bool = False) -> None:
    """The results-log row the loop would write for a decided candidate (what the ideator learns from)."""
    h = training_cache.model_hash
    if pruned:  # stopped between epochs: no metric, as the loop logs it
        state.rows.append(ResultRow(str(len(state.rows)), "-", None, None, "pruned", state.descriptions.get(h(candidate), "")))
        return
    mine = [state.known.get((h(candidate), state.seed + i)) for i in range(SEEDS)]
    best = [state.known.get((h(state.best), state.seed + i)) for i in range(SEEDS)]
    runs = [m for m in mine if m is not None]
    description = state.descriptions.get(h(candidate), "")
    if not runs:
        state.rows.append(ResultRow(str(len(state.rows)), "-", None, None, "crash", description))
        return
    pairs = [(m, b) for m, b in zip(mine, best) if m is not None and b is not None]
    delta = fmean(m - b for m, b in pairs) if pairs else None
    state.rows.append(ResultRow(str(len(state.rows)), "-", fmean(runs), delta, "keep" if kept else "discard",
                                description, noise.seed_columns(runs)))


def together_seeds(trainer: Trainer) -> int:
    """The seeds setup gives a candidate when they train in one run, from the baseline's start-up and training."""
    return seeds_for_one_run(trainer.startup, trainer.train_seconds(training_cache.EXAMPLE.read_text()))


def campaign_seed(state: State, i: int) -> int:
    """The campaign's i-th seed: its seed + i for the first CAMPAIGN_STRIDE, then a range no other campaign uses."""
    if i < CAMPAIGN_STRIDE:
        return state.seed + i
    return EXTRA_SEED_BASE + 100 * state.campaign + i


def best_runs(state: State, upto: int) -> tuple[float, ...]:
    return tuple(state.known.get((training_cache.model_hash(state.best), state.seed + i)) for i in range(upto))


def first_seed_offset(state: State, ahead: int = 0) -> int:
    """paired-rotating: which of the best's seeds a candidate's screen is at, the next in turn for each candidate
    (`ahead`: its place among this iteration's), so that one lucky run of the best does not judge every screen.
    The loop's rules screen every candidate at the campaign's seed (0)."""
    return (len(state.steps) + ahead) % SEEDS if state.rule in ROTATING else 0


def paired_seed(state: State, i: int, offset: int = 0) -> int:
    """The seed of a candidate's i-th paired run, starting from the best's seed at `offset` and going round them."""
    return state.seed + ((offset + i) % SEEDS if i < SEEDS else i)


def settle(state: State, candidate: str, kept: bool, claimed: float = 0.0, pruned: bool = False) -> None:
    crashed = any(state.known.get((training_cache.model_hash(candidate), state.seed + i), 0.0) is None for i in range(SEEDS))
    state.steps.append(Step(candidate, state.best, kept, claimed, crashed))
    log_row(state, candidate, kept, pruned)
    if kept:
        state.best = candidate
        state.since_keep, state.stale = [], 0
        state.keeps_unconfirmed += 1
    else:
        state.since_keep.append(fingerprint(candidate))


def iterate_greedy(state: State, trainer: Trainer) -> None:
    [candidate] = propose(state, 1) or [None]
    if candidate is None:
        state.exhausted = True
        return
    value = train(state, trainer, candidate, state.seed)
    state.wall += state.last_seconds
    best = train(state, trainer, state.best, state.seed)
    kept = value is not None and value > best
    settle(state, candidate, kept, (value - best) if kept else 0.0)


def iterate_unpaired(state: State, trainer: Trainer) -> None:
    """The previous default: unpaired screen and t-test, σ pooled over every multi-seed model."""
    from scipy.stats import t

    [candidate] = propose(state, 1) or [None]
    if candidate is None:
        state.exhausted = True
        return
    best = [v for v in best_runs(state, SEEDS) if v is not None]
    mean_best = fmean(best)
    squares = sum(sum((x - fmean(g)) ** 2 for x in g) for g in state.groups)
    dof = sum(len(g) - 1 for g in state.groups)
    sigma = math.sqrt(squares / dof) if dof else 0.0

    def margin(n):
        return float(t.ppf(0.95, dof)) * sigma * math.sqrt(1 / n + 1 / len(best)) if dof else 0.0

    screen = train(state, trainer, candidate, state.seed)
    state.wall += state.last_seconds
    if screen is None or screen - mean_best <= margin(SEEDS) - sigma:
        settle(state, candidate, False)
        return
    runs = [screen] + [train(state, trainer, candidate, state.seed + i) for i in range(1, SEEDS)]
    state.wall += state.last_seconds
    if any(r is None for r in runs):
        settle(state, candidate, False)
        return
    state.groups.append(runs)
    kept = fmean(runs) - mean_best > margin(SEEDS)
    settle(state, candidate, kept, fmean(runs) - mean_best)


def paired_bar(state: State) -> noise.Bar:
    paired = noise.robust_pool(state.diffs, prior=noise.paired_prior(state.baseline_runs))
    return noise.Bar(best_runs=(), paired=paired, prior=noise.effect_prior(state.screens, paired.sigma),
                     keep_confidence=noise.keep_confidence(state.keep_chances))


@dataclass(frozen=True)
class LuckBar(noise.Bar):
    """paired-luck: the bar with its screen bar moved by the best's luck at the screens' seed (best_luck)."""

    luck: float = 0.0

    def screen_bar(self) -> float:
        return noise.Bar.screen_bar(self) - self.luck


def run_noise(state: State) -> noise.Noise:
    """σ of one run's final value, pooled over the campaign's multi-seed models (as early stopping pools it)."""
    groups = [[curve[-1] for curve in g] for g in state.curve_groups if len(g) > 1]
    return noise.robust_pool(groups) if groups else noise.Noise()


def best_luck(state: State, bar: noise.Bar) -> float:
    """paired-luck: how far the best's run at the screens' seed lies above its mean over its seeds, times the share
    of that luck a paired difference keeps (1 − ρ = σ_d² / 2σ²): a screen's expected bias against a lucky run."""
    if state.rule not in LUCK or not bar.measured:  # every other rule, each iteration: nothing to pool
        return 0.0
    runs = [v for v in best_runs(state, SEEDS) if v is not None]
    sigma = run_noise(state).sigma
    if len(runs) < 2 or sigma <= noise.IDENTICAL:
        return 0.0
    return min(1.0, bar.paired.sigma ** 2 / (2 * sigma ** 2)) * (runs[0] - fmean(runs))


def screen_rule(state: State, trainer: Trainer, bar: noise.Bar, offset: int = 0) -> pruning.PruneRule | None:
    """The rule the loop stops this iteration's screen runs by (reference_curves.campaign_rule): the best's curve at
    the screens' seed (the campaign's; paired_seed at `offset` for paired-rotating), the seed noise of the campaign's
    multi-seed models' curves, its past screens' curves."""
    if not trainer.early_stop:
        return None
    best = trainer.run(state.best, paired_seed(state, 0, offset))
    if best is None:
        return None
    with_noise = replace(bar, noise=run_noise(state))  # the runs' final values
    sigmas = pruning.epoch_noise(state.curve_groups[-pruning.NOISE_ROWS:])
    return pruning.rule_for(best.curve, with_noise, sigmas, state.screen_history,
                            pruning.stopped_in_a_row(row.status for row in state.rows))


def stopped_after(curve: tuple[float, ...], rule: pruning.PruneRule | None) -> int | None:
    """The epoch after which the loop's watch stops a run with this curve (before its last), or None."""
    watch = pruning.CurveWatch(rule, "val_acc")
    for epoch, value in enumerate(curve, 1):
        if epoch < len(curve) and watch.see(f"epoch={epoch}/{len(curve)} val_acc={value:.6f}"):
            return epoch
    return None


def screen(state: State, trainer: Trainer, candidate: str, rule: pruning.PruneRule | None,
           offset: int = 0) -> list[float] | str | None:
    """The candidate's screen: its paired difference at the campaign's seed (paired_seed at `offset` for
    paired-rotating); "pruned" when the loop's watch stops its run between epochs (it pays the start-up and the
    epochs it trained); None if it crashed."""
    seed = paired_seed(state, 0, offset)
    run = trainer.run(candidate, seed) if rule is not None else None
    trained = (training_cache.model_hash(candidate), seed) in state.known  # this campaign has it: no run to stop
    epoch = stopped_after(run.curve, rule) if run is not None and not trained else None
    if epoch is None:
        d = differences(state, trainer, candidate, 1, [], offset)
        if d is not None and run is not None:
            state.screen_history.append((run.curve, rule.reference))
        return d
    pay(state, trainer.startup, trainer.train_seconds(candidate) * epoch / len(run.curve), 1)
    return "pruned"


def differences(state: State, trainer: Trainer, candidate: str, seeds: int, have: list[float],
                offset: int = 0) -> list[float] | None:
    """Paired differences at seeds 0 … seeds−1 (from `offset`, paired_seed; the best trained on demand); None if the
    candidate crashed."""
    out = list(have)
    spent = state.seconds
    try:
        for i in range(len(out), seeds):
            value = train(state, trainer, candidate, paired_seed(state, i, offset))
            if value is None:
                return None
            best = train(state, trainer, state.best, paired_seed(state, i, offset))
            out.append(value - best)
        return out
    finally:
        state.last_seconds = state.seconds - spent  # every run this call trained: an upper bound on its wall time


def iterate_paired(state: State, trainer: Trainer, parallel: int = 1) -> None:
    candidates = propose(state, parallel)
    if not candidates:
        state.exhausted = True
        return
    bar = paired_bar(state)
    offsets = {c: first_seed_offset(state, j) for j, c in enumerate(candidates)}
    screening = LuckBar(**vars(bar), luck=best_luck(state, bar))  # = bar but for paired-luck
    rules = {o: screen_rule(state, trainer, screening, o) for o in set(offsets.values())}
    screens, pruned = {}, set()
    wall = 0.0
    for c in candidates:
        d = screen(state, trainer, c, rules[offsets[c]], offsets[c])
        wall = max(wall, state.last_seconds)
        if d == "pruned":
            pruned.add(c)
        elif d is not None:
            screens[c] = d
            state.screens.append(d[0])
    state.wall += wall
    passing = sorted((c for c in screens if noise.screen_passes(screens[c][0], screening)), key=lambda c: -screens[c][0])
    continued = {}
    wall = 0.0
    for c in passing[:RACE_TOP] if parallel > 1 else passing:
        d = differences(state, trainer, c, noise.CONFIRM_SEEDS, screens[c], offsets[c])
        wall = max(wall, state.last_seconds)
        if d is not None:
            continued[c] = d
    state.wall += wall
    winner = max(continued, key=lambda c: fmean(continued[c]), default=None)
    if winner is not None:
        d = continued[winner]
        while (step := noise.next_step(d, bar, SEEDS)) == "more":
            d = differences(state, trainer, winner, len(d) + 1, d, offsets[winner])
            state.wall += state.last_seconds
            if d is None:
                step = "discard"
                break
        if d is not None:
            continued[winner] = d
    for c in candidates:
        if c in continued:
            state.diffs.append(continued[c])
            state.curve_groups.append([trainer.run(c, paired_seed(state, i, offsets[c])).curve for i in range(len(continued[c]))])
    for c in candidates:
        if c != winner:
            settle(state, c, False, pruned=c in pruned)
    if winner is not None:
        kept = step == "keep"
        if kept:
            state.keep_chances.append(bar.chance(continued[winner]))
        settle(state, winner, kept, fmean(continued[winner]) if kept else 0.0)
    if state.keeps_unconfirmed >= CONFIRM_EVERY:
        confirm_path(state, trainer)


def iterate_together(state: State, trainer: Trainer, parallel: int = 1) -> None:
    """Each candidate at its first seeds in one run, and decided on them (flows/loop.train_seeds_together); with
    --second-run, the leader at the rest in another when the rule asks for more."""
    candidates = propose(state, parallel)
    if not candidates:
        state.exhausted = True
        return
    bar = paired_bar(state)
    seeds = [campaign_seed(state, i) for i in range(together_seeds(trainer))]
    first = seeds[:trainer.first_run(len(seeds))]
    rest = [] if trainer.second_run is None else seeds[len(first):][:trainer.second_run or None]

    def paired(c: str, at: list[int], stop: bool = False) -> tuple[list[float] | None, float]:
        """Its paired differences at these seeds (None if either model crashed), and the longer run's seconds;
        with `stop`, up to the seed after which its run would be stopped as hopeless."""
        best = train_together(state, trainer, state.best, at)  # known already, unless the best lacks a seed
        wall = state.last_seconds
        if stop:
            at = seeds_before_hopeless(trainer, c, at, best, bar)
            best = best[:len(at)]
        values = train_together(state, trainer, c, at)
        wall = max(wall, state.last_seconds)  # the two runs go at once
        if any(v is None for v in values) or any(b is None for b in best):
            return None, wall
        return [v - b for v, b in zip(values, best)], wall

    decided, walls = {}, [0.0]
    for c in candidates:
        d, wall = paired(c, first, trainer.early_stop)
        walls.append(wall)
        if d is not None:
            decided[c] = d
            state.screens.append((fmean(d), len(d)))
    if state.rule == "racing-shared":  # one run for every first run: each start-up after the first becomes a further seed's extra
        started = sum(wall > 0 for wall in walls)
        refund = max(0, started - 1) * (trainer.startup - trainer.extra)
        state.seconds -= refund
        state.cost -= refund / state.unit
        walls = [sum(walls) - refund]  # trained one after another
    state.wall += max(walls)  # the candidates' first runs go at once
    steps = {c: noise.next_step(d, bar, len(seeds)) if len(d) == len(first) else "discard" for c, d in decided.items()}
    asking = [c for c in decided if steps[c] == "more"]
    # Without a second run (the loop's way), every candidate is decided on its first run.
    leader = max(asking, key=lambda c: fmean(decided[c]), default=None) if rest else None
    if leader is not None and (state.cost + more_cost(state, trainer, leader, rest)
                               + confirmation_cost(state, trainer) > state.budget):
        # As the loop does when the second run, and the path confirmation a keep would need, would end after the
        # stop time: decided on its first run.
        leader = None
    if leader is not None:
        more, wall = paired(leader, rest)
        state.wall += wall
        if more is None:
            steps[leader] = "discard"
        else:
            decided[leader] = decided[leader] + more
            steps[leader] = noise.next_step(decided[leader], bar, len(seeds))
    state.diffs.extend(decided.values())
    kept = [c for c in decided if steps[c] == "keep"]
    winner = max(kept, key=lambda c: fmean(decided[c]), default=None)
    for c in candidates:
        if c != winner:
            settle(state, c, False)
    if winner is not None:
        state.keep_chances.append(bar.chance(decided[winner]))
        settle(state, winner, True, fmean(decided[winner]))
    if state.keeps_unconfirmed >= CONFIRM_EVERY:
        confirm_path(state, trainer)


def seeds_before_hopeless(trainer: Trainer, candidate: str, seeds: list[int], best: list, bar: noise.Bar) -> list[int]:
    """The seeds of the candidate's run that train before its chance to end kept falls below noise.HOPELESS (all of
    them when it never does), read one by one as the run's judge reports them."""
    differences = []
    for i, seed in enumerate(seeds):
        run = trainer.run(candidate, seed)
        if run is None or best[i] is None:
            return seeds
        differences.append(run.metric - best[i])
        if len(differences) >= noise.HOPELESS_AFTER and noise.chance_to_keep(differences, bar, len(seeds)) < noise.HOPELESS:
            return seeds[:i + 1]
    return seeds


def more_cost(state: State, trainer: Trainer, candidate: str, rest: list[int]) -> float:
    """What the candidate's second run and the best's beside it would cost, in budget units: a start-up, and each
    seed's training."""
    def foreseen(source: str, seeds: list[int]) -> float:
        missing = [s for s in seeds if (training_cache.model_hash(source), s) not in state.known]
        if not missing:
            return 0.0
        return trainer.startup + trainer.extra * (len(missing) - 1) + len(missing) * trainer.train_seconds(source)

    return (foreseen(candidate, rest) + foreseen(state.best, rest)) / state.unit


def final_confirmation_cost(state: State, trainer: Trainer) -> float:
    """What a rule that knows its budget keeps for the final path confirmation, in budget units, as the loop keeps
    time for it before its stop time: the best and the last confirmed point at fresh seeds, a run each; none
    when there is nothing to confirm."""
    if state.budget == math.inf or state.best == state.confirmed:
        return 0.0
    return confirmation_cost(state, trainer)


def confirmation_cost(state: State, trainer: Trainer) -> float:
    """The final path confirmation's cost in budget units: the best (or a keep about to be), and the last confirmed
    point unless it was trained ahead at these seeds, each in one run at the confirmation's fresh seeds (the paired
    rules: a run per seed and model, those the campaign has not trained)."""
    if state.rule not in TOGETHER:
        h = training_cache.model_hash
        return sum(trainer.startup + trainer.train_seconds(model) for model in (state.best, state.confirmed)
                   for seed in paired_fresh_seeds(state) if (h(model), seed) not in state.known) / state.unit
    fresh = together_fresh_seeds(state, trainer)
    point_ahead = all((training_cache.model_hash(state.confirmed), seed) in state.known for seed in fresh)
    runs = [trainer.startup + trainer.extra * (len(fresh) - 1) + len(fresh) * trainer.train_seconds(model)
            for model in ((state.best,) if point_ahead else (state.best, state.confirmed))]
    return sum(runs) / state.unit


def paired_fresh_seeds(state: State) -> list[int]:
    """The fresh seeds of the campaign's next path confirmation where each seed is a run of its own."""
    done = len(state.segments) + state.rollbacks
    return [FRESH_BASE + 100 * state.campaign + CONFIRM_FRESH * done + i for i in range(CONFIRM_FRESH)]


def together_fresh_seeds(state: State, trainer: Trainer, ahead: int = 0) -> list[int]:
    """The fresh seeds of the campaign's next path confirmation where seeds train in one run (`ahead`: of the one
    that many after it), as many as a candidate's first run, FRESH_STRIDE apart as the loop's are."""
    done = len(state.segments) + state.rollbacks + ahead
    base = TOGETHER_FRESH_BASE + 1000 * state.campaign + FRESH_STRIDE * done
    return [base + i for i in range(confirmation_seeds(together_seeds(trainer)))]


def confirm_path(state: State, trainer: Trainer, final: bool = False) -> None:
    """Best against the last confirmed point on fresh paired seeds; roll back when the gain does not hold.

    Where seeds train in one run, as the loop does: the point is not trained again when it was trained ahead
    at these seeds (the baseline in setup's run, a best that held in its confirmation's), and the best, unless
    this is the campaign's last confirmation, is trained ahead at the next one's in its run.
    """
    state.keeps_unconfirmed = 0
    if state.best == state.confirmed:
        return
    if state.rule in TOGETHER:
        fresh = together_fresh_seeds(state, trainer)
        ahead = [] if final else together_fresh_seeds(state, trainer, ahead=1)
        pairs = zip(train_together(state, trainer, state.best, fresh + ahead, confirm=True),
                    train_together(state, trainer, state.confirmed, fresh, confirm=True))  # free when trained ahead
    else:
        pairs = [(train(state, trainer, state.best, seed, confirm=True),
                  train(state, trainer, state.confirmed, seed, confirm=True)) for seed in paired_fresh_seeds(state)]
    d = [a - b for a, b in pairs if a is not None and b is not None]
    sigma = paired_bar(state).paired.sigma
    if d and fmean(d) > 0:
        state.segments.append((fmean(d), sigma ** 2 / len(d)))
        state.confirmed = state.best
    else:
        state.rollbacks += 1
        state.best = state.confirmed


def iterate(state: State, trainer: Trainer) -> None:
    state.iteration += 1
    if state.rule == "greedy":
        iterate_greedy(state, trainer)
    elif state.rule == "unpaired":
        iterate_unpaired(state, trainer)
    elif state.rule in TOGETHER:
        iterate_together(state, trainer, parallel=1 if state.rule == "together" else 4)
    else:
        iterate_paired(state, trainer, parallel=4 if state.rule == "racing" else 1)
    if not state.steps or not state.steps[-1].kept:
        state.stale += 1


def run_campaign(rule: str, campaign: int, trainer: Trainer) -> dict[int, State]:
    """The campaign at each budget: its state after the last iteration that fits, the path then confirmed.

    The rules that confirm their path look at their budget, as the loop looks at its stop time: a campaign of its own
    per budget.
    """
    if rule in CONFIRMING:
        return {budget: run_to_budget(rule, campaign, trainer, (budget,))[budget] for budget in BUDGETS}
    return run_to_budget(rule, campaign, trainer, BUDGETS)


def run_to_budget(rule: str, campaign: int, trainer: Trainer, budgets: tuple) -> dict[int, State]:
    """One campaign, run until its cost reaches the largest of `budgets` (which it knows when there is one)."""
    base = training_cache.EXAMPLE.read_text()
    state = State(rule=rule, campaign=campaign, baseline=base, best=base, confirmed=base, seed=CAMPAIGN_STRIDE * campaign,
                  budget=budgets[0] if len(budgets) == 1 else math.inf)
    state.last_seconds = 0.0
    state.unit = trainer.startup + trainer.train_seconds(base)
    if rule in TOGETHER:  # as setup trains it: the first seed alone, its timing says the rest of a first run's go in one run
        baseline = [train(state, trainer, base, state.seed)]
        rest = [campaign_seed(state, i) for i in range(1, trainer.first_run(together_seeds(trainer)))]
        held_out = together_fresh_seeds(state, trainer)  # the first confirmation's, trained ahead in the same run
        baseline += train_together(state, trainer, base, rest + held_out)[:len(rest)]
        state.runs -= len(held_out)
        state.confirm_runs += len(held_out)
    else:  # its seeds apart, at once
        baseline = [train(state, trainer, base, state.seed + i) for i in range(1 if rule == "greedy" else SEEDS)]
    state.baseline_runs = baseline
    if trainer.baseline_free:  # --baseline-free: the budget starts after setup, for every rule alike
        state.cost = 0.0
    state.rows.append(ResultRow("0", "-", fmean(baseline), None, "baseline", "baseline", noise.seed_columns(baseline)))
    state.wall = state.seconds
    if rule != "greedy":
        state.groups.append(baseline)
    if rule in SEEDS_APART:  # the curves their screens' early stopping starts from
        state.curve_groups.append([trainer.run(base, state.seed + i).curve for i in range(len(baseline))])
    snapshots = {}
    while not state.exhausted and state.cost + final_confirmation_cost(state, trainer) < max(budgets):
        before = copy.deepcopy(state)
        iterate(state, trainer)
        for budget in budgets:
            if before.cost + final_confirmation_cost(before, trainer) <= budget < state.cost + final_confirmation_cost(state, trainer):
                snapshots[budget] = before
    for budget in budgets:
        snapshots.setdefault(budget, state)
    if rule in CONFIRMING:
        for s in snapshots.values():
            confirm_path(s, trainer, final=True)
    return snapshots


# ---- judging a campaign against the truth ----

def judge(state: State, trainer: Trainer, sigma_fresh: float) -> dict:
    truth = trainer.truth
    true_gain = truth(state.best) - truth(state.baseline)
    keeps = [s for s in state.steps if s.kept]
    discards = [s for s in state.steps if not s.kept]
    deltas = [truth(s.model) - truth(s.predecessor) for s in keeps]
    # A false keep the truth itself can tell from no change: below zero by more than its paired error allows.
    errors = [trainer.paired_error(s.model, s.predecessor) for s in keeps]
    sample = random.Random(state.campaign).sample(discards, min(DISCARD_SAMPLE, len(discards)))
    missed = [truth(s.model) - truth(s.predecessor) for s in sample]
    weight = len(discards) / len(sample) if sample else 0.0
    if state.rule in CONFIRMING:
        claimed = sum(g for g, _ in state.segments)
    elif state.rule == "greedy":
        h = training_cache.model_hash
        claimed = state.known[(h(state.best), state.seed)] - state.known[(h(state.baseline), state.seed)]
    else:
        h = training_cache.model_hash
        claimed = (fmean(state.known[(h(state.best), state.seed + i)] for i in range(SEEDS))
                   - fmean(state.known[(h(state.baseline), state.seed + i)] for i in range(SEEDS)))
    groups = [g for g in state.groups if len(g) > 1]
    sigma_hat = noise.robust_pool(groups).sigma if groups else float("nan")
    return {
        "rule": state.rule, "campaign": state.campaign, "runs": state.runs, "confirm_runs": state.confirm_runs, "cost": state.cost,
        "candidates": len(state.steps), "crashes": sum(s.crashed for s in state.steps), "keeps": len(keeps), "false_keeps": sum(d <= 0 for d in deltas),
        "clear_false_keeps": sum(d < -TRUTH_Z * e for d, e in zip(deltas, errors)),
        "harm": sum(d for d in deltas if d <= 0), "true_gain": true_gain, "claimed": claimed,
        "seconds": state.seconds, "training": state.training, "wall": state.wall, "rollbacks": state.rollbacks,
        "power_hits": sum(d > sigma_fresh for d in deltas), "power_misses": weight * sum(d > sigma_fresh for d in missed),
        "sigma_hat": sigma_hat, "pruned": state.pruned,
        "claim_interval": noise.INTERVAL_Z * math.sqrt(sum(v for _, v in state.segments)) if state.segments else None,
    }


def bootstrap(values: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    means = sorted(fmean(rng.choices(values, k=len(values))) for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def against(mine: list[dict], theirs: list[dict], draws: int = 4000) -> dict:
    """One rule's true gain against another's, paired by campaign (same baseline, same ideator seed): the
    ratio of their mean gains and the difference, each with a bootstrap interval over campaigns (95 %)."""
    pairs = [(a["true_gain"], b["true_gain"]) for a, b in zip(mine, theirs)]
    rng = random.Random(0)
    ratios, differences = [], []
    for _ in range(draws):
        sample = rng.choices(pairs, k=len(pairs))
        a, b = fmean(x for x, _ in sample), fmean(y for _, y in sample)
        ratios.append(a / b if b > 0 else math.inf)
        differences.append(a - b)
    ratios.sort()
    differences.sort()
    low, high = int(0.025 * draws), int(0.975 * draws) - 1
    a, b = fmean(x for x, _ in pairs), fmean(y for _, y in pairs)
    return {"ratio": a / b if b > 0 else math.inf, "ratio_ci": (ratios[low], ratios[high]),
            "difference": a - b, "difference_ci": (differences[low], differences[high])}


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def totals(rows: list[dict]) -> dict:
    gains = [r["true_gain"] for r in rows]
    keeps = sum(r["keeps"] for r in rows)
    false = sum(r["false_keeps"] for r in rows)
    hours = sum(r["seconds"] for r in rows) / 3600
    training_hours = sum(r["training"] for r in rows) / 3600
    wall_hours = sum(r["wall"] for r in rows) / 3600
    hits, misses = sum(r["power_hits"] for r in rows), sum(r["power_misses"] for r in rows)
    candidates = sum(r["candidates"] for r in rows)  # none where no candidate fits the budget (a race at 12 runs, 5 epochs)
    return {
        "campaigns": len(rows), "true_gain": fmean(gains), "true_gain_ci": bootstrap(gains),
        "per_hour": sum(gains) / hours, "per_training_hour": sum(gains) / training_hours, "per_wall_hour": sum(gains) / wall_hours, "keeps": keeps,
        "false_keeps": false, "false_rate": false / keeps if keeps else 0.0, "false_ci": wilson(false, keeps),
        "clear_false_keeps": sum(r["clear_false_keeps"] for r in rows),
        "harm": fmean(r["harm"] for r in rows), "power": hits / (hits + misses) if hits + misses else float("nan"),
        "runs_per_candidate": sum(r["runs"] for r in rows) / candidates if candidates else float("nan"),
        "candidates": fmean(r["candidates"] for r in rows), "crashes": sum(r["crashes"] for r in rows),
        "confirm_runs": fmean(r["confirm_runs"] for r in rows),
        "sigma_hat": fmean(r["sigma_hat"] for r in rows if not math.isnan(r["sigma_hat"]))
        if any(not math.isnan(r["sigma_hat"]) for r in rows) else float("nan"),
        "claim_error": fmean(r["claimed"] - r["true_gain"] for r in rows),
        "claim_abs_error": fmean(abs(r["claimed"] - r["true_gain"]) for r in rows),
        "rollbacks": sum(r["rollbacks"] for r in rows),
    }


def fresh_sigma(trainer: Trainer) -> float:
    """The per-run σ on the test split, pooled over every model retrained for the truth."""
    by_model = {}
    for (key, seed, split), run in trainer.runs.items():
        if split == "test" and seed in trainer.test_seeds and not math.isnan(run.metric):
            by_model.setdefault(key, []).append(run.metric)
    groups = [g for g in by_model.values() if len(g) == len(trainer.test_seeds)]
    squares = sum(sum((x - fmean(g)) ** 2 for x in g) for g in groups)
    return math.sqrt(squares / sum(len(g) - 1 for g in groups))


def markdown(epochs: int, campaigns: int, table: dict, sigma_fresh: float, command: str, trainer: Trainer,
             comparisons: dict | None = None) -> str:
    lines = [
        f"## digits, {epochs} epoch(s), {campaigns} campaigns per rule", "", f"`{command}`", "",
        f"Fresh per-run σ (test split, {len(trainer.test_seeds)} seeds per model): {sigma_fresh:.4f}. True gain: the final "
        f"best minus the baseline, each the mean of {len(trainer.test_seeds)} test-split seeds; interval: bootstrap over campaigns (95 %). False "
        "keep: a keep whose true delta against the best before it is ≤ 0 (Wilson 95 % interval); clearly false: "
        f"below 0 by more than {TRUTH_Z} paired standard errors of that delta over the test seeds. Power: share "
        "of candidates truly better than their best by more than the fresh σ that were kept (discards re-scored "
        f"on a sample of {DISCARD_SAMPLE} per campaign). Per train-h: true gain per hour of training (all runs, "
        "confirmations included); per run-h: per hour of whole runs, start-up included; per wall-hour: with the candidates of one racing iteration at once. A run "
        f"costs its start-up ({trainer.startup:.2f} s) and its training; each further seed in one run its training "
        f"and {trainer.extra:.2f} s (benchmarks/seeds_in_one_run.py). Budgets count single runs of the baseline, path confirmations included.", "",
        "| budget | rule | true gain [95 %] | per train-h | per run-h | per wall-h | keeps | false keeps [95 %] | harm | power "
        "| runs/cand | confirm runs | rollbacks | σ̂ (run) | claimed − true | abs | clearly false |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for budget, rules in table.items():
        for rule, t in rules.items():
            lo, hi = t["true_gain_ci"]
            flo, fhi = t["false_ci"]
            lines.append(
                f"| {budget} | {rule} | {t['true_gain']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {t['per_training_hour']:.1f} | {t['per_hour']:.1f} "
                f"| {t['per_wall_hour']:.1f} | {t['keeps']} | {t['false_keeps']}/{t['keeps']} = {t['false_rate']:.0%} "
                f"[{flo:.0%}, {fhi:.0%}] | {t['harm']:+.4f} | {t['power']:.0%} | {t['runs_per_candidate']:.2f} "
                f"| {t['confirm_runs']:.1f} | {t['rollbacks']} | {t['sigma_hat']:.4f} | {t['claim_error']:+.4f} "
                f"| {t['claim_abs_error']:.4f} | {t['clear_false_keeps']}/{t['keeps']} |")
    return "\n".join(lines + comparison_lines(comparisons or {})) + "\n"


def comparison_lines(comparisons: dict) -> list[str]:
    """The table of each rule against greedy (against()), keyed by (budget, rule)."""
    if not comparisons:
        return []
    lines = ["", "Against greedy, paired by campaign (bootstrap over campaigns, 95 %; ∞: greedy's resampled gain ≤ 0):", "",
             "| budget | rule | true gain ÷ greedy's [95 %] | minus greedy's [95 %] |", "|---:|---|---|---|"]
    for (budget, rule), c in comparisons.items():
        lo, hi = c["ratio_ci"]
        dlo, dhi = c["difference_ci"]
        lines.append(f"| {budget} | {rule} | {c['ratio']:.2f} × [{lo:.2f}, {hi:.2f}] "
                     f"| {c['difference']:+.4f} [{dlo:+.4f}, {dhi:+.4f}] |")
    return lines


def main() -> None:
    global SEEDS, BUDGETS  # --seeds, --budgets: every campaign of this process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--truth-seeds", type=int, default=TRUTH_SEEDS,
                        help="test-split seeds per model for the truth (more: a false keep is told from a tiny true one)")
    parser.add_argument("--first-run", default="third",
                        help="where seeds train in one run, a candidate's first run: a third of them, at least 8, as the "
                             "loop trains it; all (a side run, written to search_quality_e<epochs>_all_seeds_at_once.md); "
                             "or a number of seeds (written to search_quality_e<epochs>_first_run_<N>.md)")
    parser.add_argument("--second-run", default="none", type=second_run_rule,
                        help="where seeds train in one run and the keep rule asks for more: none, as the loop (decided on "
                             "the first run); rest (the leader at all the rest of its seeds in a second run) or a number "
                             "of them (a side run, written to search_quality_e<epochs>_second_run_<rest|N>.md)")
    parser.add_argument("--baseline-free", action="store_true",
                        help="leave setup's runs of the baseline out of every rule's budget (a side run, written to "
                             "search_quality_e<epochs>_baseline_free.md)")
    parser.add_argument("--start-up", type=start_up_seconds, default=None,
                        help="every run's start-up costs this many seconds instead of the measured one: 0 stands for a "
                             "model whose runs are all training, as long runs are (a side run, written to "
                             "search_quality_e<epochs>_start_up_<seconds>.md)")
    parser.add_argument("--no-early-stop", dest="early_stop", action="store_false",
                        help="train every candidate's first run to its last seed where seeds train in one run, and every "
                             "screen to its last epoch, as `autoraysearch run --no-early-stop` does (a side run, written to "
                             "search_quality_e<epochs>_no_early_stop.md); the loop stops a run once it can no longer be kept")
    parser.add_argument("--noise", default="", type=noise_overrides,
                        help="NAME=VALUE,…: campaign/noise.py constants for this run only (a side run, written to "
                             "search_quality_e<epochs>_noise_<NAME>_<VALUE>….md)")
    parser.add_argument("--seeds", type=int, default=None,
                        help=f"where each seed is a run of its own, the product's --seeds (default {DEFAULT_SEEDS}): the baseline's "
                             "seeds in setup and the most a candidate gets (a side run, written to "
                             "search_quality_e<epochs>_seeds_<N>.md)")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS, type=budgets_list,
                        help=f"the budgets to report, in runs of the baseline (default {','.join(map(str, DEFAULT_BUDGETS))}; others: a side run, "
                             "written to search_quality_e<epochs>_budgets_<N>_<M>….md)")
    parser.add_argument("--pruning", default="", type=pruning_overrides,
                        help="NAME=VALUE,…: campaign/pruning.py constants for this run only, e.g. STOP_Z=1.5 (a side run, "
                             "written to search_quality_e<epochs>_pruning_<NAME>_<VALUE>….md)")
    args = parser.parse_args()
    try:
        first_run = first_run_rule(args.first_run)
    except argparse.ArgumentTypeError as problem:
        parser.error(str(problem))
    for name, value in args.noise.items():
        setattr(noise, name, value)
    for name, value in args.pruning.items():
        setattr(pruning, name, value)
    BUDGETS = args.budgets
    if args.seeds is not None:
        if args.seeds < 2:
            parser.error("--seeds takes 2 or more: with 1 the paired rules are greedy")
        SEEDS = args.seeds
    trainer = Trainer(args.epochs, args.truth_seeds, first_run, args.second_run, args.baseline_free, args.start_up,
                      args.early_stop)
    command = training_cache.command_line("search_quality.py")
    states = {b: {r: [] for r in args.rules.split(",")} for b in BUDGETS}
    for campaign in range(args.campaigns):
        for rule in args.rules.split(","):
            for budget, state in run_campaign(rule, campaign, trainer).items():
                states[budget][rule].append(state)
        print(f"campaign {campaign}: {trainer.trained} runs trained so far", flush=True)
    judged = {b: {r: [] for r in rules} for b, rules in states.items()}
    for budget, rules in states.items():
        for rule, mine in rules.items():
            for state in mine:
                judged[budget][rule].append(judge(state, trainer, 0.0))
    sigma_fresh = fresh_sigma(trainer)
    for budget, rules in states.items():  # power needs the fresh σ, known only once the truth is in
        for rule, mine in rules.items():
            judged[budget][rule] = [judge(s, trainer, sigma_fresh) for s in mine]
    table = {b: {r: totals(rows) for r, rows in rules.items()} for b, rules in judged.items()}
    comparisons = {(budget, rule): against(mine, rules["greedy"]) for budget, rules in judged.items()
                   for rule, mine in rules.items() if rule != "greedy" and "greedy" in rules}
    text = markdown(args.epochs, args.campaigns, table, sigma_fresh, command, trainer, comparisons)
    name, text = side_run(args, text)
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.md").write_text(text)
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(
        {"command": command, "table": table, "campaigns": judged, "sigma_fresh": sigma_fresh,
         "against_greedy": {f"{b} {r}": c for (b, r), c in comparisons.items()}}, indent=1) + "\n")
    write_summary()


def side_run(args: argparse.Namespace, text: str) -> tuple[str, str]:
    """The file name and heading of this run's table: the regime's own for the loop's rules and settings,
    another for a what-if or a side run, so that it never takes the default table's place."""
    e, default = args.epochs, f"search_quality_e{args.epochs}.md"
    sides = []  # (file name suffix, heading, what the loop does instead)
    if any(rule in WHAT_IF for rule in args.rules.split(",")):
        sides.append(("_what_if", f"What-if at {e} epoch(s): rules the loop does not have yet (see the module's docstring)", ""))
    if args.first_run == "all":
        sides.append(("_all_seeds_at_once", f"Search quality at {e} epoch(s) with every candidate's seeds in its first run (not the default)",
                      f"The loop trains a third of them (at least 8) and decides on those ({default})."))
    elif args.first_run != "third":
        sides.append((f"_first_run_{args.first_run}",
                      f"Search quality at {e} epoch(s) with a candidate's first run at {args.first_run} seeds (not the default)",
                      f"Setup's run of the baseline trains {args.first_run} seeds too. The loop trains a third of a candidate's seeds "
                      f"(at least 8) and decides on those ({default})."))
    if args.second_run is not None:
        at = "all the rest of its seeds" if args.second_run == 0 else f"{args.second_run} seeds at most"
        sides.append((f"_second_run_{args.second_run or 'rest'}",
                      f"Search quality at {e} epoch(s) with a candidate's second run at {at} (not the default)",
                      f"The loop decides every candidate on its first run's seeds ({default})."))
    if args.baseline_free:
        sides.append(("_baseline_free",
                      f"Search quality at {e} epoch(s) with setup's runs of the baseline left out of the budget (not the default)",
                      "Every rule's budget starts after setup here; the default tables charge the baseline's seeds, as a user "
                      f"pays for them ({default})."))
    if args.start_up is not None:
        sides.append((f"_start_up_{args.start_up:g}",
                      f"Search quality at {e} epoch(s) with every run's start-up costing {args.start_up:g} s (not the default)",
                      "0 s stands for a model whose runs are all training: long runs, where each seed is a run of its own "
                      f"and the loop decides with the paired rule. The default tables charge the start-up measured on digits ({default})."))
    if not args.early_stop:
        sides.append(("_no_early_stop",
                      f"Search quality at {e} epoch(s) with every candidate's first run trained to its last seed and every "
                      "screen to its last epoch (not the default)",
                      "The loop stops a run of seeds, or a screen between epochs, once it can no longer be kept "
                      f"(campaign/seed_watch.py, campaign/pruning.py; {default})."))
    if args.noise:
        settings = ", ".join(f"{k} = {v:g}" for k, v in args.noise.items())
        sides.append(("".join(f"_noise_{k}_{v:g}" for k, v in args.noise.items()),
                      f"Search quality at {e} epoch(s) with {settings} (not the default)",
                      "The loop's values are in autoraysearch/campaign/noise.py."))
    if getattr(args, "seeds", None) is not None:
        sides.append((f"_seeds_{args.seeds}", f"Search quality at {e} epoch(s) with --seeds {args.seeds} (not the default)",
                      f"Where each seed is a run of its own, the loop's default is --seeds {DEFAULT_SEEDS}: the baseline's seeds in setup "
                      "and the most a candidate gets."))
    if getattr(args, "budgets", DEFAULT_BUDGETS) != DEFAULT_BUDGETS:
        runs = ", ".join(map(str, args.budgets))
        sides.append(("_budgets_" + "_".join(map(str, args.budgets)),
                      f"Search quality at {e} epoch(s) with budgets of {runs} runs (not the default)",
                      f"The default tables report budgets of {' and '.join(map(str, DEFAULT_BUDGETS))} runs ({default})."))
    if getattr(args, "pruning", None):
        settings = ", ".join(f"{k} = {v:g}" for k, v in args.pruning.items())
        sides.append(("".join(f"_pruning_{k}_{v:g}" for k, v in args.pruning.items()),
                      f"Search quality at {e} epoch(s) with early stopping's {settings} (not the default)",
                      "The loop's values are in autoraysearch/campaign/pruning.py."))
    if not sides:
        return f"search_quality_e{e}", text
    headings = "".join(f"# {heading}\n\n" + (f"{instead}\n\n" if instead else "") for _, heading, instead in sides)
    return f"search_quality_e{e}" + "".join(suffix for suffix, _, _ in sides), headings + text.replace("## ", "### ", 1)


def write_summary() -> None:
    """search_quality.md: every regime's latest table, by epochs (kept side runs, named otherwise, left out)."""
    regimes = sorted((p for p in RESULTS_DIR.glob("search_quality_e*.md") if re.fullmatch(r"search_quality_e\d+", p.stem)),
                     key=lambda p: int(p.stem.rsplit("_e", 1)[1]))
    (RESULTS_DIR / "search_quality.md").write_text(
        "# Search quality: decision rules over cached real training runs\n\n"
        + "\n".join(p.read_text() for p in regimes))


if __name__ == "__main__":
    main()
