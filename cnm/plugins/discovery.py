"""Find a plugin by name, by Docker's rules.

In each folder, in order: a unix socket NAME.sock or NAME/NAME.sock, then a spec file
NAME.spec (one URL: unix:///path, tcp://host:port, http://host:port) or NAME.json
({"Name", "Addr", "TLSConfig"}), flat or inside NAME/. Docker looks for sockets in
/run/docker/plugins and for spec files in /etc/docker/plugins then
/usr/lib/docker/plugins; searching every folder for every form in that order finds
the same plugins, and lets a lab give each daemon its own folders (`--plugin-dir`).

Discovery only looks at files: it never connects, so it cannot stall anything.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cnm.errors import InvalidParameter, NotFound

DEFAULT_DIRS: tuple[str, ...] = ("/run/docker/plugins", "/etc/docker/plugins", "/usr/lib/docker/plugins")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


@dataclass(frozen=True)
class TLSConfig:
    insecure_skip_verify: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""


@dataclass(frozen=True)
class PluginSpec:
    """Where a plugin listens. `address` is unix:///path, tcp://host:port or http(s)://…"""

    name: str
    address: str
    source: str  # the file it was found from
    tls: TLSConfig | None = field(default=None)


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name or "")) and ".." not in name


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or ".." in name:
        raise InvalidParameter(f"invalid plugin name {name!r}: use letters, digits, '_', '.', ':' or '-'")
    return name


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def parse_spec_url(text: str, source: str) -> str:
    url = text.strip()
    if not url.startswith(("unix://", "tcp://", "http://", "https://")):
        raise InvalidParameter(f"plugin spec {source}: {url!r} is not a unix://, tcp:// or http:// URL")
    if url.startswith("unix://") and not url[len("unix://") :].startswith("/"):
        raise InvalidParameter(f"plugin spec {source}: a unix socket path must be absolute")
    return url


def parse_json_spec(text: str, source: str) -> tuple[str, TLSConfig | None]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidParameter(f"plugin spec {source} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("Addr"), str):
        raise InvalidParameter(f"plugin spec {source} needs a string field Addr")
    tls = doc.get("TLSConfig")
    config = None
    if isinstance(tls, dict):
        config = TLSConfig(
            bool(tls.get("InsecureSkipVerify", False)),
            str(tls.get("CAFile") or ""),
            str(tls.get("CertFile") or ""),
            str(tls.get("KeyFile") or ""),
        )
    return parse_spec_url(doc["Addr"], source), config


class Discovery:
    """Plugin folders, searched in order. Pure file-system reads."""

    def __init__(self, dirs: Sequence[str] | None = None) -> None:
        self.dirs: tuple[str, ...] = tuple(dirs) if dirs else DEFAULT_DIRS

    def _candidates(self, d: str, name: str) -> Iterable[str]:
        for base in (d, os.path.join(d, name)):
            yield os.path.join(base, f"{name}.sock")
        for base in (d, os.path.join(d, name)):
            yield os.path.join(base, f"{name}.spec")
            yield os.path.join(base, f"{name}.json")

    def find(self, name: str) -> PluginSpec | None:
        """The plugin called `name`, or None. Raises InvalidParameter for a bad name or
        a malformed spec file (a broken file should be reported, not skipped)."""
        check_name(name)
        for d in self.dirs:
            for path in self._candidates(d, name):
                spec = self._load(name, path)
                if spec is not None:
                    return spec
        return None

    def get(self, name: str) -> PluginSpec:
        spec = self.find(name)
        if spec is None:
            raise NotFound(f"network plugin {name} not found in {', '.join(self.dirs)}")
        return spec

    @staticmethod
    def _load(name: str, path: str) -> PluginSpec | None:
        if path.endswith(".sock"):
            return PluginSpec(name, f"unix://{path}", path) if _is_socket(path) else None
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise InvalidParameter(f"cannot read plugin spec {path}: {exc.strerror}") from exc
        if path.endswith(".json"):
            address, tls = parse_json_spec(text, path)
            return PluginSpec(name, address, path, tls)
        return PluginSpec(name, parse_spec_url(text, path), path)

    def names(self) -> list[str]:
        """Every plugin name found in the folders (first folder wins on duplicates)."""
        found: list[str] = []
        for d in self.dirs:
            try:
                entries = sorted(os.listdir(d))
            except OSError:
                continue
            for entry in entries:
                path = os.path.join(d, entry)
                stem, ext = os.path.splitext(entry)
                if ext in (".sock", ".spec", ".json") and not os.path.isdir(path):
                    name = stem
                elif os.path.isdir(path):
                    name = entry
                else:
                    continue
                if name not in found and _NAME.match(name):
                    found.append(name)
        return found

    def all(self) -> list[tuple[str, PluginSpec | None, str | None]]:
        """(name, spec or None, error or None) for each plugin found."""
        out: list[tuple[str, PluginSpec | None, str | None]] = []
        for name in self.names():
            try:
                spec = self.find(name)
            except InvalidParameter as exc:
                out.append((name, None, str(exc)))
                continue
            if spec is not None:
                out.append((name, spec, None))
        return out


def discovery(plugin_dirs: Sequence[str] | None = None) -> Discovery:
    """For the daemon's repeatable `--plugin-dir` flag: those folders, or Docker's defaults."""
    return Discovery(list(plugin_dirs) if plugin_dirs else None)
