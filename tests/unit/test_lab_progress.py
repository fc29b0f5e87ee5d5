"""`net lab up`'s plain progress (logs and pipes): one line per phase, out as the phase
ends, not when the process exits."""

from __future__ import annotations

import io
import sys

import pytest

from cnm.cli.lab import PlainProgress


class Pipe(io.StringIO):
    """stdout as a pipe: what a reader on the other end has seen so far."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = ""

    def flush(self) -> None:
        self.seen = self.getvalue()


def test_each_finished_phase_reaches_the_reader_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    progress = PlainProgress()
    progress("underlay", 0, 3, "start")
    progress("underlay", 1, 3, "step")
    assert out.seen == ""
    progress("underlay", 3, 3, "done")
    assert out.seen.startswith("underlay: 3 steps ok (") and out.seen.endswith("s)\n")
    progress("daemons", 0, 1, "start")
    progress("daemons", 0, 1, "fail", "h1: no such file")
    assert out.seen.splitlines()[-1] == "daemons: FAILED at h1: no such file"
