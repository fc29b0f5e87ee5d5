"""Embedded DNS for user-defined networks: one resolver inside the daemon process.

Why this shape. Docker runs a resolver per sandbox at 127.0.0.11, which needs a socket
opened inside every container namespace plus NAT rules to redirect port 53 to it; 1,000
containers mean 1,000 socket pairs and rule sets to create, restore and clean up. Podman's
aardvark-dns listens once per network on the gateway address instead. We do the latter,
but inside the daemon: one asyncio server (UDP+TCP on port 53 of each user network's
gateway, bound in the daemon's own namespace with IP_FREEBIND) and one in-memory name
table the daemon updates synchronously while it connects and disconnects containers —
so a name resolves as soon as `net run -d` returns and stops when the container goes,
with no process to start, signal or reload. Answers depend on *who asks* (the source
address identifies the container, hence the networks it shares), not on which listener
the query reached, which keeps Docker's visibility rule: only names of containers on
networks you share. Other names go to the host's upstream resolvers; the default
`bridge` network keeps Docker's behaviour (the host's resolvers, no embedded DNS).

Modules: records (pure name table), handler (one query -> decision, pure), server
(sockets, forwarding), resolvconf (file texts), standalone (run it outside the daemon,
for tests and benchmarks).
"""

from __future__ import annotations

from cnm.dns.records import Answer, NameTable

__all__ = ["Answer", "NameTable"]
