"""Containers: the runtime's processes joined to the controller's networks.

`ContainerService` keeps the containers' names and records and their processes' life:
`run` makes the record, has a sandbox built for the networks the container asks for
(cnm.sandbox: endpoints, routes, ports, names), then starts the process — with every
step undone in reverse if a later one fails. An exit releases the sandbox (Docker
releases network resources at stop); live connect/disconnect go to the sandbox; after
a daemon restart running containers are re-adopted.

The record keeps what the container *asked for* (network mode, networks with their
endpoint settings, ports) apart from what it was *given* (the sandbox, whose id, key
and published ports it shows, as Docker's NetworkSettings do): a sandbox can be
released and built again from the request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict

from cnm import container_images
from cnm.container_adopt import ContainerAdoption
from cnm.container_deps import ContainerRuntime, EventPublisher, ExitWatch, NetworkLookup
from cnm.container_images import ImageMounts
from cnm.container_index import ContainerIndex
from cnm.container_networks import ContainerNetworking
from cnm.container_record import (
    CONFINEMENT_FIELDS,
    Attachment,
    Container,
    created_now,
    generated_name,
    start_failure_code,
)
from cnm.container_requests import ContainerCreate
from cnm.errors import CNMError, Conflict, InvalidParameter, NotFound
from cnm.ids import check_name, new_id
from cnm.intents import CONTAINER_REMOVE, Intents
from cnm.model import Endpoint, Network
from cnm.restart_policy import RestartPolicy
from cnm.restarts import Restarts
from cnm.runtime.spec import ContainerSpec
from cnm.runtime.state import ContainerState
from cnm.sandbox.files import file_reader, hosts_file
from cnm.sandbox.sandbox import Sandbox, Sandboxes
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger(__name__)

CT_PREFIX = "container/"
EXIT_CODES_KEPT = 1024  # exit codes of removed --rm containers, for a late `wait`


_HOST_RESOLV, _HOST_HOSTS = file_reader("/etc/resolv.conf"), file_reader("/etc/hosts")


class ContainerService(ContainerNetworking, ContainerAdoption):
    def __init__(
        self,
        controller: NetworkLookup,
        sandboxes: Sandboxes,
        runtime: ContainerRuntime,
        store: Store,
        *,
        exits: ExitWatch | None = None,
        events: EventPublisher | None = None,
        host_resolv: Callable[[], str] = _HOST_RESOLV,
        host_hosts: Callable[[], str] = _HOST_HOSTS,
        images: ImageMounts | None = None,
    ) -> None:
        self.ctl = controller
        self.sandboxes = sandboxes
        self.runtime = runtime
        self.store = store
        self.lock = controller.lock  # one lock for networks and containers: no lock ordering bugs
        self._index = ContainerIndex(runtime, self.lock)  # by id, name, id prefix; last known states
        self._containers = self._index.by_id
        # Exit codes of auto-removed containers, for a `wait` that arrives after removal.
        self.exit_codes: dict[str, int] = {}
        # Attaches in progress per container, and --rm containers whose removal waits for
        # them: an attach made before the start (docker run) must carry the whole run, and
        # a short run can exit before the attach has read its log.
        self._attached: dict[str, int] = {}
        self._removal_held: set[str] = set()
        self._host_resolv = host_resolv
        self._host_hosts = host_hosts
        self._exits = exits  # None: exits are noticed only at stop and remove
        self.events = events
        self.images = images  # the image store (None: host filesystem and --rootfs only)
        self.restarts = Restarts(self.start_by_policy, self._index.changed)
        self._intents = Intents(store)
        for kv in store.list(CT_PREFIX):
            self._index.add(Container.from_record(kv.value))

    # ---------------------------------------------------------------- lookup
    @property
    def index(self) -> ContainerIndex:
        return self._index  # the listings' view: states, versions, rendered rows

    def get(self, ref: str) -> Container:
        with self.lock:
            return self._index.get(ref)

    def list_containers(self) -> list[Container]:
        """Newest first."""
        with self.lock:
            return sorted(self._containers.values(), key=lambda c: c.created, reverse=True)

    def state(self, ct: Container) -> ContainerState:
        """The container's process state as last known — from this service's own
        changes and the exit watcher (cnm.container_index). NotFound: it has none."""
        st = self._index.state_of(ct.id)
        if st is None:
            raise NotFound(f"container {ct.name} has no process state: it was never started")
        return st

    def state_of(self, cid: str) -> ContainerState | None:
        return self._index.state_of(cid)

    def is_running(self, ct: Container) -> bool:
        """Read from the runtime now: what changes a container decides on this."""
        st = self._index.refresh(ct.id)
        return st is not None and st.status == "running"

    def looks_running(self, ct: Container) -> bool:
        """As last known (listings, counts)."""
        st = self._index.state_of(ct.id)
        return st is not None and st.status == "running"

    def sandbox(self, ct: Container) -> Sandbox | None:
        return self.sandboxes.get(ct.sandbox_id)

    def endpoints(self, ct: Container) -> list[Endpoint]:
        """The container's live endpoints, in attach order (none once it has exited)."""
        sb = self.sandbox(ct)
        return sb.endpoints() if sb is not None else []

    def _watch(self, ct: Container) -> None:
        if self._exits is not None:
            self._exits.watch(ct.id, self.handle_exit)

    def _save(self, ct: Container) -> None:
        self.store.put(CT_PREFIX + ct.id, ct.to_record())
        self._index.changed(ct.id)  # every change of a record comes here: listings re-render it

    def _event(self, action: str, ct: Container, **extra: str) -> None:
        """Docker's container event: the actor's attributes are its labels, name and
        image, plus the action's own (exitCode, signal)."""
        if self.events is not None:
            attrs = {**ct.labels, "image": getattr(ct, "image", None) or "", "name": ct.name, **extra}
            self.events.publish("container", action, ct.id, attrs)

    # ------------------------------------------------------ create / start
    def create(self, req: ContainerCreate) -> Container:
        """The container's record, checked and kept; nothing runs and no network is
        taken until `start` (Docker allocates the network at start)."""
        net = self._mode_network(req.network_mode)
        with self.lock:
            ct = self._new_record(req, net)
            ct.released = True  # nothing allocated yet
            with container_images.mounted(ct, self.images):  # its layers stay while it exists
                self._save(ct)
            self._index.add(ct)
            self._index.set_state(ct.id, None)
        self._event("create", ct)
        log.info("created container %s (%s)", ct.name, ct.id[:12])
        return ct

    def start(self, ref: str, *, by_policy: bool = False) -> bool:
        """Start a created or exited container: its sandbox, then its process, or
        nothing (all undone). False if it already runs (Docker answers 304). No store
        transaction around it: each record is committed before the kernel object it
        names is made (cnm.reconcile's rule), ~20 us a commit. A user's start (not
        `by_policy`) begins its restart policy afresh."""
        with self.lock:
            ct = self.get(ref)
            if self.is_running(ct):
                return False
            if not by_policy:
                self.restarts.user_started(ct.id)
                ct.restart_count, ct.manually_stopped = 0, False
            again = ct.started  # before _prepare, which sets it
            try:
                with Undo() as undo:
                    spec = self._prepare(ct, undo)
                    self._index.set_state(ct.id, self._run(ct, spec, again, undo))
                    undo.commit()
            except CNMError as exc:
                # As Docker: a start that fails is a run that died at once (127 for a
                # command not found, 126 not runnable, 128 otherwise); attached clients
                # and waiters hear of it.
                self._index.refresh(ct.id)
                self._event("die", ct, exitCode=str(start_failure_code(exc.message)))
                raise
        self._event("start", ct)
        log.info("started container %s (%s) on %s", ct.name, ct.id[:12], ct.network_mode)
        self._watch(ct)
        return True

    def start_by_policy(self, cid: str) -> None:
        """The restart policy's start, once the back-off has passed (a timer's thread)."""
        with self.lock:
            ct = self._containers.get(cid)
            if ct is None or self.restarts.cancelled(cid) or self.is_running(ct):
                return  # removed, stopped or started by a user meanwhile
            self.start(cid, by_policy=True)

    def run(self, req: ContainerCreate) -> Container:
        """create + start; a container that cannot start is removed again."""
        ct = self.create(req)
        try:
            self.start(ct.id)
        except BaseException:
            with self.lock:
                self._remove(ct)
            raise
        return ct

    def restart(self, ref: str, timeout: float | None = 10) -> Container:
        ct = self.get(ref)
        self.stop(ct.id, timeout)
        self.start(ct.id)
        self._event("restart", ct)
        return ct

    def update_restart_policy(self, ref: str, policy: RestartPolicy) -> Container:
        """`docker update --restart`: the policy applies from the next exit on."""
        with self.lock:
            ct = self.get(ref)
            if ct.auto_remove and not policy.is_none:
                raise InvalidParameter(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container"
                )
            ct.restart_policy = policy.to_docker_json()
            self._save(ct)
        self._event("update", ct)
        return ct

    def rename(self, ref: str, name: str) -> Container:
        """A new name; its endpoints answer to it in DNS at once."""
        with self.lock:
            ct = self.get(ref)
            name = name.lstrip("/")
            check_name(name, "container")
            if name == ct.name:
                raise Conflict(f"renaming a container with the same name as its current name: {name}")
            if name in self._index.names():
                raise Conflict(
                    f'the container name "/{name}" is already in use; remove that container or choose another name'
                )
            old, ct.name = ct.name, name
            self._index.renamed(ct, old)
            with self.store.transaction():
                sb = self.sandbox(ct)
                if sb is not None:
                    sb.rename(name)
                self._save(ct)
        self._event("rename", ct, oldName="/" + old)
        return ct

    def _new_record(self, req: ContainerCreate, net: Network | None) -> Container:
        """The container's record from the request, checked; nothing made yet."""
        cid = new_id()
        name = req.name or generated_name(cid, self._index.names())
        check_name(name, "container")
        if name in self._index.names():
            raise Conflict(
                f'the container name "/{name}" is already in use; remove that container or choose another name'
            )
        if req.rootfs and not os.path.isdir(req.rootfs):
            raise InvalidParameter(f"--rootfs {req.rootfs}: no such directory")
        ct = Container(
            id=cid,
            name=name,
            created=created_now(),
            argv=list(req.argv),
            env=dict(req.env),
            hostname=req.hostname or cid[:12],
            network_mode=req.network_mode,
            rootfs=req.rootfs,
            memory=req.memory,
            cpus=req.cpus,
            pids_limit=req.pids_limit,
            auto_remove=req.auto_remove,
            labels=dict(req.labels),
            confine={k: getattr(req, k) for k in CONFINEMENT_FIELDS},
            attach_stdout=req.attach_stdout,
            attach_stderr=req.attach_stderr,
            restart_policy=dict(req.restart_policy),
            tty=req.tty,
            open_stdin=req.open_stdin,
            stdin_once=req.stdin_once,
            attach_stdin=req.attach_stdin,
            console_size=req.console_size,
            requested_ports=[p.to_record() for p in req.ports],
        )
        container_images.configure(ct, req, self.images)
        if net is not None:
            self._known(net)
            if net.driver not in ("host", "null"):
                ct.networks = [asdict(Attachment.of(net.id, req.endpoint))]
                return ct
            ct.network_mode = "host" if net.driver == "host" else "none"
        ep = req.endpoint
        if req.ports or ep.ip or ep.ip6 or ep.mac or ep.aliases:
            raise InvalidParameter(
                f"published ports, --ip, --ip6, --mac-address and --network-alias need "
                f"a bridge or user network, not network mode {ct.network_mode}"
            )
        return ct

    def _prepare(self, ct: Container, undo: Undo) -> ContainerSpec:
        """The container's network (a sandbox built from its request, another
        container's, or the host's) and its record saved with it: the spec to start."""
        mode = ct.network_mode
        if mode == "host":
            netns, hosts, resolv = "host", self._host_hosts(), self._host_resolv()
        elif mode.startswith("container:"):
            other = self._joinable(mode.split(":", 1)[1])
            ct.shared_with, ct.hostname = other.id, other.hostname
            theirs = self.sandbox(other)
            netns = theirs.key if theirs is not None else f"/proc/{self.state(other).pid}/ns/net"
            hosts = theirs.hosts() if theirs is not None else hosts_file(other.hostname, [])
            resolv = theirs.resolv_conf() if theirs is not None else self.sandboxes.resolv_conf([])
        else:
            sb = self._build_sandbox(ct)
            undo.push(self._release_network, ct)
            netns, hosts, resolv = sb.key, sb.hosts(), sb.resolv_conf()
        spec = ContainerSpec(
            id=ct.id,
            argv=ct.argv,
            name=ct.name,
            env=ct.env,
            hostname=ct.hostname,
            netns=netns,
            rootfs=container_images.lower_dirs(ct, self.images),
            workdir=ct.workdir or "/",
            user=ct.user,
            hosts=hosts,
            resolv_conf=resolv,
            memory=ct.memory,
            cpus=ct.cpus,
            pids_limit=ct.pids_limit,
            tty=ct.tty,
            open_stdin=ct.open_stdin,
            stdin_once=ct.stdin_once,
            console_size=ct.console_size,
            **ct.confine,
        )
        undo.push(self._unstarted, ct, ct.started)
        ct.released, ct.started = False, True
        self._save(ct)
        return spec

    def _run(self, ct: Container, spec: ContainerSpec, again: bool, undo: Undo) -> ContainerState:
        """Its process: again in place if it ran before (log, writable layer kept), else new."""
        if again:
            with suppress(NotFound):  # unless its runtime directory is gone (removed by hand)
                return self.runtime.start(ct.id, spec)
        st = self.runtime.start(spec)
        undo.push(self.runtime.remove, ct.id, True)
        return st

    def _unstarted(self, ct: Container, started: bool) -> None:
        ct.started = started
        if ct.id in self._containers:
            self._save(ct)

    # ---------------------------------------------------------- stop / exit
    def stop(self, ref: str, timeout: float | None = 10) -> bool:
        """SIGTERM, SIGKILL after `timeout` s; its network released. False if it was
        not running (Docker answers 304)."""
        ct = self.get(ref)
        pending = self.restarts.cancel(ct.id)  # no restart after this stop
        if not self.is_running(ct):
            if pending:  # "restarting": the restart is called off
                self._stopped_by_user(ct)
                self._event("stop", ct)
            return pending
        self._stopped_by_user(ct)
        self._event("kill", ct, signal="15")
        self.runtime.stop(ct.id, timeout)
        self.handle_exit(ct.id)
        self._event("stop", ct)
        return True

    def kill(self, ref: str, sig: int) -> Container:
        """Signal the container's PID 1; Conflict if it is not running. As Docker's: the
        stop signal (SIGTERM) calls restarts off; another one counts as a user's stop
        (for `unless-stopped`) but `always` and `on-failure` restart after it."""
        ct = self.get(ref)
        if sig == 15:
            self.restarts.cancel(ct.id)
        if self.is_running(ct) or not self.restarts.pending(ct.id):
            self.runtime.kill(ct.id, sig)
        self._stopped_by_user(ct)
        self._event("kill", ct, signal=str(sig))
        return ct

    def _stopped_by_user(self, ct: Container) -> None:
        with self.lock:
            if not ct.manually_stopped and ct.id in self._containers:
                ct.manually_stopped = True
                self._save(ct)

    def handle_exit(self, cid: str) -> None:
        """The container's process ended: give back its network resources (Docker
        releases them at stop), and remove it if it was started with --rm."""
        with self.lock:
            ct = self._containers.get(cid)
            if ct is None or self.is_running(ct):  # is_running reads the exit status now
                return
            first = not ct.released  # first notice of this exit
            st = self.state_of(ct.id)
            if first:
                code = st.exit_code if st is not None else None
                self._event("die", ct, exitCode=str(code if code is not None else -1))
            with self.store.transaction():  # the kernel's part after the commit
                self._release_network(ct)
            if ct.auto_remove and self._attached.get(cid):
                self._removal_held.add(cid)  # removed when the last attach ends
            elif ct.auto_remove:
                self._remove(ct)
            elif first and self.restarts.after_exit(ct, st):
                self._save(ct)  # its restart count

    def attach_begins(self, cid: str) -> None:
        with self.lock:
            self._attached[cid] = self._attached.get(cid, 0) + 1

    def attach_ends(self, cid: str) -> None:
        """The attach has carried what it will: a --rm container that exited meanwhile goes now."""
        with self.lock:
            left = self._attached.get(cid, 1) - 1
            if left > 0:
                self._attached[cid] = left
                return
            self._attached.pop(cid, None)
            ct = self._containers.get(cid)
            if cid in self._removal_held and ct is not None and not self.is_running(ct):
                self._removal_held.discard(cid)
                self._remove(ct)
            elif ct is None:
                self._removal_held.discard(cid)

    def remove(self, ref: str, force: bool = False) -> Container:
        with self.lock:
            ct = self.get(ref)
            if self.restarts.pending(ct.id) and not force:
                raise Conflict(f"you cannot remove a restarting container {ct.name}: stop it first or use --force")
            if self.is_running(ct):
                if not force:
                    raise Conflict(f"you cannot remove a running container {ct.name}: stop it first or use --force")
                dependants = [
                    c.name for c in self._containers.values() if c.shared_with == ct.id and self.is_running(c)
                ]
                if dependants:
                    raise Conflict(
                        f"container {ct.name} shares its network with running container(s) "
                        f"{', '.join(dependants)}: stop them first"
                    )
            self._remove(ct)
            return ct

    def _remove(self, ct: Container) -> None:
        self._removal_held.discard(ct.id)
        self.restarts.forget(ct.id)
        try:
            st = self.runtime.state(ct.id)
            if st.status == "running":  # rm -f: Docker's kill and die come first
                self._event("kill", ct, signal="9")
                self.runtime.kill(ct.id, 9)
                code = self.runtime.wait(ct.id, 10)
                self._event("die", ct, exitCode=str(code))
                st = self.runtime.state(ct.id)
            if st.exit_code is not None:
                self.exit_codes[ct.id] = st.exit_code
                while len(self.exit_codes) > EXIT_CODES_KEPT:  # oldest first (dicts keep order)
                    self.exit_codes.pop(next(iter(self.exit_codes)))
        except NotFound:
            pass
        # Written ahead: once the runtime's directory is gone the container is "dead";
        # a crash from here on is finished at the next start (_finish_removals).
        self._intents.write(CONTAINER_REMOVE, ct.id)
        self.runtime.remove(ct.id, True)
        with self.store.transaction():  # one commit; the veths retired after it
            self._release_network(ct)
            self.store.delete(CT_PREFIX + ct.id)
            self._intents.done(CONTAINER_REMOVE, ct.id)
        container_images.release(ct, self.images)  # a crash before: start-up's sweep drops the mount
        self._index.drop(ct)
        self._event("destroy", ct)
        log.info("removed container %s", ct.name)

    # --------------------------------------------------------------- restart
