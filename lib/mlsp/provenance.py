"""Which code a run's results come from: the git commit, and whether the code differed from it.

Every result JSON records `git_commit` (the 40-hex commit of the code, or None where git or the
repository is unavailable) and `git_dirty` (True when tracked files other than a run's own outputs
differed from that commit; None when unknown).

Both are read once, when `mlsp run` starts (`for_kernels`), and passed to the notebooks' kernels in
environment variables: a run of 20 minutes rewrites files under results/ and data/, and someone may
commit meanwhile, so asking git again when each JSON is saved would describe other code than the
one that ran. A notebook run by hand (in Jupyter) has no such variables and asks git itself.

What counts as dirty: a modified or staged tracked file anywhere in the kit except under OUTPUT_DIRS
(the committed results/demo is rewritten by the run itself; data/ holds generated data). Untracked
files are ignored: a new notebook or module that nothing imports does not change a result, and one
that is imported must be committed before the commit can reproduce the run anyway.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from mlsp.paths import REPO_ROOT

COMMIT_ENV = "MLSP_GIT_COMMIT"  # the commit the run started from; "" when git could not tell
DIRTY_ENV = "MLSP_GIT_DIRTY"  # "1" dirty, "0" clean, "" unknown
OUTPUT_DIRS = ("results", "data")  # what a run writes: never makes the code dirty


def _git(repo: Path, *arguments: str) -> str:
    # --no-optional-locks: `git status` would otherwise refresh the index, racing a commit made meanwhile
    return subprocess.run(["git", "--no-optional-locks", *arguments], cwd=repo, capture_output=True, text=True, check=True).stdout


def source_state(repo: Path = REPO_ROOT) -> dict:
    """{"git_commit": str | None, "git_dirty": bool | None} of the working tree at `repo`, asked of
    git now. Never raises: without git, outside a repository or in a tarball both are None."""
    try:
        commit = _git(repo, "rev-parse", "--verify", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    # pathspecs are relative to `repo`, so a kit inside a larger repository judges only itself
    excluded = [f":(exclude){name}" for name in OUTPUT_DIRS]
    try:
        changed = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded).strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": commit, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(changed)}


def run_state(repo: Path = REPO_ROOT) -> dict:
    """The state a result JSON records: the one `mlsp run` read when it started (COMMIT_ENV,
    DIRTY_ENV), else git's answer now (a notebook run by hand)."""
    if COMMIT_ENV in os.environ:
        dirty = os.environ.get(DIRTY_ENV, "")
        return {"git_commit": os.environ[COMMIT_ENV] or None, "git_dirty": {"1": True, "0": False}.get(dirty)}
    return source_state(repo)


@contextmanager
def for_kernels(repo: Path = REPO_ROOT):
    """Read the source state once and put it in os.environ (which the kernels papermill starts
    inherit) until the block ends; the previous values are restored after. Yields the state."""
    state = source_state(repo)
    values = {
        COMMIT_ENV: state["git_commit"] or "",
        DIRTY_ENV: {True: "1", False: "0"}.get(state["git_dirty"], ""),
    }
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield state
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
