"""Docker's remote plugin protocol (network drivers and IPAM), both ways.

    discovery   find a plugin by name: NAME.sock, NAME.spec, NAME.json in plugin folders
    client      PluginClient: one plugin's HTTP endpoint, bounded timeouts, typed errors
    sdk         write a plugin: subclass NetworkPlugin / IpamPlugin, call serve()
    serve       this project's drivers and default IPAM, served over the protocol
    check       drive a plugin through the protocol and list every deviation
    testing     a scriptable standard-library plugin server that records requests

Only the standard library is used here (the CLI imports these modules).
"""

from __future__ import annotations

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
NETWORK_DRIVER = "NetworkDriver"
IPAM_DRIVER = "IpamDriver"
