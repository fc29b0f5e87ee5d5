"""`net lab graph`: the lab as a Graphviz description (pure), rendered by `dot`.

Hosts are clusters holding their daemon, bridge networks and containers; the underlay
switch sits below them; an overlay network is one node outside the hosts, joined to
every host it spans by a dashed VXLAN edge.
"""

from __future__ import annotations

from cnm.errors import InvalidParameter
from cnm.lab.topology import Lab, switch_port

FORMATS = ("dot", "png", "svg", "pdf")
NL = "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**kw: str) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in kw.items()) + "]"


def render(lab: Lab) -> str:
    """DOT text for the lab (deterministic: same lab, same text)."""
    etcd_on = set(lab.cluster.hosts)
    out = [
        f"graph {_q('lab-' + lab.name)} {{",
        f"  graph {_attrs(label=f'lab {lab.name}', labelloc='t', fontname='Helvetica', compound='true')};",
        f"  node {_attrs(fontname='Helvetica', fontsize='11')};",
        f"  edge {_attrs(fontname='Helvetica', fontsize='9')};",
        f"  switch {_attrs(label=NL.join(['underlay switch', lab.underlay.subnet]), shape='box', style='filled', fillcolor='#e0e0e0')};",
    ]
    for n in lab.networks:
        if n.is_overlay:
            label = f"{n.name} (overlay)" + (f"\n{n.subnet}" if n.subnet else "")
            out.append(
                f"  {_q('net:' + n.name)} {_attrs(label=label, shape='hexagon', style='filled', fillcolor='#cfe2ff')};"
            )
    for h in lab.hosts:
        out.append(f"  subgraph {_q('cluster_' + h.name)} {{")
        out.append(f"    graph {_attrs(label=f'{h.name}  {h.address}', style='rounded')};")
        daemon = f"{h.name} daemon" + ("\netcd member" if h.name in etcd_on else "")
        out.append(f"    {_q('host:' + h.name)} {_attrs(label=daemon, shape='box3d')};")
        for n in lab.networks:
            if not n.is_overlay and h.name in n.hosts:
                label = f"{n.name} (bridge)" + (f"\n{n.subnet}" if n.subnet else "")
                out.append(
                    f"    {_q(f'net:{n.name}@{h.name}')} {_attrs(label=label, shape='ellipse', style='filled', fillcolor='#d1e7dd')};"
                )
        if any(c.host == h.name and "bridge" in c.networks for c in lab.containers):
            out.append(f"    {_q(f'net:bridge@{h.name}')} {_attrs(label='bridge (default)', shape='ellipse')};")
        for c in lab.containers:
            if c.host == h.name:
                label = c.name + (f"\n{c.ip}" if c.ip else "")
                out.append(
                    f"    {_q('ctr:' + c.name)} {_attrs(label=label, shape='component', style='filled', fillcolor='#fff3cd')};"
                )
        out.append("  }")
    for h in lab.hosts:
        link = [f"mtu {h.link.mtu}"]
        link += [f"rate {h.link.rate}"] if h.link.rate else []
        link += [f"loss {h.link.loss:g}%"] if h.link.loss else []
        link += [f"delay {h.link.delay:g}ms"] if h.link.delay else []
        label = f"ul0 / {switch_port(h.name)}" + NL + ", ".join(link)
        out.append(f"  {_q('host:' + h.name)} -- switch {_attrs(label=label)};")
        for n in lab.networks:
            if n.is_overlay:
                out.append(
                    f"  {_q('net:' + n.name)} -- {_q('host:' + h.name)} {_attrs(style='dashed', label='vxlan')};"
                )
            elif h.name in n.hosts:
                out.append(f"  {_q(f'net:{n.name}@{h.name}')} -- {_q('host:' + h.name)};")
        if any(c.host == h.name and "bridge" in c.networks for c in lab.containers):
            out.append(f"  {_q(f'net:bridge@{h.name}')} -- {_q('host:' + h.name)};")
    for c in lab.containers:
        for net in c.networks:
            node = f"net:{net}" if net != "bridge" and lab.network(net).is_overlay else f"net:{net}@{c.host}"
            out.append(f"  {_q('ctr:' + c.name)} -- {_q(node)};")
    out.append("}")
    return "\n".join(out) + "\n"


def output_format(path: str) -> str:
    """The format a file name asks for, from its suffix."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in FORMATS:
        raise InvalidParameter(f"cannot tell the picture format of {path!r}: end it in .{', .'.join(FORMATS)}")
    return suffix
