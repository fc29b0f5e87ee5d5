"""Network namespaces bound to paths, and threads that live inside one.

A namespace here is always a PATH: the runtime bind-mounts sandbox namespaces at
places like /run/cnm/netns/<id>, and `ip netns` names are just paths under
/run/netns (see `netns_path`).

Linux lets each *thread* have its own network namespace (setns/unshare with
CLONE_NEWNET act on the calling thread only). So nothing here ever switches the
caller's thread: work that must run inside a namespace runs on a helper thread that
enters it and is thrown away afterwards (`run_in_netns`) or lives as long as a handle
does (`NetnsThread`, used by `Netlink`). The calling thread never sees another
namespace, even when the work raises.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cnm.errors import CNMError, Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.osl import procsys, rtnl
from cnm.osl.errors import translate
from cnm.osl.rtnl import Rtnl

T = TypeVar("T")
log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2
RUN_NETNS = "/run/netns"  # where `ip netns` keeps named namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        code = ctypes.get_errno()
        raise translate(OSError(code, os.strerror(code)), what)


def netns_path(name_or_path: str) -> str:
    """A path for a namespace: `ip netns` names ("ns1") live under /run/netns;
    anything with a '/' is a path already."""
    if not name_or_path:
        raise InvalidParameter("empty network namespace name")
    if "/" in name_or_path:
        return name_or_path
    if name_or_path in (".", ".."):
        raise InvalidParameter(f"invalid network namespace name {name_or_path!r}")
    return os.path.join(RUN_NETNS, name_or_path)


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def is_netns(path: str) -> bool:
    """True when `path` is a live network-namespace handle (a bind mount of an nsfs
    file, or a /proc/<pid>/ns/net link), False for a plain file or nothing."""
    try:
        return os.stat(path).st_dev == _nsfs_dev()
    except OSError:
        return False


def setns_current_thread(path: str) -> None:
    """Move the CALLING thread into the namespace at `path`. Only for threads this
    module owns (or a freshly forked child); everything else uses run_in_netns."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise translate(exc, f"open network namespace {path}") from exc
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"enter network namespace {path}")
    finally:
        os.close(fd)


class NetnsThread:
    """A worker thread living in one network namespace; `call(fn, ...)` runs fn
    there and returns its result (or raises its exception) in the caller.

    `path=None` = the namespace of the thread that constructs the handle. Calls are
    served one at a time, in order, so the object is safe to share between threads.
    A daemon thread, so a forgotten close() cannot hang interpreter exit.
    """

    def __init__(self, path: str | None = None, *, name: str = "cnm-netns", timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name=name, daemon=True)
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            raise

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            if self.path is not None:
                setns_current_thread(self.path)
        except BaseException as exc:  # report to the constructor, then end the thread
            ready.set_exception(exc)
            return
        ready.set_result(None)
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)  # re-entrant call from inside fn
        if self._closed:
            raise InternalError(f"network namespace handle for {self.path or 'current namespace'} is closed")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fut, fn, args, kwargs))
        try:
            return fut.result(self.timeout)
        except concurrent.futures.TimeoutError:
            raise Unavailable(
                f"kernel operation in {self.path or 'current namespace'} did not finish in {self.timeout:.0f}s"
            ) from None

    def close(self) -> None:
        """Stop the thread after queued calls finish. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(self.timeout)


def run_in_netns(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn inside the namespace at `path` on a throwaway thread; return its result."""
    worker = NetnsThread(path, name="cnm-netns-run")
    try:
        return worker.call(fn, *args, **kwargs)
    finally:
        worker.close()


def _ipv6_default_off() -> None:
    """On the thread inside a new namespace (/proc/sys/net is the reading thread's)."""
    try:
        procsys.write_net("ipv6/conf/default/disable_ipv6", "1")  # not through /proc: see procsys
    except FileNotFoundError:
        pass  # a kernel without IPv6: nothing to turn off


def _unshare_and_bind(path: str) -> None:
    # Runs on a throwaway thread: unshare() gives only this thread a new namespace;
    # the bind mount keeps it alive after the thread ends.
    _check(_libc.unshare(CLONE_NEWNET), "create a network namespace")
    src = f"/proc/self/task/{threading.get_native_id()}/ns/net"
    _check(
        _libc.mount(src.encode(), path.encode(), b"none", MS_BIND, None),
        f"bind-mount the new network namespace at {path}",
    )


def create_netns(path: str, *, lo_up: bool = False, ipv6_off_by_default: bool = False) -> Rtnl | None:
    """Create a network namespace and bind-mount it at `path` (parents created).
    Conflict if a namespace is already mounted there; a stale plain file left by a
    crash is reused. The namespace starts with only `lo`, down (like `ip netns add`);
    with `lo_up`, `lo` is brought up and a raw netlink socket opened inside is returned
    (made on the thread that made the namespace: no second thread to enter it).

    With `ipv6_off_by_default`, an interface that comes into the namespace later has
    IPv6 disabled (net.ipv6.conf.default.disable_ipv6) until someone enables it on
    that interface; `lo` keeps ::1.

    Mount propagation is the caller's business: put `path` under a shared mount
    (e.g. /run on systemd hosts) if other mount namespaces must see it go away."""
    if is_netns(path):
        raise Conflict(f"a network namespace is already mounted at {path}")
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444)
        os.close(fd)
    except OSError as exc:
        raise translate(exc, f"create the mount point {path}") from exc
    worker_error: list[BaseException] = []
    sock: list[Rtnl] = []

    def work() -> None:
        try:
            _unshare_and_bind(path)
            if ipv6_off_by_default:
                _ipv6_default_off()
            if lo_up:
                sock.append(Rtnl.open())
                sock[0].do(rtnl.set_link(1, up=True))  # lo is always ifindex 1
        except BaseException as exc:
            worker_error.append(exc)

    t = threading.Thread(target=work, name="cnm-netns-create", daemon=True)
    t.start()
    t.join()
    if worker_error:
        for made in sock:
            made.close()
        if is_netns(path):
            delete_netns(path)
        try:
            os.unlink(path)
        except OSError:
            pass
        err = worker_error[0]
        raise translate(err, f"bring lo up in {path}") if isinstance(err, OSError) else err
    return sock[0] if sock else None


def bind_existing(source: str, path: str) -> None:
    """Bind-mount an existing namespace handle (e.g. /proc/<pid>/ns/net of a running
    container, or another bind mount) at `path`, so it outlives `source`. Conflict if
    a namespace is already mounted at `path`; NotFound if `source` is not one."""
    if not is_netns(source):
        raise NotFound(f"no network namespace at {source}")
    if is_netns(path):
        raise Conflict(f"a network namespace is already mounted at {path}")
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444))
    except OSError as exc:
        raise translate(exc, f"create the mount point {path}") from exc
    try:
        _check(_libc.mount(source.encode(), path.encode(), b"none", MS_BIND, None), f"bind-mount {source} at {path}")
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def delete_netns(path: str) -> None:
    """Unmount and remove the namespace at `path`. Idempotent: a missing path, or a
    plain file with nothing mounted on it, is success. The namespace itself dies when
    the last process or open handle in it goes away."""
    for _ in range(8):  # a path can be mounted more than once; peel every layer
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            code = ctypes.get_errno()
            if code in (errno.EINVAL, errno.ENOENT):  # not a mount point / no path
                break
            raise translate(OSError(code, os.strerror(code)), f"unmount network namespace {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise translate(exc, f"remove {path}") from exc


def require_netns(path: str) -> str:
    """`path` if a namespace is mounted there, else NotFound."""
    if not is_netns(path):
        raise NotFound(f"no network namespace at {path}")
    return path


def recover_from(pid: int, directory: str) -> list[str]:
    """Bind again, in our mount namespace, the namespace files that process `pid` still
    sees under `directory`. A daemon started by `ip netns exec` has a private mount
    namespace: when it dies, its bind mounts live on only in the mount namespaces of the
    processes it started (container supervisors). Reaching them through
    /proc/PID/root lets a restarted daemon find its sandboxes and overlay namespaces
    again (nsfs files may be bind-mounted across mount namespaces). Returns the paths
    recovered."""
    foreign = f"/proc/{pid}/root{directory}"
    try:
        names = os.listdir(foreign)
    except OSError:
        return []
    got = []
    for name in names:
        src, dst = os.path.join(foreign, name), os.path.join(directory, name)
        if is_netns(src) and not is_netns(dst):
            try:
                bind_existing(src, dst)
                got.append(dst)
            except CNMError as exc:
                log.warning("could not recover namespace %s from pid %d: %s", dst, pid, exc)
    return got
