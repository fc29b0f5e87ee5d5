"""The daemon's composition root: the one place that wires stores, IPAMs, drivers, the
controller and the API together, then serves until SIGTERM/SIGINT."""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from cnm.errors import CNMError, Conflict

log = logging.getLogger("cnm.daemon")


@dataclass
class DaemonConfig:
    root: str = "/var/lib/cnm"
    run_dir: str = "/run/cnm"
    socket: str = "/run/cnm/cnm.sock"
    log_level: str = "info"
    default_address_pools: list[str] = field(default_factory=list)

    @property
    def state_db(self) -> str:
        return os.path.join(self.root, "local-kv.db")


def _lock_root(root: str) -> int:
    """One daemon per --root: two writers on one state file would corrupt allocations."""
    fd = os.open(os.path.join(root, "daemon.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Conflict(f"another daemon is using --root {root}: stop it or choose another --root") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


class Daemon:
    """Everything one daemon owns, built in dependency order and closed in reverse."""

    def __init__(self, config: DaemonConfig) -> None:
        import drivers
        import ipam
        from cnm.controller import Controller
        from cnm.driverapi import DriverRegistry
        from cnm.ipamapi import IpamRegistry
        from cnm.osl.netlink import Netlink
        from cnm.store.sqlite import SQLiteStore
        from ipam.default.host_conflicts import exclusions, nameservers_from_resolv_conf

        self.config = config
        for d in (config.root, config.run_dir):
            os.makedirs(d, mode=0o711, exist_ok=True)
        self._lock_fd = _lock_root(config.root)
        self.netlink = Netlink()
        self.local_store = SQLiteStore(config.state_db)

        def excluded() -> list[str]:
            try:
                resolv = Path("/etc/resolv.conf").read_text()
            except OSError:
                resolv = ""
            # Our own bridges' routes are our pools, already known to IPAM: skip them.
            return exclusions(self.netlink.route_cidrs(), nameservers_from_resolv_conf(resolv))

        self.ipams = IpamRegistry()
        ipam.register(self.ipams, stores={"LocalDefault": self.local_store, "GlobalDefault": self.local_store},
                      local_pools=config.default_address_pools or None, excluded=excluded)
        self.drivers = DriverRegistry()
        drivers.register_builtin(self.drivers, netlink_factory=lambda: self.netlink)
        self.controller = Controller(self.drivers, self.ipams, {"local": self.local_store})
        self.controller.ensure_builtin_networks()

    def close(self) -> None:
        self.local_store.close()
        self.netlink.close()
        os.close(self._lock_fd)


async def _serve(daemon: Daemon) -> None:
    from cnm.api.server import make_app, start_server

    app = make_app(daemon.controller)
    server = await start_server(app, daemon.config.socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("cnm daemon ready (pid %d, root %s, socket %s)", os.getpid(), daemon.config.root, daemon.config.socket)
    await stop.wait()
    log.info("shutting down")
    await server.close()


def run_daemon(config: DaemonConfig) -> int:
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        daemon = Daemon(config)
    except CNMError as exc:
        log.error("cannot start: %s", exc)
        return exc.exit_code
    try:
        asyncio.run(_serve(daemon))
    except CNMError as exc:
        log.error("%s", exc)
        return exc.exit_code
    finally:
        daemon.close()
    return 0
