"""The kernel path a packet takes through a node, written once for every dataplane.

Hooks run in kernel order (see net/ipv4/netfilter and include/uapi/linux/netfilter_ipv4.h:
NF_IP_PRI_RAW -300, CONNTRACK -200, MANGLE -150, NAT_DST -100, FILTER 0, SECURITY 50, NAT_SRC 100):

  from the network: PREROUTING (raw, mangle, nat) -> routing -> INPUT (mangle, filter, security, nat)
                                                           \\-> FORWARD (mangle, filter, security) -> POSTROUTING (mangle, nat)
  from the node:    OUTPUT (raw, mangle, nat, filter, security) -> POSTROUTING (mangle, nat)
                    -> to a local address: back in through lo: PREROUTING (raw, mangle), INPUT (mangle, filter, security)

The nat table only sees the first packet of a connection, once per direction of rewrite: after the
PREROUTING/OUTPUT nat chains ran (DNAT or not) they do not run again for that connection, and
likewise POSTROUTING/INPUT for the source. Routing drops a loopback address arriving from the network
(a martian) unless route_localnet is on.

With the node's own network known (`NodeFacts.host`, svctrace.dataplane.host) routing is decided as the kernel
decides it: the input interface of a forwarded packet is the one the route back to its source uses, the output
interface the route to its destination after DNAT (policy rules and the local table first), so `-i`/`-o` matches
and the FORWARD chain are certain; ip_forward=0 (conf.<in>.forwarding) drops what is to be forwarded; strict
rp_filter drops a packet whose source is routed out another interface; no route, unreachable, prohibit and
blackhole routes end the packet; a MASQUERADE names the address it picks. A fact not collected is assumed at its
usual value and said so (`KernelWalker.assumed`).

A dataplane subclasses `KernelWalker` and supplies `hook(states, hook, tables)`: run its rules at one hook
(the iptables table names say which priority slots of the hook; nftables runs all its base chains there).
`State` is one branch of the walk; a branch that ends is a `Fate`; `merge_outcomes` turns fates into the
contract's `Outcome`s. `Unknown` and `iface_known` are the shared reasoning about what the dump cannot say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from svctrace.dataplane.contract import Dnat, Hints, Outcome, PathStep
from svctrace.dataplane.host import RouteHit, lookup, select_source
from svctrace.errors import WalkError, Warn, shorten
from svctrace.limits import MAX_BRANCHES, MAX_DEPTH, MAX_STEPS
from svctrace.model.packet import IPAddress, NodeFacts, Packet, format_endpoint

__all__ = ["MAX_BRANCHES", "MAX_DEPTH", "MAX_STEPS"]  # (svctrace.limits is their home)

# A chain, its rules (or their positions), the next one to run, and the chains this frame left by goto
# (a goto replaces the frame's chain; the ones it replaced still count for loops and depth).
Frame = tuple[Any, Sequence[Any], int, tuple[Any, ...]]

# The iptables tables at each hook, in priority order.
PREROUTING = ("raw", "mangle", "nat")
INPUT = ("mangle", "filter", "security", "nat")
FORWARD = ("mangle", "filter", "security")
OUTPUT = ("raw", "mangle", "nat", "filter", "security")
POSTROUTING = ("mangle", "nat")
# Back in through lo: nat already ran for this connection in both directions.
LO_PREROUTING = ("raw", "mangle")
LO_INPUT = ("mangle", "filter", "security")


@dataclass(frozen=True, slots=True)
class Unknown:
    """A match the dump cannot decide: the walk splits on it (or, `split=False`, assumes it true)."""

    key: str  # the same key in one branch always gets the same answer
    says: str  # "the packet came in on a bridge port" - what assuming True means
    split: bool = True  # False: assume True without splitting (rate limits: a first packet is under them)
    neg: bool = False  # the match is the negation of the proposition `says`


# -- interfaces: the input/output interface is often unknown; treat it as a symbolic value ------------

def iface_match(pattern: str, name: str) -> bool:
    """`eth+` (a trailing + is a prefix) against a known interface name."""
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _covers(p: str, q: str) -> bool:
    """Every interface name matching q also matches p."""
    if p.endswith("+"):
        return q.startswith(p[:-1])
    return not q.endswith("+") and p == q


def _compatible(p: str, q: str) -> bool:
    """Some interface name matches both."""
    pp, qq = p.endswith("+"), q.endswith("+")
    if pp and qq:
        a, b = p[:-1], q[:-1]
        return a.startswith(b) or b.startswith(a)
    if pp:
        return q.startswith(p[:-1])
    if qq:
        return p.startswith(q[:-1])
    return p == q


def iface_known(constraints: tuple[tuple[str, bool], ...], pat: str) -> bool | None:
    """Whether an unknown interface matches `pat`, given what this branch already assumed about it."""
    for q, val in constraints:
        if val and _covers(pat, q):
            return True
        if val and not _compatible(pat, q):
            return False
        if not val and _covers(q, pat):
            return False
    return None


def iface_unknown(ifaces: dict[str, tuple[tuple[str, bool], ...]], which: str, pat: str,
                  neg: bool) -> bool | Unknown:
    """A match on the unknown input ("i") or output ("o") interface against `pat`."""
    known = iface_known(ifaces.get(which, ()), pat)
    if known is not None:
        return known != neg
    side = "in on" if which == "i" else "out through"
    return Unknown(f"iface:{which}:{pat}", f"the packet goes {side} interface {pat}", neg=neg)


# -- one branch of the walk ------------------------------------------------------------------------

class State:
    __slots__ = (
        "assume",
        "assumptions",
        "branch",
        "confirmed",
        "ctmark",
        "dnat",
        "dnat_changed",
        "dnat_done",
        "ifaces",
        "iif",
        "mark",
        "masq",
        "oif",
        "onesided",
        "orig",
        "path",
        "pkt",
        "prob",
        "recent_set",
        "reject_with",
        "remembered",
        "snat",
        "snat_changed",
        "snat_done",
        "snat_how",
        "untracked",
    )

    def __init__(self, pkt: Packet, prob: float = 1.0) -> None:
        self.pkt = pkt
        self.orig = pkt
        self.prob = prob
        self.path: tuple | None = None  # linked list (step, previous)
        self.mark = pkt.mark
        self.ctmark = 0
        self.dnat: Dnat | None = None
        self.dnat_changed = False
        self.snat: str | None = None
        self.snat_changed = False
        self.snat_how: str | None = None  # where the MASQUERADE address came from, or what was assumed
        self.masq = False
        self.untracked = False
        self.confirmed = False
        self.dnat_done = False
        self.snat_done = False
        self.assume: dict[str, bool] = {}
        self.assumptions: tuple[str, ...] = ()
        self.onesided = False  # an assumption whose other side was not walked
        self.ifaces: dict[str, tuple[tuple[str, bool], ...]] = {}
        self.iif = pkt.iif
        self.oif = pkt.oif
        self.recent_set: list[str] = []
        self.remembered: str | None = None
        self.reject_with: str | None = None
        self.branch: float | None = None  # probability of the statistic match just taken

    def fork(self) -> State:
        s = State.__new__(State)
        for k in State.__slots__:
            object.__setattr__(s, k, getattr(self, k))
        s.assume = dict(self.assume)
        s.ifaces = dict(self.ifaces)
        s.recent_set = list(self.recent_set)
        return s

    def add(self, step: PathStep) -> None:
        self.path = (step, self.path)

    def steps(self) -> list[PathStep]:
        out: list[PathStep] = []
        p = self.path
        while p is not None:
            out.append(p[0])
            p = p[1]
        out.reverse()
        return out

    def assume_one(self, text: str) -> None:
        """An assumption without the other case walked: the outcome cannot be certain."""
        self.onesided = True
        if text not in self.assumptions:
            self.assumptions = (*self.assumptions, text)

    def set_assumption(self, u: Unknown, value: bool) -> None:
        self.assume[u.key] = value
        self.assumptions = (*self.assumptions, u.says if value else "not: " + u.says)
        if u.key.startswith("iface:"):
            _, which, pat = u.key.split(":", 2)
            self.ifaces[which] = (*self.ifaces.get(which, ()), (pat, value))

    def split(self, u: Unknown, value: bool) -> State:
        """Walk both answers to `u`: this branch takes `value`, the returned one the other, half the weight each."""
        other = self.fork()
        other.set_assumption(u, not value)
        other.prob *= 0.5
        self.set_assumption(u, value)
        self.prob *= 0.5
        return other

    def dnat_to(self, ip: IPAddress, port: int | None, text: str | None) -> None:
        """Rewrite the destination (DNAT, REDIRECT, an IPVS real server); `text` names a range the kernel picks in."""
        pkt = self.pkt
        new = pkt.with_(dst=ip, dport=port if pkt.has_ports and port is not None else pkt.dport)
        self.dnat_changed = self.dnat_changed or new.dst != pkt.dst or new.dport != pkt.dport
        self.pkt = new
        port = new.dport if new.has_ports else None
        self.dnat = Dnat(text) if text else Dnat(format_endpoint(new.dst, port), new.dst, port)

    def reject_default(self) -> str:
        """What a REJECT without a type sends."""
        return "icmp6-port-unreachable" if self.pkt.family == 6 else "icmp-port-unreachable"


def dst_text(s: State) -> str:
    return format_endpoint(s.pkt.dst, s.pkt.dport if s.pkt.has_ports else None)


@dataclass
class Fate:
    """A branch that ended: accepted to a delivery, dropped or rejected."""

    st: State
    verdict: str
    delivery: str | None
    reason: str
    cause: str | None = None  # what outside the rules ended it: ip-forward-off, rp-filter, output-martian, ...


def primary_local(node: NodeFacts, pkt: Packet) -> IPAddress:
    """The address REDIRECT sends to: loopback for the node's own packets, else the node's first address."""
    if pkt.origin == "local":
        return ipaddress.ip_address("127.0.0.1" if pkt.family == 4 else "::1")
    for ip in sorted(node.local_ips, key=str):
        if ip.version == pkt.family and not ip.is_loopback:
            return ip
    return pkt.dst


# -- the skeleton ------------------------------------------------------------------------------------

class KernelWalker:
    """Hook order per origin, routing, martians and the loop back over lo; subclasses run their rules at a hook."""

    source: str | None = None

    def __init__(self, node: NodeFacts, rules: Any, hints: Hints | None) -> None:
        self.node = node
        self.hints = hints or Hints()
        self.localnet_why = ""  # why route_localnet is taken as off when it was inferred
        self.finals: list[Fate] = []
        self.warnings: list[Warn] = []
        self._warned: set[str] = set()
        self.steps = 0
        self.branches = 0
        if node.route_localnet is None:
            self.route_localnet, self.localnet_why = (self.hints.route_localnet(rules) if self.hints.route_localnet
                                                      else (False, ""))
            self.route_localnet_inferred = True
        else:
            self.route_localnet = node.route_localnet
            self.route_localnet_inferred = False
        self.host = node.host
        self.assumed: list[str] = []  # node facts the walk needed and the snapshot did not have
        self.facts: list[str] = []  # node facts that decided (the interfaces, the routes taken)
        if self.host is not None and node.route_localnet is None:
            rl = self.host.route_localnet()
            if rl is not None:
                self.route_localnet, self.route_localnet_inferred = rl, False

    def assume_fact(self, text: str) -> None:
        if text not in self.assumed:
            self.assumed.append(text)

    def fact(self, text: str) -> None:
        if text not in self.facts:
            self.facts.append(text)

    def hook(self, states: list[State], hook: str, tables: Sequence[str]) -> list[State]:
        """Run the rules at `hook` (the iptables `tables` slots of it); finish what they drop or reject."""
        raise NotImplementedError

    # -- one base chain, over every branch -------------------------------------------------------------
    endless = "the walk did not end (a loop through goto?)"  # the error when a walk does not end
    splits = "matches"  # what splits the walk, for the error when it splits too often
    later_first = False  # walk the branches of a rule from the last one (the order outcomes come in)

    def run_rule(self, st: State, rule: Any, hook: str, base: Any) -> list[tuple[State, Any]]:
        """Run one rule: each branch with what follows (None: go on with the next rule)."""
        raise NotImplementedError

    def follow(self, st: State, then: Any, stack: list[Frame], hook: str, base: Any) -> tuple[str, str] | None:
        """Do what a rule decided: (verdict, reason) when the chain is done with the packet, else None."""
        raise NotImplementedError

    def policy(self, st: State, base: Any, hook: str) -> tuple[str, str]:
        raise NotImplementedError

    def rule_at(self, chain: Any, item: Any) -> Any:
        return item

    def run_chain(self, st: State, base: Any, items: Sequence[Any], hook: str) -> list[tuple[State, str, str]]:
        """A base chain: its rules in order, jumps and gotos on a stack, its policy at the end; every branch."""
        out: list[tuple[State, str, str]] = []
        work: list[tuple[State, list[Frame], Any]] = [(st, [(base, items, 0, ())], None)]
        while work:
            st, stack, pending = work.pop()
            if pending is not None:
                res = self.follow(st, pending, stack, hook, base)
                if res is not None:
                    out.append((st, *res))
                    continue
            while True:
                self.steps += 1
                if self.steps > MAX_STEPS:
                    raise WalkError(self.endless)
                if not stack:
                    out.append((st, *self.policy(st, base, hook)))
                    break
                chain, cands, pos, gone = stack[-1]
                if pos >= len(cands):
                    stack.pop()
                    continue
                stack[-1] = (chain, cands, pos + 1, gone)
                rule = self.rule_at(chain, cands[pos])
                alts = self.run_rule(st, rule, hook, base)
                if len(alts) == 1:
                    st, then = alts[0]
                    if then is None:
                        continue
                    res = self.follow(st, then, stack, hook, base)
                    if res is not None:
                        out.append((st, *res))
                        break
                    continue
                self.branches += len(alts) - 1
                if self.branches > MAX_BRANCHES:
                    raise WalkError(f"more than {MAX_BRANCHES} branches: too many random or undecidable "
                                    f"{self.splits} (last at {rule.table} {rule.chain} rule {rule.index})")
                for s2, then in (reversed(alts) if self.later_first else alts):
                    work.append((s2, list(stack), then))
                break
        return out

    def enter(self, stack: list[Frame], chain: Any, items: Sequence[Any], goto: bool, where: str,
              at: str = "") -> None:
        """Jump to `chain` (a new frame) or go to it (the frame's chain replaced), after the checks the kernel
        makes when it loads rules, for jumps and gotos alike: no loop, and no deeper than MAX_DEPTH chains.
        x_tables' mark_source_chains (net/ipv4/netfilter/ip_tables.c) follows every standard verdict >= 0,
        a -g as much as a -j, and refuses a loop ("iptables: loop hook"); nf_tables' nft_chain_validate
        counts NFT_JUMP and NFT_GOTO alike towards NFT_JUMP_STACK_SIZE and refuses a loop (-ELOOP)."""
        depth = 0
        looped = False
        for f in stack:  # the chains on the way here: each frame's own and those it went to with goto
            depth += len(f[3]) + 1
            looped = looped or f[0] is chain or (bool(f[3]) and any(c is chain for c in f[3]))
        if looped:
            path = [c for f in stack for c in (*f[3], f[0])]
            names = " -> ".join([c.name for c in path] + [chain.name])
            raise WalkError(f"loop in the rules: {shorten(names, 400)}{at}; the kernel refuses such a ruleset, so "
                            "the dump was edited or mixed")
        if depth >= MAX_DEPTH:
            raise WalkError(f"jumps and gotos nest deeper than {MAX_DEPTH} chains at {where} (svctrace's limit "
                            "MAX_DEPTH, see docs/limits.md)")
        if goto and stack:
            top = stack[-1]
            stack[-1] = (chain, items, 0, (*top[3], top[0]))
        else:
            stack.append((chain, items, 0, ()))

    def source_line(self, line: int) -> int | None:
        return line

    def warn(self, key: str, msg: str, line: int | None = None, code: str = "walk") -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        self.warnings.append(Warn(msg, self.source if line else None, self.source_line(line) if line else None, code))

    def finish(self, st: State, verdict: str, delivery: str | None, reason: str, cause: str | None = None) -> None:
        self.finals.append(Fate(st, verdict, delivery, reason, cause))

    # -- the path ----------------------------------------------------------------------------------
    def run(self, pkt: Packet, remembered: str | None = None, prob: float = 1.0) -> list[Fate]:
        st = State(pkt, prob)
        st.remembered = remembered
        self.start(st)
        if pkt.origin == "forwarded":
            if st.iif is None:
                st.iif = self.in_interface(pkt)
            if self.martian(st, pkt.src, "source"):
                return self.finals
            self.route_in(self.hook([st], "PREROUTING", PREROUTING))
        else:
            st.oif = "lo" if self.node.is_local(pkt.dst) else (pkt.oif or self.out_interface(st))
            self.local_out(st)
        return self.finals

    # -- the node's routes -------------------------------------------------------------------------------
    def route_lookup(self, dst: IPAddress, src: IPAddress | None, iif: str | None, mark: int) -> RouteHit | None:
        if self.host is None:
            return None
        hit = lookup(self.host, dst, src=src, iif=iif, mark=mark)
        if hit is not None:
            for n in hit.notes:
                self.warn(f"rule:{n}", f"{self.host.sources.get('ip-rule.json') or 'ip rule'}: {n}")
        return hit

    def in_interface(self, pkt: Packet) -> str | None:
        """A forwarded packet comes in on the interface the node routes its source out of (the reverse path
        rp_filter checks); unknown without routes. A client behind a router (the route back is via a gateway)
        that asks for an address the node holds on another interface is taken to come in on that interface:
        that is how a second network reaches the node, and where rp_filter sees an asymmetric path."""
        hit = self.route_lookup(pkt.src, None, None, 0)
        if hit is None or hit.route is None or hit.local or not hit.route.dev:
            return None
        dev = hit.route.dev
        if hit.route.gateway is not None and self.host is not None:
            holder = next((a.ifname for a in self.host.addresses or () if a.ip == pkt.dst and a.ifname != "lo"
                           and a.scope not in ("host",)), None)
            if holder is not None and holder != dev and not bridge_ports(self.host, holder):
                self.fact(f"in on {holder}: it holds {pkt.dst}, the address asked for (the route back to {pkt.src} "
                          f"is `{hit.route.text()}`)")
                return holder
        self.fact(f"in on {dev}: the node's route back to {pkt.src} is `{hit.route.text()}`")
        return dev

    def out_interface(self, st: State) -> str | None:
        """The node's own packet: the interface its route leaves by (local destinations go through lo)."""
        hit = self.route_lookup(st.pkt.dst, st.pkt.src, "lo", st.mark)
        if hit is None or hit.route is None:
            return None
        if hit.local:
            return "lo"
        return hit.route.dev

    def start(self, st: State) -> None:
        """Assumptions that hold for the whole walk."""

    def local_out(self, st: State) -> None:
        """The node's own packet: OUTPUT, POSTROUTING, then out or back in through lo."""
        states = [s for s in self.hook([st], "OUTPUT", OUTPUT) if not self.output_martian(s)]
        for s in self.hook(states, "POSTROUTING", POSTROUTING):
            if self.node.is_local(s.pkt.dst):
                for b in self.loop_back(s):
                    self.deliver(b)
            else:
                self.leave(s, f"leaves the node for {dst_text(s)}")

    def output_martian(self, s: State) -> bool:
        """The node's own packet from a loopback source that OUTPUT's DNAT sent elsewhere: the re-route after nat
        (ip_route_me_harder, in nf_nat_ipv4_local_fn) fails in __mkroute_output (net/ipv4/route.c) when the
        source is 127/8, the new output device is not loopback and route_localnet is off on it, and the packet is
        dropped (measured: a UDP sendto fails with EINVAL, a TCP connect times out). Filter OUTPUT never sees it; the walk shows its rules before the drop."""
        src = s.pkt.src
        if not (src.version == 4 and src.is_loopback and s.dnat_changed) or self.node.is_local(s.pkt.dst):
            return False
        on = self.route_localnet
        why = ""
        if self.host is not None and s.oif and s.oif != "lo":
            dev_on = self.host.route_localnet(s.oif)
            if dev_on is not None:
                on, why = dev_on, f" (net.ipv4.conf.all/{s.oif}.route_localnet)"
        if on:
            return False
        if not why:
            why = f" ({self.localnet_why})" if self.route_localnet_inferred and self.localnet_why else ""
        self.finish(s, "drop", None, f"routing drops it: DNAT in OUTPUT sent a packet from {src} to "
                                     f"{dst_text(s)}, off the node, and route_localnet is off{why}: a loopback "
                                     "source may not leave the node (a UDP send fails with EINVAL, a TCP connect "
                                     "times out)", "output-martian")
        return True

    def leave(self, s: State, reason: str) -> None:
        """An accepted packet leaves the node: name the MASQUERADE address (the outgoing interface's primary
        address, as nf_nat_masquerade_ipv4 picks it with inet_select_addr)."""
        if s.masq and s.snat is None:
            self.masquerade_address(s)
        self.finish(s, "accept", "forward", reason)

    def masquerade_address(self, s: State) -> None:
        host = self.host
        if host is None:
            return
        hit = self.route_lookup(s.pkt.dst, None, s.iif if s.pkt.origin == "forwarded" else "lo", s.mark)
        dev = s.oif or (hit.route.dev if hit is not None and hit.route is not None else None)
        near = hit.route.gateway if hit is not None and hit.route is not None and hit.route.gateway else s.pkt.dst
        ip = select_source(host, dev, near)
        if ip is not None and dev is not None:
            s.snat, s.snat_how = str(ip), f"the primary address of {dev}, the outgoing interface"
            return
        if ip is not None:
            s.snat, s.snat_how = str(ip), "assumed: no route to the destination in the snapshot"
            self.assume_fact(f"masquerade address {ip}: the node's first address (no route in the snapshot "
                             "picks the outgoing interface)")
            return
        node_ips = sorted((x for x in self.node.local_ips if x.version == s.pkt.family and not x.is_loopback), key=str)
        if node_ips:
            s.snat, s.snat_how = str(node_ips[0]), "assumed: no ip-addr for the node"
            self.assume_fact(f"masquerade address {node_ips[0]}: the node's address from the Node object (no "
                             "ip-addr in the snapshot says which interface and address it leaves by)")

    def loop_back(self, s: State) -> list[State]:
        """A packet to the node itself comes back in through lo (its conntrack entry confirmed at POSTROUTING)."""
        s.iif, s.oif = "lo", None
        s.ifaces = {}
        s.confirmed = True
        back = self.hook([s], "PREROUTING", LO_PREROUTING)
        return self.hook(back, "INPUT", LO_INPUT)

    def martian(self, st: State, ip: IPAddress, what: str) -> bool:
        # ip_route_input_slow(): a loopback address arriving from outside is a martian unless
        # net.ipv4.conf.<dev>.route_localnet=1 (kube-proxy sets it for localhost NodePorts).
        on = self.route_localnet
        if self.host is not None and st.iif is not None:
            dev_on = self.host.route_localnet(st.iif)  # the input device's (or all's) setting decides
            on = dev_on if dev_on is not None else on
        if ip.version == 4 and ip.is_loopback and not on:
            why = "route_localnet is off" + (f" ({self.localnet_why})" if self.route_localnet_inferred
                                             and self.localnet_why else "")
            self.finish(st, "drop", None, f"routing drops it: {what} {ip} is a loopback address arriving "
                                          f"from the network and {why}", "martian")
            return True
        return False

    def route(self, states: list[State]) -> tuple[list[State], list[State]]:
        """Routing after PREROUTING (ip_route_input_slow): (local, forwarded); martians, packets the node does not
        forward (ip_forward=0), strict reverse-path failures and packets without a route end here."""
        local: list[State] = []
        fwd: list[State] = []
        for s in states:
            if self.martian(s, s.pkt.dst, "destination"):
                continue
            hit = self.route_lookup(s.pkt.dst, s.pkt.src, s.iif, s.mark)
            is_local = self.node.is_local(s.pkt.dst) or (hit is not None and hit.local)
            if hit is not None and not is_local and hit.kind in ("none", "blackhole", "unreachable", "prohibit"):
                self.no_route(s, hit)
                continue
            if not self.reverse_path(s):
                continue
            if is_local:
                local.append(s)
                continue
            if not self.forwarding(s):
                continue
            if hit is not None and hit.route is not None and hit.route.dev:
                s.oif = hit.route.dev
                s.ifaces.pop("o", None)
                self.fact(f"out on {hit.route.dev}: the route to {s.pkt.dst} is `{hit.route.text()}`")
            fwd.append(s)
        return local, fwd

    def no_route(self, s: State, hit: RouteHit) -> None:
        # ip_route_input_slow: no route -> RTN_UNREACHABLE and ip_error() answers host/net unreachable; a
        # blackhole route drops silently; unreachable/prohibit routes answer (ip_error: EHOSTUNREACH, EACCES).
        kind = hit.kind
        if kind == "blackhole":
            self.finish(s, "drop", None, f"routing drops it: the route to {s.pkt.dst} is a blackhole "
                                         f"(`{hit.text()}`)", "no-route")
            return
        s.reject_with = {"none": "icmp-net-unreachable", "unreachable": "icmp-host-unreachable",
                         "prohibit": "icmp-admin-prohibited"}[kind]
        what = f"the node has no route to {s.pkt.dst}" if kind == "none" else \
            f"the route to {s.pkt.dst} is `{hit.text()}`"
        self.finish(s, "reject", None, f"routing answers {s.reject_with}: {what}", "no-route")

    def forwarding(self, s: State) -> bool:
        """ip_forward (the input device's conf.<dev>.forwarding): off, the kernel does not forward
        (ip_route_input_slow: !IN_DEV_FORWARD -> no route; ip_error() then sends nothing)."""
        host = self.host
        if host is None:
            return True
        if s.pkt.family == 6:  # ip6_forward(): the all-interfaces switch decides
            keys = ["net.ipv6.conf.all.forwarding"]
        else:
            keys = ([f"net.ipv4.conf.{s.iif}.forwarding"] if s.iif else []) + ["net.ipv4.ip_forward"]
        for k in keys:
            v = host.sysctl_int(k)
            if v is not None:
                if v == 0:
                    self.finish(s, "drop", None, f"routing drops it: {k} = 0, so the node does not forward "
                                                 f"packets (this one is for {dst_text(s)}, not the node)",
                                "ip-forward-off")
                    return False
                return True
        what = "net.ipv6.conf.all.forwarding=1" if s.pkt.family == 6 else "ip_forward=1"
        self.assume_fact(f"{what} (the node forwards): no sysctl file for node {host.node or '?'} in the snapshot")
        return True

    def reverse_path(self, s: State) -> bool:
        """rp_filter (fib_validate_source): strict (1) drops a packet whose source the node routes out of another
        interface than it came in on; loose (2) drops it only when the source has no route at all."""
        host = self.host
        if host is None or s.iif is None or s.pkt.src.version != 4:
            return True
        mode = host.rp_filter(s.iif)
        if mode is None:
            self.assume_fact(f"rp_filter off on {s.iif}: no sysctl file for node {host.node or '?'} in the snapshot")
            return True
        if mode == 0:
            return True
        back = self.route_lookup(s.pkt.src, None, None, s.mark)
        if back is None:
            return True
        dev = back.route.dev if back.route is not None else None
        if back.route is None or back.kind not in ("unicast", "local"):
            self.finish(s, "drop", None, f"rp_filter ({mode}) drops it: the node has no route back to {s.pkt.src}",
                        "rp-filter")
            return False
        if mode == 1 and dev is not None and dev != s.iif:
            self.finish(s, "drop", None, f"rp_filter (strict, net.ipv4.conf.{{all,{s.iif}}}.rp_filter = 1) drops "
                                         f"it: it came in on {s.iif} but the route back to {s.pkt.src} leaves by "
                                         f"{dev} (`{back.route.text()}`)", "rp-filter")
            return False
        return True

    def route_in(self, states: list[State]) -> None:
        local, fwd = self.route(states)
        for s in self.hook(local, "INPUT", INPUT):
            self.deliver(s)
        self.forward(fwd)

    def forward(self, states: list[State]) -> None:
        states = self.hook(states, "FORWARD", FORWARD)
        for s in self.hook(states, "POSTROUTING", POSTROUTING):
            self.leave(s, f"routed on to {dst_text(s)}")

    def deliver(self, s: State) -> None:
        self.finish(s, "accept", "local", f"delivered to a process on the node at {dst_text(s)}")

    # -- nat once per direction ----------------------------------------------------------------------
    @staticmethod
    def nat_skipped(st: State, hook: str) -> bool:
        """The nat chains of this hook do not see the packet: untracked, or this direction was decided."""
        return st.untracked or (st.dnat_done if hook in ("PREROUTING", "OUTPUT") else st.snat_done)

    def nat_ran(self, s: State, hook: str) -> None:
        """The nat chains of this hook decided this direction (a DNAT at OUTPUT reroutes the packet)."""
        if hook in ("PREROUTING", "OUTPUT"):
            s.dnat_done = True
            if hook == "OUTPUT" and s.dnat_changed:
                s.oif = "lo" if self.node.is_local(s.pkt.dst) else (s.orig.oif or self.out_interface(s))
                s.ifaces.pop("o", None)
        else:
            s.snat_done = True


def walk(make: Callable[[], KernelWalker], pkt: Packet,
         node: NodeFacts) -> tuple[list[Fate], list[Warn], tuple[list[str], list[str]]]:
    """Every fate of `pkt`. A returning client is in the recent list of the endpoint its first connection went to,
    with the probability of that first choice: the walk starts again from each such memory."""
    w = make()
    finals = w.run(pkt)
    told = (w.facts, w.assumed)
    if node.returning_client:
        firsts: dict[str, float] = {}
        for f in finals:
            if f.st.recent_set:
                firsts[f.st.recent_set[0]] = firsts.get(f.st.recent_set[0], 0.0) + f.st.prob
        prev = node.previous_endpoint
        if firsts and prev is not None:
            # The client's entry is in the list of the endpoint its previous connection went to: the list the
            # first connection writes (`-m recent --set`, nft `update @affinity-...`) where it DNATs to `prev`.
            mine = {name: p for name, p in firsts.items()
                    if any(f.st.recent_set and f.st.recent_set[0] == name and f.st.dnat == prev for f in finals)}
            if mine:
                total = sum(mine.values())
                firsts = {name: p / total for name, p in mine.items()}
            else:
                sent = sorted({str(f.st.dnat) for f in finals if f.st.recent_set and f.st.dnat})
                w.warnings.append(Warn(
                    f"the previous endpoint {prev} is not one these rules send this packet to (now: "
                    f"{', '.join(sent[:6])}): the client's affinity entry names a list no rule checks, so it gets "
                    "the normal split", None, None, "affinity"))
                firsts = {}
        if firsts:
            w2 = make()
            for name, p in firsts.items():
                w2.run(pkt, remembered=name, prob=p)
            for f in finals:
                if not f.st.recent_set:
                    w2.finals.append(f)
            finals = w2.finals
            w.warnings.extend(x for x in w2.warnings if x not in w.warnings)
    return finals, w.warnings, told


def merge_outcomes(finals: list[Fate]) -> list[Outcome]:
    """Identical fates merge: their probabilities add up."""
    groups: dict[tuple, list[Fate]] = {}
    for f in finals:
        if f.st.prob <= 0:
            continue
        st = f.st
        masq = st.masq
        key = (f.verdict, st.dnat if f.verdict == "accept" else None, masq if f.verdict == "accept" else False,
               st.snat if f.verdict == "accept" else None, f.delivery, st.reject_with,
               st.oif if f.verdict == "accept" and f.delivery == "forward" else None, f.cause)
        groups.setdefault(key, []).append(f)
    out: list[Outcome] = []
    for key, fs in groups.items():
        fs.sort(key=lambda f: -f.st.prob)
        total = sum(f.st.prob for f in fs)
        best = fs[0]
        # Both sides of every split ending here means the split did not matter.
        certain = all(not f.st.assumptions for f in fs) or (
            total >= 1 - 1e-9 and not any(f.st.onesided for f in fs))
        assumptions: list[str] = []
        if not certain:
            for f in fs:
                for a in f.st.assumptions:
                    if a not in assumptions:
                        assumptions.append(a)
        verdict, dnat, masq, snat, delivery, reject_with, oif, cause = key
        out.append(Outcome(
            probability=total, verdict=verdict, dnat=dnat, masquerade=bool(masq), snat=snat, delivery=delivery,
            certain=certain, path=best.st.steps(), reason=best.reason, reject_with=reject_with,
            assumptions=assumptions, final_dst=dst_text(best.st), mark=best.st.mark, merged=len(fs),
            iif=best.st.iif if best.st.orig.origin == "forwarded" else None, oif=oif, snat_how=best.st.snat_how,
            cause=cause,
        ))
    out.sort(key=lambda o: (-o.probability, o.verdict, o.dnat or ""))
    return out


# -- the reply ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplyPath:
    """Whether the endpoint's reply comes back through this node's conntrack (which undoes the DNAT and the
    masquerade, so the client sees the address it asked); `through` None: the facts do not say. `code` names what
    breaks it: reply-bypasses-conntrack, hairpin-mode-off, reply-asymmetric."""

    through: bool | None
    code: str | None = None
    why: str = ""
    request_dropped: bool = False  # the request itself never reaches the endpoint (hairpin_mode off)


def bridge_ports(host: Any, dev: str | None) -> list[str]:
    """The ports of bridge `dev` (from ip-addr's `master`), empty when `dev` is no bridge or unknown."""
    if host is None or dev is None or host.links is None:
        return []
    return sorted(p for p, master in host.links.items() if master == dev)


def reply_path(host: Any, *, client: IPAddress, client_iif: str | None, endpoint: IPAddress,
               endpoint_oif: str | None, masquerade: bool, endpoint_remote: bool, client_behind_node: bool,
               family: int = 4) -> ReplyPath:
    """The reply of a connection the node DNATed from `client` (in on `client_iif`) to `endpoint` (out on
    `endpoint_oif`), as the kernel returns it (measured in tests/test_kernel_nodefacts.py):

    - the client is its own endpoint (hairpin) behind a bridge whose frames pass iptables (br_netfilter,
      bridge-nf-call-iptables=1): br_nf_pre_routing_finish() sees the DNAT to an address on the same bridge
      and bridges the frame back out the port it came in on, which the bridge does only with hairpin_mode on
      that port (br_forward.c should_deliver); else the request itself is lost;
    - client and endpoint on the same bridge, not masqueraded, frames not passed to iptables: the endpoint
      answers the client directly over the bridge, the reply never meets the node's conntrack entry, and the
      client sees the pod's address instead of the Service's and drops (resets) it;
    - the endpoint on another node, not masqueraded, and the client not behind this node: the endpoint's node
      answers the client by its own route, not through this node, with the same result;
    - the node's route back to the client leaves by another interface than the request came in on (a second
      network, a load balancer on one side): conntrack undoes the translation, but a stateful firewall or load
      balancer on the request's side never sees the reply (not measured: the lab has no such device)."""
    other = _other_way_back(host, client, client_iif)
    if host is not None:
        # The reply is for the client, not the node: the node forwards it (after conntrack's reverse translation
        # in PREROUTING), which ip_forward=0 forbids (ip_route_input_slow). Matters where the request itself
        # left through LOCAL_OUT, i.e. IPVS (ip_vs_nat_xmit), not measured here (no ip_vs in this kernel).
        key = "net.ipv6.conf.all.forwarding" if family == 6 else "net.ipv4.ip_forward"
        if host.sysctl_int(key) == 0:
            return ReplyPath(False, "ip-forward-off", f"the reply to {client} has to be forwarded by this node "
                                                      f"and {key} = 0")
    if host is not None and client == endpoint and client_iif is not None:
        ports = bridge_ports(host, client_iif)
        if ports:
            nf = host.bridge_nf(family)
            if nf is False:
                return ReplyPath(True, why=f"the pod calls itself through bridge {client_iif}; its frames do not "
                                           "pass iptables (bridge-nf-call-iptables off), so the node routes the "
                                           "packet back out the bridge and the masquerade brings the reply back")
            hp = host.hairpin
            on = [p for p in ports if hp and hp.get(p)]
            if hp is not None and not on:
                return ReplyPath(False, "hairpin-mode-off",
                                 f"the pod calls itself through bridge {client_iif}, which hands the DNATed frame "
                                 f"back to the port it came in on only with hairpin_mode; every port of "
                                 f"{client_iif} has hairpin_mode 0", request_dropped=nf is True)
            if hp is None or len(on) < len(ports):
                what = "hairpin_mode was not collected" if hp is None else \
                    f"{len(on)} of its {len(ports)} ports have hairpin_mode on"
                return ReplyPath(None, "hairpin-mode-off",
                                 f"the pod calls itself through bridge {client_iif}; it gets the frame back only if "
                                 f"its port has hairpin_mode on, and {what}")
    if masquerade:
        if other:
            return ReplyPath(None, "reply-asymmetric", other)
        return ReplyPath(True, why="masqueraded: the endpoint answers the node, whose conntrack undoes both "
                                   "translations")
    if endpoint_remote:
        if client_behind_node:
            return ReplyPath(True, why="the endpoint's node routes the reply to the client through this node, "
                                       "whose conntrack undoes the DNAT")
        return ReplyPath(False, "reply-asymmetric",
                         f"not masqueraded, and {endpoint} is on another node: that node answers {client} by its own "
                         "route, not through this node, so the DNAT is never undone")
    if host is not None and client_iif is not None and client_iif == endpoint_oif and bridge_ports(host, client_iif):
        nf = host.bridge_nf(family)
        if nf is False:
            why = ("br_netfilter is not loaded" if host.br_netfilter is False else
                   f"net.bridge.bridge-nf-call-{'iptables' if family == 4 else 'ip6tables'} = 0")
            return ReplyPath(False, "reply-bypasses-conntrack",
                             f"{client} and {endpoint} are both on bridge {client_iif} and the reply is not "
                             f"masqueraded: {endpoint} answers {client} directly over the bridge, and {why}, so the "
                             "reply never meets the node's conntrack")
        if nf is None:
            return ReplyPath(None, "reply-bypasses-conntrack",
                             f"{client} and {endpoint} are both on bridge {client_iif} and the reply is not "
                             f"masqueraded: it meets the node's conntrack only if br_netfilter passes bridged "
                             "frames to iptables (no sysctl file says)")
        return ReplyPath(True, why=f"the reply crosses bridge {client_iif}, whose frames pass iptables "
                                   "(br_netfilter), so conntrack undoes the DNAT")
    if other:
        return ReplyPath(None, "reply-asymmetric", other)
    return ReplyPath(True, why="the reply comes back through the node, whose conntrack undoes the DNAT")


def _other_way_back(host: Any, client: IPAddress, client_iif: str | None) -> str:
    """Why the node's answer to `client` leaves by another interface than `client_iif` ("" when it does not)."""
    if host is None or client_iif is None:
        return ""
    hit = lookup(host, client)
    if hit is None or hit.route is None or hit.local or not hit.route.dev or hit.route.dev == client_iif:
        return ""
    return (f"the request comes in on {client_iif} but the node's route back to {client} leaves by "
            f"{hit.route.dev} (`{hit.route.text()}`): conntrack undoes the translation, but a stateful firewall "
            f"or load balancer on {client_iif}'s side never sees the reply")
