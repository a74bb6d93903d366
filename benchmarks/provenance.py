"""Which code produced a benchmark result: the git commit and the tracked files changed since it."""

from __future__ import annotations

import subprocess
from typing import Any


def git_state() -> dict[str, Any]:
    """`{"git_commit": sha or None, "git_dirty_files": [...]}`; untracked files (results, caches) are ignored."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty_files": []}
    return {
        "git_commit": commit,
        "git_dirty_files": [ln[3:] for ln in dirty.splitlines() if ln[:2].strip() and not ln.startswith("??")],
    }


def describe(state: dict[str, Any]) -> str:
    """'commit abc123' plus the uncommitted tracked files, for a results header."""
    if not state.get("git_commit"):
        return "an unknown commit (not a git checkout)"
    text = f"commit `{state['git_commit'][:12]}`"
    if state.get("git_dirty_files"):
        text += f" (uncommitted changes in {', '.join(state['git_dirty_files'])})"
    return text
