"""Every git operation of autoraysearch, in one place (GitPython)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import git

from autoraysearch.errors import AutoraysearchError

# Used only when the user has no git identity configured, so commits still work.
_FALLBACK_IDENTITY = {"name": "autoraysearch", "email": "autoraysearch@localhost"}


class ExperimentRepo:
    """The git repository that holds an experiment folder (the folder may be a subfolder of it)."""

    def __init__(self, experiment_dir: Path):
        self.experiment_dir = Path(experiment_dir).resolve()
        if not self.experiment_dir.is_dir():
            raise AutoraysearchError(f"{self.experiment_dir} is not a folder; pass the experiment folder.")
        try:
            self.repo = git.Repo(self.experiment_dir, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise AutoraysearchError(
                f"{self.experiment_dir} is not in a git repository; run `git init` there and commit model.py."
            ) from None
        self.root = Path(self.repo.working_tree_dir).resolve()

    # ---- reading ----

    def relpath(self, name: str) -> str:
        """A file of the experiment folder as git names it (relative to the repository root)."""
        return (self.experiment_dir / name).relative_to(self.root).as_posix()

    def head_sha(self) -> str:
        return self.repo.head.commit.hexsha

    def current_branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        return None if self.repo.head.is_detached else self.repo.active_branch.name

    def branch_exists(self, name: str) -> bool:
        return name in self.repo.heads

    def branch_sha(self, name: str) -> str:
        return self.repo.heads[name].commit.hexsha

    def uncommitted(self, names: list[str]) -> list[str]:
        """Which of these experiment files differ from HEAD or are not tracked at all."""
        paths = [self.relpath(n) for n in names]
        out = self.repo.git.status("--porcelain", "--untracked-files=all", "--", *paths)
        dirty = {line[3:].strip().strip('"') for line in out.splitlines() if line.strip()}
        return [n for n, p in zip(names, paths) if p in dirty]

    def is_tracked(self, name: str) -> bool:
        return bool(self.repo.git.ls_files("--", self.relpath(name)).strip())

    def file_at(self, sha: str, name: str) -> str:
        return self.repo.git.show(f"{sha}:{self.relpath(name)}", strip_newline_in_stdout=False)

    def log_lines(self, ref: str, limit: int = 20) -> list[str]:
        """`git log --oneline` of a branch, newest first."""
        return self.repo.git.log("--oneline", f"-n{limit}", ref, "--").splitlines()

    def short(self, sha: str) -> str:
        return self.repo.git.rev_parse("--short=7", sha)

    def resolve(self, ref: str) -> str | None:
        """The full SHA of a commit named by a (short) SHA or ref, or None when there is no such commit."""
        try:
            return self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            return None

    def first_parent_history(self, ref: str, limit: int = 10_000):
        """(sha, subject) of each commit of a branch, newest first, following first parents only."""
        out = self.repo.git.log("--first-parent", f"-n{limit}", "--format=%H %s", ref, "--")
        for line in out.splitlines():
            sha, _, subject = line.partition(" ")
            yield sha, subject

    def branches_under(self, prefix: str) -> list[str]:
        """The local branches whose names start with prefix."""
        return [head.name for head in self.repo.heads if head.name.startswith(prefix)]

    # ---- writing ----

    def remove_stale_index_lock(self, min_age_s: float = 2.0) -> str | None:
        """Remove a .git/index.lock that no process holds open (left by a git killed mid-write); say so, or None.

        A crash at the wrong moment (kill -9, a lost machine) leaves it behind, and every git command
        after it fails until it is gone. One that a running git still holds, or that is brand new, stays.
        """
        lock = Path(self.repo.git_dir) / "index.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        if age < min_age_s or _held_open(lock):
            return None
        lock.unlink(missing_ok=True)
        return f"removed a stale {lock} that a git process killed mid-write had left"

    def commit_files(self, names: list[str], message: str) -> str:
        """Commit exactly these files (whatever else the user has staged stays staged); return the SHA."""
        paths = [self.relpath(n) for n in names]
        self.repo.git.add("--", *paths)
        with self._identity():
            self.repo.git.commit("--no-verify", "--only", "-m", message, "--", *paths)
        return self.head_sha()

    def switch_to_branch(self, name: str) -> bool:
        """Check out a campaign branch, creating it at HEAD; uncommitted work is carried along. True if created."""
        created = not self.branch_exists(name)
        try:
            if created:
                self.repo.git.checkout("-b", name)
            elif self.current_branch() != name:
                self.repo.git.checkout(name)
        except git.GitCommandError as exc:
            reason = (exc.stderr or "").strip().splitlines()
            detail = reason[-1] if reason else "git checkout failed"
            raise AutoraysearchError(
                f"cannot switch to branch {name} ({detail.removeprefix('stderr: ').strip()}); "
                "commit or stash the conflicting changes and run again."
            ) from None
        return created

    def move_branch_to(self, sha: str, name: str) -> None:
        """Point the checked-out campaign branch at sha and take only that file from it.

        Used instead of `git reset --hard`: the index and every other file, with any
        uncommitted work of the user's, stay exactly as they are.
        """
        self.repo.git.reset("--soft", sha)
        self.repo.git.checkout(sha, "--", self.relpath(name))

    def commit_file_beside(self, base_sha: str, name: str, text: str, message: str, branch: str) -> str:
        """Commit a new version of one file on top of base_sha as `branch`, without a checkout.

        Plumbing only (blob, tree, commit, ref): the working tree and the user's index are untouched,
        so any number of candidates can be committed while the campaign branch stays checked out.
        """
        path = self.relpath(name)
        with tempfile.TemporaryDirectory(prefix="autoraysearch-index-") as tmp:
            content = Path(tmp, "content")
            content.write_text(text)
            blob = self.repo.git.hash_object("-w", "--path", path, str(content))
            index = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            self.repo.git.read_tree(base_sha, env=index)
            self.repo.git.update_index("--add", "--cacheinfo", f"100644,{blob},{path}", env=index)
            tree = self.repo.git.write_tree(env=index)
        with self._identity():
            sha = self.repo.git.commit_tree(tree, "-p", base_sha, "-m", message)
        self.repo.git.branch("-f", branch, sha)
        return sha

    def set_branch(self, name: str, sha: str) -> None:
        """Point a branch at sha without touching the index or the working tree."""
        self.repo.git.update_ref(f"refs/heads/{name}", sha)

    def restore_file(self, name: str) -> None:
        """Put one file back as HEAD has it (the index entry too); nothing else is touched."""
        self.repo.git.checkout("HEAD", "--", self.relpath(name))

    def delete_branches(self, names: list[str]) -> None:
        existing = [n for n in names if self.branch_exists(n)]
        if existing:
            self.repo.git.branch("-D", *existing)

    def ensure_ignored(self, entries: list[str]) -> bool:
        """Add entries to the experiment folder's .gitignore; True if the file changed."""
        path = self.experiment_dir / ".gitignore"
        lines = path.read_text().splitlines() if path.exists() else []
        missing = [e for e in entries if e not in lines]
        if not missing:
            return False
        text = "\n".join(lines + missing) + "\n"
        path.write_text(text)
        return True

    def _identity(self):
        return _GitIdentity(self.repo)


class _GitIdentity:
    """Supplies a committer identity through the environment only when git has none configured."""

    def __init__(self, repo: git.Repo):
        self.repo = repo
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        reader = self.repo.config_reader()
        if reader.get_value("user", "email", "") or os.environ.get("GIT_AUTHOR_EMAIL"):
            return self
        for role in ("AUTHOR", "COMMITTER"):
            for key, value in _FALLBACK_IDENTITY.items():
                var = f"GIT_{role}_{key.upper()}"
                self.saved[var] = os.environ.get(var)
                self.repo.git.update_environment(**{var: value})
        return self

    def __exit__(self, *exc):
        for var, value in self.saved.items():
            self.repo.git.update_environment(**{var: value})


def _held_open(path: Path) -> bool:
    """Whether any process this user can see has `path` open (Linux /proc; elsewhere assume it is)."""
    if not Path("/proc/self/fd").is_dir():
        return True
    target = str(path.resolve())
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(link) == target for link in fd_dir.iterdir()):
                return True
        except OSError:
            continue
    return False
