"""What a container takes from its image: Docker's merge of the create request with the
image's config (moby daemon/create.go `merge`, the swagger's Entrypoint rules). Pure.

- Entrypoint: the request's if it has one (`[""]` resets it to none), else the image's.
- Cmd: the request's if given; the image's only when the request sets no Entrypoint.
- Env: the image's, then the request's (a request variable replaces the image's).
- WorkingDir, User, StopSignal: the request's if set, else the image's.
- Labels and ExposedPorts: the image's, with the request's on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnm.errors import InvalidParameter
from cnm.images.config import ImageConfig


@dataclass
class RunConfig:
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = ""
    user: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    stop_signal: str = ""

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd


def env_dict(items: list[str]) -> dict[str, str]:
    """["K=V", …] as an ordered dict; a bare "K" is K="" (the image spec's Env form)."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key:
            out[key] = value
    return out


def merge(
    image: ImageConfig,
    *,
    cmd: list[str] | None,
    entrypoint: list[str] | None,
    env: dict[str, str] | None = None,
    workdir: str = "",
    user: str = "",
    labels: dict[str, str] | None = None,
    exposed_ports: list[str] | None = None,
    stop_signal: str = "",
    image_name: str = "",
) -> RunConfig:
    """The container's run configuration; InvalidParameter when there is nothing to
    run (Docker's "no command specified") or the working directory is relative."""
    if entrypoint:
        ep = [] if entrypoint == [""] else list(entrypoint)
        args = list(cmd or [])
    else:
        ep = image.entrypoint() if entrypoint is None else []
        args = list(cmd) if cmd else image.cmd()
    if not ep and not args:
        raise InvalidParameter(
            f"no command specified: the image {image_name or image.id[:19]} has no CMD or "
            "ENTRYPOINT; give a command after the image name"
        )
    wd = workdir or image.workdir()
    if wd and not wd.startswith("/"):
        raise InvalidParameter(f"the working directory '{wd}' is invalid, it needs to be an absolute path")
    ports = list(dict.fromkeys([*(image.container_config.get("ExposedPorts") or {}), *(exposed_ports or [])]))
    image_signal = image.container_config.get("StopSignal")
    return RunConfig(
        entrypoint=ep,
        cmd=args,
        env={**env_dict(image.env()), **(env or {})},
        workdir=wd,
        user=user or image.user(),
        labels={**image.labels(), **(labels or {})},
        exposed_ports=ports,
        stop_signal=stop_signal or (image_signal if isinstance(image_signal, str) else ""),
    )
