"""`net lab`: multi-host topologies on one machine.

A topology is data (`topology`: YAML -> frozen dataclasses, and the ordered plan);
one module builds it (`realise`), through one command seam (`runner`). What a lab
made is recorded as it is made (`record`), so `down` works from the record alone.
`impair`, `graph` and `checks` render commands, pictures and probes from data.
"""
