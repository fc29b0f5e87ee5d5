"""Kept for `net` scripts generated before the entry point moved to cnm.cli.entry
(a worktree that has not re-run scripts/setup.sh): the same entry point."""

from cnm.cli.entry import main

__all__ = ["main"]
