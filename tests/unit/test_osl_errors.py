"""errno -> cnm.errors translation, without root."""

from __future__ import annotations

import errno

import pytest

from cnm.errors import Conflict, Forbidden, InternalError, NotFound
from cnm.osl.errors import is_gone, translate


class FakeNetlinkError(Exception):
    """Shaped like pyroute2's NetlinkError: the errno is in `.code`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code = code


@pytest.mark.parametrize(
    "code,cls",
    [
        (errno.EEXIST, Conflict),
        (errno.ENODEV, NotFound),
        (errno.ENOENT, NotFound),
        (errno.EPERM, Forbidden),
        (errno.EINVAL, InternalError),
        (errno.EOPNOTSUPP, InternalError),
    ],
)
def test_errno_classes(code, cls):
    for exc in (OSError(code, "x"), FakeNetlinkError(code, "x")):
        out = translate(exc, "create bridge br0")
        assert type(out) is cls
        assert str(out).startswith("cannot create bridge br0: ")


def test_message_carries_the_kernels_words():
    assert str(translate(OSError(errno.EEXIST, "x"), "add address")) == "cannot add address: File exists"
    assert "Invalid argument" in str(translate(FakeNetlinkError(errno.EINVAL, "x"), "set mtu"))


def test_cnm_errors_pass_through():
    err = Conflict("already")
    assert translate(err, "anything") is err


def test_is_gone():
    assert is_gone(FakeNetlinkError(errno.ENODEV, "x"))
    assert is_gone(OSError(errno.EADDRNOTAVAIL, "x"))
    assert is_gone(NotFound("x"))
    assert not is_gone(OSError(errno.EEXIST, "x"))
