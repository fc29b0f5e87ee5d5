"""The times Docker's API accepts in `since`/`until` (events, logs) and in the `until`
filter (prune). Pure.

- `parse_timestamp`: the wire form Docker's clients send, `SECONDS[.NANOS]`.
- `get_timestamp`: what a user may type, as Docker's daemon takes it in prune filters:
  a Go duration (`10m`, `1h30m`: that long before now), an RFC 3339 date or time
  (`2024-05-01`, `2024-05-01T10:00`, `…Z`, `…+02:00`, fractions), or a timestamp.

Both return nanoseconds since the epoch.
"""

from __future__ import annotations

import datetime
import re

from cnm.errors import InvalidParameter
from cnm.strictnum import is_ascii_digits

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
MAX_DURATION_TEXT = 100
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")
MAX_DURATION = 2**63 - 1


def parse_timestamp(value: str, what: str = "timestamp") -> int:
    """`SECONDS` or `SECONDS.FRACTION` (Docker's `%d.%09d`) -> nanoseconds."""
    sec, dot, frac = value.partition(".")
    # ASCII digits only ("\d" and isdigit() take "١٢" and "²"), and a bounded length.
    digits = sec[1:] if sec.startswith("-") else sec
    if not is_ascii_digits(digits) or len(digits) > 18 or (dot and not (is_ascii_digits(frac) and len(frac) <= 30)):
        raise InvalidParameter(f"invalid {what} {value!r}: use seconds since the epoch, e.g. 1700000000.5")
    nanos = int((frac + "000000000")[:9]) if dot else 0
    return int(sec) * 1_000_000_000 + (nanos if not sec.startswith("-") else -nanos)


def parse_duration(value: str) -> int | None:
    """A Go duration (`1h30m`, `1.5h`, `300ms`, `-2m`) in nanoseconds; None if `value`
    is not one. Go refuses a bare number other than 0; so do we."""
    sign = -1 if value.startswith("-") else 1
    body = value.lstrip("+-")
    if not body:
        return None
    if len(body) > MAX_DURATION_TEXT:
        return None
    pos, total = 0, 0.0
    while pos < len(body):
        # Anchored at pos (finditer would retry at every position: cubic on a long run
        # of digits without a unit, a query of a few KB pinning a CPU).
        m = _DURATION.match(body, pos)
        if m is None:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if total > MAX_DURATION:
        return None  # Go's ParseDuration overflows past ~292 years too
    return sign * int(total)


def get_timestamp(value: str, now: datetime.datetime) -> int:
    """What a user typed as a time (Docker's GetTimestamp) -> nanoseconds. A time without
    a zone is read in `now`'s zone, as Docker reads it in the daemon's."""
    value = value.strip()
    if value != "0":
        d = parse_duration(value)
        if d is not None:
            return _nanos(now) - d
    if _DATE.match(value):
        text = value.replace("z", "Z")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidParameter(
                f"invalid time {value!r}: use a duration (10m, 2h), an RFC 3339 time "
                "(2024-05-01T10:00:00Z) or a Unix timestamp"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=now.tzinfo or datetime.UTC)
        return _nanos(parsed)
    try:
        return parse_timestamp(value, "time")
    except InvalidParameter:
        raise InvalidParameter(f"failed to parse value as time or duration: {value!r}") from None


def _nanos(t: datetime.datetime) -> int:
    delta = t - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def rfc3339_to_nanos(text: str | None) -> int | None:
    """An RFC 3339 time as our records keep it (`…Z`, fractions) -> nanoseconds; None
    for missing or Docker's zero time."""
    if not text or text.startswith("0001-"):
        return None
    try:
        return _nanos(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None
