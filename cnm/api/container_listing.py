"""`GET /containers/json` and what else lists or selects containers (prune, inspect's
view, system df): each container rendered from the service's last known state, its
endpoints and their networks. Blocking: routes run it in the executor.

`net ps`'s table has a quicker way to the same text: cnm.api.ps_listing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from cnm.api import container_filters as cf
from cnm.api.common import encode_json
from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.model import Endpoint, Network
from cnm.render_container import container_summary, networks_json
from cnm.runtime.state import ContainerState

if TYPE_CHECKING:
    from cnm.api.containers import ContainerServiceLike


def state_or_none(service: ContainerServiceLike, cid: str) -> Any:
    """The process state as the service last knew it (no file read: a listing of
    thousands reads none); Docker's "created" for a container that never ran (the
    runtime knows nothing of it yet); None once the container is gone."""
    st = service.state_of(cid)
    if st is not None:
        restarts = getattr(service, "restarts", None)
        if st.status == "exited" and restarts is not None and restarts.pending(cid):
            return dataclasses.replace(st, status="restarting")
        return st
    try:
        service.get(cid)
    except NotFound:
        return None
    return ContainerState(cid, "created")


def view(service: ContainerServiceLike, ct: Any) -> tuple[Any, list[Endpoint], dict[str, Network]]:
    """The runtime state, endpoints and networks that render a container."""
    state = state_or_none(service, ct.id)
    endpoints = service.endpoints(ct)
    networks: dict[str, Network] = {}
    for ep in endpoints:
        try:
            net = service.ctl.get_network(ep.network_id)
            networks[net.id] = net
        except NotFound:
            pass
    if not ct.network_mode.startswith("container:"):
        try:
            net = service.ctl.get_network(ct.network_mode)
            networks[net.id] = net
        except (NotFound, InvalidParameter):
            pass
    for att in getattr(ct, "networks", None) or []:
        if att.get("network") and att["network"] not in networks:
            try:
                net = service.ctl.get_network(att["network"])
                networks[net.id] = net
            except (NotFound, InvalidParameter):
                pass
    return state, endpoints, networks


def filter_row(ct: Any, state: Any, nets: dict[str, dict]) -> cf.Row:
    """What the ps and prune filters look at; `nets` as networks_json renders them."""
    return cf.Row(
        id=ct.id,
        name=ct.name,
        created=ct.created,
        status=state.status if state is not None else "dead",
        exit_code=state.exit_code if state is not None else None,
        started=bool(state is not None and state.started_at),
        labels=dict(getattr(ct, "labels", {}) or {}),
        image=getattr(ct, "image", None) or "",
        image_id=getattr(ct, "image_id", None) or "",
        networks={name: ep["NetworkID"] for name, ep in nets.items()},
        published=[(p["host_port"], p["proto"]) for p in ct.ports if p.get("host_port") is not None],
        exposed=[(p["container_port"], p["proto"]) for p in ct.requested_ports],
    )


def row_of(service: ContainerServiceLike, ct: Any) -> cf.Row:
    state, endpoints, networks = view(service, ct)
    return filter_row(ct, state, networks_json(ct, endpoints, networks))


def summaries(service: ContainerServiceLike, query: cf.ListQuery) -> list[dict]:
    """`GET /containers/json`'s entries for `query` (blocking)."""
    # Thousands of containers: each is rendered once (its networks' JSON serves the
    # filters and the answer), and without -a one that does not run is passed over
    # before anything of it is rendered (select would drop it: cf.select's first rule).
    now = time.time()
    seen: dict[str, tuple[Any, tuple[Any, list[Endpoint], dict[str, Network]], dict, cf.Row]] = {}
    for ct in service.list_containers():
        if not query.all:
            st = state_or_none(service, ct.id)
            if st is None or st.status not in cf.ALIVE:
                continue
        seen_view = view(service, ct)
        nets = networks_json(ct, seen_view[1], seen_view[2])
        seen[ct.id] = (ct, seen_view, nets, filter_row(ct, seen_view[0], nets))

    def find(ref: str) -> cf.Row:
        ct = service.get(ref)
        return seen[ct.id][3] if ct.id in seen else row_of(service, ct)

    chosen = cf.select([entry[3] for entry in seen.values()], query, find)
    out = []
    for r in chosen:
        ct, (state, endpoints, networks), nets, _ = seen[r.id]
        out.append(container_summary(ct, state, endpoints, networks, now, nets=nets))
    return out


def summaries_json(service: ContainerServiceLike, query: cf.ListQuery) -> bytes:
    """The answer's body, encoded here in the executor: thousands of entries take tens
    of milliseconds to encode, which would stall the event loop's other requests."""
    return encode_json(summaries(service, query))


def prune(service: ContainerServiceLike, chosen: Any) -> list[str]:
    removed = []
    for ct in service.list_containers():
        if chosen(row_of(service, ct)):
            try:
                service.remove(ct.id)
            except (Conflict, NotFound):
                continue  # started or removed meanwhile
            removed.append(ct.id)
    return removed
