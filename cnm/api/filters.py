"""Docker's `filters` query parameter: parsing and matching networks. Pure."""
from __future__ import annotations

import json

from cnm.errors import InvalidParameter
from cnm.model import Network

NETWORK_FILTERS = frozenset({"driver", "id", "name", "scope", "label", "type"})

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


def network_matches(net: Network, filters: Filters) -> bool:
    """Values of one key are OR'ed, keys are AND'ed (Docker's rule). `name` matches a
    substring, `id` a prefix, the others exactly; `label` is KEY or KEY=VALUE; `type` is
    `custom` or `builtin`."""
    tests = {
        "driver": lambda v: net.driver == v,
        "scope": lambda v: net.scope == v,
        "name": lambda v: v in net.name,
        "id": lambda v: net.id.startswith(v),
        "type": lambda v: _type_matches(net, v),
        "label": lambda v: _label_matches(net.labels, v),
    }
    return all(any(tests[key](v) for v in values) for key, values in filters.items() if values)


def _type_matches(net: Network, value: str) -> bool:
    if value not in ("custom", "builtin"):
        raise InvalidParameter(f"invalid filter 'type={value}': use custom or builtin")
    return net.builtin == (value == "builtin")


def _label_matches(labels: dict[str, str], value: str) -> bool:
    key, sep, want = value.partition("=")
    return key in labels and (not sep or labels[key] == want)
