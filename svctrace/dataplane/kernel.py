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
        path = [c for f in stack for c in (*f[3], f[0])]
        if any(c is chain for c in path):
            names = " -> ".join([c.name for c in path] + [chain.name])
            raise WalkError(f"loop in the rules: {shorten(names, 400)}{at}; the kernel refuses such a ruleset, so "
                            "the dump was edited or mixed")
        if len(path) >= MAX_DEPTH:
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

    def finish(self, st: State, verdict: str, delivery: str | None, reason: str) -> None:
        self.finals.append(Fate(st, verdict, delivery, reason))

    # -- the path ----------------------------------------------------------------------------------
    def run(self, pkt: Packet, remembered: str | None = None, prob: float = 1.0) -> list[Fate]:
        st = State(pkt, prob)
        st.remembered = remembered
        self.start(st)
        if pkt.origin == "forwarded":
            if self.martian(st, pkt.src, "source"):
                return self.finals
            self.route_in(self.hook([st], "PREROUTING", PREROUTING))
        else:
            st.oif = "lo" if self.node.is_local(pkt.dst) else pkt.oif
            self.local_out(st)
        return self.finals

    def start(self, st: State) -> None:
        """Assumptions that hold for the whole walk."""

    def local_out(self, st: State) -> None:
        """The node's own packet: OUTPUT, POSTROUTING, then out or back in through lo."""
        states = self.hook([st], "OUTPUT", OUTPUT)
        for s in self.hook(states, "POSTROUTING", POSTROUTING):
            if self.node.is_local(s.pkt.dst):
                for b in self.loop_back(s):
                    self.deliver(b)
            else:
                self.finish(s, "accept", "forward", f"leaves the node for {dst_text(s)}")

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
        if ip.version == 4 and ip.is_loopback and not self.route_localnet:
            why = "route_localnet is off" + (f" ({self.localnet_why})" if self.route_localnet_inferred
                                             and self.localnet_why else "")
            self.finish(st, "drop", None, f"routing drops it: {what} {ip} is a loopback address arriving "
                                          f"from the network and {why}")
            return True
        return False

    def route(self, states: list[State]) -> tuple[list[State], list[State]]:
        """Routing after PREROUTING: (local, forwarded); martians dropped."""
        local: list[State] = []
        fwd: list[State] = []
        for s in states:
            if self.martian(s, s.pkt.dst, "destination"):
                continue
            (local if self.node.is_local(s.pkt.dst) else fwd).append(s)
        return local, fwd

    def route_in(self, states: list[State]) -> None:
        local, fwd = self.route(states)
        for s in self.hook(local, "INPUT", INPUT):
            self.deliver(s)
        self.forward(fwd)

    def forward(self, states: list[State]) -> None:
        states = self.hook(states, "FORWARD", FORWARD)
        for s in self.hook(states, "POSTROUTING", POSTROUTING):
            self.finish(s, "accept", "forward", f"routed on to {dst_text(s)}")

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
                s.oif = "lo" if self.node.is_local(s.pkt.dst) else s.orig.oif
                s.ifaces.pop("o", None)
        else:
            s.snat_done = True


def walk(make: Callable[[], KernelWalker], pkt: Packet, node: NodeFacts) -> tuple[list[Fate], list[Warn]]:
    """Every fate of `pkt`. A returning client is in the recent list of the endpoint its first connection went to,
    with the probability of that first choice: the walk starts again from each such memory."""
    w = make()
    finals = w.run(pkt)
    if node.returning_client:
        firsts: dict[str, float] = {}
        for f in finals:
            if f.st.recent_set:
                firsts[f.st.recent_set[0]] = firsts.get(f.st.recent_set[0], 0.0) + f.st.prob
        if firsts:
            w2 = make()
            for name, p in firsts.items():
                w2.run(pkt, remembered=name, prob=p)
            for f in finals:
                if not f.st.recent_set:
                    w2.finals.append(f)
            finals = w2.finals
            w.warnings.extend(x for x in w2.warnings if x not in w.warnings)
    return finals, w.warnings


def merge_outcomes(finals: list[Fate]) -> list[Outcome]:
    """Identical fates merge: their probabilities add up."""
    groups: dict[tuple, list[Fate]] = {}
    for f in finals:
        if f.st.prob <= 0:
            continue
        st = f.st
        masq = st.masq
        key = (f.verdict, st.dnat if f.verdict == "accept" else None, masq if f.verdict == "accept" else False,
               st.snat if f.verdict == "accept" else None, f.delivery, st.reject_with)
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
        verdict, dnat, masq, snat, delivery, reject_with = key
        out.append(Outcome(
            probability=total, verdict=verdict, dnat=dnat, masquerade=bool(masq), snat=snat, delivery=delivery,
            certain=certain, path=best.st.steps(), reason=best.reason, reject_with=reject_with,
            assumptions=assumptions, final_dst=dst_text(best.st), mark=best.st.mark, merged=len(fs),
        ))
    out.sort(key=lambda o: (-o.probability, o.verdict, o.dnat or ""))
    return out
