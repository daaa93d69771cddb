"""End to end on the real thing: git repositories, a local Ray, a Prefect API, torch training on digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import counting_train_py, git, hang, is_running, loop, results, setup
from autoraysearch.campaign.results_log import run_timing

pytestmark = pytest.mark.slow


def test_campaign_keeps_only_improvements_and_never_touches_the_users_work(services, example_repo: Path):
    exp = example_repo
    (exp / "notes.md").write_text("committed notes\n")
    git(exp, "add", "notes.md")
    git(exp, "commit", "-q", "-m", "notes")
    git(exp, "branch", "my-feature")
    feature_sha = git(exp, "rev-parse", "my-feature")

    summary = setup(exp, epochs=1)
    assert 0.3 < summary.baseline <= 1.0
    setup_sha = git(exp, "rev-parse", "main")
    assert git(exp, "show", "--name-only", "--format=", "main").split() == [".gitignore", "autoraysearch.toml", "train.py"]

    # Uncommitted work of the user's, staged and unstaged, must survive any keep or discard.
    (exp / "notes.md").write_text("staged edit\n")
    git(exp, "add", "notes.md")
    (exp / "scratch.txt").write_text("untracked\n")

    run = loop(exp, max_iterations=3, tag="t1")
    log = results(exp)
    assert [r.iteration for r in log.rows] == ["0", "1", "2", "3"]
    assert run.iterations == 3 and run.branch == "autoraysearch/t1"
    # Every candidate trained (the example's mutations all pass pre-flight and fit the CPU), was measured against
    # the best before it, and was kept only if it beat that best.
    best = log.rows[0].metric
    for row in log.rows[1:]:
        assert row.status in {"keep", "discard"} and row.metric is not None, row
        assert row.delta == pytest.approx(row.metric - best, abs=2e-4), row  # both rounded to 4 places
        if row.status == "keep":
            assert row.metric > best and row.commit != "-", row
            best = row.metric
        else:
            assert row.commit == "-", row

    # The branch holds exactly the baseline and the kept commits, in order.
    on_branch = git(exp, "rev-list", "--reverse", f"{setup_sha}..autoraysearch/t1").split()
    kept = [r.commit for r in log.rows if r.status == "keep"]
    assert [sha[:7] for sha in on_branch] == kept
    assert run.kept == len(kept)
    assert git(exp, "rev-parse", "HEAD") == git(exp, "rev-parse", "autoraysearch/t1") == run.best_sha
    assert (exp / "model.py").read_text() == git(exp, "show", "HEAD:model.py") + "\n"
    assert run.best_metric == best == log.best().metric

    # Nothing of the user's moved.
    assert git(exp, "rev-parse", "main") == setup_sha
    assert git(exp, "rev-parse", "my-feature") == feature_sha
    assert (exp / "notes.md").read_text() == "staged edit\n"
    assert (exp / "scratch.txt").read_text() == "untracked\n"
    assert "M  notes.md" in git(exp, "status", "--porcelain")
    for row in log.rows[1:]:
        assert "epoch=1" in (exp / ".autoraysearch" / "logs" / f"{row.iteration}.log").read_text()
    assert not (exp / ".autoraysearch" / "run.lock").exists()

    # A second run resumes: numbering continues on the same branch, the best is read back.
    git(exp, "checkout", "-q", "main")
    again = loop(exp, max_iterations=1)
    assert again.branch == "autoraysearch/t1"
    assert [r.iteration for r in results(exp).rows][-1] == "4"
    assert len({r.extra["candidate"] for r in results(exp).rows}) == 5  # never the same model twice


def test_crashes_missing_metrics_and_hangs_are_results_not_failures(services, example_repo: Path, trial_dir: Path):
    exp = example_repo
    pids_file = trial_dir / "pids"
    (exp / "train.py").write_text(counting_train_py(
        trial_dir / "calls", 'print("val_loss=0.5")', 'raise RuntimeError("boom in candidate")',
        'print("training finished without a metric")', later=hang(pids_file)))
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "my own train.py")

    summary = setup(exp, train_py="train.py", metric="val_loss", direction="lower")
    assert summary.baseline == 0.5
    best_before = git(exp, "rev-parse", "HEAD")

    run = loop(exp, max_iterations=3, trial_timeout=8)  # long enough to start on a loaded machine
    rows = results(exp, higher_is_better=False).rows
    assert [r.status for r in rows] == ["baseline", "crash", "crash", "timeout"]
    assert rows[1].description.endswith("(crash: RuntimeError: boom in candidate)")
    assert "last line of output is not val_loss=VALUE" in rows[2].description
    assert rows[3].description.endswith("(timeout: killed after the trial timeout of 8 s)")
    assert all(r.commit == "-" and r.metric is None for r in rows[1:])
    assert run.best_sha == best_before == git(exp, "rev-parse", "HEAD")
    assert git(exp, "status", "--porcelain", "model.py") == ""

    trial_pid, grandchild_pid = map(int, pids_file.read_text().split())
    assert not is_running(trial_pid) and not is_running(grandchild_pid)


def test_status_and_demo_from_the_command_line(services, tmp_path: Path, capsys):
    from autoraysearch.cli import main

    target = tmp_path / "demo"
    assert main(["demo", str(target), "--iterations", "3"]) == 0
    out = capsys.readouterr().out
    assert "initial state" in out and "best val_acc=" in out
    log = results(target)
    assert [r.iteration for r in log.rows if r.status not in ("confirmed", "rollback", "best-seeds")] == ["0", "1", "2", "3"]
    # A campaign that kept something ends by confirming its path on fresh seeds, and says what held.
    paths = [r.iteration for r in log.rows if r.status in ("confirmed", "rollback")]
    assert paths == (["3.path"] if "keep" in [r.status for r in log.rows] else [])
    assert log.rows[-1].iteration == paths[-1] if paths else log.rows[-1].iteration == "3"
    assert "confirmed gain" in out or "no gain confirmed on fresh seeds yet" in out
    assert git(target, "branch", "--show-current").startswith("autoraysearch/")
    # The demo's runs are mostly start-up: setup chose to train a candidate's seeds in one run, and how many.
    from autoraysearch.campaign.settings import load_settings
    from autoraysearch.trials.runs import FEWEST_SEEDS_IN_ONE_RUN, MOST_SEEDS_IN_ONE_RUN, confirmation_seeds, first_run_seeds

    settings = load_settings(target)
    assert settings.seeds_in_one_run and FEWEST_SEEDS_IN_ONE_RUN <= settings.seeds <= MOST_SEEDS_IN_ONE_RUN
    # The baseline at its first seed alone (its timing chose this), then at the rest of a first run's seeds in one run.
    first = first_run_seeds(settings.seeds)
    assert first < settings.seeds and log.rows[0].extra["seeds"] == str(first)
    logs = target / ".autoraysearch" / "logs"
    assert (logs / "baseline.log").exists() and (logs / "baseline-seeds.log").exists()
    assert not (logs / "baseline-seed2.log").exists()
    # Every candidate is decided on its first run's seeds, paired with the best at each: no second run, and the
    # best (the baseline, or a keep trained at those seeds) never lacks one, so no best-seeds row either.
    candidates = [r for r in log.rows if r.iteration in ("1", "2", "3") and r.status in ("keep", "discard")]
    assert candidates
    for row in candidates:  # a run stopped between seeds is logged pruned (seed_watch)
        assert row.extra["seeds"] == str(first) and len(row.extra["diffs"].split(",")) == first
    assert not [r for r in log.rows if r.status == "best-seeds"]
    for path in (r for r in log.rows if r.status in ("confirmed", "rollback")):  # a first run's worth of fresh seeds
        assert len(path.extra["diffs"].split(",")) == confirmation_seeds(settings.seeds)
    # The baseline's run of its seeds held the first confirmation's too: that confirmation trained the best alone.
    assert len(log.rows[0].extra["ahead"].split(",")) == confirmation_seeds(settings.seeds)
    assert not list(logs.glob("*.path-point*"))
    # What its first run took to start and to train its seed is kept, for what a run of k seeds costs (short_campaign).
    start_up, per_seed = run_timing(log.rows[0])
    assert 0 <= per_seed < start_up  # the demo's seed trains in milliseconds

    assert main(["status", str(target)]) == 0
    out = capsys.readouterr().out
    assert "campaign branch autoraysearch/" in out
    assert "no run is active" in out
    assert "best val_acc=" in out


def test_a_baseline_that_trains_longer_than_it_starts_gets_a_run_per_seed(services, example_repo: Path):
    from autoraysearch.campaign.settings import load_settings

    setup(example_repo, time_budget=30.0, batch_size=16, seeds=2)  # 30 s of training, against seconds of start-up and evaluation
    assert not load_settings(example_repo).seeds_in_one_run
    baseline = results(example_repo).rows[0]
    assert baseline.extra["seeds"] == "2" and len(baseline.extra["runs"].split(",")) == 2
    logs = example_repo / ".autoraysearch" / "logs"
    assert (logs / "baseline.log").exists() and (logs / "baseline-seed2.log").exists()
    assert not (logs / "baseline-seeds.log").exists()
    start_up, per_seed = run_timing(baseline)  # its first run's timing decided, and is kept
    assert per_seed > start_up


def test_setup_refuses_a_train_py_that_prints_no_metric_and_commits_nothing(services, example_repo: Path):
    from autoraysearch.errors import AutoraysearchError

    exp = example_repo
    (exp / "train.py").write_text("from model import Model\nprint('training done')\n")
    git(exp, "add", "train.py")
    git(exp, "commit", "-q", "-m", "my train.py")
    head = git(exp, "rev-parse", "HEAD")
    with pytest.raises(AutoraysearchError, match=r"the baseline run of train.py failed: the last line of output is "
                                                 r"not val_acc=VALUE \(it was: training done\); its output is in"):
        setup(exp, train_py="train.py")
    assert git(exp, "rev-parse", "HEAD") == head
    assert not (exp / "autoraysearch-results.tsv").exists()
    assert not (exp / "autoraysearch.toml").exists()
    assert "training done" in (exp / ".autoraysearch" / "logs" / "baseline.log").read_text()
