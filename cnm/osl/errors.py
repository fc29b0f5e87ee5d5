"""errno -> cnm.errors, in one place.

The kernel answers netlink requests and syscalls with an errno. Callers of the OS
layer see only cnm.errors types; the message keeps what we tried and what the kernel
said, so a user can act on it.
"""

from __future__ import annotations

import errno as _errno
import os

from cnm.errors import CNMError, Conflict, Forbidden, InternalError, NotFound

_BY_ERRNO: dict[int, type[CNMError]] = {
    _errno.EEXIST: Conflict,
    _errno.ENOTEMPTY: Conflict,
    _errno.EBUSY: Conflict,
    _errno.EXFULL: Conflict,  # e.g. a bridge with no free port number
    _errno.ENODEV: NotFound,
    _errno.ENOENT: NotFound,
    _errno.ESRCH: NotFound,  # netlink's answer for a missing route
    _errno.EADDRNOTAVAIL: NotFound,  # deleting an address that is not there
    _errno.EPERM: Forbidden,
    _errno.EACCES: Forbidden,
}


def errno_of(exc: BaseException) -> int | None:
    """The errno carried by an OSError or a pyroute2 NetlinkError (its `.code`)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    err = getattr(exc, "errno", None)
    return err if isinstance(err, int) else None


def kernel_message(exc: BaseException) -> str:
    code = errno_of(exc)
    if code is None:
        return str(exc) or type(exc).__name__
    return os.strerror(code)


def translate(exc: BaseException, what: str) -> CNMError:
    """The cnm error for a failed kernel operation. `what` says what we tried, e.g.
    "create bridge br-1234". Use as `raise translate(exc, ...) from exc`."""
    if isinstance(exc, CNMError):
        return exc
    cls = _BY_ERRNO.get(errno_of(exc) or -1, InternalError)
    return cls(f"cannot {what}: {kernel_message(exc)}")


def is_gone(exc: BaseException) -> bool:
    """True when the error means "the object does not exist" (teardown = success)."""
    return isinstance(exc, NotFound) or errno_of(exc) in (
        _errno.ENODEV,
        _errno.ENOENT,
        _errno.ESRCH,
        _errno.EADDRNOTAVAIL,
    )
