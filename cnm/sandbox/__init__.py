"""CNM's Sandbox: a container's network stack.

sandbox   Sandbox (the object: endpoints, their order, the rules applied at every
          join and leave) and Sandboxes (build, find, restore, release)
rules     the pure decisions: gateway bridge, default route, ports, interface names
files     /etc/hosts and /etc/resolv.conf text
osl       SandboxOS: the namespace and the interfaces in it (OS-layer calls only)
"""
