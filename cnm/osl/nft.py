"""The one seam to `nft`: apply a rendered script atomically, delete our tables, read
the ruleset back. Runs in the calling process's network namespace (the daemon runs
inside its own); `netns` (a name under /run/netns or a path) is for tests and labs.
"""
from __future__ import annotations

import json
import os
import re

from cnm.errors import InternalError, InvalidParameter
from cnm.osl.proc import run

NFT = "nft"
_OURS = re.compile(r"^cnm[A-Za-z0-9_\-]*$")
_FAMILIES = {"ip", "ip6", "inet", "bridge", "arp", "netdev"}


def _ns_path(netns: str | None) -> str | None:
    if netns is None:
        return None
    return netns if "/" in netns else os.path.join("/run/netns", netns)


def apply(script: str, netns: str | None = None) -> None:
    """Run `nft -f -` with the script: one transaction, all or nothing.
    Raises InternalError carrying nft's message when the kernel or nft refuses it."""
    cp = run([NFT, "-f", "-"], input=script, netns=_ns_path(netns), check=False)
    if cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        raise InternalError(f"nft refused the firewall ruleset: {detail or f'exit {cp.returncode}'}")


def delete_tables(tables: list[tuple[str, str]] | tuple[tuple[str, str], ...], netns: str | None = None) -> None:
    """Delete the given (family, name) tables in one transaction. Idempotent: each
    table is created first if missing. Only tables named cnm* are accepted."""
    lines = []
    for family, name in tables:
        if family not in _FAMILIES or not _OURS.match(name):
            raise InvalidParameter(f"refusing to delete table {family} {name}: not one of ours (cnm*)")
        lines += [f"table {family} {name}", f"delete table {family} {name}"]
    if lines:
        apply("\n".join(lines) + "\n", netns)


def list_ruleset_json(netns: str | None = None) -> dict:
    """`nft -j list ruleset`, parsed. For tests and diagnostics."""
    cp = run([NFT, "-j", "list", "ruleset"], netns=_ns_path(netns))
    try:
        return json.loads(cp.stdout or '{"nftables": []}')
    except ValueError as exc:
        raise InternalError(f"nft printed unparsable JSON: {exc}") from exc


def list_tables(netns: str | None = None) -> list[tuple[str, str]]:
    """(family, name) of every table in the namespace."""
    items = list_ruleset_json(netns).get("nftables", [])
    return [(i["table"]["family"], i["table"]["name"]) for i in items if "table" in i]
