"""A git worktree of the code before a change, for benches that measure it beside this tree."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_worktree(path: Path, ref: str) -> None:
    """Check `ref` out, detached, at `path`."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(path), ref], check=True
    )


def remove_worktree(path: Path) -> None:
    """Remove the worktree at `path`; a bench that failed before adding it has none."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=False
    )
