"""nft.apply through libnftables in-process: same transaction semantics as the `nft`
binary, the error text users see, and never the wrong namespace: a thread inside
another namespace falls back to the binary, which runs where that thread is."""

from __future__ import annotations

import json
import secrets
import sys
import textwrap

from tests.integration.conftest import ROOT, ns_sh, sh

SCRIPT = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(ROOT)!r})
    from cnm.errors import InternalError
    from cnm.osl import nft
    from cnm.osl.netns import NetnsThread
    out = {{}}
    nft.apply("table inet cnm-t1 {{\\n set s {{\\n type ipv4_addr\\n elements = {{ 10.0.0.1 }}\\n }}\\n}}\\n")
    out["in_process"] = nft._LIB._owner is not None
    nft.apply("table inet cnm-t1\\ndelete table inet cnm-t1\\ntable inet cnm-t1 {{\\n set s {{\\n type ipv4_addr\\n }}\\n}}\\n")
    try:
        nft.apply("table inet cnm-t2 {{ chain c {{ type filter hook input priority 0; policy nope; }} }}\\n")
        out["error"] = None
    except InternalError as exc:
        out["error"] = str(exc)
    # all or nothing: a bad second command leaves the first undone too
    try:
        nft.apply("table inet cnm-t3\\ndelete table inet cnm-missing\\n")
    except InternalError:
        pass
    worker = NetnsThread(sys.argv[1])          # a thread inside the other namespace
    worker.call(nft.apply, "table inet cnm-other\\n")
    worker.close()
    out["tables"] = nft.list_tables()
    print(json.dumps(out))
""")


def test_in_process_apply_is_atomic_says_why_and_stays_in_its_namespace(host_ns):
    other = f"cnmt-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", other)
    try:
        r = ns_sh(host_ns, sys.executable, "-c", SCRIPT, f"/run/netns/{other}")
        out = json.loads(r.stdout)
        assert out["in_process"] is True
        assert "nft refused the firewall ruleset" in out["error"] and "syntax error" in out["error"]
        assert sorted(map(tuple, out["tables"])) == [("inet", "cnm-t1")]  # t2, t3 never made
        listed = json.loads(ns_sh(host_ns, "nft", "-j", "list", "set", "inet", "cnm-t1", "s").stdout)
        assert "elem" not in json.dumps(listed)  # the replacement won
        assert "cnm-other" in ns_sh(other, "nft", "list", "tables").stdout  # where the thread was
    finally:
        sh("ip", "netns", "del", other, check=False)
