"""kube-proxy's notes on a walk: plain-language explanations of what kube-proxy's rules did to the packet (or
why they did nothing), added after the dataplane walk by `svctrace.kubeproxy.walk`. The walkers know the kernel;
what kube-proxy's chains, sets and addresses mean is said here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from svctrace.dataplane.contract import Outcome
from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import Chain, Ruleset
from svctrace.kubeproxy.ipvs_sets import NODEPORT_RANGE
from svctrace.kubeproxy.names import nft_chain_owner
from svctrace.kubeproxy.versions import has
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.version import Version

if TYPE_CHECKING:  # the IPVS and nftables modules load when a note of that mode is asked for
    from svctrace.dataplane.ipvs.walker import IPVSContext
    from svctrace.dataplane.nftables.ir import NftRuleset, Table
    from svctrace.kubeproxy.ipvs_sets import Layout


def _this(pkt: Packet) -> str:
    return pkt.proto + (f"/{pkt.dport}" if pkt.has_ports else "")


def _untranslated(pkt: Packet, served: str, what: str) -> str:
    """The packet went to a Service address but matched none of its rules: no DNAT, and nothing owns the address."""
    return (f"{pkt.dst} is a Service address in these rules{served}. This packet ({_this(pkt)}) matches none of its "
            f"{what}, so it is not translated and is routed on towards an address no host owns: nothing will answer.")


# -- iptables mode ---------------------------------------------------------------------------------------

# A KUBE-SERVICES rule's Service address and the Service port its comment names (pkg/proxy/iptables/proxier.go:
# `-d <clusterIP>/32 ... -m comment --comment "ns/svc:port cluster IP"`).
_SERVICE_DST = re.compile(r'-d ([0-9a-fA-F.:]+)(?:/(?:32|128))?\s(?:.*?--comment "?([^"]*?)(?: cluster IP| loadbalancer IP'
                          r'| external IP)?"?(?:\s|$))?')

def iptables_notes(rs: Ruleset, pkt: Packet, outcomes: list[Outcome]) -> tuple[list[str], bool]:
    """Explain an untranslated packet to a Service IP (the rules know the address, not this packet: it goes
    nowhere, the second value), or to an address no Service of the dump has (a hint with some that it has)."""
    if not outcomes or any(o.dnat for o in outcomes) or not all(o.verdict == "accept" for o in outcomes):
        return [], False
    chain = rs.chain("nat", "KUBE-SERVICES")
    if chain is None:
        return [], False
    dst = str(pkt.dst)
    served: list[str] = []
    known: dict[str, str] = {}  # the Service addresses KUBE-SERVICES names -> a comment naming one of them
    for raw in chain.raw:
        if f"-d {dst}/" not in raw.text and f"-d {dst} " not in raw.text:
            if len(known) < 6:
                m = _SERVICE_DST.search(raw.text)
                if m is not None and m.group(1) not in known:
                    known[m.group(1)] = m.group(2) or ""
            continue
        rule = parse_rule(chain.table, chain.name, raw, rs.family)[0]  # only the few rules naming this address
        proto = next((m.opts[0].arg for m in rule.matches if m.module == "-p" and m.opts), None)
        port = next((o.arg for m in rule.matches for o in m.opts if o.name == "--dport"), None)
        what = (rule.comment or "a Service") + (f" ({proto or '?'}/{port})" if port else "")
        if what not in served:
            served.append(what)
    if any(o.delivery == "local" for o in outcomes):
        return [], False
    if not served:
        if not known or _in_pod_range(rs, chain, pkt):
            return [], False
        some = ", ".join(f"{ip} ({what})" if what else ip for ip, what in list(known.items())[:4])
        return [f"No kube-proxy rule of this dump mentions {dst}: it is not a Service address here (the dump knows "
                f"{some}{', ...' if len(known) > 4 else ''}). The packet is routed on untranslated; check the "
                "address (kubectl get svc -A -o wide), or that this dump is from the cluster you mean."], False
    return [_untranslated(pkt, f": {'; '.join(served[:4])}", "rules")
            + " In iptables mode a Service IP exists only as DNAT rules for its ports; "
            + ("ping (ICMP) to it never gets a reply." if pkt.proto in ("icmp", "icmpv6")
               else "use one of the Service's ports.")], True


def _in_pod_range(rs: Ruleset, services: Chain, pkt: Packet) -> bool:
    """The destination is in the cluster CIDR kube-proxy's masquerade rules name (`! -s <clusterCIDR> ...
    -j KUBE-MARK-MASQ`, in KUBE-SERVICES before 1.24 and in each KUBE-SVC chain since): a pod, not a Service."""
    texts = [raw.text for raw in services.raw[:4]]
    first = next((m.group(1) for t in texts if (m := _SVC_JUMP.search(t))), None)
    c = rs.chain("nat", first) if first else None
    texts += [raw.text for raw in (c.raw[:2] if c is not None else [])]
    for t in texts:
        m = _NOT_SRC.search(t)
        if m is not None:
            try:
                return pkt.dst in ipaddress.ip_network(m.group(1), strict=False)
            except (ValueError, TypeError):
                return False
    return False


_SVC_JUMP = re.compile(r"-j (KUBE-SVC-\S+)")
_NOT_SRC = re.compile(r"! -s ([0-9a-fA-F.:]+/\d+)")


# -- session affinity (every mode with xt_recent or nft affinity sets) --------------------------------------

AFFINITY_NOTE = "Session affinity (ClientIP): "  # how affinity_notes' note begins (explain's diagnostic reads it)
_RCHECK_SECONDS = re.compile(r"--rcheck\b.*?--seconds\s+(\d+)|--seconds\s+(\d+).*?--rcheck\b")
_AFFINITY_SET = re.compile(r"@(affinity-\S+)")


def _timeout_of(outcomes: list[Outcome], rs: object) -> tuple[float, str] | None:
    """The affinity timeout the rules on the outcomes' paths set, and how the rules say it: kube-proxy writes
    sessionAffinityConfig.clientIP.timeoutSeconds as `-m recent --rcheck --seconds N --reap` (iptables,
    pkg/proxy/iptables/proxier.go) or as the affinity set's `timeout Ns` (nftables, pkg/proxy/nftables/proxier.go)."""
    nft = not isinstance(rs, Ruleset)
    if nft:  # the nftables modules load only for an nftables question
        from svctrace.dataplane.nftables.ir import NftRuleset
        from svctrace.dataplane.nftables.walker import duration_seconds
    seen: set[tuple[str, str]] = set()
    texts: list[str] = []
    for o in outcomes:  # the rules of every chain the walk went through (an --rcheck that did not match too)
        for step in o.path:
            if (step.table, step.chain) in seen:
                continue
            seen.add((step.table, step.chain))
            if isinstance(rs, Ruleset):
                c = rs.chain(step.table, step.chain)
                texts += [raw.text for raw in c.raw] if c is not None else []
            elif nft and isinstance(rs, NftRuleset):
                nc = rs.chain(step.table, step.chain)
                texts += [r.text for r in nc.rules] if nc is not None else []
    for text in texts:
        m = _RCHECK_SECONDS.search(text)
        if m is not None:
            n = float(m.group(1) or m.group(2))
            reap = " --reap" if "--reap" in text else ""
            return n, f"`-m recent --rcheck --seconds {int(n)}{reap}`"
        m2 = _AFFINITY_SET.search(text)
        if m2 is not None and nft and isinstance(rs, NftRuleset):
            for t in rs.tables.values():
                ns = t.sets.get(m2.group(1))
                secs = duration_seconds(ns.timeout) if ns is not None else None
                if ns is not None and secs is not None:
                    return secs, f"the set @{ns.name}'s `timeout {ns.timeout}`"
    return None


def affinity_notes(outcomes: list[Outcome], rs: object, node: NodeFacts, first: list[Outcome] | None) -> list[str]:
    """What session affinity did for a returning client, and for how long (the timeout, from the rules)."""
    if not node.returning_client:
        return []
    found = _timeout_of(outcomes, rs) or (_timeout_of(first, rs) if first else None)
    if found is None:
        return []
    secs, said = found
    life = f"{int(secs)} s" + (f" ({secs / 3600:g} h)" if secs >= 3600 else "")
    how = (f"{AFFINITY_NOTE}the client's address was remembered with the endpoint of its last new "
           f"connection, and {said} keeps it for {life} (sessionAffinityConfig.clientIP.timeoutSeconds): every new "
           f"connection in that time goes to the same endpoint, and the timer restarts with each one.")
    prev = node.previous_endpoint
    age = node.affinity_age
    if age is not None and age >= secs:
        return [f"{how} This client's entry is {age:g} s old, past the timeout: it is no longer matched (and is "
                "reaped), so the connection gets the normal split and a new entry."]
    sticky = [o for o in outcomes if o.dnat is not None and str(o.dnat) == prev]
    if prev is not None and sticky and abs(sum(o.probability for o in sticky) - 1.0) < 1e-9:
        return [f"{how} Its previous connection went to {prev}, so this one does too (100%)."]
    if prev is not None:
        return [f"{how} Its previous endpoint {prev} is not one these rules send this packet to any more (scaled "
                "down, replaced or not ready): no rule checks its list, so it gets the normal split."]
    return [f"{how} Which endpoint it has depends on where its first connection went: shown with that first "
            "split; --previous-endpoint IP:PORT gives the sticky answer."]


# -- nftables mode ---------------------------------------------------------------------------------------

def _service_cidr(rs: NftRuleset, family: int) -> str | None:
    from svctrace.dataplane.nftables.ir import AnonSet, Const, Match, Prefix
    from svctrace.dataplane.nftables.printer import fmt_expr

    for t in rs.tables.values():
        c = t.chains.get("cluster-ips-check")
        if c is None:
            continue
        for r in c.rules:
            for s in r.stmts:
                if isinstance(s, Match) and isinstance(s.right, Prefix | Const | AnonSet):
                    txt = fmt_expr(s.right).strip("{} ")
                    if "/" in txt:
                        return txt
    return None


def _kube_tables(rs: NftRuleset, family: int) -> Iterator[Table]:
    fam = "ip" if family == 4 else "ip6"
    for t in rs.tables.values():
        if t.name == "kube-proxy" and t.family == fam:
            yield t


def _service_ip(rs: NftRuleset, pkt: Packet) -> list[str]:
    """What kube-proxy's maps say about the destination address: `172.30.0.41 tcp/80`, ..."""
    from svctrace.dataplane.nftables.ir import Concat, Const, Verdict
    from svctrace.dataplane.nftables.printer import fmt_expr

    out: list[str] = []
    for t in _kube_tables(rs, pkt.family):
        sips = t.sets.get("service-ips")
        if sips is not None:
            for el in sips.elements:
                comps = el.key.items if isinstance(el.key, Concat) else (el.key,)
                if comps and isinstance(comps[0], Const) and str(comps[0].value) == str(pkt.dst):
                    what = "/".join(fmt_expr(c) for c in comps[1:])
                    target = el.data.target if isinstance(el.data, Verdict) and el.data.target else ""
                    svc = _svc_of_chain(target)
                    out.append(f"{svc} ({what})" if svc else what)
        cips = t.sets.get("cluster-ips")
        if not out and cips is not None and any(isinstance(e.key, Const) and str(e.key.value) == str(pkt.dst)
                                                for e in cips.elements):
            out.append("a ClusterIP (in @cluster-ips)")
    return out


def _svc_of_chain(name: str) -> str:
    """`service-ULMVA6XW-ns1/svc1/tcp/p80` -> `ns1/svc1:p80`."""
    o = nft_chain_owner(name)
    if o is None or o.kind not in ("service", "external"):
        return ""
    return f"{o.namespace}/{o.name}" + (f":{o.port_name}" if o.port_name else "")


def nft_notes(rs: NftRuleset, pkt: Packet, outcomes: list[Outcome]) -> tuple[list[str], bool]:
    """Plain-language explanations of kube-proxy nftables behaviours the outcome shows."""
    notes: list[str] = []
    this = _this(pkt)
    for o in outcomes:
        if o.verdict == "accept" or not o.path:
            continue
        last = o.path[-1]
        chains = [s.chain for s in o.path]
        vm = next((s for s in o.path if s.note and s.note.startswith("@no-endpoint-")), None)
        if last.chain == "cluster-ips-check" and o.verdict == "reject":
            n = (f"{pkt.dst} is a ClusterIP (listed in @cluster-ips) but none of its Services' ports is {this}: "
                 "kube-proxy's nftables mode (v1.30+) rejects such packets in cluster-ips-check (“Reject traffic "
                 "to invalid ports of ClusterIPs”), so the client gets an immediate ICMP port unreachable"
                 + (" — ping to a ClusterIP fails this way." if pkt.proto in ("icmp", "icmpv6") else "."))
        elif last.chain == "cluster-ips-check" and o.verdict == "drop":
            cidr = _service_cidr(rs, pkt.family)
            n = (f"{pkt.dst} is inside the service CIDR{f' {cidr}' if cidr else ''} but no Service has that "
                 "address: kube-proxy's nftables mode (v1.30+) drops traffic to unallocated ClusterIPs in "
                 "cluster-ips-check, so the connection times out.")
        elif vm is not None:
            svc = vm.note.split('"')[1] if vm.note and '"' in vm.note else "the Service"
            if o.verdict == "reject":
                n = (f"{svc} has no ready endpoints: kube-proxy lists {pkt.dst} {this} in {(vm.note or '').split(':')[0]} "
                     "and rejects new connections (ICMP port unreachable) instead of letting them hang.")
            else:
                n = (f"{svc} has no endpoint this traffic may use on this node (externalTrafficPolicy: Local with "
                     f"no local endpoint, or internalTrafficPolicy: Local): kube-proxy's {vm.chain} drops it.")
        elif any(c.startswith("firewall-") and c != "firewall-check" for c in chains) and o.verdict == "drop":
            n = (f"the source {pkt.src} is not in the Service's loadBalancerSourceRanges: kube-proxy's "
                 f"{last.chain} drops it before DNAT.")
        else:
            continue
        if n not in notes:
            notes.append(n)
    nowhere = False
    if outcomes and all(o.verdict == "accept" and not o.dnat and o.delivery != "local" for o in outcomes):
        served = _service_ip(rs, pkt)
        if served:
            nowhere = True
            older = not any("cluster-ips-check" in t.chains for t in _kube_tables(rs, pkt.family))
            notes.append(_untranslated(pkt, f" ({'; '.join(served[:4])})", "entries")
                         + (" kube-proxy 1.30+ rejects such packets at once (cluster-ips-check); these rules, from an "
                            "older kube-proxy, have no such check." if older else ""))
    return notes, nowhere


# -- IPVS mode -------------------------------------------------------------------------------------------

def ipvs_notes(ctx: IPVSContext, lay: Layout, version: Version | None, given: bool, pkt: Packet,
               outcomes: list[Outcome]) -> list[str]:
    """What kube-proxy's IPVS mode does with a packet IPVS does not balance, and the walk's IPVS notes."""
    notes: list[str] = []
    dst = pkt.dst
    table = ctx.table
    on_ipvs0 = dst in lay.vips
    served = sorted({f"{s.protocol}/{s.port}" for s in table.services_on(dst) if s.port is not None})
    ports = f" (it serves {', '.join(served[:6])})" if served else ""
    v = version
    if on_ipvs0 and pkt.proto in ("icmp", "icmpv6"):
        before = (f"{dst} is a Service address kube-proxy put on the node's kube-ipvs0 interface, so before "
                  "kube-proxy 1.26 the node itself answers ping to it; IPVS only balances the TCP/UDP/SCTP ports it "
                  "has virtual servers for, so no Pod ever sees the ping.")
        after = ("Since kube-proxy 1.26 the KUBE-IPVS-FILTER chain (filter INPUT) rejects new traffic to a kube-ipvs0 "
                 "address that no virtual server serves (kubernetes#72236, PR #108460): ping gets "
                 "'destination port unreachable' from the node.")
        if v is None:
            notes.append(f"{before} {after} (The kube-proxy version is not known.)")
        elif has(v, "ipvs-filter-chain"):
            notes.append(f"{after} {dst} is on kube-ipvs0, but kube-proxy {v[0]}.{v[1]} no longer lets the node "
                         "answer ping on it.")
        else:
            notes.append(f"{before} (kube-proxy {v[0]}.{v[1]}; from 1.26 KUBE-IPVS-FILTER rejects it instead.)")
    elif on_ipvs0 and pkt.has_ports and table.find(pkt.proto, dst, pkt.dport).service is None and not any(
            o.dnat for o in outcomes):
        notes.append(f"{dst} is a Service address on kube-ipvs0{ports}, but IPVS has no virtual server for "
                     f"{pkt.proto}/{pkt.dport}. Before kube-proxy 1.26 the packet reaches the node's own stack: "
                     "connection refused, or a host process listening on 0.0.0.0 answers through the Service IP "
                     "(kubernetes#72236). Since 1.26 KUBE-IPVS-FILTER rejects it.")
    elif pkt.has_ports and not on_ipvs0 and dst not in lay.node_addresses and not served and all(
            o.delivery == "forward" and not o.dnat for o in outcomes if o.verdict == "accept"):
        more = " The listing is partial, so it may be in the part left out." if table.partial else ""
        notes.append(f"This IPVS table has no virtual server on {dst}: it is not a Service address on this node "
                     f"(kube-proxy binds every ClusterIP it serves to kube-ipvs0), so the packet is routed on "
                     f"untranslated.{more}")
    elif (pkt.has_ports and not on_ipvs0 and NODEPORT_RANGE[0] <= (pkt.dport or 0) <= NODEPORT_RANGE[1]
          and table.find(pkt.proto, dst, pkt.dport).service is None
          and any(o.delivery == "local" and not o.dnat for o in outcomes)):
        known = sorted({s.port for s in table.services if s.port is not None and s.protocol == pkt.proto
                        and s.port in lay.node_ports.get(pkt.proto, set())})
        seen = f" (NodePorts in this table: {', '.join(map(str, known[:8]))})" if known else ""
        notes.append(f"IPVS has no virtual server for {pkt.proto}/{pkt.dport} on {dst}{seen}: if this is a NodePort, "
                     "kube-proxy did not create it on this address (it makes one per node address it finds, "
                     "filtered by --nodeport-addresses), so the node's own stack gets the connection: refused "
                     "unless a host process listens on that port.")
    notes.extend(ctx.notes)
    if not given:
        notes.append("Only the IPVS table was given: the iptables rules kube-proxy programs beside it "
                     "(KUBE-SERVICES marks, KUBE-POSTROUTING masquerade, KUBE-IPVS-FILTER) were not walked, so "
                     "source NAT and filtering are not known; give the node's iptables-save (and ipset save).")
    return notes
