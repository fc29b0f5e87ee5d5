"""`net ps`'s table (Docker's `docker ps` columns): the cells of a container's row from
its `GET /containers/json` entry. Pure and shared: the CLI renders the API's JSON with
it, and the daemon renders its pre-rendered listing (cnm.api.ps_listing) with it, so
both print the same bytes."""

from __future__ import annotations

from cnm import jsonlite

HEADERS = ("CONTAINER ID", "NAME", "COMMAND", "STATUS", "PORTS", "NETWORKS")
STATUS = HEADERS.index("STATUS")  # the one cell that depends on the time
COMMAND_WIDTH = 20  # Docker truncates the command to this, with an ellipsis


def ellipsis(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def json_str(text: str) -> str:
    """A string as a JSON string, non-ASCII kept (Docker's COMMAND column)."""
    return jsonlite.dumps(text, ascii=False)


def ports_text(ports: list[dict]) -> str:
    """Docker's PORTS column: 0.0.0.0:32768->80/tcp, 81/tcp."""
    out = []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""), p.get("PublicPort", 0))):
        if p.get("PublicPort"):
            host_ip = p.get("IP") or "0.0.0.0"
            host_ip = f"[{host_ip}]" if ":" in host_ip else host_ip
            out.append(f"{host_ip}:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}")
        else:
            out.append(f"{p['PrivatePort']}/{p['Type']}")
    return ", ".join(out)


def short_id(cid: str, no_trunc: bool) -> str:
    return cid if no_trunc else cid[:12]


def cells(c: dict, no_trunc: bool = False) -> tuple[str, ...]:
    """The row of one `GET /containers/json` entry."""
    command_text = c.get("Command", "")
    return (
        short_id(c["Id"], no_trunc),
        ",".join(n.lstrip("/") for n in c.get("Names", [])),
        json_str(command_text if no_trunc else ellipsis(command_text, COMMAND_WIDTH)),
        c.get("Status", ""),
        ports_text(c.get("Ports") or []),
        ",".join(sorted((c.get("NetworkSettings") or {}).get("Networks") or {})),
    )


def quiet_text(ids: list[str], no_trunc: bool = False) -> str:
    """`ps -q`'s output: one ID a line."""
    return "".join(short_id(cid, no_trunc) + "\n" for cid in ids)
