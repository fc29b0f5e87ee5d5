"""The daemon's HTTP API (Docker Engine API shaped) and its client.

Import the submodule you need: `cnm.api.client` and `cnm.api.transport` use the standard
library only (the CLI path), `cnm.api.server` pulls in aiohttp. This package's
`__init__` imports nothing so that the CLI stays light.
"""
