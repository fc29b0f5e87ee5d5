"""Run the resolver on its own, driven by JSON: for integration tests, benchmarks and
debugging in a namespace, without a daemon.

    python -m cnm.dns.standalone CONFIG.json

CONFIG: {"port": 53, "upstreams": ["10.0.0.2"], "upstream_timeout": 2.0,
         "listeners": [["NETWORK_ID", "10.89.0.1"], ...],
         "endpoints": [{"network_id", "network_name", "endpoint_id", "container_id",
                        "name", "aliases", "ipv4", "ipv6", "publish"?}, ...]}
Prints `ready` once every listener is bound. Then reads JSON lines on stdin —
{"op": "add", ...endpoint...}, {"op": "remove", "endpoint_id": ...},
{"op": "upstreams", "upstreams": [...]} — answering `ok` or `error: …` per line; exits
at end of input or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from cnm.dns.records import NameTable
from cnm.dns.server import Resolver


def add_endpoint(table: NameTable, spec: dict) -> None:
    table.add(
        spec["network_id"],
        spec.get("network_name") or "",
        spec["endpoint_id"],
        spec.get("container_id"),
        spec.get("name") or "",
        spec.get("aliases") or [],
        spec.get("ipv4"),
        spec.get("ipv6"),
        publish=bool(spec.get("publish", True)),
    )


async def serve(config: dict) -> None:
    loop = asyncio.get_running_loop()
    table = NameTable()
    upstreams = list(config.get("upstreams", []))
    for ep in config.get("endpoints", []):
        add_endpoint(table, ep)
    resolver = Resolver(
        table,
        lambda: upstreams,
        loop,
        port=int(config.get("port", 53)),
        upstream_timeout=float(config.get("upstream_timeout", 2.0)),
    )
    for network_id, address in config.get("listeners", []):
        await resolver.add_listener(network_id, address)
    print("ready", flush=True)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
                op = cmd.pop("op")
                if op == "add":
                    add_endpoint(table, cmd)
                elif op == "remove":
                    table.remove(cmd["endpoint_id"])
                elif op == "upstreams":
                    upstreams[:] = cmd["upstreams"]
                else:
                    raise ValueError(f"unknown op {op!r}")
                print("ok", flush=True)
            except Exception as exc:
                print(f"error: {exc}", flush=True)
        stop.set()

    task = asyncio.ensure_future(commands())
    await stop.wait()
    task.cancel()
    await resolver.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m cnm.dns.standalone CONFIG.json")
    with open(args[0]) as f:
        config = json.load(f)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
