"""Docker's restart policies, as rules without side effects: what a request may ask for
(`RestartPolicy.from_docker_json`) and whether, and after how long, an exited container
is started again (`decide`).

    policy = RestartPolicy.from_docker_json({"Name": "on-failure", "MaximumRetryCount": 3})
    d = decide(policy, exit_code=1, stopped_by_user=False, ran_for=0.4, count=0, delay=0.0)
    d.restart, d.delay        # True, 0.1: start it again in 100 ms

The back-off is moby's restart manager's: 100 ms before the first restart, doubled
before each next one up to a minute, and back to 100 ms once a run lasted 10 s.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cnm.errors import InvalidParameter

NO, ALWAYS, UNLESS_STOPPED, ON_FAILURE = "no", "always", "unless-stopped", "on-failure"
FIRST_DELAY = 0.1  # seconds before the first restart (moby: defaultTimeout)
MAX_DELAY = 60.0  # the back-off's ceiling (moby: maxRestartTimeout)
RESET_AFTER = 10.0  # a run this long resets the back-off


@dataclass(frozen=True)
class RestartPolicy:
    name: str = NO
    max_retries: int = 0  # on-failure only; 0 = no limit

    @classmethod
    def from_docker_json(cls, raw: object) -> RestartPolicy:
        """HostConfig.RestartPolicy, checked with Docker's rules and messages ("" and
        a missing one are "no")."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise InvalidParameter('field RestartPolicy must be an object: {"Name": …, "MaximumRetryCount": …}')
        name = raw.get("Name") or ""
        count = raw.get("MaximumRetryCount") or 0
        if not isinstance(name, str):
            raise InvalidParameter("field RestartPolicy.Name must be a string")
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidParameter("field RestartPolicy.MaximumRetryCount must be an integer")
        if name in (NO, ALWAYS, UNLESS_STOPPED) and count != 0:
            raise InvalidParameter(
                "invalid restart policy: maximum retry count can only be used with "
                "'on-failure'" + (" and cannot be negative" if count < 0 else "")
            )
        if name == ON_FAILURE and count < 0:
            raise InvalidParameter("invalid restart policy: maximum retry count cannot be negative")
        if name == "":  # older clients send an empty name for "no" (any count: Docker's leniency)
            return cls()
        if name not in (NO, ALWAYS, UNLESS_STOPPED, ON_FAILURE):
            raise InvalidParameter(
                f"invalid restart policy: unknown policy '{name}'; use one of "
                f"'{NO}', '{ALWAYS}', '{ON_FAILURE}', or '{UNLESS_STOPPED}'"
            )
        if count > 2**31 - 1:
            raise InvalidParameter("invalid restart policy: maximum retry count is too large")
        return cls(name, count)

    def to_docker_json(self) -> dict:
        return {"Name": self.name, "MaximumRetryCount": self.max_retries}

    @classmethod
    def from_record(cls, rec: dict | None) -> RestartPolicy:
        if not rec:
            return cls()
        return cls(str(rec.get("Name") or NO), int(rec.get("MaximumRetryCount") or 0))

    @property
    def is_none(self) -> bool:
        return self.name == NO


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay: float  # seconds to wait before the start; the back-off to keep for the next exit


def decide(
    policy: RestartPolicy, exit_code: int, stopped_by_user: bool, ran_for: float | None, count: int, delay: float
) -> Decision:
    """Whether an exited container starts again, and after how long. `count`: restarts
    the policy made since the last start by a user; `delay`: the back-off after the
    last restart (0 before the first); `ran_for`: the run's length in seconds (None:
    unknown, e.g. it ended while the daemon was down). As moby's ShouldRestart: the
    back-off moves even when the answer is no."""
    if ran_for is not None and ran_for >= RESET_AFTER:
        delay = 0.0
    delay = FIRST_DELAY if delay <= 0 else min(delay * 2, MAX_DELAY)
    if policy.name == ALWAYS:
        restart = True
    elif policy.name == UNLESS_STOPPED:
        restart = not stopped_by_user
    elif policy.name == ON_FAILURE:
        restart = exit_code != 0 and (policy.max_retries == 0 or count < policy.max_retries)
    else:
        restart = False
    return Decision(restart, delay)


def run_length(started_at: str | None, finished_at: str | None) -> float | None:
    """Seconds between two RFC 3339 times (the runtime's state); None if either is
    missing or unreadable."""
    try:
        start = _parse_time(started_at)
        end = _parse_time(finished_at)
    except ValueError:
        return None
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    text = text.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # nanoseconds: fromisoformat takes at most 6 digits
        digits = "".join(ch for ch in rest if ch.isdigit())
        rest = digits[:6] + rest[len(digits) :]
        text = head + "." + rest
    return datetime.datetime.fromisoformat(text)
