"""Docker's option labels, in one place."""

from __future__ import annotations

BRIDGE_NAME = "com.docker.network.bridge.name"
ENABLE_ICC = "com.docker.network.bridge.enable_icc"
ENABLE_IP_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
MTU = "com.docker.network.driver.mtu"
INTERNAL = "com.docker.network.internal"
IPAM_SERIAL = "com.docker.network.ipam.serial"
ENABLE_IPV6 = "com.docker.network.enable_ipv6"
GENERIC = "com.docker.network.generic"  # the -o options, as Docker hands them to drivers
ENDPOINT_MAC = "com.docker.network.endpoint.macaddress"
ENDPOINT_IFNAME = "com.docker.network.endpoint.ifname"  # the interface's name in the sandbox (Docker 28)
PORTMAP = "com.docker.network.portmap"  # port bindings handed to ProgramExternalConnectivity
VXLANID_LIST = "com.docker.network.overlay.vxlanid_list"
