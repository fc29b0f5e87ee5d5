"""Regular expressions from users, matched in linear time.

Docker's filters take Go regular expressions (`name=web` matches "myweb"); Go's engine
is RE2, whose running time is linear in the text. Python's `re` backtracks: a filter
like `(a|a)*$x` against a 64-character name runs for ever, holding a worker thread and,
through the GIL, slowing the event loop. So user patterns go through RE2 here (Google's
binding), which also gives Docker's syntax. Errors are quiet (RE2 logs each bad pattern
to stderr otherwise: a client could fill the daemon's log).
"""

from __future__ import annotations

import functools
from typing import Any

MAX_PATTERN = 1024


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> Any:
    import re2  # only when a filter asks for it

    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20  # bounded memory per pattern too
    return re2.compile(pattern, options)


def compile_or_none(pattern: str) -> Any:
    """The compiled pattern, or None when it is not a valid expression (or too long)."""
    if len(pattern) > MAX_PATTERN:
        return None
    try:
        return _compiled(pattern)
    except Exception:  # re2.error, and TypeError/ValueError for what RE2 cannot take
        return None


def search(pattern: str, text: str) -> bool | None:
    """Does `pattern` occur in `text`? None when the pattern is not valid."""
    compiled = compile_or_none(pattern)
    return None if compiled is None else compiled.search(text) is not None


def fullmatch(pattern: str, text: str) -> bool | None:
    compiled = compile_or_none(pattern)
    return None if compiled is None else compiled.fullmatch(text) is not None
