"""Failures nobody planned for (git on a full disk, the OS) become one sentence, from a real full disk."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from helpers import fill_disk, small_tmpfs

from autoraysearch.errors import describe_failure


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 1 MiB tmpfs (needs root), filled up once the test has what it needs on it."""
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


def test_git_on_a_full_disk_is_one_sentence_that_names_the_cause(full_disk: Path):
    repo = git.Repo.init(full_disk / "exp")
    (full_disk / "exp" / "model.py").write_text("class Model: pass\n")
    fill_disk(full_disk / "filler")
    with pytest.raises(git.GitCommandError) as failure:
        repo.git.add("model.py")
        repo.git.commit("-m", "x", "--author", "a <a@b>")
    sentence = describe_failure(failure.value)
    assert sentence.startswith("`git ") and "No space left on device" in sentence and "\n" not in sentence


def test_the_os_refusing_a_write_is_one_sentence(full_disk: Path):
    fill_disk(full_disk / "filler")
    with pytest.raises(OSError) as failure:
        (full_disk / "more.txt").write_text("x" * 100_000)
    sentence = describe_failure(failure.value)
    assert sentence.startswith("the disk is full") and "No space left on device" in sentence and "\n" not in sentence
