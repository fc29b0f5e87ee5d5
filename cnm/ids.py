"""Object IDs: 64 hex digits like Docker's, and name rules."""

from __future__ import annotations

import re
import secrets

from cnm.errors import InvalidParameter

# Docker's rule for container names, `[a-zA-Z0-9][a-zA-Z0-9_.-]+` on the whole name
# (Python's `$` would also match before a trailing newline: fullmatch, not match).
# Networks follow it too, one character allowed.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MAX_NAME = 64


def new_id() -> str:
    return secrets.token_hex(32)


def check_name(name: str, what: str = "network") -> str:
    if not name:
        raise InvalidParameter(f"{what} name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidParameter(f"{what} name {name[:20]!r}… is too long: at most {MAX_NAME} characters")
    if not _NAME.fullmatch(name) or (what == "container" and len(name) < 2):
        raise InvalidParameter(
            f"invalid {what} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            + (", at least two characters" if what == "container" else "")
        )
    return name
