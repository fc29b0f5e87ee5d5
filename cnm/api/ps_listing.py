"""`net ps`'s output rendered by the daemon (Kubernetes' server-side printing, its
`as=Table`): `GET /containers/json?as=table` answers text/plain, the very bytes `net ps`
prints (`quiet=1`: `-q`'s, `no-trunc=1`: `--no-trunc`'s). Docker's clients never ask
for it and get Docker's JSON as before; a daemon that ignores `as` (Docker's, an older
ours) answers JSON, which the CLI renders itself with the same cells (cnm.ps_table).

A listing of thousands must cost next to nothing per container, so the daemon keeps:

- per container, its row's cells, rendered once from its `/containers/json` entry with
  cnm.ps_table (as the CLI renders them: the same bytes), its STATUS text until the
  moment that text next changes ("Up 5 minutes" holds for a minute), and its padded
  line — in the container index's `rendered` slot, which the index empties whenever the
  service changes the container (or a network comes or goes);
- per view (-a or not, --no-trunc or not): the rows in listing order and the widths of
  the columns that do not depend on the time, until the index's version moves.

A request then looks at each row's status deadline, pads again only rows whose text
changed (all of them when a column's width changed), and joins the lines. Filters take
the general path (`container_listing.summaries`), rendered here with the same cells.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnm import ps_table, texttable
from cnm.api import container_filters as cf
from cnm.api import container_listing as listing
from cnm.render_container import container_summary, status_until

if TYPE_CHECKING:
    from cnm.api.containers import ContainerServiceLike

STATUS = ps_table.STATUS
HEADER_WIDTHS = [len(h) for h in ps_table.HEADERS]


@dataclass
class _View:
    """The rows of one kind of listing, as of the index's `version`."""

    version: int = -1
    cids: list[str] = field(default_factory=list)
    slots: list[dict[Any, Any]] = field(default_factory=list)  # each row's `rendered` slot
    fixed: list[int] = field(default_factory=list)  # column widths; STATUS's is the header's
    statuses: list[str] = field(default_factory=list)  # each row's STATUS, as last shown
    untils: list[float] = field(default_factory=list)  # until when each one holds
    next_change: float = -math.inf  # the least of them
    widths: list[int] = field(default_factory=list)  # those the lines are padded to
    lines: list[str] | None = None  # the answer's lines (header first), padded to `widths`
    text: str | None = None  # the answer, while nothing changed


def wants_table(query: Any) -> bool:
    """Whether a `GET /containers/json` asks for `net ps`'s text (`as=table`)."""
    return bool(query.get("as") == "table")


class PsListing:
    """`net ps`'s text for the service's containers (blocking: run in the executor)."""

    def __init__(self, service: ContainerServiceLike) -> None:
        self._service = service
        self._views: dict[tuple[bool, bool], _View] = {}
        self._lock = threading.Lock()  # one listing at a time: they share the views

    def text(self, query: cf.ListQuery, no_trunc: bool = False, quiet: bool = False) -> str:
        svc = self._service
        # The service's index and lock (cnm.containers.ContainerService's); a service
        # without them takes the general path.
        index, lock = getattr(svc, "index", None), getattr(svc, "lock", None)
        if query.filters or index is None or lock is None:
            return self._general(query, no_trunc, quiet)
        with self._lock:
            view = self._views.setdefault((query.all, no_trunc), _View())
            now = time.time()
            if view.version != index.version:
                self._rebuild(view, index, lock, query.all, no_trunc, now)
            if quiet:
                return ps_table.quiet_text(view.cids, no_trunc)
            return self._table(view, query.all, no_trunc, now)

    # -- the general path: filters ---------------------------------------------------------

    def _general(self, query: cf.ListQuery, no_trunc: bool, quiet: bool) -> str:
        entries = listing.summaries(self._service, query)
        if quiet:
            return ps_table.quiet_text([c["Id"] for c in entries], no_trunc)
        return texttable.table(ps_table.HEADERS, [ps_table.cells(c, no_trunc) for c in entries]) + "\n"

    # -- the kept rows ------------------------------------------------------------------------

    def _rebuild(self, view: _View, index: Any, lock: Any, all_: bool, no_trunc: bool, now: float) -> None:
        """The rows in listing order, each one's cells rendered if its slot lost them.

        Only the choice of rows is made under the service's lock: rendering thousands
        (after a network came or went) must not hold up every other operation. A
        container that changes meanwhile has its slot dropped by the index, so what is
        rendered into that slot is never shown again, and `version` makes the next
        listing build anew."""
        svc = self._service
        with lock:
            version = index.version
            picked = []
            for ct in svc.list_containers():  # newest first
                if not all_:
                    st = listing.state_or_none(svc, ct.id)
                    if st is None or st.status not in cf.ALIVE:
                        continue
                picked.append((ct, index.rendered(ct.id)))
        key = ("cells", no_trunc)
        rows = []
        for ct, slot in picked:
            cells = slot.get(key)
            if cells is None:
                state, endpoints, networks = listing.view(svc, ct)
                cells = slot[key] = ps_table.cells(container_summary(ct, state, endpoints, networks, now), no_trunc)
            rows.append(cells)
        view.cids, view.slots = [ct.id for ct, _ in picked], [slot for _, slot in picked]
        columns = list(zip(*rows, strict=True)) or [()] * len(HEADER_WIDTHS)  # (texttable.widths, in C loops)
        view.fixed = [
            max(w, max(map(len, column), default=0)) for w, column in zip(HEADER_WIDTHS, columns, strict=True)
        ]
        view.fixed[STATUS] = HEADER_WIDTHS[STATUS]
        view.statuses = [""] * len(rows)
        view.untils = [-math.inf] * len(rows)
        view.next_change = -math.inf
        view.lines = view.text = None
        view.version = version

    def _status(self, cid: str, slot: dict[Any, Any], now: float) -> tuple[str, float]:
        """The row's STATUS text and until when it holds. An exited container's may turn
        into "Restarting" by its restart policy's timer without any change of the
        container: read afresh every time."""
        kept = slot.get("status")
        if kept is not None and now < kept[1]:
            return kept
        raw = self._service.state_of(cid)
        state = listing.state_or_none(self._service, cid)
        text, until = status_until(state, now)
        if raw is not None and raw.status == "exited":
            until = now
        slot["status"] = (text, until)
        return text, until

    def _table(self, view: _View, all_: bool, no_trunc: bool, now: float) -> str:
        """The answer from the view: only rows whose STATUS text moved on are laid out
        again (freshly started containers' "Up N seconds" move every second), all of
        them only when a column's width changed."""
        statuses = view.statuses
        moved: list[int] = []
        if now >= view.next_change:
            untils, slots, cids = view.untils, view.slots, view.cids
            for i, until in enumerate(untils):
                if until <= now:
                    text, untils[i] = self._status(cids[i], slots[i], now)
                    if text != statuses[i]:
                        statuses[i] = text
                        moved.append(i)
            view.next_change = min(untils, default=math.inf)
        if view.text is not None and not moved:
            return view.text
        widths = list(view.fixed)
        widths[STATUS] = max(HEADER_WIDTHS[STATUS], max(map(len, statuses), default=0))
        key = ("line", all_, no_trunc)
        lines = view.lines
        if lines is None or widths != view.widths:
            lines = [texttable.line(ps_table.HEADERS, widths)]
            lines += [
                _line(slot, status, widths, key, no_trunc) for slot, status in zip(view.slots, statuses, strict=True)
            ]
        else:
            for i in moved:
                lines[i + 1] = _line(view.slots[i], statuses[i], widths, key, no_trunc)
        view.lines, view.widths = lines, widths
        view.text = "\n".join(lines) + "\n"
        return view.text


def _line(slot: dict[Any, Any], status: str, widths: list[int], key: tuple[Any, ...], no_trunc: bool) -> str:
    """A row's line, kept in its slot while its status and the widths hold."""
    kept = slot.get(key)
    if kept is None or kept[0] != widths or kept[1] != status:
        cells = slot[("cells", no_trunc)]
        row = (*cells[:STATUS], status, *cells[STATUS + 1 :])
        kept = slot[key] = (widths, status, texttable.line(row, widths))
    return str(kept[2])
