"""Walk a packet through a node's nftables ruleset the way the kernel does, over every branch at once.

Same contract as every dataplane (`svctrace.dataplane.contract`): `trace()` returns a `TraceResult`
whose outcomes (verdict, DNAT destination, masquerade, probability, path) sum to 1.

Kernel model (net/netfilter/nf_tables_core.c, nf_nat_core.c):

- Every base chain of every table of the packet's family (`ip`/`inet` for IPv4, `ip6`/`inet` for
  IPv6) runs at its hook, in priority order (ties: the one listed last first, as the kernel runs the
  one registered last first). An accept ends only that base chain;
  the next one at the hook still sees the packet. A drop or reject ends the packet.
- `type nat` chains do not run at their own priority: the NAT core runs them all, in their priority
  order, from its own hook (dstnat -100 at prerouting/output, srcnat 100 at postrouting/input), and
  only for the first packet of a connection; once one of them set up a translation (`dnat`,
  `masquerade`, `redirect`, `snat`), the others are skipped.
- `jump` pushes, `goto` replaces, `return` pops; a base chain ends with its policy. A failed map lookup
  ends the rule without a match. An expression the packet has no value for (`tcp dport` of a UDP
  packet, `iifname` at output) makes the rule not match, whatever the operator.
- `numgen random mod N` splits the walk into N branches of exactly 1/N; `jhash`/`symhash` likewise but
  uncertain. Conntrack is that of a first packet: `ct state new`, `ct status dnat` once a DNAT changed
  the destination. Sets a rule adds to at run time (`update @affinity-...`) hold nothing for a new
  client; for a returning client the walk starts again from the distribution of first choices.
- Hooks in kernel order, routing, martians and the loop back over lo: `svctrace.dataplane.kernel`.

Stdlib only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, cast

from svctrace.dataplane.contract import Dnat, Hints, PathStep, TraceResult
from svctrace.dataplane.kernel import (
    Frame,
    KernelWalker,
    State,
    Unknown,
    iface_unknown,
    merge_outcomes,
    primary_local,
    walk,
)
from svctrace.dataplane.nftables.ir import (
    AnonSet,
    Binop,
    Chain,
    Concat,
    Const,
    Ct,
    Dynset,
    Element,
    Expr,
    Fib,
    Hash,
    Limit,
    ListLit,
    Mangle,
    MapLookup,
    Match,
    Meta,
    Nat,
    NftRuleset,
    Notrack,
    NSet,
    Numgen,
    Opaque,
    Passive,
    Payload,
    Reject,
    Rule,
    SetRef,
    Stmt,
    Verdict,
    VerdictStmt,
    Vmap,
)
from svctrace.dataplane.nftables.ir import Unknown as UnknownStmt
from svctrace.dataplane.nftables.printer import fmt_element, fmt_expr, fmt_stmt
from svctrace.dataplane.nftables.setindex import SetIndex
from svctrace.dataplane.nftables.values import (
    ANY,
    FLAG_TYPES,
    INT,
    BadValue,
    declared_types,
    expr_type,
    flags_value,
    matcher,
    scalar,
)
from svctrace.errors import InputError, shorten
from svctrace.model.packet import NodeFacts, Packet, format_endpoint

HOOKS = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")
# NF_IP_PRI_NAT_DST / NF_IP_PRI_NAT_SRC: where the NAT core runs the `type nat` chains of a hook.
NAT_PRIORITY = {"PREROUTING": -100, "OUTPUT": -100, "INPUT": 100, "POSTROUTING": 100}
MASK32 = 0xFFFFFFFF

_XT = re.compile(r'^xt (match|target) "?([\w-]+)"?$')
_REJECT4 = {"port-unreachable": "icmp-port-unreachable", "host-unreachable": "icmp-host-unreachable",
            "net-unreachable": "icmp-net-unreachable", "prot-unreachable": "icmp-proto-unreachable",
            "admin-prohibited": "icmp-admin-prohibited", "net-prohibited": "icmp-net-prohibited",
            "host-prohibited": "icmp-host-prohibited", "no-route": "icmp-net-unreachable"}
_REJECT6 = {"port-unreachable": "icmp6-port-unreachable", "no-route": "icmp6-no-route",
            "admin-prohibited": "icmp6-adm-prohibited", "addr-unreachable": "icmp6-addr-unreachable",
            "host-unreachable": "icmp6-addr-unreachable", "policy-fail": "icmp6-policy-fail",
            "reject-route": "icmp6-reject-route"}


class _Break:
    """The packet has no value for the expression: the rule does not match."""


BREAK = _Break()


@dataclass(frozen=True)
class _Unk:
    """A value the dump cannot tell."""

    key: str
    says: str
    iface: str | None = None  # "i" / "o": an interface name, reasoned about like the iptables walker does


@dataclass(frozen=True)
class _Maybe:
    """A lookup whose key is partly unknown: these elements could match (or none)."""

    candidates: tuple[Element, ...]
    says: str


Act = tuple[str, str | None, str]  # (accept|drop|reject|jump|goto|return, target, reason)
Res = str | Act  # "cont" / "stop" or a verdict
_Work = tuple[State, int, dict[int, int], list[str], float | None, list[str]]


def _randoms(s: Stmt) -> list[Numgen | Hash]:
    out: list[Numgen | Hash] = []

    def visit(e: object) -> None:
        if isinstance(e, Numgen | Hash):
            out.append(e)
        elif isinstance(e, Concat):
            for x in e.items:
                visit(x)
        elif isinstance(e, Binop):
            visit(e.left)
        elif isinstance(e, MapLookup):
            visit(e.key)

    if isinstance(s, Match):
        visit(s.left)
    elif isinstance(s, Vmap):
        visit(s.key)
    elif isinstance(s, Mangle):
        visit(s.value)
    elif isinstance(s, Nat):
        visit(s.addr)
        visit(s.port)
    return out


def _map_keys(s: Stmt, n: Numgen | Hash) -> set[int] | None:
    """The integer keys of an anonymous map looked up by exactly `n` (`numgen ... vmap {...}`, `dnat to numgen
    ... map {...}`), or None when the statement is shaped otherwise."""
    data: SetRef | AnonSet | None = None
    if isinstance(s, Vmap) and s.key is n:
        data = s.data
    elif isinstance(s, Nat) and isinstance(s.addr, MapLookup) and s.addr.key is n:
        data = s.addr.data
    if not isinstance(data, AnonSet):
        return None
    keys: set[int] = set()
    for el in data.elements:
        if not isinstance(el.key, Const):
            return None
        try:
            keys.add(int(str(el.key.value), 0))
        except ValueError:
            return None
    return keys


def _nft_pattern(name: str) -> str:
    """`eth*` (nft) -> `eth+` (the iptables walker's interface reasoning)."""
    return name[:-1] + "+" if name.endswith("*") else name


class NftWalker(KernelWalker):
    endless = "the walk did not end (a loop through goto?); the kernel would not load these rules"
    splits = "expressions"
    later_first = True
    def __init__(self, rs: NftRuleset, node: NodeFacts, family: int, hints: Hints | None = None) -> None:
        super().__init__(node, rs, hints)
        self.rs = rs
        self.source = rs.source
        self.family = family
        self.hook_name = ""
        self._anon: dict[tuple[int, tuple[str, ...]], SetIndex] = {}
        fams = ("ip", "inet") if family == 4 else ("ip6", "inet")
        self.tables = [t for t in rs.tables.values() if t.family in fams]
        key = ("plans", family)
        cached = rs.cache.get(key)
        if not isinstance(cached, tuple):
            cached = rs.cache[key] = self._plans(fams)
        self.plans: dict[str, list[tuple[str, list[Chain]]]] = cached[0]
        for args in cached[1]:
            self.warn(*args)

    def _plans(self, fams: tuple[str, ...]) -> tuple[dict[str, list[tuple[str, list[Chain]]]],
                                                     list[tuple[str, str, int | None, str]]]:
        """Once per ruleset (one pass over its chains): each hook's plan, and the warnings for base chains no walk
        enters (every question gives the same)."""
        walked: list[tuple[int, Chain]] = []  # base chains of the walked families, with their position
        unwalked: list[tuple[str, str, int | None, str]] = []
        order = 0
        for t in self.rs.tables.values():
            bases = [(order + i, c) for i, c in enumerate(t.chains.values(), 1) if c.hook is not None]
            order += len(t.chains)
            if t.family in ("netdev", "bridge", "arp") and bases:
                unwalked.append((f"family:{t.key}", f"table {t.key}: base chains of the {t.family} family are not "
                                                     "walked (only ip, ip6 and inet)", t.line, "not-modelled"))
            if t.family not in fams:
                continue
            walked += bases
            unwalked += [(f"device:{t.key}:{c.name}", f"{t.key} {c.name}: a per-device ({c.hook}) chain is not walked",
                          c.line, "not-modelled") for _, c in bases if c.device is not None]
        plans = {h: self._plan(h, walked) for h in HOOKS}
        for h, plan in plans.items():
            prios: dict[int, list[Chain]] = {}
            for kind, cs in plan:
                if kind == "chain":
                    prios.setdefault(cs[0].priority or 0, []).append(cs[0])
            for prio, cs in prios.items():
                if len({c.table for c in cs}) > 1:
                    names = " before ".join(f"{c.table} {c.name}" for c in cs)
                    unwalked.append((f"tie:{h}:{prio}", f"base chains of several tables share priority {prio} at "
                                                        f"{h.lower()}: walked {names} (the kernel runs the one "
                                                        "registered last first; assumed the listing is creation "
                                                        "order)", cs[0].line, "priority-tie"))
        return plans, unwalked

    # -- hooks ------------------------------------------------------------------------------------
    @staticmethod
    def _plan(hook: str, bases: list[tuple[int, Chain]]) -> list[tuple[str, list[Chain]]]:
        """The base chains at a hook, in kernel order: ("chain", [c]) or ("nat", [c1, c2 ...]). `bases`: every
        base chain with its position among the tables' chains (ties in priority go by it)."""
        h = hook.lower()
        entries: list[tuple[int, int, str, list[Chain]]] = []
        nat: list[tuple[int, int, Chain]] = []
        for order, c in bases:
            if c.hook != h or c.device is not None:
                continue
            prio = c.priority if c.priority is not None else 0
            if c.type == "nat":
                nat.append((prio, order, c))
            else:
                entries.append((prio, order, "chain", [c]))
        # Equal priorities: nf_hook_entries_grow (net/netfilter/core.c) puts a new hook before the existing ones of
        # the same priority, so the base chain registered last runs first; `nft list ruleset` lists tables and
        # their chains in creation order, so a later one in the dump runs first (checked in the kernel lab:
        # tests/test_conformance.py, an iptables-nft FORWARD chain beside kube-proxy's filter-forward). The NAT
        # core keeps its chains the same way (nf_nat_register_fn -> nf_hook_entries_insert_raw).
        if nat:
            nat.sort(key=lambda x: (x[0], -x[1]))
            entries.append((NAT_PRIORITY.get(hook, 0), nat[0][1], "nat", [c for _, _, c in nat]))
        entries.sort(key=lambda x: (x[0], -x[1]))
        return [(kind, cs) for _, _, kind, cs in entries]

    def hook(self, states: list[State], hook: str, tables: object = ()) -> list[State]:
        for kind, chains in self.plans[hook]:
            if not states:
                return states
            nxt: list[State] = []
            for st in states:
                results = self.run_nat(st, chains, hook) if kind == "nat" else self.run_base(st, chains[0], hook)
                for s2, verdict, reason in results:
                    if verdict == "accept":
                        nxt.append(s2)
                    else:
                        self.finish(s2, verdict, None, reason)
            states = nxt
        return states

    def run_nat(self, st: State, chains: list[Chain], hook: str) -> list[tuple[State, str, str]]:
        if self.nat_skipped(st, hook):
            return [(st, "accept", "")]
        out: list[tuple[State, str, str]] = []
        pending = [st]
        for c in chains:
            nxt: list[State] = []
            for s in pending:
                if self.nat_skipped(s, hook):
                    out.append((s, "accept", ""))
                    continue
                for s2, verdict, reason in self.run_base(s, c, hook):
                    if verdict == "accept":
                        nxt.append(s2)
                    else:
                        out.append((s2, verdict, reason))
            pending = nxt
        out.extend((s, "accept", "") for s in pending)
        for s, verdict, _ in out:
            if verdict == "accept":
                self.nat_ran(s, hook)
        return out

    # -- one base chain ---------------------------------------------------------------------------
    def run_base(self, st: State, base: Chain, hook: str) -> list[tuple[State, str, str]]:
        self.hook_name = hook
        return self.run_chain(st, base, base.rules, hook)

    def run_rule(self, st: State, rule: Rule, hook: str, base: Chain) -> list[tuple[State, Act | None]]:
        return self.exec_rule(st, rule, hook, base)

    def policy(self, st: State, base: Chain, hook: str) -> tuple[str, str]:
        pol = (base.policy or "accept").lower()
        if pol != "accept":
            st.add(PathStep(hook, base.table, base.name, None, base.line,
                            f"type {base.type} hook {base.hook} priority {base.priority_text}; policy {pol};",
                            f"policy {pol.upper()}"))
            return "drop", f"the {base.table} {base.name} chain's policy is drop and no rule accepted it"
        return "accept", ""

    def follow(self, st: State, act: Act, stack: list[Frame], hook: str, base: Chain) -> tuple[str, str] | None:
        kind, target, reason = act
        if kind in ("accept", "drop", "reject"):
            return kind, reason
        if kind == "return":
            if stack:
                stack.pop()
            return None
        assert target is not None
        table = self.rs.tables[base.table]
        chain = table.chains.get(target)
        if chain is None:
            return self._missing_chain(st, target, act, stack, base, hook)
        self.enter(stack, chain, chain.rules, kind == "goto", f"{base.table} {target}")
        return None

    def _missing_chain(self, st: State, name: str, act: Act, stack: list[Frame], base: Chain,
                       hook: str) -> tuple[str, str] | None:
        where = act[2]
        hints = self.hints
        found = hints.endpoint(name, None) if hints.endpoint is not None else None
        if found is not None and base.type == "nat" and hook in ("PREROUTING", "OUTPUT") \
                and found[0].version == st.pkt.family:
            ip, port = found
            if ip == st.pkt.src:  # the endpoint chain masquerades hairpin traffic
                st.mark |= hints.hairpin_mark
            ep = format_endpoint(ip, port)
            st.dnat_to(ip, port, None)
            st.dnat_done = True
            st.assume_one(f"{name} (not in the dump) DNATs to {ep}, as its name says")
            st.add(PathStep(hook, base.table, name, None, None, "", f"DNAT to {ep}",
                            note="the chain is not in the dump; its name names the endpoint"))
            self.warn(f"missing:{name}", f"{where} goes to {name}, which is not in the dump; its name names the "
                                         f"endpoint {ep}, so the outcome names it (certain: false)", None,
                      "missing-chain")
            return "accept", ""
        bit = hints.mark_chains.get(name)
        if bit is not None:
            st.mark |= bit
            st.assume_one(f"{name} (not in the dump) sets mark {bit:#x} as {hints.writer}'s does")
            self.warn(f"missing:{name}", f"{where} jumps to {name}, which is not in the dump; assumed "
                                         f"{hints.writer}'s mark {bit:#x}", None, "missing-chain")
        else:
            st.assume_one(f"{name} (not in the dump) returns without a verdict")
            self.warn(f"missing:{name}", f"{where} goes to {name}, which is not in the dump (filtered or cut "
                                         "short); assumed it returns without a verdict", None, "missing-chain")
        if act[0] == "goto" and stack:  # returning from a goto target returns from the chain that went there
            stack.pop()
        return None

    # -- one rule -----------------------------------------------------------------------------------
    def exec_rule(self, st: State, rule: Rule, hook: str, base: Chain) -> list[tuple[State, Act | None]]:
        results: list[tuple[State, Act | None]] = []
        work: list[_Work] = [(st, 0, {}, [], None, [])]
        stmts = rule.stmts
        if self.rs.lazy and rule.problems:
            self.warn(f"rule:{rule.table}:{rule.chain}:{rule.index}",
                      f"{rule.table} {rule.chain} rule {rule.index}: {'; '.join(rule.problems)}", rule.line,
                      "unknown-statement")
        while work:
            s, i, env, acts, branch, notes = work.pop()
            while True:
                if i >= len(stmts):
                    self._finish_rule(s, rule, hook, acts, branch, notes, None, matched=True)
                    results.append((s, None))
                    break
                stmt = stmts[i]
                rnd = [n for n in _randoms(stmt) if id(n) not in env]
                if rnd:
                    n = rnd[0]
                    k = max(n.mod, 1)
                    values: list[tuple[int | None, int]] = [(v + n.offset, 1) for v in range(k)]
                    present = _map_keys(stmt, n)
                    if present is not None and len(present) < k:
                        # values the map has no element for all end the rule alike: one branch for them
                        values = [(v, 1) for v in sorted(present) if n.offset <= v < n.offset + k]
                        values.append((None, k - len(values)))
                    forks = [s] + [s.fork() for _ in range(len(values) - 1)]
                    for (v, weight), sv in reversed(list(zip(values, forks, strict=True))):
                        sv.prob *= weight / k
                        if isinstance(n, Hash):
                            sv.assume_one(f"{n.kind} spreads connections evenly over its {k} buckets")
                        label = f"{fmt_expr(n)} = {v}" if v is not None else f"{fmt_expr(n)} = a value the map lacks"
                        work.append((sv, i, {**env, id(n): -1 if v is None else v}, list(acts),
                                     (branch or 1.0) * weight / k, [*notes, label]))
                    break
                outs = self.exec_stmt(s, stmt, rule, hook, base, env)
                if len(outs) == 1:
                    s, res, a, nt = outs[0]
                    if a:
                        acts = [*acts, a]
                    if nt:
                        notes = [*notes, nt]
                    if res == "cont":
                        i += 1
                        continue
                    results.append((s, self._end(s, rule, hook, acts, branch, notes, res)))
                    break
                self.branches += len(outs) - 1
                for s2, res, a, nt in outs:
                    acts2 = [*acts, a] if a else acts
                    notes2 = [*notes, nt] if nt else notes
                    if res == "cont":
                        work.append((s2, i + 1, env, acts2, branch, notes2))
                    else:
                        results.append((s2, self._end(s2, rule, hook, acts2, branch, notes2, res)))
                break
        return results

    def _end(self, s: State, rule: Rule, hook: str, acts: list[str], branch: float | None, notes: list[str],
             res: Res) -> Act | None:
        if res == "stop":
            if acts:  # side effects before a failing match stay
                self._finish_rule(s, rule, hook, acts, branch, notes, None, matched=False)
            s.branch = None
            return None
        assert isinstance(res, tuple)
        self._finish_rule(s, rule, hook, acts, branch, notes, res, matched=True)
        return res

    def _finish_rule(self, s: State, rule: Rule, hook: str, acts: list[str], branch: float | None,
                     notes: list[str], res: Act | None, matched: bool) -> None:
        printed = None
        if s.branch is not None:  # a `meta random` match taken on the way
            printed = f"{s.branch:.11f}"
            branch = (branch or 1.0) * s.branch
            s.branch = None
        if rule.assumed and (acts or res is not None):
            prefix = self.hints.assumed
            if prefix and rule.comment and rule.comment.startswith(prefix):
                s.assume_one(rule.comment[len(prefix):].strip(" :"))
            else:
                s.assume_one(f"{rule.table} {rule.chain} is not in the dump; assumed {self.hints.writer}'s usual "
                             f"rule `{rule.text}`")
        if not acts and res is None:
            if not matched or not any(isinstance(x, Passive) for x in rule.stmts):
                s.branch = None
                return
            acts = ["no verdict (counts only)"]
        action = "; ".join(acts)
        target = res[1] if res is not None and res[0] in ("jump", "goto") and action.startswith(f"{res[0]} ") else None
        s.add(PathStep(hook, rule.table, rule.chain, rule.index, rule.line, rule.text, action, printed, branch,
                       "; ".join(notes) or None, target=target))

    def _where(self, rule: Rule) -> str:
        why = f" ({rule.comment})" if rule.comment else ""
        return f"{rule.table} {rule.chain} rule {rule.index}{why}"

    def exec_stmt(self, st: State, s: Stmt, rule: Rule, hook: str, base: Chain,
                  env: dict[int, int]) -> list[tuple[State, Res, str | None, str | None]]:
        where = self._where(rule)
        if isinstance(s, Match):
            p = random_probability(s)
            if p is not None:
                return self._weighted(st, p)
            if isinstance(s.left, Ct) and s.left.key == "status" and self._ipt_table(rule):
                alt = self._ipt_ct_status(st, s, rule)
                if alt is not None:
                    return alt
            r = self.eval_match(st, s, env, rule)
            if isinstance(r, Unknown):
                return self._split(st, r, rule)
            return [(st, "cont" if r else "stop", None, None)]
        if isinstance(s, Vmap):
            return self._vmap(st, s, env, rule)
        if isinstance(s, VerdictStmt):
            return [self._verdict(st, s.verdict, rule, None)]
        if isinstance(s, Mangle):
            return [self._mangle(st, s, env, rule)]
        if isinstance(s, Nat):
            return [self._nat(st, s, env, rule, hook, base)]
        if isinstance(s, Reject):
            st.reject_with = self._reject_kind(s, rule)
            return [(st, ("reject", None, f"{where} rejects it with {st.reject_with}"),
                     f"REJECT with {st.reject_with}", None)]
        if isinstance(s, Dynset):
            t = self.rs.tables[rule.table]
            ns = t.sets.get(s.set)
            if ns is not None and ns.dynamic:
                st.recent_set.append(s.set)
                self._listed_source(st, ns)
            return [(st, "cont", f"{s.op} @{s.set} {{ {fmt_expr(s.key)} }}", None)]
        if isinstance(s, Passive):
            return [(st, "cont", None, None)]
        if isinstance(s, Limit):
            key = f"limit:{rule.table}:{rule.chain}:{rule.index}"
            if key not in st.assume:
                st.assume[key] = True
                st.assume_one(f"a first packet is under `{s.text}` ({where})")
                self.warn(f"soft:{key}", f"{where}: assumed a first packet is under `{s.text}`", rule.line,
                          "unknown-match")
            return [(st, "cont", None, None)]
        if isinstance(s, Notrack):
            st.untracked = True
            return [(st, "cont", "NOTRACK (no conntrack, so no NAT)", None)]
        if isinstance(s, UnknownStmt):
            xt = self._xt(st, s, rule, hook, base, env)
            if xt is not None:
                return xt
            if s.kind == "target":
                st.assume_one(f"`{s.text}` ({where}) has no effect on the walk")
                self.warn(f"target:{rule.line}:{s.text}", f"{where}: `{s.text}` is not modelled; assumed it "
                                                          "changes nothing", rule.line, "unknown-statement")
                return [(st, "cont", f"{s.text} (not modelled)", None)]
            u = Unknown(f"stmt:{rule.table}:{rule.chain}:{rule.index}:{s.text}",
                        f"`{s.text}` matches ({where})")
            return self._split(st, u, rule)
        raise AssertionError(f"unhandled statement {s!r}")

    def _xt(self, st: State, s: UnknownStmt, rule: Rule, hook: str, base: Chain,
            env: dict[int, int]) -> list[tuple[State, Res, str | None, str | None]] | None:
        """iptables-nft rules nft shows untranslated (`xt match recent`, and in JSON `xt target DNAT`...)."""
        m = _XT.match(s.text)
        if m is None:
            return None
        kind, name = m.group(1), m.group(2)
        where = self._where(rule)
        if kind == "match" and name == "comment":
            return [(st, "cont", None, None)]
        prefix = self.hints.affinity_chains
        if kind == "match" and name == "recent" and prefix:
            # The writer's session affinity (Hints.affinity_chains): `-m recent --rcheck --name SEP -j SEP` in the
            # service chain, `-m recent --set --name SEP ... -j DNAT` in the endpoint chain SEP.
            jump = next((x.verdict.target for x in rule.stmts if isinstance(x, VerdictStmt) and x.verdict.target),
                        None)
            if jump is not None and jump.startswith(prefix):
                self.warn("xt:recent", f"iptables-nft `xt match recent` read as {self.hints.writer}'s affinity check "
                                       "(--rcheck of the endpoint the rule jumps to)", rule.line, "xt")
                return [(st, "cont" if st.remembered == jump else "stop", None, None)]
            if rule.chain.startswith(prefix) and any(isinstance(x, Nat) for x in rule.stmts):
                st.recent_set.append(rule.chain)
                return [(st, "cont", "recent --set (remembers the client for session affinity)", None)]
            return None
        if kind == "target" and name == "MASQUERADE":
            return [self._nat(st, Nat("masquerade"), env, rule, hook, base)]
        if kind == "target" and name in ("DNAT", "SNAT", "REDIRECT", "NETMAP") and base.type == "nat":
            st.assume_one(f"{where}: iptables-nft {name} target, whose address nft does not show")
            self.warn(f"xt:{name}", f"{where}: `xt target {name}`: nft does not show where iptables-nft translates "
                                    "to (`nft list ruleset` text or iptables-save does)", rule.line, "xt")
            if name in ("DNAT", "REDIRECT"):
                st.dnat = Dnat(f"(unknown: iptables-nft {name})")
                st.dnat_done = True
            else:
                st.masq = True
                st.snat_done = True
            return [(st, ("accept", None, f"{where} translates it (iptables-nft {name}, target not shown)"),
                     f"{name} (target not shown by nft)", None)]
        return None

    def _ipt_table(self, rule: Rule) -> bool:
        t = self.rs.tables.get(rule.table)
        return t is not None and t.looks_iptables_nft()

    def _ipt_ct_status(self, st: State, s: Match,
                       rule: Rule) -> list[tuple[State, Res, str | None, str | None]] | None:
        """nft prints iptables-nft's `-m conntrack [!] --ctstate ...,DNAT` as `ct status dnat`, negation and other
        states dropped; the kernel runs the xtables match. A rule the hints know as the writer's
        `! --ctstate RELATED,ESTABLISHED,DNAT` is read so; elsewhere both readings are walked."""
        text = fmt_stmt(s)
        known = self.hints.negated_ctstate
        if known is not None and known(rule.chain, rule.text):
            self.warn("ipt:ctstatus:fw", f"{self._where(rule)}: nft shows {self.hints.writer}'s `-m conntrack ! "
                                         f"--ctstate RELATED,ESTABLISHED,DNAT` as `{text}`; read as the former",
                      rule.line, "xt")
            return [(st, "cont" if not st.dnat_changed else "stop", None, None)]
        self.warn(f"ipt:ctstatus:{rule.line}", f"{self._where(rule)}: in an iptables-nft table `{text}` may be nft's "
                                               "rendering of `-m conntrack [!] --ctstate ...DNAT` (nft drops the "
                                               "negation); both readings are walked", rule.line, "xt")
        u = Unknown(f"iptct:{rule.table}:{rule.chain}:{rule.index}", f"`{text}` ({self._where(rule)}) is what it says "
                                                                   "and not a negated conntrack match")
        val = st.assume.get(u.key)
        real = self.eval_match(st, s, {}, rule)
        if isinstance(real, Unknown):
            return None
        if val is None:
            other = st.split(u, True)
            return [(st, "cont" if real else "stop", None, None), (other, "stop" if real else "cont", None, None)]
        return [(st, "cont" if real == val else "stop", None, None)]

    @staticmethod
    def _weighted(st: State, p: float) -> list[tuple[State, Res, str | None, str | None]]:
        """`meta random & 0x7fffffff < N` (iptables-nft's `-m statistic --mode random`): matches with p."""
        if p >= 1.0:
            return [(st, "cont", None, None)]
        if p <= 0.0:
            return [(st, "stop", None, None)]
        other = st.fork()
        other.prob *= 1.0 - p
        st.prob *= p
        st.branch = p
        return [(st, "cont", None, None), (other, "stop", None, None)]

    def _split(self, st: State, u: Unknown, rule: Rule) -> list[tuple[State, Res, str | None, str | None]]:
        val = st.assume.get(u.key)
        if val is not None:
            return [(st, "cont" if val != u.neg else "stop", None, None)]
        other = st.split(u, not u.neg)
        self.warn(f"unknown:{u.key}", f"{rule.table} {rule.chain} rule {rule.index} depends on something the dump "
                                      f"does not say: whether {u.says}; both cases are shown (certain: false)",
                  rule.line, "unknown-match")
        return [(st, "cont", None, None), (other, "stop", None, None)]

    def _verdict(self, st: State, v: Verdict, rule: Rule, note: str | None) -> tuple[State, Res, str | None,
                                                                                       str | None]:
        where = self._where(rule)
        if v.kind == "accept":
            return st, ("accept", None, f"{where} accepts it"), "ACCEPT", note
        if v.kind == "drop":
            return st, ("drop", None, f"{where} drops it"), "DROP", note
        if v.kind == "return":
            return st, ("return", None, where), "RETURN", note
        if v.kind == "continue":
            return st, "cont", None, note
        if v.kind in ("jump", "goto"):
            return st, (v.kind, v.target, where), f"{v.kind} {v.target}", note
        # queue: userspace decides
        st.assume_one(f"the userspace queue program accepts it ({where})")
        return st, ("accept", None, f"{where} hands it to a userspace program (assumed to accept)"), "QUEUE", note

    # -- values ------------------------------------------------------------------------------------
    def value(self, st: State, e: Expr, env: dict[int, int], rule: Rule) -> Any:
        pkt = st.pkt
        if isinstance(e, Payload):
            return self._payload(st, e)
        if isinstance(e, Meta):
            return self._meta(st, e)
        if isinstance(e, Ct):
            return self._ct(st, e)
        if isinstance(e, Fib):
            if e.result != "type":
                return _Unk(f"fib:{fmt_expr(e)}", f"`{fmt_expr(e)}` (a route lookup) gives the value compared")
            ip = pkt.dst if "daddr" in e.flags else pkt.src
            if self.node.is_local(ip):
                return 2
            if ip.is_multicast:
                return 5
            if ip.version == 4 and int(ip) == 0xFFFFFFFF:
                return 3
            return 1
        if isinstance(e, Numgen | Hash):
            v = env.get(id(e))
            if v is None:
                raise AssertionError("unbound numgen")
            return v
        if isinstance(e, Concat):
            vals = []
            for x in e.items:
                v = self.value(st, x, env, rule)
                if v is BREAK:
                    return BREAK
                vals.append(v)
            return tuple(vals)
        if isinstance(e, Binop):
            left = self.value(st, e.left, env, rule)
            if left is BREAK or isinstance(left, _Unk):
                return left
            try:
                r = scalar(INT, e.right.value) if isinstance(e.right, Const) else None
            except BadValue:
                r = None
            if not isinstance(left, int) or not isinstance(r, int):
                return _Unk(f"binop:{fmt_expr(e)}", f"`{fmt_expr(e)}` has the value compared")
            if e.op == "&":
                return left & r
            if e.op == "|":
                return (left | r) & MASK32
            if e.op == "^":
                return (left ^ r) & MASK32
            if e.op == "<<":
                return (left << r) & MASK32
            return left >> r
        if isinstance(e, MapLookup):
            return self._map_value(st, e, env, rule)
        if isinstance(e, Opaque):
            return _Unk(f"opaque:{e.text}", f"`{e.text}` has the value compared")
        return _Unk(f"expr:{fmt_expr(e)}", f"`{fmt_expr(e)}` has the value compared")

    def _payload(self, st: State, e: Payload) -> Any:
        pkt = st.pkt
        p, f = e.proto, e.field
        if p in ("ip", "ip6"):
            if pkt.family != (4 if p == "ip" else 6):
                return BREAK
            if f == "saddr":
                return pkt.src
            if f == "daddr":
                return pkt.dst
            if f in ("protocol", "nexthdr"):
                return _proto_number(pkt)
            if f == "version":
                return pkt.family
            return _Unk(f"payload:{p}:{f}", f"the packet's {p} {f} is the value compared")
        if p in ("tcp", "udp", "sctp", "udplite", "dccp"):
            if pkt.proto != p:
                return BREAK
            return self._port(pkt, f, p)
        if p == "th":
            if not pkt.has_ports:
                return _Unk(f"payload:th:{f}:{pkt.proto}", f"the {pkt.proto} header bytes `th {f}` reads are the "
                                                           "value compared")
            return self._port(pkt, f, p)
        if p in ("icmp", "icmpv6"):
            if pkt.proto != p:
                return BREAK
            if f == "type":
                return pkt.icmp_type
            if f == "code":
                return pkt.icmp_code or 0
            return _Unk(f"payload:{p}:{f}", f"the packet's {p} {f} is the value compared")
        return _Unk(f"payload:{p}:{f}", f"the packet's {p} {f} is the value compared")

    @staticmethod
    def _port(pkt: Packet, f: str, p: str) -> Any:
        if f == "dport":
            return pkt.dport
        if f == "sport":
            if pkt.sport is None:
                return _Unk("sport", "the source port (unknown: the client picks it) is the value compared")
            return pkt.sport
        return _Unk(f"payload:{p}:{f}", f"the packet's {p} {f} is the value compared")

    def _meta(self, st: State, e: Meta) -> Any:
        pkt = st.pkt
        k = e.key
        hook = self.hook_name
        if k == "l4proto":
            return _proto_number(pkt)
        if k == "nfproto":
            return 2 if pkt.family == 4 else 10
        if k == "protocol":
            return 0x0800 if pkt.family == 4 else 0x86DD
        if k == "mark":
            return st.mark
        if k in ("iifname", "iif", "oifname", "oif"):
            which = "i" if k.startswith("i") else "o"
            if which == "i" and (hook == "OUTPUT" or (hook == "POSTROUTING" and st.iif is None
                                                      and st.orig.origin == "local")):
                return BREAK
            if which == "o" and hook in ("PREROUTING", "INPUT"):
                return BREAK
            name = st.iif if which == "i" else st.oif
            if name is not None:
                return name
            return _Unk(f"iface:{which}", "", iface=which)
        if k == "pkttype":
            return 0
        if k in ("skuid", "skgid", "cgroup"):
            if pkt.origin != "local":
                return BREAK
            return _Unk(f"meta:{k}", f"the sending socket's {k} is the value compared")
        return _Unk(f"meta:{k}", f"meta {k} is the value compared")

    def _ct(self, st: State, e: Ct) -> Any:
        k = e.key
        if st.untracked:
            return 64 if k == "state" else BREAK
        if k == "state":
            return 8
        if k == "status":
            v = 0
            if st.dnat_changed:
                v |= 32
            if st.snat_changed:
                v |= 16
            if st.confirmed:
                v |= 8
            return v
        if k == "mark":
            return st.ctmark
        if k == "direction":
            return 0
        if k in ("saddr", "daddr", "proto-src", "proto-dst"):
            orig = (e.dir or "original") == "original"
            pkt = st.orig if orig else st.pkt
            if k == "saddr":
                return pkt.src if orig else pkt.dst
            if k == "daddr":
                if not orig and st.masq:
                    return _Unk("ct:reply:daddr", "the masquerade address is the value compared")
                return pkt.dst if orig else pkt.src
            if not pkt.has_ports:
                return BREAK
            if k == "proto-src":
                return (pkt.sport if orig else pkt.dport) or _Unk("sport", "the source port is the value compared")
            return pkt.dport if orig else (pkt.sport or _Unk("sport", "the source port is the value compared"))
        if k in ("protocol",):
            return _proto_number(st.pkt)
        if k == "l3proto":
            return 2 if st.pkt.family == 4 else 10
        return _Unk(f"ct:{k}", f"ct {k} is the value compared")

    # -- matches -----------------------------------------------------------------------------------
    def eval_match(self, st: State, m: Match, env: dict[int, int], rule: Rule) -> bool | Unknown:
        lv = self.value(st, m.left, env, rule)
        if lv is BREAK:
            return False
        lt = expr_type(m.left, "ip" if st.pkt.family == 4 else "ip6")
        r = m.right
        neg = m.op == "!="
        if isinstance(r, SetRef | AnonSet):
            hit = self.member(st, r, lt, lv, rule)
            if isinstance(hit, _Maybe):
                return Unknown(f"lookup:{fmt_stmt(m)}", f"{hit.says} ({self._where(rule)})", neg=neg)
            return hit != neg
        if isinstance(lv, _Unk):
            return self._unknown_match(st, lv, m, rule)
        try:
            if isinstance(lt, str) and lt in FLAG_TYPES:
                bits = flags_value(lt, r)
                if m.op == "implicit":
                    return (int(lv) & bits) != 0
                if m.op == "!=":  # `ct state != new`, `ct state ! new`: none of the bits
                    return (int(lv) & bits) == 0
                if m.op == "==":
                    return lv == bits
            if isinstance(lt, tuple):
                items = r.items if isinstance(r, Concat) else (r,)
                if len(items) != len(lt) or not isinstance(lv, tuple):
                    raise BadValue("the concatenation does not fit")
                ms = [matcher(lt[k], items[k]) for k in range(len(lt))]
                known = [(mm, v) for mm, v in zip(ms, lv, strict=True) if not isinstance(v, _Unk)]
                if not all(mm.hit(v) for mm, v in known):
                    return neg
                if len(known) < len(ms):
                    return Unknown(f"match:{fmt_stmt(m)}", f"`{fmt_stmt(m)}` matches", neg=False)
                return not neg
            if m.op in ("<", ">", "<=", ">="):
                rv = scalar(lt, r.value if isinstance(r, Const) else fmt_expr(r))
                return _compare(lv, m.op, rv)
            if isinstance(r, ListLit):
                hit = any(matcher(lt, x).hit(lv) for x in r.items)
            else:
                hit = matcher(lt, r).hit(lv)
        except (BadValue, ValueError, TypeError) as ex:
            self.warn(f"badvalue:{rule.line}:{fmt_stmt(m)}", f"{self._where(rule)}: `{fmt_stmt(m)}` not understood "
                                                             f"({ex}); both cases are shown", rule.line,
                      "unknown-match")
            return Unknown(f"match:{fmt_stmt(m)}", f"`{fmt_stmt(m)}` matches")
        return hit != neg

    def _unknown_match(self, st: State, lv: _Unk, m: Match, rule: Rule) -> bool | Unknown:
        neg = m.op == "!="
        r = m.right
        if lv.iface is not None and isinstance(r, Const) and m.op in ("==", "!=", "implicit"):
            which = lv.iface
            return iface_unknown(st.ifaces, which, _nft_pattern(str(r.value)), neg)
        text = fmt_stmt(m)
        return Unknown(f"match:{text}", f"`{text}` matches ({lv.says})" if lv.says else f"`{text}` matches")

    # -- sets and maps -----------------------------------------------------------------------------
    def _named(self, rule: Rule, name: str) -> NSet | None:
        t = self.rs.tables.get(rule.table)
        return t.sets.get(name) if t is not None else None

    def _index(self, src: NSet | AnonSet, types: tuple[str, ...], rule: Rule) -> SetIndex:
        if isinstance(src, NSet):
            if isinstance(src.index, SetIndex):
                return src.index
            if src.key_types:
                types = src.key_types
            elements = src.elements
        else:
            cached = self._anon.get((id(src), types))
            if cached is not None:
                return cached
            elements = list(src.elements)

        def bad(el: Element, ex: BadValue) -> None:
            self.warn(f"element:{id(src)}:{fmt_element(el)}", f"{rule.table}: element {fmt_element(el)!r} not "
                                                              f"understood ({ex}); ignored", rule.line)

        idx = SetIndex(elements, types, bad)
        if isinstance(src, NSet):
            src.index = idx
        else:
            self._anon[(id(src), types)] = idx
        return idx

    def lookup(self, st: State, src: SetRef | AnonSet, lt: str | tuple[str, ...], lv: Any,
               rule: Rule) -> Element | _Maybe | _Break | None:
        types = lt if isinstance(lt, tuple) else (lt,)
        if isinstance(src, SetRef):
            ns = self._named(rule, src.name)
            if ns is None:
                return BREAK
            idx = self._index(ns, types, rule)
        else:
            idx = self._index(src, types, rule)
        vals = lv if isinstance(lv, tuple) else (lv,)
        if len(vals) != len(idx.types) and idx.types:
            return None
        if any(isinstance(v, _Unk) for v in vals):
            cands = tuple(el for ms, el in idx.all
                          if all(isinstance(v, _Unk) or mm.hit(v) for mm, v in zip(ms, vals, strict=False)))
            if not cands:
                return None
            says = "; ".join(v.says or "the interface name" for v in vals if isinstance(v, _Unk))
            return _Maybe(cands, says)
        return idx.get(tuple(vals))

    def member(self, st: State, src: SetRef | AnonSet, lt: str | tuple[str, ...], lv: Any,
               rule: Rule) -> bool | _Maybe:
        if isinstance(src, SetRef):
            ns = self._named(rule, src.name)
            if ns is None:
                return _Maybe((), f"the packet is in @{src.name}, a set this dump does not define")
            if ns.dynamic:
                # A dynamic set's element expires `timeout` after its last update (nft_set_elem_expired).
                age, life = self.node.affinity_age, duration_seconds(ns.timeout)
                return st.remembered == src.name and (age is None or life is None or age < life)
        if isinstance(lv, _Unk):
            return _Maybe((), lv.says or "the interface name is in the set")
        r = self.lookup(st, src, lt, lv, rule)
        if isinstance(r, _Maybe):
            return r
        return r is not None and r is not BREAK

    def _vmap(self, st: State, s: Vmap, env: dict[int, int],
              rule: Rule) -> list[tuple[State, Res, str | None, str | None]]:
        lv = self.value(st, s.key, env, rule)
        if lv is BREAK:
            return [(st, "stop", None, None)]
        lt = expr_type(s.key, "ip" if st.pkt.family == 4 else "ip6")
        name = s.data.name if isinstance(s.data, SetRef) else None
        if name is not None and self._named(rule, name) is None:
            st.assume_one(f"no element of @{name} (not in the dump) matches ({self._where(rule)})")
            self.warn(f"missingmap:{name}", f"{self._where(rule)} looks up @{name}, which is not in the dump; "
                                            "assumed no element matches", rule.line, "missing-set")
            return [(st, "stop", None, None)]
        if isinstance(lv, _Unk) and not isinstance(lt, tuple):
            lv = (lv,)
        r = self.lookup(st, s.data, lt, lv, rule)
        if r is None or r is BREAK:
            return [(st, "stop", None, None)]
        if isinstance(r, _Maybe):
            options: list[Element | None] = [*r.candidates, None]
            forks = [st] + [st.fork() for _ in options[1:]]
            out: list[tuple[State, Res, str | None, str | None]] = []
            for el, sv in zip(options, forks, strict=True):
                sv.prob /= len(options)
                what = f"the key is {fmt_expr(el.key)}" if el is not None else "no element matches"
                sv.assumptions = (*sv.assumptions, f"{r.says}: {what} in {fmt_expr(s.data)} ({self._where(rule)})")
                if el is None:
                    out.append((sv, "stop", None, None))
                else:
                    out.append(self._element_verdict(sv, el, name, rule))
            self.warn(f"vmapunk:{rule.line}:{rule.index}", f"{self._where(rule)}: the lookup key depends on something "
                                                           f"the dump does not say ({r.says}); every case is shown",
                      rule.line, "unknown-match")
            return out
        assert isinstance(r, Element)
        return [self._element_verdict(st, r, name, rule)]

    def _element_verdict(self, st: State, el: Element, name: str | None,
                         rule: Rule) -> tuple[State, Res, str | None, str | None]:
        if not isinstance(el.data, Verdict):
            return st, "stop", None, None
        note = None
        if name is not None:
            note = f"@{name}: {fmt_expr(el.key)}" + (f' "{el.comment}"' if el.comment else "")
        s2, res, a, nt = self._verdict(st, el.data, rule, note)
        if isinstance(res, tuple) and res[0] in ("drop", "accept") and (name or el.comment):
            why = f" ({el.comment} in @{name})" if el.comment else f" (@{name})"
            res = (res[0], res[1], res[2] + why)
        return s2, res, a, nt

    def _map_value(self, st: State, e: MapLookup, env: dict[int, int], rule: Rule) -> Any:
        key = self.value(st, e.key, env, rule)
        if key is BREAK:
            return BREAK
        lt = expr_type(e.key, "ip" if st.pkt.family == 4 else "ip6")
        dtype: str | None = None
        if isinstance(e.data, SetRef):
            ns = self._named(rule, e.data.name)
            if ns is None:
                st.assume_one(f"@{e.data.name} (not in the dump) has no element for the packet")
                return BREAK
            dtype = ns.data_type
        r = self.lookup(st, e.data, lt, key, rule)
        if r is None or r is BREAK or isinstance(r, _Maybe):
            if isinstance(r, _Maybe):
                return _Unk(f"map:{fmt_expr(e)}", r.says)
            return BREAK
        assert isinstance(r, Element)
        d = r.data
        if d is None or isinstance(d, Verdict):
            return BREAK
        dtypes = declared_types(dtype)[0] if dtype else ()
        comps: tuple[Expr, ...] = d.items if isinstance(d, Concat) else (d,)
        vals: list[Any] = []
        for k, c in enumerate(comps):
            raw = c.value if isinstance(c, Const) else fmt_expr(c)
            vals.append(scalar(dtypes[k] if k < len(dtypes) else ANY, raw))
        return tuple(vals) if len(vals) > 1 else vals[0]

    def _listed_source(self, st: State, ns: NSet) -> None:
        for el in ns.elements:
            if isinstance(el.key, Const) and str(el.key.value) == str(st.pkt.src):
                self.warn(f"listed:{ns.name}", f"the dump lists {st.pkt.src} in @{ns.name}: within its timeout a real "
                                               "connection from this client sticks to that endpoint (the walk "
                                               "assumes a new client)", ns.line, "affinity")

    # -- actions -----------------------------------------------------------------------------------
    def _mangle(self, st: State, s: Mangle, env: dict[int, int],
                rule: Rule) -> tuple[State, Res, str | None, str | None]:
        key = s.key
        if key.key not in ("mark",):
            return st, "cont", None, None
        v = self.value(st, s.value, env, rule) if not isinstance(s.value, Const) else None
        if isinstance(s.value, Const):
            try:
                v = scalar(INT, s.value.value)
            except BadValue:
                v = None
        if v is BREAK:
            return st, "stop", None, None
        if not isinstance(v, int):
            st.assume_one(f"`{fmt_stmt(s)}` leaves the mark unchanged ({self._where(rule)})")
            return st, "cont", f"{fmt_stmt(s)} (value unknown)", None
        v &= MASK32
        if isinstance(key, Meta):
            before, st.mark = st.mark, v
            return st, "cont", f"MARK {fmt_stmt(s)} (mark {before:#x} -> {v:#x})", None
        before, st.ctmark = st.ctmark, v
        return st, "cont", f"CONNMARK {fmt_stmt(s)} (ct mark {before:#x} -> {v:#x})", None

    def _nat(self, st: State, s: Nat, env: dict[int, int], rule: Rule, hook: str,
             base: Chain) -> tuple[State, Res, str | None, str | None]:
        where = self._where(rule)
        dst_side = s.kind in ("dnat", "redirect")
        allowed = ("PREROUTING", "OUTPUT") if dst_side else ("POSTROUTING", "INPUT")
        if base.type != "nat" or hook not in allowed:
            self.warn(f"natplace:{rule.line}", f"{where}: {s.kind} outside a {'dst' if dst_side else 'src'}nat chain "
                                               "has no effect (nft would refuse to load it)", rule.line)
            return st, "cont", f"{s.kind} (ignored here)", None
        pkt = st.pkt
        if s.kind == "masquerade":
            st.masq = True
            st.snat_changed = True
            st.snat_done = True
            flags = f" {','.join(s.flags)}" if s.flags else ""
            return st, ("accept", None, ""), f"MASQUERADE{flags} (source becomes the outgoing interface's address)", \
                None
        addr: Any = None
        port: Any = None
        text: str | None = None
        if s.addr is not None:
            if isinstance(s.addr, Const):
                raw = str(s.addr.value)
                first = raw.split("-")[0] if "-" in raw and ":" not in raw else raw
                addr = ipaddress.ip_address(first.strip("[]")) if first else None
                if "-" in raw:
                    text = raw
            else:
                v = self.value(st, s.addr, env, rule)
                if v is BREAK:
                    return st, "stop", None, None
                if isinstance(v, _Unk):
                    st.assume_one(f"{where}: {s.kind} target {fmt_expr(s.addr)} unknown")
                    return st, ("accept", None, f"{where} translates to an address the dump cannot tell"), \
                        f"{s.kind.upper()} to {fmt_expr(s.addr)} (unknown)", None
                if isinstance(v, tuple):
                    addr, port = v[0], (v[1] if len(v) > 1 else None)
                else:
                    addr = v
        if s.port is not None:
            pv = s.port.value if isinstance(s.port, Const) else None
            if pv is not None:
                ptxt = str(pv)
                try:
                    port = int(ptxt.split("-")[0])
                except ValueError:  # `redirect to :wt0_redirect`: no port nft would accept (found by fuzzing)
                    port = None
                    st.assume_one(f"{where}: {s.kind} to port {shorten(repr(ptxt), 40)}, which is not a port")
                if "-" in ptxt:
                    text = (text or format_endpoint(addr or pkt.dst, None)) + f":{ptxt}"
        if addr is not None and not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            try:
                addr = ipaddress.ip_address(str(addr))
            except ValueError:
                addr = None
                st.assume_one(f"{where}: {s.kind} to an address svctrace cannot read")
        if s.kind == "redirect":
            addr = primary_local(self.node, pkt)
        if s.kind in ("dnat", "redirect"):
            if addr is None:
                addr = pkt.dst
            if addr.version != pkt.family:
                return st, "stop", None, None
            st.dnat_to(addr, port, text)
            st.dnat_done = True
            return st, ("accept", None, ""), f"{'DNAT' if s.kind == 'dnat' else 'REDIRECT'} to {st.dnat}", None
        # snat
        st.masq = True
        if addr is not None:
            st.snat_changed = addr != pkt.src
            st.snat = text or str(addr)
            st.pkt = pkt.with_(src=addr)
        st.snat_done = True
        return st, ("accept", None, ""), f"SNAT to {st.snat}", None

    def _reject_kind(self, s: Reject, rule: Rule) -> str:
        v6 = self.family == 6
        if s.type == "tcp-reset":
            return "tcp-reset"
        code = s.code or "port-unreachable"
        if s.type in ("icmpv6",) or (s.type in (None, "icmpx") and v6):
            return _REJECT6.get(code, f"icmp6-{code}")
        return _REJECT4.get(code, f"icmp-{code}")


def random_probability(m: Match) -> float | None:
    """The probability that `meta random [& MASK] OP N` matches (meta random is a uniform 32-bit value)."""
    left = m.left
    mask = MASK32
    if isinstance(left, Binop) and left.op == "&" and isinstance(left.left, Meta) and left.left.key == "random" \
            and isinstance(left.right, Const):
        try:
            mask = int(str(left.right.value), 0)
        except ValueError:
            return None
    elif not (isinstance(left, Meta) and left.key == "random"):
        return None
    if not isinstance(m.right, Const) or (mask + 1) & mask:
        return None
    try:
        n = int(str(m.right.value), 0)
    except ValueError:
        return None
    size = mask + 1

    def below(k: int) -> int:  # how many of 0..size-1 are < k
        return min(max(k, 0), size)

    count = {"<": below(n), "<=": below(n + 1), ">": size - below(n + 1), ">=": size - below(n),
             "==": below(n + 1) - below(n), "implicit": below(n + 1) - below(n),
             "!=": size - (below(n + 1) - below(n))}.get(m.op)
    return None if count is None else count / size


def _compare(lv: Any, op: str, rv: Any) -> bool:
    try:
        if op == "<":
            return bool(lv < rv)
        if op == ">":
            return bool(lv > rv)
        if op == "<=":
            return bool(lv <= rv)
        return bool(lv >= rv)
    except TypeError:
        return False


def _proto_number(pkt: Packet) -> int:
    from svctrace.model.packet import PROTO_NUMBERS

    return PROTO_NUMBERS.get(pkt.proto, 0) if not pkt.proto.isdigit() else int(pkt.proto)


# -- the answer ----------------------------------------------------------------------------------------

def trace(rs: NftRuleset, pkt: Packet, node: NodeFacts | None = None, hints: Hints | None = None) -> TraceResult:
    """Every fate of `pkt` on the node whose nftables ruleset is `rs`, with probabilities summing to 1; `hints`:
    what the program that wrote it does where the dump is silent."""
    node = node or NodeFacts()
    fams = {t.family for t in rs.tables.values()}
    mine = {"ip", "inet"} if pkt.family == 4 else {"ip6", "inet"}
    if fams and not fams & mine and fams & {"ip", "ip6"}:
        raise InputError(f"the packet is IPv{pkt.family} but the ruleset holds only "
                         f"{'IPv6 (ip6)' if pkt.family == 4 else 'IPv4 (ip)'} tables", source=rs.source)
    finals, walk_warnings, (facts, assumed) = walk(lambda: NftWalker(rs, node, pkt.family, hints), pkt, node)
    # TraceResult.ruleset is typed for iptables rulesets; an NftRuleset offers the same fields the
    # renderers read (source, format, backend, rule_count, warnings, chain()).
    return TraceResult(pkt, merge_outcomes(finals), list(rs.warnings) + walk_warnings, cast(Any, rs), facts=facts,
                       assumed=assumed)


_DURATION = re.compile(r"(\d+)(d|h|m|s|ms)")


def duration_seconds(text: str | None) -> float | None:
    """nft's duration (`10800s`, `3h`, `1d2h3m4s`) in seconds; None when absent or not a duration."""
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    unit = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(int(n) * unit[u] for n, u in parts)
