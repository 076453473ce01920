"""Walk a packet through a node in kube-proxy's IPVS mode: netfilter, then IPVS, then netfilter again.

Where IPVS sits (net/netfilter/ipvs/ip_vs_core.c, `ip_vs_ops4` / `ip_vs_ops6`):

  - LOCAL_IN at NF_IP_PRI_NAT_SRC - 1 (99): after mangle, filter and security INPUT, before nat
    INPUT. kube-proxy binds every ClusterIP (and external/LB IP not already on the node) to the dummy
    interface kube-ipvs0, so a packet to a Service address is routed as local and reaches INPUT.
  - LOCAL_OUT at NF_IP_PRI_NAT_DST + 2 (-98): for the node's own connections, after raw, mangle and
    nat OUTPUT, before filter OUTPUT.

IPVS looks the packet up (ip_vs_service_find: firewall mark, then proto+address+port, then a port-0
service), lets the scheduler pick a real server and rewrites the destination (ip_vs_nat_xmit). Then
(net/netfilter/ipvs/ip_vs_xmit.c, ip_vs_nat_send_or_cont):
  - a real server on this node: NF_ACCEPT, the packet goes on up the local stack (nat INPUT, then
    the socket);
  - elsewhere: `NF_HOOK(NF_INET_LOCAL_OUT, ..., dst_output)`: the packet goes through the OUTPUT
    hooks (raw, mangle, filter, security; nat was already decided for this connection) and then
    POSTROUTING, where kube-proxy's KUBE-POSTROUTING masquerades what KUBE-MARK-MASQ marked in
    PREROUTING. It never traverses FORWARD.
  - a packet from a loopback source may not go to another host (`crosses_local_route_boundary`):
    it is dropped, which is why `curl 127.0.0.1:<nodePort>` hangs in IPVS mode (kubernetes#96879).
With no usable real server, ip_vs_leave() drops the packet and sends ICMP port unreachable (TCP
clients see "connection refused"). A packet IPVS has no virtual server for (ping, another port)
goes on to nat INPUT and the node's own stack, unless a filter rule the writer adds rejects it (kube-proxy's
KUBE-IPVS-FILTER since 1.26, `svctrace.kubeproxy.walk.IPVS_SILENT`).

The iptables rules are walked with the netfilter walker (`svctrace.dataplane.iptables.walker.Walker`); this
module adds the IPVS steps between its hooks and decides `-m set` matches from the ipsets it is given (an `ipset
save`, or the sets `svctrace.kubeproxy.ipvs_sets` infers from the IPVS table). What kube-proxy does where the dump
is silent (its version, its jumps, its filter rule, its words: `Silent`) comes from `svctrace.kubeproxy.walk` as an
`IPVSContext`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from svctrace.dataplane.contract import Dnat, Hints, Outcome, PathStep
from svctrace.dataplane.ipset import cached_index, member_of
from svctrace.dataplane.iptables.rules import Match, Rule, Ruleset
from svctrace.dataplane.iptables.walker import Walker
from svctrace.dataplane.ipvs.model import IPVSTable, RealServer, VirtualService
from svctrace.dataplane.ipvs.schedulers import Schedule, schedule
from svctrace.dataplane.kernel import OUTPUT, POSTROUTING, State, Unknown, dst_text, merge_outcomes
from svctrace.errors import Warn
from svctrace.model.packet import IPAddress, IPSetDef, NodeFacts, Packet

# Matches that change state when the kernel evaluates them (xt_statistic's nth counter, xt_recent's lists,
# token buckets, quotas): a rule with one of them is evaluated in full even when a set match already failed.
_SIDE_EFFECTS = frozenset({"statistic", "recent", "limit", "hashlimit", "quota", "quota2", "connlimit"})
_TAKEN = "\x00ipvs"  # key in State.assume: IPVS handled this packet (the kernel's skb->ipvs_property)


@dataclass(frozen=True)
class Silent:
    """What the program that wrote the IPVS table and the rules beside it does where a dump is silent, in its
    words. These defaults name no program; `svctrace.kubeproxy.walk` gives kube-proxy's."""

    device: str = "the node's virtual-address interface"  # where the non-node virtual addresses are bound
    hooked: str = "svctrace: assumed jump"  # the comment of jumps added to a partial dump
    jump_says: str = "the writer's"  # "assumed {jump_says} `-A CHAIN -j TARGET`"
    inferred: str = "the ipsets hold what the IPVS table implies (no `ipset save` given)"
    no_iptables: str = "no iptables rules were given: marks, masquerade and filter rules were not walked"
    no_nat: str = "the iptables dump has no nat table: masquerade rules were not walked"
    # The filter rule written for new connections to a bound address no virtual server serves, walked when the
    # filter table is not in the dump (IPVSContext.filter says whether it is written): None when there is none.
    filter: FilterRule | None = None


@dataclass(frozen=True)
class FilterRule:
    chain: str
    text: str  # the rule as iptables-save prints it
    note: str  # the path step's note
    reason: str  # the outcome's reason; {dst} and {device} are filled in
    unknown: str  # the assumption when it is not known whether the rule is written
    warning: str  # the warning then


@dataclass
class IPVSContext:
    """What the walk needs beside the iptables rules: the IPVS table, and what kube-proxy's layer knows of the node."""

    table: IPVSTable
    vips: set[IPAddress]  # the addresses bound to the virtual-address device (local: IPVS sees them at LOCAL_IN)
    # KUBE-IPVS-FILTER when the filter table is not in the dump: written (True), not (False), unknown (None)
    filter: bool | None = None
    filter_says: str = ""  # the assumption a known KUBE-IPVS-FILTER adds
    inferred: set[str] = field(default_factory=set)  # ipsets inferred from the IPVS table, not given
    synthetic_filter: bool = False  # no filter table in the dump: model KUBE-IPVS-FILTER from `filter`
    no_nat: bool = False
    schedules: dict[int, Schedule] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    node_stack: bool = False  # a TCP/UDP/SCTP packet to a bound virtual address reached the node's own stack
    says: Silent = field(default_factory=Silent)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


class IPVSWalker(Walker):
    """The netfilter walker with IPVS at LOCAL_IN and LOCAL_OUT."""

    def __init__(self, rs: Ruleset, node: NodeFacts, ctx: IPVSContext, hints: Hints | None = None) -> None:
        super().__init__(rs, node, hints)
        self.ctx = ctx
        self.table = ctx.table

    # -- the kernel path with IPVS at LOCAL_IN and LOCAL_OUT -----------------------------------
    def start(self, st: State) -> None:
        if not self.rs.tables:
            st.assume_one(self.ctx.says.no_iptables)
        elif self.ctx.no_nat:
            st.assume_one(self.ctx.says.no_nat)

    def local_out(self, st: State) -> None:
        states = self.hook([st], "OUTPUT", ("raw", "mangle", "nat"))
        onward: list[State] = []
        for s in states:
            for s2, kind in self._ipvs(s, "OUTPUT"):
                if kind == "remote":
                    self._out_remote(s2)
                else:
                    onward.append(s2)
        self._out_rest(onward)

    def route_in(self, states: list[State]) -> None:
        local, fwd = self.route(states)
        states = self.hook(local, "INPUT", ("mangle", "filter", "security"))
        states = self._synthetic_filter(states)
        up: list[State] = []
        for s in states:
            for s2, kind in self._ipvs(s, "INPUT"):
                if kind == "remote":
                    self._out_remote(s2)
                else:
                    up.append(s2)
        for s in self.hook(up, "INPUT", ("nat",)):
            self.deliver(s)
        if self.table.partial:
            for s in fwd:
                if s.pkt.has_ports:
                    s.assume_one(f"the IPVS listing is partial (elided or cut): {s.pkt.dst} has no virtual server "
                                 "in the part shown (one in the part left out would make it a local address)")
        self.forward(fwd)

    def _out_remote(self, s: State) -> None:
        """IPVS sent the packet to another host: NF_HOOK(LOCAL_OUT) then POSTROUTING (never FORWARD)."""
        s.iif = None
        s.oif = s.orig.oif
        s.ifaces.pop("o", None)
        states = self.hook([s], "OUTPUT", OUTPUT)
        for x in self.hook(states, "POSTROUTING", POSTROUTING):
            self.leave(x, f"IPVS sends it to {x.dnat or dst_text(x)}")

    def _out_rest(self, states: list[State]) -> None:
        """The node's own packet after IPVS let it pass (or sent it to a real server on this node)."""
        states = self.hook(states, "OUTPUT", ("filter", "security"))
        for s in self.hook(states, "POSTROUTING", POSTROUTING):
            if not self.node.is_local(s.pkt.dst):
                self.leave(s, f"leaves the node for {dst_text(s)}")
                continue
            for b in self._synthetic_filter(self.loop_back(s)):
                self.deliver(b)

    def deliver(self, s: State) -> None:
        pkt = s.pkt
        if _TAKEN in s.assume:
            self.finish(s, "accept", "local", f"IPVS sends it to {s.dnat or dst_text(s)}, on this node")
            return
        if pkt.dst in self.ctx.vips:
            if pkt.has_ports:
                self.ctx.node_stack = True
            what = f"{pkt.proto}/{pkt.dport}" if pkt.has_ports else pkt.proto
            self.finish(s, "accept", "local", f"delivered to the node itself: {pkt.dst} is on {self.ctx.says.device} "
                                              f"and IPVS has no virtual server for {what} on it")
            return
        super().deliver(s)

    # -- the writer's filter rule (kube-proxy's KUBE-IPVS-FILTER) when the filter table was not collected -----------
    def _synthetic_filter(self, states: list[State]) -> list[State]:
        rule = self.ctx.says.filter
        if not self.ctx.synthetic_filter or rule is None:
            return states
        out: list[State] = []
        for s in states:
            pkt = s.pkt
            if _TAKEN in s.assume or pkt.dst not in self.ctx.vips or self._has_service(s):
                out.append(s)
                continue
            if self.ctx.filter is not None:
                if self.ctx.filter:
                    s.assume_one(self.ctx.filter_says)
                    self._filter_reject(s, rule)
                else:
                    out.append(s)
                continue
            other = s.split(Unknown(f"filter:{rule.chain}", rule.unknown), True)
            self._filter_reject(s, rule)
            out.append(other)
            self.warn("ipvs-filter", rule.warning, None, "unknown-match")
        return out

    def _filter_reject(self, s: State, rule: FilterRule) -> None:
        s.reject_with = s.reject_default()
        s.add(PathStep("INPUT", "filter", rule.chain, None, None, rule.text, f"REJECT with {s.reject_with}",
                       note=rule.note))
        self.finish(s, "reject", None, rule.reason.format(dst=s.pkt.dst, device=self.ctx.says.device))

    def _has_service(self, s: State) -> bool:
        look = self.table.find(s.pkt.proto, s.pkt.dst, s.pkt.dport, s.mark)
        return look.service is not None or bool(look.maybe)

    # -- IPVS -------------------------------------------------------------------------------
    def _ipvs(self, st: State, hook: str) -> list[tuple[State, str]]:
        """IPVS at LOCAL_IN or LOCAL_OUT. Returns (state, "pass" | "local" | "remote"); finishes the
        states it drops or rejects."""
        if _TAKEN in st.assume:
            return [(st, "pass")]
        pkt = st.pkt
        look = self.table.find(pkt.proto, pkt.dst, pkt.dport, st.mark)
        cands: list[tuple[VirtualService | None, float, str | None]]
        if look.service is not None:
            cands = [(look.service, 1.0, None)]
        elif look.maybe:
            n = len(look.maybe)
            what = f"{pkt.proto} {dst_text(st)}"
            cands = [(None, 0.5, f"{what} is none of the {n} virtual service(s) whose address or port the listing "
                                 "lost")]
            cands += [(vs, 0.5 / n, f"{vs.text!r} (address or port lost in the listing) is {what}")
                      for vs in look.maybe]
            self.warn(f"maybe:{pkt.dst}", f"the listing lost the address or port of {n} virtual service(s) that "
                                          f"could be {what}: each is shown as a possibility (certain: false)",
                      None, "unknown-match")
        else:
            if self.table.partial and pkt.has_ports:
                st.assume_one(f"the IPVS listing is partial (elided or cut): no virtual server for "
                              f"{pkt.proto} {dst_text(st)} in the part shown")
            return [(st, "pass")]
        out: list[tuple[State, str]] = []
        for vs, p, assumption in cands:
            s = st if len(cands) == 1 else st.fork()
            s.prob *= p
            if assumption:
                s.assume_one(assumption)
            if vs is None:
                out.append((s, "pass"))
            else:
                out.extend(self._schedule(s, vs, hook))
        return out

    def _schedule(self, st: State, vs: VirtualService, hook: str) -> list[tuple[State, str]]:
        sch = self.ctx.schedules.get(id(vs))
        if sch is None:
            sch = self.ctx.schedules[id(vs)] = schedule(vs)
        for n in sch.notes:
            self.ctx.note(n)
        if vs.maybe_cut:
            st.assume_one(f"the listing is cut or elided after {vs.label}: it has no other real server than "
                          "the ones shown")
        if not sch.picks:
            why = "it has no real server" if not vs.reals else "all its real servers have weight 0"
            self._no_destination(st, vs, hook, why, "kube-proxy keeps the virtual server of a Service without "
                                                    "ready endpoints")
            self.ctx.note(f"{vs.label} has no usable real server: IPVS answers a new connection with ICMP port "
                          "unreachable, so TCP clients see \"connection refused\" (ip_vs_leave, "
                          "net/netfilter/ipvs/ip_vs_core.c); kube-proxy keeps the virtual server while the Service "
                          "has no ready endpoints")
            return []
        out: list[tuple[State, str]] = []
        many = len(sch.picks) > 1 or sch.refused > 0
        if sch.refused > 0:
            s = st.fork()
            s.prob *= sch.refused
            if sch.assumption:
                s.assume_one(sch.assumption)
            self._no_destination(s, vs, hook, "the client's hash bucket holds a real server of weight 0",
                                 f"{vs.scheduler} keeps the buckets of a weight-0 (terminating) server; "
                                 f"{sch.refused:.0%} of them", sch.refused)
        for pick in sch.picks:
            s = st.fork() if many else st
            s.prob *= pick.share
            r = pick.real
            weight = r.weight if r.weight is not None else "?"
            note = None
            if vs.persistent is not None:
                note = f"persistent {vs.persistent}s: later connections from this client go to the same server"
            s.add(PathStep(hook, "ipvs", vs.label, r.position, r.line, r.text,
                           f"IPVS {vs.scheduler or '?'} → {r.endpoint} (weight {weight})", None,
                           pick.share if many else None, note))
            if not sch.certain and sch.assumption:
                s.assume_one(sch.assumption)
            kind = self._dnat_to(s, vs, r, hook)
            if kind is not None:
                out.append((s, kind))
        return out

    def _no_destination(self, st: State, vs: VirtualService, hook: str, why: str, note: str,
                        share: float | None = None) -> None:
        """The scheduler found no destination: ip_vs_leave answers ICMP port unreachable."""
        st.add(PathStep(hook, "ipvs", vs.label, None, vs.line, vs.text,
                        "IPVS: no destination available → ICMP port unreachable", None, share,
                        note=f"{why}; {note}"))
        if st.pkt.proto in ("icmp", "icmpv6"):
            self.finish(st, "drop", None, f"IPVS drops it: {vs.label}: {why}")
        else:
            st.reject_with = st.reject_default()
            self.finish(st, "reject", None, f"IPVS answers ICMP port unreachable (connection refused): "
                                            f"{vs.label}: {why}")

    def _dnat_to(self, s: State, vs: VirtualService, r: RealServer, hook: str) -> str | None:
        pkt = s.pkt
        s.assume[_TAKEN] = True
        s.assume[f"{_TAKEN}:{self.table.position(vs)}"] = True
        if r.ip is None:
            s.dnat = Dnat(r.endpoint)
            s.assume_one(f"the real server {r.host!r} (not an address in the listing) is not on this node")
            self.finish(s, "accept", "forward", f"IPVS sends it to {r.endpoint}")
            return None
        if r.ip.version != pkt.family:
            self.finish(s, "drop", None, f"IPVS cannot send an IPv{pkt.family} packet to {r.endpoint} by NAT")
            return None
        method = r.forward or "Masq"
        if method in ("Masq", "Local"):
            s.dnat_to(r.ip, r.port if r.port is not None else pkt.dport, None)
        else:  # Route (direct routing) and Tunnel keep the destination; the packet goes to that host
            s.pkt = pkt.with_(dst=r.ip)
            s.dnat = Dnat(f"{r.endpoint} ({'direct routing' if method == 'Route' else 'IPIP tunnel'})", r.ip, r.port)
        if r.port is None and r.ip is not None:
            s.dnat = Dnat(r.endpoint, r.ip)
            s.assume_one(f"the port of real server {r.text.strip()!r} was cut off in the listing")
        # ip_vs_update_conntrack only rewrites the reply tuple: the kernel sets no IPS_DST_NAT, so
        # `--ctstate DNAT` does not match an IPVS connection.
        s.dnat_changed = False
        local = self.node.is_local(r.ip)
        if not local and pkt.src.is_loopback:
            s.add(PathStep(hook, "ipvs", vs.label, r.position, r.line, r.text,
                           "IPVS refuses: loopback source to another host",
                           note="crosses_local_route_boundary (net/netfilter/ipvs/ip_vs_xmit.c)"))
            self.finish(s, "drop", None, f"IPVS drops it: a packet from {pkt.src} (loopback) may not be sent to "
                                         f"{r.endpoint} on another host; the connection hangs (kubernetes#96879)")
            self.ctx.note(f"Connections from {pkt.src} to a NodePort on a loopback address hang in IPVS mode: "
                          "the kernel will not send a loopback-sourced packet to another host "
                          "(crosses_local_route_boundary in ip_vs_xmit.c; kubernetes#96879). Use a node address.")
            return None
        if local and r.ip.is_loopback and hook == "INPUT":
            self.finish(s, "drop", None, "IPVS drops it: NAT from the network to a loopback address "
                                         "(ip_vs_nat_xmit: stopping DNAT to loopback address)")
            return None
        if local:
            if hook == "OUTPUT":
                s.oif = "lo"
            return "local"
        return "remote"

    # -- matches IPVS mode decides itself ---------------------------------------------------
    def match(self, st: State, rule: Rule) -> list[tuple[State, bool]]:
        if not rule.line and self.ctx.says.hooked in rule.text and rule.target is not None:
            st.assume_one(f"the dump does not show what jumps to {rule.target.name}; assumed {self.ctx.says.jump_says} "
                          f"`-A {rule.chain} -j {rule.target.name}`")
        if not any(m.module in ("set", "ipvs") for m in rule.matches):
            return super().match(st, rule)
        verdicts: list[bool] = []
        inferred = False
        rest: list[Match] = []
        for m in rule.matches:
            if m.module == "set":
                r = self._set(st, m)
                if r is None:
                    rest.append(m)
                    continue
                verdicts.append(r[0])
                inferred = inferred or r[1]
            elif m.module == "ipvs":
                v = self._ipvs_match(st, m)
                if v is None:
                    rest.append(m)
                    continue
                verdicts.append(v)
            else:
                rest.append(m)
        if len(rest) == len(rule.matches):
            return super().match(st, rule)
        if not all(verdicts) and not any(m.module in _SIDE_EFFECTS for m in rest):
            # Every match must hold and the others only look (no counter or list they would change): a set the
            # packet is not in decides it, however an undecidable match beside it (physdev, on a node whose
            # bridges the dump does not show) would go. Without this, kube-proxy's KUBE-EXTERNAL-IP-LOCAL rule
            # made every Service packet "uncertain: crosses a bridge port / not" (seen in the VM lab).
            return [(st, False)]
        alts = super().match(st, dataclasses.replace(rule, matches=rest))
        out: list[tuple[State, bool]] = []
        for s, matched in alts:
            if matched and inferred:
                s.assume_one(self.ctx.says.inferred)
            out.append((s, matched and all(verdicts)))
        return out

    def _set(self, st: State, m: Match) -> tuple[bool, bool] | None:
        """(matches, decided by an inferred set), or None to leave it to the netfilter evaluator."""
        o = m.opt("--match-set")
        if o is None or len(o.args) < 2:
            return None
        name, flags = o.args[0], o.args[1].split(",")
        s = self.node.ipsets.get(name)
        if s is None:
            return None
        hit = _bitmap_port(s, st.pkt, flags) if s.type == "bitmap:port" else member_of(s, st.pkt, flags)
        if hit is not None:
            return hit != o.neg, name in self.ctx.inferred
        if not st.pkt.has_ports and _portless_miss(s, flags) is False:
            return o.neg, False  # whatever the set holds, an ICMP packet is not in it
        return None

    def _ipvs_match(self, st: State, m: Match) -> bool | None:
        """xt_ipvs: `--ipvs` is skb->ipvs_property; every other option is false without it."""
        vs = None
        for k in st.assume:
            if k.startswith(f"{_TAKEN}:"):
                vs = self.table.services[int(k.rsplit(":", 1)[1])]
        for o in m.opts:
            if o.name == "--ipvs":
                ok = vs is not None
            elif vs is None:
                return False
            elif o.name == "--vproto":
                ok = o.arg.lower() in (vs.protocol, {"tcp": "6", "udp": "17", "sctp": "132"}.get(vs.protocol))
            elif o.name == "--vaddr":
                try:
                    ok = vs.ip is not None and vs.ip in ipaddress.ip_network(o.arg, strict=False)
                except ValueError:
                    return None
            elif o.name == "--vport":
                ok = vs.port is not None and str(vs.port) == o.arg
            elif o.name == "--vdir":
                ok = o.arg.upper() == "ORIGINAL"
            elif o.name == "--vmethod":
                ok = o.arg.upper() == "MASQ"
            else:
                return None
            if ok == o.neg:
                return False
        return True


def _bitmap_port(s: IPSetDef, pkt: Packet, flags: list[str]) -> bool | None:
    """bitmap:port holds bare port numbers (`add KUBE-NODE-PORT-UDP 31000`); the kernel matches the
    TCP/UDP/SCTP port whatever the protocol, and the iptables rule's `-p` picks the protocol."""
    if not pkt.has_ports:
        return False
    port = pkt.sport if flags and flags[0] == "src" else pkt.dport
    if port is None:
        return None
    return cached_index(s, "bitmap:port", lambda: _port_ranges(s)).get(port, False)


class _PortRanges:
    """A bitmap:port set's members, read once: the ports each holds, in listed order; at a member that does not
    parse the answer is unknown for every port no earlier member holds."""

    def __init__(self, ports: set[int], ranges: list[tuple[int, int]], unknown: bool) -> None:
        self.ports, self.ranges, self.unknown = ports, ranges, unknown

    def get(self, port: int, default: bool) -> bool | None:
        if port in self.ports or any(lo <= port <= hi for lo, hi in self.ranges):
            return True
        return None if self.unknown else default


def _port_ranges(s: IPSetDef) -> _PortRanges:
    ports: set[int] = set()
    ranges: list[tuple[int, int]] = []
    for member in s.members:
        text = member[0].split(":", 1)[-1]
        lo, _, hi = text.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            return _PortRanges(ports, ranges, True)
        if a == b:
            ports.add(a)
        else:
            ranges.append((a, b))
    return _PortRanges(ports, ranges, False)


def _portless_miss(s: IPSetDef, flags: list[str]) -> bool | None:
    """An ICMP packet has no port: it is in no set whose port dimension holds tcp/udp/sctp entries."""
    typ = s.type.split(":", 1)[1] if ":" in s.type else s.type
    kinds = typ.split(",")
    idx = [i for i, k in enumerate(kinds) if k == "port" and i < max(len(flags), len(kinds))]
    if not idx:
        return None
    for member in s.members:
        for i in idx:
            if i < len(member):
                v = member[i]
                proto = v.split(":", 1)[0] if ":" in v else "tcp"
                if proto not in ("tcp", "udp", "sctp") and not v.isdigit():
                    return None
    return False


def walk(ctx: IPVSContext, rs: Ruleset, packet: Packet, node: NodeFacts,
         hints: Hints | None = None) -> tuple[list[Outcome], list[Warn], tuple[list[str], list[str]]]:
    """Every fate of `packet` through netfilter and IPVS; `node.local_ips` include the IPVS addresses."""
    w = IPVSWalker(rs, node, ctx, hints)
    return merge_outcomes(w.run(packet)), w.warnings, (w.facts, w.assumed)
