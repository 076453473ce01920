"""nftables: read `nft list ruleset` (text or `-j` JSON), walk a packet through it like the kernel does.

Pure: no UI, no network client. The walk returns the iptables walker's `TraceResult`, so both
dataplanes share outcomes, paths and renderers.
"""

from __future__ import annotations

import re

from svctrace.dataplane.nftables.complete import complete_partial
from svctrace.dataplane.nftables.ir import Chain, NftRuleset, NSet, Rule, Table
from svctrace.dataplane.nftables.jsonfmt import load_json
from svctrace.dataplane.nftables.text import load_text
from svctrace.dataplane.nftables.walker import trace
from svctrace.errors import InputError

__all__ = ["Chain", "NSet", "NftRuleset", "Rule", "Table", "load_nft", "looks_like_nft", "trace"]

_NFT_LINES = re.compile(
    r"(?m)^\s*(?:table\s+(?:ip|ip6|inet|arp|bridge|netdev)\s+\S+\s*\{"
    r"|(?:add|create|insert|flush|delete)\s+(?:table|chain|rule|set|map|element)\s"
    r"|chain\s+\S+\s*\{"
    r"|type\s+(?:filter|nat|route)\s+hook\s+\w+"
    r"|(?:set|map)\s+\S+\s*\{"
    r"|#\s*Warning: (?:table \S+ \S+ is managed by iptables-nft|XT (?:target|match) \S+ not found))")
_NFT_RULE_WORDS = re.compile(
    r"(?m)^\s*(?:ip6?\s+[sd]addr|meta\s+(?:l4proto|mark)|ct\s+state|fib\s+[sd]addr|numgen\s+random|iifname|oifname)"
    r"\b.*\b(?:jump|goto|accept|drop|return|counter|dnat|snat|masquerade|redirect|vmap|reject)\b")
_IPTABLES = re.compile(r"(?m)^\s*(?:\[\d+:\d+\]\s*)?-A\s+\S+\s|^\s*\*(?:nat|filter|mangle|raw)\s*$|^\s*Chain \S+ \(")


def _is_json(text: str) -> bool:
    head = text.lstrip()[:200]
    return head.startswith("{") and '"nftables"' in text[:4000]


def looks_like_nft(text: str) -> bool:
    """Is this an nftables ruleset (`nft list ruleset`, `nft -j list ruleset`, `nft -f` input, a fragment)?"""
    if _is_json(text):
        return True
    head = text[:200000]
    nft = len(_NFT_LINES.findall(head)) * 3 + len(_NFT_RULE_WORDS.findall(head))
    ipt = len(_IPTABLES.findall(head)) * 3
    return nft > 0 and nft >= ipt


def load_nft(text: str, source: str = "<nft>", *, complete: bool = True) -> NftRuleset:
    """Parse nft text or JSON (auto-detected). `complete`: fill in the base chains a trimmed kube-proxy or
    iptables-nft paste left out (flagged `assumed`, walks through them are uncertain)."""
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
    if complete:
        complete_partial(rs)
    return rs
