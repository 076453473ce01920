"""kube-proxy's notes on a walk: plain-language explanations of what kube-proxy's rules did to the packet (or
why they did nothing), added after the dataplane walk by `svctrace.kubeproxy.walk`. The walkers know the kernel;
what kube-proxy's chains, sets and addresses mean is said here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from svctrace.dataplane.contract import Outcome
from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import Ruleset
from svctrace.kubeproxy.ipvs_sets import NODEPORT_RANGE
from svctrace.kubeproxy.names import nft_chain_owner
from svctrace.kubeproxy.versions import has
from svctrace.model.packet import Packet
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

def iptables_notes(rs: Ruleset, pkt: Packet, outcomes: list[Outcome]) -> list[str]:
    """Explain an untranslated packet to a Service IP: the rules know the address, not this packet."""
    if not outcomes or any(o.dnat for o in outcomes) or not all(o.verdict == "accept" for o in outcomes):
        return []
    chain = rs.chain("nat", "KUBE-SERVICES")
    if chain is None:
        return []
    dst = str(pkt.dst)
    served: list[str] = []
    for raw in chain.raw:
        if f"-d {dst}/" not in raw.text and f"-d {dst} " not in raw.text:
            continue
        rule = parse_rule(chain.table, chain.name, raw, rs.family)[0]  # only the few rules naming this address
        proto = next((m.opts[0].arg for m in rule.matches if m.module == "-p" and m.opts), None)
        port = next((o.arg for m in rule.matches for o in m.opts if o.name == "--dport"), None)
        what = (rule.comment or "a Service") + (f" ({proto or '?'}/{port})" if port else "")
        if what not in served:
            served.append(what)
    if not served or any(o.delivery == "local" for o in outcomes):
        return []
    return [_untranslated(pkt, f": {'; '.join(served[:4])}", "rules")
            + " In iptables mode a Service IP exists only as DNAT rules for its ports; "
            + ("ping (ICMP) to it never gets a reply." if pkt.proto in ("icmp", "icmpv6")
               else "use one of the Service's ports.")]


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
