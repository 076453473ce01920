"""nftables: read `nft list ruleset` (text or `-j` JSON), walk a packet through it like the kernel does.

Pure: no UI, no network client. The walk returns the iptables walker's `TraceResult`, so both
dataplanes share outcomes, paths and renderers.
"""

from __future__ import annotations

from svctrace.dataplane.nftables.ir import Chain, NftRuleset, NSet, Rule, Table
from svctrace.dataplane.nftables.jsonfmt import load_json
from svctrace.dataplane.nftables.text import load_text
from svctrace.dataplane.nftables.walker import trace
from svctrace.errors import InputError

__all__ = ["Chain", "NSet", "NftRuleset", "Rule", "Table", "load_nft", "trace"]


def load_nft(text: str, source: str = "<nft>") -> NftRuleset:
    """Parse nft text or JSON (auto-detected). What a trimmed paste left out is filled in by its writer's layer
    (`svctrace.kubeproxy.walk.complete_nft`, which the kube-proxy walk runs)."""
    if "\x00" in text[:100000]:
        raise InputError("this is binary data, not an nftables ruleset", source=source)
    if text.lstrip().startswith(("{", "[")):
        rs = load_json(text, source)
    else:
        rs = load_text(text, source)
    if not rs.tables and not rs.orphans:
        raise InputError("no nftables table, chain or rule found: not `nft list ruleset` output", source=source)
    if not rs.tables and all(r.problems for r in rs.orphans):
        raise InputError("nothing here reads as nftables rules", source=source,
                         line=rs.orphans[0].line if rs.orphans else None)
    return rs
