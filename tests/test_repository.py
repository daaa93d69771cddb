"""Git operations on real repositories: the user's work is never touched."""

from pathlib import Path

import pytest

from autoraysearch.errors import AutoraysearchError
from autoraysearch.campaign.repository import ExperimentRepo
from helpers import git, make_repo


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "exp", {"model.py": "class Model: pass\n", "notes.md": "v1\n", "other.py": "x = 1\n"})


def test_not_a_repository_is_one_sentence(tmp_path: Path):
    with pytest.raises(AutoraysearchError, match="is not in a git repository; run `git init`"):
        ExperimentRepo(tmp_path)


def test_commit_files_commits_only_model_py_and_leaves_staged_work_staged(repo_dir: Path):
    repo = ExperimentRepo(repo_dir)
    (repo_dir / "notes.md").write_text("v2 staged\n")
    git(repo_dir, "add", "notes.md")
    (repo_dir / "other.py").write_text("x = 2  # unstaged\n")
    (repo_dir / "model.py").write_text("class Model: width = 2\n")
    sha = repo.commit_files(["model.py"], "change model")
    assert git(repo_dir, "show", "--name-only", "--format=", sha) == "model.py"
    status = git(repo_dir, "status", "--porcelain")
    assert "M  notes.md" in status and " M other.py" in status


def test_move_branch_to_restores_model_py_only(repo_dir: Path):
    repo = ExperimentRepo(repo_dir)
    repo.switch_to_branch("autoraysearch/t")
    best = repo.head_sha()
    (repo_dir / "model.py").write_text("class Model: width = 2\n")
    repo.commit_files(["model.py"], "candidate")
    (repo_dir / "notes.md").write_text("uncommitted notes\n")
    git(repo_dir, "add", "notes.md")
    (repo_dir / "other.py").write_text("x = 3\n")
    repo.move_branch_to(best, "model.py")
    assert repo.head_sha() == best
    assert (repo_dir / "model.py").read_text() == "class Model: pass\n"
    assert (repo_dir / "notes.md").read_text() == "uncommitted notes\n"
    assert (repo_dir / "other.py").read_text() == "x = 3\n"
    assert "M  notes.md" in git(repo_dir, "status", "--porcelain")
    assert repo.uncommitted(["model.py"]) == []
    assert git(repo_dir, "rev-parse", "main") == best  # the user's branch never moved


def test_uncommitted_sees_modified_and_untracked_files(repo_dir: Path):
    repo = ExperimentRepo(repo_dir)
    assert repo.uncommitted(["model.py", "train.py"]) == []
    (repo_dir / "train.py").write_text("print(1)\n")
    (repo_dir / "model.py").write_text("class Model: pass  # edited\n")
    assert repo.uncommitted(["model.py", "train.py"]) == ["model.py", "train.py"]


def test_experiment_in_a_subfolder_of_the_repository(tmp_path: Path):
    root = make_repo(tmp_path / "mono", {"README": "x\n"})
    sub = root / "experiments" / "digits"
    sub.mkdir(parents=True)
    (sub / "model.py").write_text("class Model: pass\n")
    repo = ExperimentRepo(sub)
    repo.switch_to_branch("autoraysearch/sub")
    sha = repo.commit_files(["model.py"], "add model")
    assert git(root, "show", "--name-only", "--format=", sha) == "experiments/digits/model.py"
    assert repo.file_at(sha, "model.py") == "class Model: pass\n"  # byte-exact, as committed


def test_commits_work_without_a_configured_identity(repo_dir: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(repo_dir.parent))  # no ~/.gitconfig
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_AUTHOR_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_NAME", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    repo = ExperimentRepo(repo_dir)
    (repo_dir / "model.py").write_text("class Model: width = 4\n")
    sha = repo.commit_files(["model.py"], "no identity")
    assert git(repo_dir, "log", "-1", "--format=%ae", sha) == "autoraysearch@localhost"


def test_switching_branch_carries_uncommitted_work(repo_dir: Path):
    repo = ExperimentRepo(repo_dir)
    (repo_dir / "notes.md").write_text("work in progress\n")
    assert repo.switch_to_branch("autoraysearch/x") is True
    assert repo.current_branch() == "autoraysearch/x"
    assert (repo_dir / "notes.md").read_text() == "work in progress\n"
    git(repo_dir, "checkout", "-q", "main")
    assert repo.switch_to_branch("autoraysearch/x") is False


def test_commit_file_beside_leaves_the_working_tree_and_index_alone(repo_dir: Path):
    repo = ExperimentRepo(repo_dir)
    repo.switch_to_branch("autoraysearch/p")
    base = repo.head_sha()
    (repo_dir / "notes.md").write_text("staged\n")
    git(repo_dir, "add", "notes.md")
    before = git(repo_dir, "status", "--porcelain")
    sha_a = repo.commit_file_beside(base, "model.py", "class Model: width = 2\n", "candidate a", "autoraysearch/p-exp/1a")
    sha_b = repo.commit_file_beside(base, "model.py", "class Model: width = 3\n", "candidate b", "autoraysearch/p-exp/1b")
    assert git(repo_dir, "status", "--porcelain") == before
    assert repo.head_sha() == base and (repo_dir / "model.py").read_text() == "class Model: pass\n"
    assert git(repo_dir, "rev-parse", f"{sha_a}^") == base == git(repo_dir, "rev-parse", f"{sha_b}^")
    assert git(repo_dir, "show", "--name-only", "--format=", sha_a) == "model.py"
    assert repo.file_at(sha_b, "model.py") == "class Model: width = 3\n"
    assert repo.file_at(sha_a, "notes.md") == "v1\n"  # the rest of the tree is the base's

    repo.move_branch_to(sha_b, "model.py")  # keep b
    assert repo.head_sha() == sha_b and (repo_dir / "model.py").read_text() == "class Model: width = 3\n"
    assert "M  notes.md" in git(repo_dir, "status", "--porcelain")
    repo.delete_branches(["autoraysearch/p-exp/1a", "autoraysearch/p-exp/1b", "not-there"])
    assert "p-exp" not in git(repo_dir, "branch", "--list")


def test_a_stale_index_lock_is_removed_but_a_held_or_fresh_one_stays(tmp_path: Path):
    import os
    import time

    exp = make_repo(tmp_path / "exp", {"model.py": "class Model: pass\n"})
    repo = ExperimentRepo(exp)
    lock = exp / ".git" / "index.lock"
    lock.write_text("")
    assert repo.remove_stale_index_lock() is None and lock.exists()  # brand new: a git may be writing it
    old = time.time() - 60
    os.utime(lock, (old, old))
    with open(lock):  # a live git holds it
        assert repo.remove_stale_index_lock() is None and lock.exists()
    said = repo.remove_stale_index_lock()
    assert said is not None and "stale" in said and not lock.exists()
    (exp / "model.py").write_text("class Model: pass  # changed\n")
    repo.commit_files(["model.py"], "works again")  # git works after it
