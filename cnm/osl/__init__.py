"""The OS layer: the only code in the project that talks to the kernel.

    netlink.Netlink   one pyroute2 RTNL handle per network namespace (links,
                      addresses, routes, per-namespace sysctls)
    netns             create/delete bind-mounted namespaces, run code inside one
    sysctl            /proc/sys of the calling thread's namespace
    proc.run          the one subprocess seam (argv lists, never a shell)
    errors.translate  errno -> cnm.errors

Everything takes and returns plain values (names, CIDR strings, ints) and raises
cnm.errors types. Import the submodules you need: this package imports nothing heavy
itself, so the CLI can import cnm without pulling in pyroute2.
"""
