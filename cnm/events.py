"""The daemon's event bus: what happened to containers and networks, as Docker's
`/events` reports it.

Services publish (`bus.publish("network", "create", net.id, {"name": …})`) from any
thread; subscribers are called in the publishing thread and must not block (the API
hands each event to its event loop). The last `keep` events are kept, so a client
asking with `since` gets what it missed, as Docker keeps its last 256.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

KEEP = 256  # Docker's eventsLimit


@dataclass(frozen=True)
class Event:
    type: str  # container, network, image, daemon
    action: str  # create, start, die, destroy, connect, …
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0
    scope: str = "local"

    def to_docker(self) -> dict:
        """Docker's events.Message; the deprecated status/id/from only for containers
        and images, as Docker fills them."""
        out: dict = {}
        if self.type in ("container", "image"):
            out = {"status": self.action, "id": self.actor_id}
            if self.type == "container" and self.attributes.get("image"):
                out["from"] = self.attributes["image"]
        out.update(
            {
                "Type": self.type,
                "Action": self.action,
                "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                "scope": self.scope,
                "time": self.time_nano // 1_000_000_000,
                "timeNano": self.time_nano,
            }
        )
        return out


Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self, keep: int = KEEP, clock: Callable[[], int] = time.time_ns) -> None:
        self._lock = threading.Lock()
        self._recent: collections.deque[Event] = collections.deque(maxlen=keep)
        self._subscribers: list[Subscriber] = []
        self._clock = clock
        self._last = 0

    def publish(self, type_: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> Event:
        with self._lock:
            # Strictly increasing times: `since` a seen event's time never repeats it.
            now = max(self._clock(), self._last + 1)
            self._last = now
            ev = Event(type_, action, actor_id, dict(attributes or {}), now)
            self._recent.append(ev)
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub(ev)
            except Exception:  # one broken subscriber must not lose the event for others
                log.exception("event subscriber failed on %s %s", type_, action)
        return ev

    def subscribe(
        self, callback: Subscriber, since: int | None = None, until: int | None = None
    ) -> tuple[list[Event], Callable[[], None]]:
        """Registers `callback` for new events; returns the kept events with
        since <= time <= until (none when neither is given, as Docker) and the function
        that unsubscribes. Both happen under one lock: no event is missed or doubled
        between the history and the live stream."""
        with self._lock:
            history = []
            if since is not None or until is not None:
                history = [
                    ev
                    for ev in self._recent
                    if (since is None or ev.time_nano >= since) and (until is None or ev.time_nano <= until)
                ]
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return history, unsubscribe

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._subscribers)
