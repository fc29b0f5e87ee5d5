"""The one error hierarchy of the project.

    CNMError                  base; never raised directly
    ├── InvalidParameter      bad input from the user          HTTP 400  exit 2
    ├── Forbidden             valid input, not allowed         HTTP 403  exit 5
    ├── NotFound              no such object                   HTTP 404  exit 3
    ├── Conflict              clashes with existing state      HTTP 409  exit 4
    ├── Unavailable           a dependency is down / times out HTTP 503  exit 6
    └── InternalError         a bug or an unexpected OS error  HTTP 500  exit 1

HTTP status and CLI exit codes are mapped here, once; the daemon and the client
translate through `http_status()` and `from_http()`.
"""

from __future__ import annotations


class CNMError(Exception):
    """Base of every error the stack raises on purpose."""

    status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidParameter(CNMError):
    status = 400
    exit_code = 2


class Forbidden(CNMError):
    status = 403
    exit_code = 5


class NotFound(CNMError):
    status = 404
    exit_code = 3


class Conflict(CNMError):
    status = 409
    exit_code = 4


class Unavailable(CNMError):
    status = 503
    exit_code = 6


class InternalError(CNMError):
    status = 500
    exit_code = 1


_BY_STATUS: dict[int, type[CNMError]] = {
    cls.status: cls for cls in (InvalidParameter, Forbidden, NotFound, Conflict, Unavailable, InternalError)
}


def http_status(exc: BaseException) -> int:
    """HTTP status for any exception: a CNMError's own, 500 for anything else."""
    return exc.status if isinstance(exc, CNMError) else 500


def from_http(status: int, message: str) -> CNMError:
    """Rebuild the error a daemon answered with, keeping its category."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = InvalidParameter if 400 <= status < 500 else InternalError
    return cls(message)
