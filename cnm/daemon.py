"""The daemon's composition root: the one place that wires stores, IPAMs, drivers, the
firewall, the runtime, the controller and the API together, then serves until
SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnm.errors import CNMError, Conflict, InvalidParameter

if TYPE_CHECKING:
    from cnm.execs import ExecConfig
    from cnm.execs import Target as ExecTarget
    from cnm.reconcile.sweep import Reconciler, Services
    from cnm.store import Store
    from cnm.store.etcd import EtcdStore

log = logging.getLogger("cnm.daemon")


@dataclass
class DaemonConfig:
    root: str = "/var/lib/cnm"
    run_dir: str = "/run/cnm"
    socket: str = "/run/cnm/cnm.sock"
    log_level: str = "info"
    default_address_pools: list[str] = field(default_factory=list)
    cluster_store: str | None = None  # etcd://h:p[,h:p…]
    advertise: str | None = None  # this host's underlay address
    plugin_dirs: list[str] = field(default_factory=list)

    @property
    def state_db(self) -> str:
        return os.path.join(self.root, "local-kv.db")


def _host_resolv() -> str:
    with open("/etc/resolv.conf") as f:
        return f.read()


def _lock_root(root: str) -> int:
    """One daemon per --root: two writers on one state file would corrupt allocations."""
    from cnm.statedirs import open_private

    fd = open_private(os.path.join(root, "daemon.lock"), os.O_RDWR | os.O_CREAT)
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
        import drivers.remote
        import ipam
        import ipam.remote
        from cnm.driverapi import DriverRegistry
        from cnm.firewall import Firewall
        from cnm.images.service import ImageService
        from cnm.images.store import ImageStore
        from cnm.ipamapi import IpamRegistry
        from cnm.osl import sysctl
        from cnm.osl.netlink import Netlink
        from cnm.plugins.discovery import discovery
        from cnm.ports import PortAllocator
        from cnm.runtime import Runtime
        from cnm.sandbox.osl import SandboxOS
        from cnm.services import ClusterConfig, build_core, start_up
        from cnm.statedirs import ROOT_MODE, RUN_MODE, private_dir, trusted_parent
        from cnm.store.sqlite import SQLiteStore
        from drivers.bridge.nftables import NftablesBridgeFirewall
        from drivers.unconfigured import Unconfigured
        from ipam.default.host_conflicts import exclusions, nameservers_from_resolv_conf

        self.config = config
        # Refuse (one line) a directory another user could change, before reading or
        # writing anything in it; then make both private (older versions made 0711).
        private_dir(config.root, ROOT_MODE, "--root")
        private_dir(config.run_dir, RUN_MODE, "--run-dir")
        trusted_parent(config.socket, "--socket")
        self._lock_fd = _lock_root(config.root)
        self.netlink = Netlink()
        self.local_store = SQLiteStore(config.state_db)

        def excluded() -> list[str]:
            try:
                resolv = Path("/etc/resolv.conf").read_text()
            except OSError:
                resolv = ""
            return exclusions(self.netlink.route_cidrs(), nameservers_from_resolv_conf(resolv))

        self.cluster_store: EtcdStore | None = None
        stores: dict[str, Store] = {"local": self.local_store}
        if config.cluster_store:
            if not config.advertise:
                raise InvalidParameter("--cluster-store needs --advertise IP (this host's underlay address)")
            from cnm.store.etcd import EtcdStore

            self.cluster_store = EtcdStore.from_url(config.cluster_store)
            stores["global"] = self.cluster_store
        plugins = discovery(config.plugin_dirs)
        self.ipams = IpamRegistry(fallback=ipam.remote.resolver(plugins))
        ipam.register(
            self.ipams,
            stores={"LocalDefault": self.local_store, "GlobalDefault": self.cluster_store or self.local_store},
            local_pools=config.default_address_pools or None,
            excluded=excluded,
        )
        self.firewall = Firewall()
        self.drivers = DriverRegistry(fallback=drivers.remote.resolver(plugins))
        drivers.register_builtin(
            self.drivers, netlink_factory=lambda: self.netlink, firewall=NftablesBridgeFirewall(self.firewall)
        )
        if config.cluster_store:
            import drivers.overlay

            drivers.overlay.register(self.drivers, advertise_addr=config.advertise or "", run_dir=config.run_dir)
        else:
            self.drivers.register(
                Unconfigured(
                    "overlay",
                    "overlay networks need a cluster store: start the "
                    "daemon with --cluster-store etcd://HOST:PORT --advertise IP",
                )
            )
        # A container on the host's filesystem must not reach the daemon's state or socket.
        self.runtime = Runtime(
            os.path.join(config.run_dir, "containers"),
            hide=(config.root, config.run_dir, config.socket),
            namespace_dirs=(os.path.join(config.run_dir, "netns"), os.path.join(config.run_dir, "overlay")),
        )
        self.ports = PortAllocator(sysctl.local_port_range)
        # rmi asks whether a container runs: from the runtime's files, never under the
        # container service's lock (a create holds it while it mounts an image).
        self.images = ImageService(ImageStore(os.path.join(config.root, "images")), running=self._runs)
        cluster = ClusterConfig(self.cluster_store, config.advertise or "") if self.cluster_store else None
        core = build_core(
            drivers=self.drivers,
            ipams=self.ipams,
            stores=stores,
            runtime=self.runtime,
            ports=self.ports,
            sandbox_os=SandboxOS(self.netlink, os.path.join(config.run_dir, "netns")),
            host_resolv=_host_resolv,
            cluster=cluster,
            images=self.images.store,
        )
        self.core = core
        self.events, self.discovery, self.controller = core.events, core.discovery, core.controller
        self.images.events = core.events  # docker events: image load, import, tag, untag, delete
        self.sandboxes, self.exits, self.containers, self.cluster = (
            core.sandboxes,
            core.exits,
            core.containers,
            core.cluster,
        )
        # Every id the store knows, before anything is released (the sweep's proof of
        # ownership); the namespaces our previous life left behind; then start-up in
        # its order (cnm.services.start_up), ending with what a crash left without an
        # owner removed.
        self.reconciler = self._reconciler()
        self._recover_namespaces()
        start_up(core, sweep=lambda: self.reconciler.sweep(self._reconcile_services()))
        self.runtime.prestart()  # the supervisor template, off the first `run`'s path

    def exec_target(self, ref: str) -> ExecTarget:
        """The container an exec runs in (its init's pid if it is running, its env)."""
        from cnm.execs import Target

        ct = self.containers.get(ref)
        try:
            st = self.runtime.state(ct.id)
        except CNMError:
            st = None
        running = st is not None and st.status == "running" and st.pid
        return Target(ct.id, ct.name, st.pid if running and st is not None else None)

    async def exec_spawn(self, cid: str, cfg: ExecConfig, env: dict[str, str]) -> Any:
        """The runtime's exec of `cfg` in container `cid` (its blocking part in the
        thread pool): the process's session (cnm.runtime.session)."""
        from cnm.runtime.spec import ExecSpec

        spec = ExecSpec(
            argv=list(cfg.argv),
            env=env,
            user=cfg.user,
            workdir=cfg.workdir,
            tty=cfg.tty,
            stdin=cfg.attach_stdin,
            stdout=cfg.attach_stdout,
            stderr=cfg.attach_stderr,
            console_size=list(cfg.console_size) if cfg.console_size else None,
            privileged=cfg.privileged,
        )
        return await asyncio.get_running_loop().run_in_executor(None, self.runtime.exec, cid, spec)

    def stats_target(self, ref: str) -> tuple[str, str, int | None, dict[str, str]]:
        """A container's id, name, init pid (None if not running) and cgroup dirs (only a
        container with limits has them)."""
        t = self.exec_target(ref)
        ct = self.containers.get(t.id)
        dirs: dict[str, str] = {}
        if t.pid is not None and any(v is not None for v in (ct.memory, ct.cpus, ct.pids_limit)):
            dirs = self.runtime.cgroups.dirs(ct.id, ct.memory, ct.cpus, ct.pids_limit)
        return t.id, t.name, t.pid, dirs

    def exec_event(self, action: str, cid: str, attrs: dict[str, str]) -> None:
        try:
            ct = self.containers.get(cid)
        except CNMError:
            return
        self.events.publish(
            "container", action, cid, {**ct.labels, "image": getattr(ct, "image", None) or "", "name": ct.name, **attrs}
        )

    def daemon_id(self) -> str:
        """This daemon's ID (`docker info`'s ID), made once and kept under --root."""
        path = os.path.join(self.config.root, "engine-id")
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            from cnm.ids import new_id

            value = new_id()
            with open(path, "w") as f:
                f.write(value + "\n")
            return value

    def counts(self) -> dict[str, int]:
        """Container (and image) counts for `GET /info`."""
        states = [self.containers.looks_running(ct) for ct in self.containers.list_containers()]
        running = sum(states)
        images = getattr(self, "images", None)
        return {
            "Containers": len(states),
            "ContainersRunning": running,
            "ContainersPaused": 0,
            "ContainersStopped": len(states) - running,
            "Images": len(images.list()) if images is not None and hasattr(images, "list") else 0,
        }

    def _runs(self, container_id: str) -> bool:
        try:
            return self.runtime.state(container_id).status == "running"
        except CNMError:
            return False

    def _reconciler(self) -> Reconciler:
        from cnm.osl import mounts, netns
        from cnm.osl.netlink import Netlink
        from cnm.reconcile.sweep import Reconciler
        from cnm.runtime.spec import ID_PATTERN

        return Reconciler(
            self.local_store,
            run_dir=self.config.run_dir,
            containers_dir=self.runtime.state_dir,
            host=self.netlink,
            netlink_for=Netlink,
            is_netns=netns.is_netns,
            delete_netns=netns.delete_netns,
            unmount_in=mounts.unmount_in,
            is_container_id=lambda name: bool(ID_PATTERN.match(name)),
            extra_known=[n.id for n in self.controller.list_networks()],
        )

    def _reconcile_services(self) -> Services:
        from cnm.services import reconcile_services

        def supervisors() -> list[int]:
            return [st.shim_pid for st in self.runtime.list() if st.status == "running" and st.shim_pid]

        return reconcile_services(
            self.core,
            drivers=self.drivers,
            ipams=self.ipams,
            ports=self.ports,
            runtime=self.runtime,
            supervisors=supervisors,
        )

    def _recover_namespaces(self) -> None:
        from cnm.osl.netns import recover_from

        for st in self.runtime.adopt():
            if st.status == "running" and st.shim_pid:
                for sub in ("netns", "overlay"):
                    recover_from(st.shim_pid, os.path.join(self.config.run_dir, sub))

    def close(self) -> None:
        self.containers.restarts.close()  # no restart-policy start once shutting down
        # Wait for an operation still in flight (a worker thread holds the lock) rather
        # than closing its store and netlink handle under it.
        self.controller.lock.acquire()
        if self.cluster is not None:
            self.cluster.close()
        if self.cluster_store is not None:
            self.cluster_store.close()
        self.local_store.close()
        self.netlink.close()
        self.runtime.close()  # the template only: containers keep running
        os.close(self._lock_fd)


async def _serve(daemon: Daemon) -> None:
    from cnm.api import images as image_routes
    from cnm.api.server import make_app, start_server
    from cnm.services import core_routes

    loop = asyncio.get_running_loop()
    # The containers adopt() found running are waiting to be watched; one that exited
    # since is cleaned up at once.
    daemon.exits.start(loop)
    from cnm.dns.resolvconf import host_upstreams
    from cnm.dns.server import Resolver

    resolver = Resolver(daemon.discovery.table, host_upstreams, loop=loop)
    await daemon.discovery.start(resolver)
    from cnm.api import system as system_routes

    info = system_routes.InfoSource(
        daemon_id=daemon.daemon_id(),
        root_dir=daemon.config.root,
        counts=daemon.counts,
        network_drivers=daemon.drivers.names,
        debug=daemon.config.log_level.lower() == "debug",
    )
    from cnm.api import execs as exec_routes
    from cnm.execs import ExecService

    execs = ExecService(daemon.exec_spawn, publish=daemon.exec_event)
    extra = [
        *core_routes(daemon.core),
        *exec_routes.routes(execs, daemon.exec_target),
        *system_routes.info_routes(info, listeners=lambda: daemon.events.listeners),
    ]
    extra += image_routes.routes(daemon.images)
    from cnm.api import diskusage, stats, system, top

    extra += stats.routes(daemon.stats_target, system.mem_total(open("/proc/meminfo").read()))
    extra += diskusage.routes(daemon.images, daemon.containers)
    extra += top.routes(lambda ref: (lambda t: (t.pid, t.name))(daemon.exec_target(ref)))
    app = make_app(daemon.controller, extra_routes=extra)
    server = await start_server(app, daemon.config.socket)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("cnm daemon ready (pid %d, root %s, socket %s)", os.getpid(), daemon.config.root, daemon.config.socket)
    await stop.wait()
    log.info("shutting down; containers keep running under their supervisors")
    await server.close()
    await resolver.close()


def _raise_open_files_limit() -> None:
    """Soft limit up to the hard one (dockerd runs with LimitNOFILE=infinity): the daemon
    holds a descriptor per API connection and per running container (its exit pidfd),
    and 1024 is soon reached. Containers inherit it, as Docker's do."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run_daemon(config: DaemonConfig) -> int:
    from cnm.statedirs import DAEMON_UMASK

    # Everything the daemon creates is private unless made otherwise on purpose (the
    # socket 0660, files containers see 0644; containers themselves get umask 022).
    os.umask(DAEMON_UMASK)
    _raise_open_files_limit()
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
