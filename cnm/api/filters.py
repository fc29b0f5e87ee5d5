"""Docker's `filters` query parameter: parsing, and matching with Docker's rules. Pure.

Docker's rules (its `filters.Args`): values of one key are OR'ed, keys are AND'ed —
except `label` (and `label!`), whose values must ALL match. A key with no values
matches everything.
"""

from __future__ import annotations

import datetime
import json

from cnm import saferegex
from cnm.api.timestamps import get_timestamp
from cnm.errors import InvalidParameter
from cnm.model import Network

NETWORK_FILTERS = frozenset({"dangling", "driver", "id", "name", "scope", "label", "type"})
NETWORK_PRUNE_FILTERS = frozenset({"until", "label", "label!"})

Filters = dict[str, list[str]]


def parse_filters(raw: str | None, accepted: frozenset[str] = NETWORK_FILTERS) -> Filters:
    """Parse `{"driver": ["bridge"]}`, or the legacy `{"driver": {"bridge": true}}`."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid filters: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameter("invalid filters: expected a JSON object of lists")
    out: Filters = {}
    for key, values in data.items():
        if key not in accepted:
            raise InvalidParameter(f"invalid filter '{key}': use one of {', '.join(sorted(accepted))}")
        if isinstance(values, dict):
            values = [v for v, on in values.items() if on]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidParameter(f"invalid filter '{key}': expected a list of strings")
        out[key] = values
    return out


# -- Docker's matchers ---------------------------------------------------------------


def exact(filters: Filters, key: str, source: str) -> bool:
    values = filters.get(key)
    return not values or source in values


def fuzzy(filters: Filters, key: str, source: str) -> bool:
    """Exact, or `source` starts with a value (ids and names in events)."""
    values = filters.get(key)
    return not values or any(source == v or source.startswith(v) for v in values)


def regex(filters: Filters, key: str, source: str) -> bool:
    """Exact, or a value is a regular expression found in `source` (Docker's `Match`:
    `name=web` matches "myweb"); a value that is no valid expression only matches
    exactly."""
    values = filters.get(key)
    if not values or source in values:
        return True
    return any(saferegex.search(v, source) for v in values)  # RE2: linear time, Go's syntax


def labels_match(filters: Filters, key: str, labels: dict[str, str]) -> bool:
    """Every `KEY` or `KEY=VALUE` of filters[key] is among `labels` (Docker's
    MatchKVList); True when the key has no values."""
    values = filters.get(key)
    if not values:
        return True
    for v in values:
        name, sep, want = v.partition("=")
        if name not in labels or (sep and labels[name] != want):
            return False
    return True


def labels_selected(filters: Filters, labels: dict[str, str]) -> bool:
    """`label` all match and, if `label!` is given, not all of its values match
    (Docker's prune rule)."""
    if not labels_match(filters, "label", labels):
        return False
    if filters.get("label!") and labels_match(filters, "label!", labels):
        return False
    return True


def boolean(filters: Filters, key: str) -> bool | None:
    """A filter that takes one true/false value (`dangling`): None when absent."""
    values = filters.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter(f'got more than one value for filter key "{key}"')
    if values[0] in ("1", "true"):
        return True
    if values[0] in ("0", "false"):
        return False
    raise InvalidParameter(f'invalid value for filter \'{key}\', must be "true" (or "1"), or "false" (or "0")')


# -- networks --------------------------------------------------------------------------


def network_matches(net: Network, filters: Filters, in_use: bool = False) -> bool:
    """Docker's network list filters. `name` and `id` are regular expressions (a
    substring matches), `driver` and `scope` exact, `label` all of KEY or KEY=VALUE,
    `type` custom or builtin, `dangling=true` only unused custom networks (`in_use`:
    the network has containers)."""
    for value in filters.get("type", []):
        if value not in ("custom", "builtin"):
            raise InvalidParameter(f"invalid filter: 'type'='{value}'")
    dangling = boolean(filters, "dangling")
    if dangling is not None and dangling != (not net.builtin and not in_use):
        return False
    types = filters.get("type")
    return (
        exact(filters, "driver", net.driver)
        and exact(filters, "scope", net.scope)
        and regex(filters, "name", net.name)
        and regex(filters, "id", net.id)
        and labels_match(filters, "label", net.labels)
        and (not types or ("builtin" if net.builtin else "custom") in types)
    )


def until_nanos(filters: Filters, now: datetime.datetime) -> int | None:
    """The prune filter `until` (one value: a duration, a date or a timestamp) in
    nanoseconds since the epoch; None when not given."""
    values = filters.get("until")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter("more than one until filter specified")
    return get_timestamp(values[0], now)


# -- events ----------------------------------------------------------------------------

NAMED_EVENT_TYPES = ("config", "container", "daemon", "network", "node", "plugin", "secret", "service", "volume")
EVENT_FILTERS = frozenset(NAMED_EVENT_TYPES + ("event", "image", "label", "scope", "type"))
_PREFIX_ACTIONS = ("exec_create", "exec_start", "health_status")  # actions with a ": detail" tail


def _strip_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


def event_matches(
    type_: str, action: str, actor_id: str, attributes: dict[str, str], scope: str, filters: Filters
) -> bool:
    """Docker's event filters: `type`, `event` (the action), `scope` exact; `container`,
    `network` (and the other named types) a name or an ID prefix of the event's actor —
    so `container=web` keeps only web's own events; `image` the container's image, with
    or without tag; `label` all of KEY or KEY=VALUE among the actor's attributes."""
    events = filters.get("event", [])
    if any(v in _PREFIX_ACTIONS for v in events):
        if not fuzzy(filters, "event", action):
            return False
    elif not exact(filters, "event", action):
        return False
    if not (exact(filters, "type", type_) and exact(filters, "scope", scope)):
        return False
    name = attributes.get("name", "")
    for key in NAMED_EVENT_TYPES:
        if filters.get(key) and not (fuzzy(filters, key, actor_id) or fuzzy(filters, key, name)):
            return False
    if filters.get("image"):
        image = attributes.get("name" if type_ == "image" else "image", "")
        if not any(exact(filters, "image", s) for s in (actor_id, image, _strip_tag(actor_id), _strip_tag(image))):
            return False
    return labels_match(filters, "label", attributes)
