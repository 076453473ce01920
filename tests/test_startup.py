"""What a command imports: an iptables trace loads neither the nftables nor the IPVS modules (nor rich, for JSON,
nor explain and the graph model, which only -o dot|svg|mermaid draws)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_PROBE = r"""
import json, sys
from svctrace.cli import main
sys.argv = ["svctrace", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith(("svctrace.dataplane.nftables", "svctrace.dataplane.ipvs",
                                                         "svctrace.kubeproxy.render", "rich", "textual",
                                                         "kubernetes", "paramiko", "yaml", "svctrace.explain",
                                                         "svctrace.browse")))
print(json.dumps(loaded), file=sys.stderr)
"""


def _loaded(*args: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    return json.loads(p.stderr.strip().splitlines()[-1])


def _iptables_dump() -> Path:
    return REPO / "svctrace" / "data" / "examples" / "kube-proxy-basic.iptables-save"


PACKET = ("--src", "10.244.0.5", "--dst", "10.96.0.1", "--proto", "tcp", "--dport", "443", "-o", "json")


def test_an_iptables_trace_imports_no_other_mode() -> None:
    dump = _iptables_dump()
    loaded = _loaded("trace", str(dump), *PACKET)
    assert loaded == []


def test_an_nftables_trace_loads_the_nftables_modules_it_needs() -> None:
    """The lazy imports are there when needed: the probe sees them (so the test above can fail)."""
    loaded = _loaded("trace", str(REPO / "svctrace" / "data" / "demo" / "nodes" / "node04" / "nft"), *PACKET)
    assert "svctrace.dataplane.nftables.walker" in loaded
    assert not any(m.startswith("svctrace.dataplane.ipvs") for m in loaded)
