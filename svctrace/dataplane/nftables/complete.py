"""Fill in the hooks a trimmed paste left out, when what is left says whose they are.

A `nft list table ip kube-proxy` always has base chains; a paste without any was trimmed. kube-proxy
writes the same skeleton on every node (pkg/proxy/nftables/proxier.go): nat-prerouting and nat-output
jump to `services`, nat-postrouting to `masquerading`, filter chains jump to the *-check chains. An
iptables-nft `table ip nat` pasted chain by chain (`nft list chain nat KUBE-SERVICES`) lacks
PREROUTING/OUTPUT/POSTROUTING, which jump to KUBE-SERVICES and KUBE-POSTROUTING. The chains added here
are flagged `assumed`; a walk through one of their rules is uncertain and says so. Stdlib only.
"""

from __future__ import annotations

from svctrace.dataplane.nftables.ir import Chain, NftRuleset, Rule, Table
from svctrace.dataplane.nftables.syntax import Tok, parse_rule_tokens, tokenize_line
from svctrace.dataplane.nftables.values import priority_value
from svctrace.errors import Warn

# (chain, type, hook, priority, [(rule, chain it needs)])
_KUBE_PROXY_BASE: list[tuple[str, str, str, str, list[tuple[str, str]]]] = [
    ("nat-prerouting", "nat", "prerouting", "dstnat", [("jump services", "services")]),
    ("nat-output", "nat", "output", "dstnat", [("jump services", "services")]),
    ("nat-postrouting", "nat", "postrouting", "srcnat", [("jump masquerading", "masquerading")]),
    ("filter-prerouting", "filter", "prerouting", "dstnat - 10", [("ct state new jump firewall-check",
                                                                   "firewall-check")]),
    ("filter-input", "filter", "input", "dstnat - 10", [
        ("ct state new jump nodeport-endpoints-check", "nodeport-endpoints-check"),
        ("ct state new jump service-endpoints-check", "service-endpoints-check")]),
    ("filter-forward", "filter", "forward", "dstnat - 10", [
        ("ct state new jump service-endpoints-check", "service-endpoints-check"),
        ("ct state new jump cluster-ips-check", "cluster-ips-check")]),
    ("filter-output", "filter", "output", "dstnat - 10", [
        ("ct state new jump service-endpoints-check", "service-endpoints-check"),
        ("ct state new jump firewall-check", "firewall-check")]),
    ("filter-output-post-dnat", "filter", "output", "dstnat + 10", [("ct state new jump cluster-ips-check",
                                                                      "cluster-ips-check")]),
]
_MASQUERADING = ["meta mark & 0x00004000 == 0x00000000 return", "meta mark set meta mark ^ 0x00004000",
                 "masquerade fully-random"]
_IPTABLES_NAT = [("PREROUTING", "prerouting", "dstnat", "KUBE-SERVICES"),
                 ("OUTPUT", "output", "dstnat", "KUBE-SERVICES"),
                 ("POSTROUTING", "postrouting", "srcnat", "KUBE-POSTROUTING")]


def _rule(t: Table, c: Chain, text: str) -> None:
    toks: list[Tok] = []
    tokenize_line(text, 0, toks)
    stmts, comment, problems = parse_rule_tokens(toks)
    c.rules.append(Rule(t.key, c.name, len(c.rules) + 1, stmts, text, None, comment, None, problems, assumed=True))


def _chain(t: Table, name: str, typ: str | None = None, hook: str | None = None, prio: str | None = None) -> Chain:
    c = Chain(t.key, name, type=typ, hook=hook, priority=priority_value(prio, t.family) if prio else None,
              priority_text=prio, policy="accept" if hook else None, assumed=True)
    t.chains[name] = c
    return c


def _jumped_to(t: Table) -> set[str]:
    from svctrace.dataplane.nftables.ir import AnonSet, Element, Verdict, VerdictStmt, Vmap

    out: set[str] = set()
    for c in t.chains.values():
        for r in c.rules:
            for s in r.stmts:
                if isinstance(s, VerdictStmt) and s.verdict.target:
                    out.add(s.verdict.target)
                if isinstance(s, Vmap) and isinstance(s.data, AnonSet):
                    for el in s.data.elements:
                        if isinstance(el, Element) and isinstance(el.data, Verdict) and el.data.target:
                            out.add(el.data.target)
    return out


def complete_partial(rs: NftRuleset) -> None:
    for t in list(rs.tables.values()):
        if t.name == "kube-proxy" and t.family in ("ip", "ip6") and t.chains and \
                not any(c.is_base for c in t.chains.values()):
            _kube_proxy(rs, t)
        elif t.name == "nat" and t.family in ("ip", "ip6"):
            _iptables_nat(rs, t)


def _kube_proxy(rs: NftRuleset, t: Table) -> None:
    added: list[str] = []
    if "services" not in t.chains and "service-ips" in t.sets:
        c = _chain(t, "services")
        _rule(t, c, ("ip6" if t.family == "ip6" else "ip") + " daddr . meta l4proto . th dport vmap @service-ips")
        ipx = "ip6" if t.family == "ip6" else "ip"
        if "service-nodeports" in t.sets and "nodeport-ips" in t.sets:
            _rule(t, c, f"{ipx} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")
        elif "service-nodeports" in t.sets:  # --nodeport-addresses matches all: no nodeport-ips set
            local = "ip6 daddr != ::1" if ipx == "ip6" else "ip daddr != 127.0.0.0/8"
            _rule(t, c, f"fib daddr type local {local} meta l4proto . th dport vmap @service-nodeports")
        added.append("services")
    if "masquerading" not in t.chains:
        c = _chain(t, "masquerading")
        for text in _MASQUERADING:
            _rule(t, c, text)
        added.append("masquerading")
    if "mark-for-masquerade" not in t.chains and "mark-for-masquerade" in _jumped_to(t):
        c = _chain(t, "mark-for-masquerade")
        _rule(t, c, "meta mark set meta mark | 0x00004000")
        added.append("mark-for-masquerade")
    for name, typ, hook, prio, rules in _KUBE_PROXY_BASE:
        present = [(text, need) for text, need in rules if need in t.chains]
        if not present or name in t.chains:
            continue
        c = _chain(t, name, typ, hook, prio)
        for text, _ in present:
            _rule(t, c, text)
        added.append(name)
    if added:
        rs.warnings.append(Warn(
            f"table {t.key} has no base chains in this dump (trimmed?): assumed kube-proxy's usual "
            f"{', '.join(added)}; outcomes that go through them are marked uncertain", rs.source, t.line,
            "assumed-chains"))


def _iptables_nat(rs: NftRuleset, t: Table) -> None:
    hooks = {c.hook for c in t.chains.values() if c.is_base}
    added: list[str] = []
    for name, hook, prio, target in _IPTABLES_NAT:
        if hook in hooks or target not in t.chains or name in t.chains:
            continue
        c = _chain(t, name, "nat", hook, prio)
        _rule(t, c, f"counter jump {target}")
        added.append(f"{name} -> {target}")
    if added:
        rs.warnings.append(Warn(
            f"table {t.key} (iptables-nft) is pasted without its base chains: assumed kube-proxy's "
            f"{'; '.join(added)}; outcomes that go through them are marked uncertain", rs.source, t.line,
            "assumed-chains"))
