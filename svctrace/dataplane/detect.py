"""Which dataplane, decided once: the format of a dump (sniffed from its text) and the kube-proxy mode a node
runs (its /proxyMode, the configuration, else its dumps).

The parsers (iptables, nftables, IPVS), `trace` on loose files, `explain`, its diagnostics and the rules
browser all ask here. Nothing here parses rules: it looks at text, so every dataplane package may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from svctrace.model.snapshot import NodeFiles, Snapshot

MODES = ("iptables", "ipvs", "nftables")

# -- a dump's format ---------------------------------------------------------------------------------


_SNIFFED: list[tuple[str, str]] = []  # the last text sniffed and its format: `trace` asks twice of one dump


def sniff_format(text: str) -> str:
    """iptables-save | iptables-S | iptables-L | nft | ipvsadm | unknown (then parsed as iptables)."""
    if _SNIFFED and _SNIFFED[0][0] is text:  # the same object (held here, so its id is not reused)
        return _SNIFFED[0][1]
    fmt = _sniff_format(text)
    _SNIFFED[:] = [(text, fmt)]
    return fmt


_IPVS_WORD = re.compile(r"(?:TCP|UDP|SCTP|FWM)\s")


def _count(pattern: str, head: str, needed: bool) -> int:
    """re.findall's count of `pattern`; 0 without running it when `needed` (a text the pattern cannot match
    without) is false: an iptables-save dump does not pay for the other formats' patterns (~5 ms at 1k)."""
    return len(re.findall(pattern, head)) if needed else 0


def _sniff_format(text: str) -> str:
    head = text[:200000]
    save = len(re.findall(r"(?m)^(?:[^\n]*?\]:\s*|\s*\d+\s+|\s*)(?:\[\d+:\d+\]\s*)?-A\s+[\w.@-]+\s", head)) + _count(r"(?m)^\s*\*(?:nat|filter|mangle|raw)\b", head, "*" in head)
    listing = _count(r"(?m)^\s*Chain \S+ \((?:policy \w+|\d+ references?)", head, "Chain " in head)
    nft = _count(r"(?m)^\s*table (?:ip|ip6|inet|arp|bridge|netdev) \S+ \{", head, "table " in head)
    nft += _count(r"(?m)^\s*chain \S+ \{\s*$|^\s*type (?:filter|nat|route) hook \w+", head,
                  "chain " in head or "type filter hook" in head or "type nat hook" in head or "type route hook" in head)
    words = _IPVS_WORD.search(head) is not None
    ipvs = _count(r"(?m)^\s*(?:TCP|UDP|SCTP|FWM)\s+\S+\s+(?:rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|mh|fo|ovf)\b", head, words)
    ipvs += _count(r"(?m)^\s*-A -[tuf] \S+", head, "-A -" in head) * 2
    ipvs += _count(r"(?m)^IP Virtual Server version", head, "IP Virtual Server version" in head) * 3
    ipvs += _count(r"(?m)^\s*(?:TCP|UDP|SCTP)\s+\[?[\w.:-]+\]?:\w+\s+\d+\s+\d+", head, words)
    best = max(save, listing, nft, ipvs)
    if best == 0:
        return "unknown"
    if best == save and save >= listing:
        return "iptables-save"
    if best == listing:
        return "iptables-L"
    if best == nft:
        return "nft"
    return "ipvsadm"


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


def is_nft_json(text: str) -> bool:
    head = text.lstrip()[:200]
    return head.startswith("{") and '"nftables"' in text[:4000]


def looks_like_nft(text: str) -> bool:
    """Is this an nftables ruleset (`nft list ruleset`, `nft -j list ruleset`, `nft -f` input, a fragment)?"""
    if is_nft_json(text):
        return True
    head = text[:200000]
    nft = len(_NFT_LINES.findall(head)) * 3 + len(_NFT_RULE_WORDS.findall(head))
    ipt = len(_IPTABLES.findall(head)) * 3
    return nft > 0 and nft >= ipt


def looks_like_ipset(text: str) -> bool:
    """`ipset save` or `ipset list` output."""
    head = text[:20000]
    return bool(re.search(r"(?m)^create \S+ (?:hash|bitmap|list):", head)) or (
        "Name:" in head and "Members:" in head and "Type:" in head)


ADDRESS_FILES = ("ip-addr.json", "ip-addr")


def is_address_file(name: str) -> bool:
    """A snapshot node's `ip addr` output (known by its file name)."""
    return name.endswith(tuple(f"/{f}" for f in ADDRESS_FILES))


HOST_FILE_NAMES = ("sysctl", "ip-route.json", "ip-route", "ip-rule.json", "ip-rule", "hairpin-mode", "modules")


def is_host_file(name: str) -> bool:
    """A snapshot node's network facts other than its addresses (svctrace.dataplane.host), known by file name."""
    return name.endswith(tuple(f"/{f}" for f in HOST_FILE_NAMES))


def sniff_input(text: str, name: str) -> str:
    """What one of `trace`'s inputs is: ipset | ip-addr | nft | ipvsadm | iptables (the rest, any iptables
    format). `name` is where it came from (a snapshot's node files are known by name)."""
    if looks_like_ipset(text):
        return "ipset"
    if is_address_file(name):
        return "ip-addr"
    if looks_like_nft(text) or name.endswith("/nft.json"):
        return "nft"
    if sniff_format(text) == "ipvsadm":
        return "ipvsadm"
    return "iptables"


# -- what a node's dumps hold ---------------------------------------------------------------------------


def has_kube_proxy_table(nft: str) -> bool:
    """nft text or JSON holding kube-proxy's own table (`table ip kube-proxy`, nftables mode)."""
    return bool(re.search(r'table ip6? kube-proxy|"name":\s*"kube-proxy"', nft))


def has_virtual_servers(ipvsadm: str) -> bool:
    """An ipvsadm listing or save with at least one virtual server."""
    return bool(re.search(r"(?m)^\s*(?:TCP|UDP|SCTP|-A -[tus])\s", ipvsadm))


IPVS_MODE_CHAINS = ("KUBE-LOAD-BALANCER", "KUBE-LOOP-BACK", "KUBE-IPVS-FILTER")


def modes_present(nf: NodeFiles, iptables_chains: Iterable[str]) -> set[str]:
    """Every kube-proxy mode whose rules the node holds (leftovers of an old mode included): KUBE-SVC-*
    chains (iptables), IPVS virtual servers or kube-proxy's IPVS-mode iptables chains, an `ip kube-proxy`
    nft table."""
    chains = list(iptables_chains)
    found = set()
    if any(c.startswith("KUBE-SVC-") for c in chains):
        found.add("iptables")
    if any(c in IPVS_MODE_CHAINS for c in chains) or has_virtual_servers(nf.get("ipvsadm") or ""):
        found.add("ipvs")
    if has_kube_proxy_table((nf.get("nft") or "") + (nf.get("nft.json") or "")):
        found.add("nftables")
    return found


def said_mode(nf: NodeFiles) -> str:
    """The node's own word on kube-proxy's mode (`proxy-mode`, from /proxyMode), if it names one."""
    said = (nf.get("proxy-mode") or "").strip().lower()
    return said if said in MODES else ""


def iptables_name(nf: NodeFiles, family: int) -> tuple[bool, str]:
    """(present, file name) of the node's iptables dump for the family: the default backend's, else legacy.
    Nothing is read: a snapshot's dumps are read when used."""
    for fname in (("iptables-save", "iptables-legacy-save") if family == 4 else
                  ("ip6tables-save", "ip6tables-legacy-save")):
        if nf.has(fname):
            return True, fname
    return False, "iptables-save" if family == 4 else "ip6tables-save"


def iptables_file(nf: NodeFiles, family: int) -> tuple[str | None, str]:
    """(text, file name) of the node's iptables dump for the family: the default backend's, else legacy."""
    present, fname = iptables_name(nf, family)
    return (nf.get(fname) if present else None), fname


def missing_file(nf: NodeFiles, mode: str | None, family: int) -> str | None:
    """The file a node in `mode` needs and lacks (None when it has it); an empty nft or ipvsadm file is lacking."""
    if mode == "nftables":
        return None if (nf.has("nft.json", empty=False) or nf.has("nft", empty=False)) else "nft.json"
    if mode == "ipvs":
        return None if nf.has("ipvsadm", empty=False) else "ipvsadm"
    present, fname = iptables_name(nf, family)
    return None if present else fname


# -- a node's mode -----------------------------------------------------------------------------------


def detect_mode(snap: Snapshot, nf: NodeFiles, family: int) -> tuple[str | None, str]:
    """(mode, where it came from): /proxyMode, the configuration, else the dumps themselves (once per node:
    the dumps can be megabytes and every question asks)."""
    return nf.parsed(f"mode/ipv{family}", lambda _text, _path: _detect_mode(snap, nf, family), text="")


def _detect_mode(snap: Snapshot, nf: NodeFiles, family: int) -> tuple[str | None, str]:
    said = said_mode(nf)
    cfg = (snap.cluster.proxy.mode or "").strip().lower()
    for mode, where in ((said, f"nodes/{nf.name}/proxy-mode"),
                        (cfg, snap.cluster.proxy.sources.get("mode", "the kube-proxy configuration"))):
        if mode in MODES:
            if missing_file(nf, mode, family) is None:
                return mode, where
            # Configured for a mode whose dump is absent, while iptables-mode rules are there: those decide
            # (explain reports the mismatch).
            text, _ = iptables_file(nf, family)
            if text and "KUBE-SERVICES" in text:
                return "iptables", f"the node's KUBE-SERVICES rules ({where} says {mode})"
            return mode, where
    if has_kube_proxy_table((nf.get("nft.json") or "") + (nf.get("nft") or "")):
        return "nftables", "the node's `ip kube-proxy` nft table"
    if nf.get("ipvsadm") and has_virtual_servers(nf.get("ipvsadm") or ""):
        return "ipvs", "the node's IPVS virtual servers"
    ipt = nf.get("iptables-save" if family == 4 else "ip6tables-save") or nf.get(
        "iptables-legacy-save" if family == 4 else "ip6tables-legacy-save") or ""
    if "KUBE-SERVICES" in ipt:
        return "iptables", "the node's KUBE-SERVICES rules"
    return None, ""


def usable(snap: Snapshot, name: str, family: int) -> bool:
    """The node has a mode and the dump that mode is walked from."""
    nf = snap.nodes.get(name)
    if nf is None:
        return False
    mode, _ = detect_mode(snap, nf, family)
    return missing_file(nf, mode, family) is None and mode is not None
