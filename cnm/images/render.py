"""Images as the Engine API shows them (moby api/swagger.yaml: ImageInspect, ImageSummary,
ImageHistoryResponseItem), and the `filters` of GET /images/json. Pure.

Fields that moby adds or drops by API version follow the requested version: below
1.43 an untagged image lists as `<none>:<none>`, below 1.44 `VirtualSize` is sent, below
1.45 `Container`/`ContainerConfig`, below 1.50 `Config` has every container.Config key.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from cnm import saferegex
from cnm.errors import InvalidParameter
from cnm.images import reference as R
from cnm.images.config import ImageConfig, unix_time

ZERO_TIME = "0001-01-01T00:00:00Z"
STORAGE_DRIVER = "overlayfs"
IMAGE_FILTERS = frozenset({"before", "dangling", "label", "reference", "since", "until"})

Version = tuple[int, int]


@dataclass
class ImageView:
    """Everything the renderers need about one image."""

    id: str
    config: ImageConfig
    refs: list[R.Reference]
    layer_sizes: list[int]  # bottom first
    diff_dirs: list[str]  # bottom first
    containers: int = 0
    last_tag_time: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(self.layer_sizes)

    @property
    def repo_tags(self) -> list[str]:
        return [r.familiar() for r in self.refs if r.tag]

    @property
    def created(self) -> int:
        return unix_time(self.config.created)


def parse_version(text: str | None, default: Version) -> Version:
    """ "v1.41" or "1.41" -> (1, 41); `default` when absent."""
    if not text:
        return default
    m = re.match(r"^v?(\d+)\.(\d+)$", text)
    return (int(m.group(1)), int(m.group(2))) if m else default


_LEGACY_CONFIG: dict = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": False,
    "AttachStderr": False,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "",
    "Volumes": None,
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": None,
}


def _config(cfg: object, version: Version) -> dict:
    cfg = dict(cfg) if isinstance(cfg, dict) else {}
    return {**_LEGACY_CONFIG, **cfg} if version < (1, 50) else cfg


def inspect_json(view: ImageView, version: Version) -> dict:
    doc = view.config.doc
    out: dict = {
        "Id": view.id,
        "RepoTags": view.repo_tags,
        "RepoDigests": [],
        "Parent": "",
        "Comment": doc.get("comment") or "",
        "Created": view.config.created or (ZERO_TIME if version < (1, 44) else None),
        "DockerVersion": doc.get("docker_version") or "",
        "Author": doc.get("author") or "",
        "Config": _config(view.config.container_config, version),
        "Architecture": doc.get("architecture") or "",
        "Os": doc.get("os") or "linux",
        "Size": view.size,
        "GraphDriver": {"Name": STORAGE_DRIVER, "Data": _graph_data(view.diff_dirs)},
        "RootFS": {"Type": "layers", "Layers": view.config.diff_ids},
        "Metadata": {"LastTagTime": view.last_tag_time or ZERO_TIME},
    }
    if out["Created"] is None:
        del out["Created"]
    for key, field_name in (("Variant", "variant"), ("OsVersion", "os.version")):
        if doc.get(field_name):
            out[key] = doc[field_name]
    if version < (1, 44):
        out["VirtualSize"] = view.size
    if version < (1, 45):
        out["Container"] = doc.get("container") or ""
        out["ContainerConfig"] = _config(doc.get("container_config"), version)
    return out


def _graph_data(diff_dirs: list[str]) -> dict:
    if not diff_dirs:
        return {}
    data = {"UpperDir": diff_dirs[-1]}
    if len(diff_dirs) > 1:
        data["LowerDir"] = ":".join(reversed(diff_dirs[:-1]))
    return data


def summary_json(view: ImageView, version: Version, shared_size: int = -1) -> dict:
    tags = view.repo_tags
    digests: list[str] = []
    if version < (1, 43) and not tags:
        tags, digests = ["<none>:<none>"], ["<none>@<none>"]
    out = {
        "Containers": view.containers,
        "Created": view.created,
        "Id": view.id,
        "Labels": view.config.labels(),
        "ParentId": "",
        "RepoDigests": digests,
        "RepoTags": tags,
        "SharedSize": shared_size,
        "Size": view.size,
    }
    if version < (1, 44):
        out["VirtualSize"] = view.size
    return out


def history_json(view: ImageView) -> list[dict]:
    """moby's ImageHistory: newest first; the top row carries the image's ID and tags,
    older rows `<missing>` (their images are not here); empty layers have size 0."""
    rows: list[dict] = []
    layer = 0
    for entry in view.config.history:
        size = 0
        if not entry.get("empty_layer"):
            if layer >= len(view.layer_sizes):
                raise InvalidParameter("too many non-empty layers in History section")
            size = view.layer_sizes[layer]
            layer += 1
        rows.append(
            {
                "Id": "<missing>",
                "Created": unix_time(entry.get("created")),
                "CreatedBy": entry.get("created_by") or "",
                "Tags": None,
                "Size": size,
                "Comment": entry.get("comment") or "",
            }
        )
    rows.reverse()
    if rows:
        rows[0]["Id"] = view.id
        rows[0]["Tags"] = view.repo_tags or None
    return rows


# -- filters of GET /images/json and POST /images/prune ----------------------------


def go_path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` never cross a `/`; `[...]` classes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                raise InvalidParameter(f"invalid reference filter {pattern!r}: syntax error in pattern")
            body = pattern[i + 1 : j]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]")
            i = j
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    # RE2 (linear time): with `re`, "a*a*a*a*a*b" backtracks polynomially in the name.
    return bool(saferegex.fullmatch("".join(out), name))


def reference_matches(pattern: str, ref: R.Reference) -> bool:
    """moby's FamiliarMatch: the pattern against `name:tag`, then against `name`."""
    return go_path_match(pattern, ref.familiar()) or go_path_match(pattern, ref.familiar_name)


def label_matches(labels: dict[str, str], value: str) -> bool:
    key, sep, want = value.partition("=")
    return key in labels and (not sep or labels[key] == want)


def parse_until(value: str, now: float | None = None) -> float:
    """A Docker timestamp: unix seconds (with fraction), RFC 3339, or a Go duration
    (`10m`, `1h30m`) before now."""
    now = time.time() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    if re.fullmatch(r"(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+", value):
        unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        total = sum(float(n) * unit[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)", value))
        return now - total
    t = unix_time(value if "T" in value else value + "T00:00:00Z")
    if t == 0:
        raise InvalidParameter(f"invalid until/since value {value!r}: use unix seconds, RFC 3339 or a duration (10m)")
    return float(t)


def image_matches(view: ImageView, filters: dict[str, list[str]], created_of: dict[str, int]) -> bool:
    """Keys AND'ed, values OR'ed, as Docker does. `before`/`since` name another image,
    whose creation time `created_of` maps (image id -> unix time)."""
    for key, values in filters.items():
        if not values:
            continue
        if key == "dangling":
            want = values[-1].lower()
            if want not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid filter 'dangling={values[-1]}': use true or false")
            if (not view.repo_tags) != (want in ("true", "1")):
                return False
        elif key == "label":
            if not all(label_matches(view.config.labels(), v) for v in values):
                return False
        elif key == "reference":
            if not any(reference_matches(v, r) for v in values for r in view.refs):
                return False
        elif key == "until":
            if not any(view.created < parse_until(v) for v in values):
                return False
        elif key in ("before", "since"):
            for v in values:
                other = created_of.get(v)
                if other is None:
                    raise InvalidParameter(f"No such image: {v}")
                if (key == "before" and view.created >= other) or (key == "since" and view.created <= other):
                    return False
    return True
