"""An image's config (Docker image spec v1.2 / OCI image config), parsed and checked.

The config's bytes are the image: its sha256 is the image ID, so they are stored as
given and never re-serialized. `ImageConfig` validates what the store relies on (the
layer diff IDs, the OS) and exposes what a container takes from its image.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from cnm.errors import InvalidParameter
from cnm.images import digest as D


@dataclass(frozen=True)
class ImageConfig:
    raw: bytes
    doc: dict

    @property
    def id(self) -> str:
        return D.of_bytes(self.raw)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.doc["rootfs"]["diff_ids"])

    @property
    def container_config(self) -> dict:
        """The `config` object: Env, Cmd, Entrypoint, WorkingDir, User, Labels, …"""
        cfg = self.doc.get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def created(self) -> str | None:
        c = self.doc.get("created")
        return c if isinstance(c, str) and c else None

    @property
    def history(self) -> list[dict]:
        h = self.doc.get("history")
        return [e for e in h if isinstance(e, dict)] if isinstance(h, list) else []

    def labels(self) -> dict[str, str]:
        labels = self.container_config.get("Labels")
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    # -- what a container inherits --------------------------------------------------

    def env(self) -> list[str]:
        return _str_list(self.container_config.get("Env"))

    def cmd(self) -> list[str]:
        return _str_list(self.container_config.get("Cmd"))

    def entrypoint(self) -> list[str]:
        return _str_list(self.container_config.get("Entrypoint"))

    def workdir(self) -> str:
        w = self.container_config.get("WorkingDir")
        return w if isinstance(w, str) else ""

    def user(self) -> str:
        u = self.container_config.get("User")
        return u if isinstance(u, str) else ""


def _str_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value:
        return [value]
    return []


def parse(raw: bytes) -> ImageConfig:
    """Check a config the store is about to keep. InvalidParameter with one line."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidParameter(f"invalid image config: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidParameter("invalid image config: not a JSON object")
    os_name = doc.get("os", "linux")
    if os_name != "linux":
        raise InvalidParameter(f"cannot load {os_name} image on linux")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidParameter('invalid image config: rootfs.type must be "layers"')
    diff_ids = rootfs.get("diff_ids")
    if diff_ids is None:
        diff_ids = rootfs["diff_ids"] = []
    if not isinstance(diff_ids, list):
        raise InvalidParameter("invalid image config: rootfs.diff_ids must be a list")
    for d in diff_ids:
        D.check(d, "layer diff ID in the image config")
    for key in ("config", "history"):
        if doc.get(key) is not None and not isinstance(doc[key], dict if key == "config" else list):
            raise InvalidParameter(f"invalid image config: {key} has the wrong type")
    return ImageConfig(raw, doc)


def unix_time(rfc3339: str | None) -> int:
    """Seconds since the epoch of an RFC 3339 time with any fraction; 0 when absent."""
    if not rfc3339:
        return 0
    text = rfc3339.strip().replace("Z", "+00:00")
    date, _, rest = text.partition("T")
    # Python before 3.11 cannot parse nanoseconds: drop digits past microseconds
    if "." in rest:
        head, _, frac = rest.partition(".")
        digits = "".join(ch for ch in frac if ch.isdigit())
        tz = frac[len(digits) :]
        rest = f"{head}.{digits[:6] or '0'}{tz}"
    try:
        when = datetime.datetime.fromisoformat(f"{date}T{rest}" if rest else date)
    except ValueError:
        return 0
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
