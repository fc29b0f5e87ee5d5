"""`docker import --change` (and `commit --change`): Dockerfile instructions applied to
an image config's `config` object. Pure.

Supported as Docker's import does: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
STOPSIGNAL, USER, VOLUME, WORKDIR. Exec form (`CMD ["sh", "-c", "x"]`) and shell form
(`CMD echo hi` = `["/bin/sh", "-c", "echo hi"]`). Not done: `$VAR` substitution and
HEALTHCHECK (refused with one line).
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex

from cnm.errors import InvalidParameter

VALID = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
_PORT = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?$", re.IGNORECASE)


def apply(changes: list[str], config: dict | None = None) -> dict:
    """A new `config` object: `config` (not modified) with every change applied in order."""
    out = json.loads(json.dumps(config or {}))
    for change in changes:
        change = change.strip()
        if not change:
            continue
        keyword, _, rest = change.partition(" ")
        if "\t" in keyword:
            keyword, _, tail = keyword.partition("\t")
            rest = tail + " " + rest
        kw = keyword.upper()
        rest = rest.strip()
        if kw == "HEALTHCHECK":
            raise InvalidParameter("HEALTHCHECK is not supported as a --change here")
        if kw not in VALID:
            raise InvalidParameter(f"{keyword} is not a valid change command")
        if not rest:
            raise InvalidParameter(f"{kw} requires at least one argument")
        _APPLY[kw](out, rest)
    return out


def _exec_or_shell(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            value = json.loads(rest)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", rest]


def _words(rest: str, kw: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as exc:
        raise InvalidParameter(f"{kw} {rest!r}: {exc}") from exc


def _pairs(rest: str, kw: str) -> list[tuple[str, str]]:
    words = _words(rest, kw)
    if "=" not in words[0]:
        if kw == "LABEL":
            raise InvalidParameter(f"LABEL {rest!r}: use KEY=VALUE")
        key, _, value = rest.partition(" ")  # legacy `ENV KEY some value`
        return [(key, value.strip())]
    pairs = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise InvalidParameter(f"{kw} {rest!r}: {w!r} is not KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _cmd(cfg: dict, rest: str) -> None:
    cfg["Cmd"] = _exec_or_shell(rest)


def _entrypoint(cfg: dict, rest: str) -> None:
    cfg["Entrypoint"] = _exec_or_shell(rest)


def _env(cfg: dict, rest: str) -> None:
    env = [e for e in cfg.get("Env") or [] if isinstance(e, str)]
    for key, value in _pairs(rest, "ENV"):
        env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
    cfg["Env"] = env


def _label(cfg: dict, rest: str) -> None:
    labels = dict(cfg.get("Labels") or {})
    labels.update(_pairs(rest, "LABEL"))
    cfg["Labels"] = labels


def _expose(cfg: dict, rest: str) -> None:
    ports = dict(cfg.get("ExposedPorts") or {})
    for word in rest.split():
        m = _PORT.match(word)
        if not m:
            raise InvalidParameter(f"EXPOSE {word!r}: expected PORT[-PORT][/tcp|udp|sctp]")
        low, high, proto = int(m.group(1)), int(m.group(2) or m.group(1)), (m.group(3) or "tcp").lower()
        if not (0 < low <= high <= 65535):
            raise InvalidParameter(f"EXPOSE {word!r}: ports are 1-65535")
        for port in range(low, high + 1):
            ports[f"{port}/{proto}"] = {}
    cfg["ExposedPorts"] = ports


def _volume(cfg: dict, rest: str) -> None:
    paths = _exec_or_shell(rest) if rest.startswith("[") else rest.split()
    if paths[:2] == ["/bin/sh", "-c"]:
        paths = rest.split()
    volumes = dict(cfg.get("Volumes") or {})
    for p in paths:
        if not p:
            raise InvalidParameter("VOLUME specified can not be an empty string")
        volumes[p] = {}
    cfg["Volumes"] = volumes


def _workdir(cfg: dict, rest: str) -> None:
    base = cfg.get("WorkingDir") or "/"
    cfg["WorkingDir"] = posixpath.normpath(posixpath.join(base, rest))


def _user(cfg: dict, rest: str) -> None:
    cfg["User"] = rest


def _stopsignal(cfg: dict, rest: str) -> None:
    cfg["StopSignal"] = rest


def _onbuild(cfg: dict, rest: str) -> None:
    kw = rest.split(None, 1)[0].upper()
    if kw in ("ONBUILD", "FROM", "MAINTAINER"):
        raise InvalidParameter(f"{kw} isn't allowed as an ONBUILD trigger")
    cfg["OnBuild"] = list(cfg.get("OnBuild") or []) + [rest]


_APPLY = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "LABEL": _label,
    "ONBUILD": _onbuild,
    "STOPSIGNAL": _stopsignal,
    "USER": _user,
    "VOLUME": _volume,
    "WORKDIR": _workdir,
}
