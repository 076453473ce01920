"""Walk a packet through a node's iptables rules the way the kernel does, over every branch at once.

The kernel path (hook order, routing, martians, the loop back over lo, nat once per direction) is
`svctrace.dataplane.kernel`; this module runs one iptables table at one hook. A `-m statistic --mode random`
match splits the walk in two weighted branches; a match that the dump cannot decide splits it in two
assumed branches (`certain: false`). Identical outcomes merge.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from svctrace.dataplane.addr import ip_of
from svctrace.dataplane.contract import Hints, PathStep, TraceResult
from svctrace.dataplane.iptables.matches import Evaluator, _opts_text, evaluator_of
from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import NONTERMINAL_TARGETS, Chain, Match, Rule, Ruleset, comment_of
from svctrace.dataplane.kernel import (
    Frame,
    KernelWalker,
    State,
    Unknown,
    merge_outcomes,
    primary_local,
    walk,
)
from svctrace.errors import shorten
from svctrace.model.packet import NodeFacts, Packet, format_endpoint

INDEX_MIN_RULES = 8




class Walker(KernelWalker):
    endless = "the walk did not end (a loop through -g/goto?); the dump cannot be what the kernel runs"
    def __init__(self, rs: Ruleset, node: NodeFacts, hints: Hints | None = None) -> None:
        super().__init__(node, rs, hints)
        self.rs = rs
        self.source = rs.source

    def source_line(self, line: int) -> int | None:
        return self.rs.source_line(line)

    def hook(self, states: list[State], hook: str, tables: Sequence[str]) -> list[State]:
        for table in tables:
            if not states:
                return states
            if table not in self.rs.tables:
                continue
            nxt: list[State] = []
            for st in states:
                if table == "nat" and self.nat_skipped(st, hook):
                    nxt.append(st)
                    continue
                for s2, verdict, reason in self.run_table(st, hook, table):
                    if table == "nat":
                        self.nat_ran(s2, hook)
                    if verdict == "accept":
                        nxt.append(s2)
                    else:
                        self.finish(s2, verdict, None, reason)
            states = nxt
        return states

    # -- one table at one hook ------------------------------------------------------------------
    def run_table(self, st: State, hook: str, table: str) -> list[tuple[State, str, str]]:
        base = self.rs.tables[table].chains.get(hook)
        if base is None:
            return [(st, "accept", "")]
        return self.run_chain(st, base, self.candidates(base, st), hook)

    def run_rule(self, st: State, rule: Rule, hook: str, base: Chain) -> list[tuple[State, Rule | None]]:
        alts = self.match(st, rule)
        if len(alts) == 1:  # decided: matched or not (most rules)
            s, matched = alts[0]
            return [(s, rule if matched else None)]
        return [(s, rule if matched else None) for s, matched in alts]

    def follow(self, st: State, then: Rule, stack: list[Frame], hook: str, base: Chain) -> tuple[str, str] | None:
        return self.apply(st, then, stack, hook, base)

    def policy(self, st: State, base: Chain, hook: str) -> tuple[str, str]:
        pol = base.policy or "ACCEPT"
        if pol != "ACCEPT":  # an accepting policy is the normal way through: not a hop worth listing
            st.add(PathStep(hook, base.table, base.name, None, base.decl_line, f":{base.name} {pol}", f"policy {pol}"))
        if pol == "DROP":
            return "drop", f"the {base.table} {base.name} chain's policy is DROP and no rule accepted it"
        return "accept", ""

    # -- rules ----------------------------------------------------------------------------------
    def candidates(self, chain: Chain, st: State) -> Sequence[int]:
        """Positions of the rules that can match: long chains are indexed by exact destination."""
        n = len(chain)
        if n < INDEX_MIN_RULES:
            return range(n)
        idx = chain.dst_index
        if idx is None:
            idx = _build_index(chain)
            chain.dst_index = idx
        if idx is False:
            return range(n)
        assert isinstance(idx, _DstIndex)
        hits = idx.by_dst.get(st.pkt.dst)
        ports = idx.by_dport.get(st.pkt.dport) if st.pkt.dport is not None else None
        if not hits and not ports:
            return idx.generic
        return list(heapq.merge(hits or (), ports or (), idx.generic))

    def rule_at(self, chain: Chain, pos: int) -> Rule:
        if chain.parsed:
            return chain.rules[pos]
        idx = chain.dst_index
        if isinstance(idx, _DstIndex):
            r = idx.parsed.get(pos)
            if r is None:
                r = parse_rule(chain.table, chain.name, chain.raw[pos], self.rs.family)[0]
                r.index = pos + 1
                idx.parsed[pos] = r
            return r
        return chain.rules[pos]

    def match(self, st: State, rule: Rule) -> list[tuple[State, bool]]:
        factor = 1.0
        unknowns: list[Unknown] = []
        soft: list[Unknown] = []
        node = self.node
        for ev, m in (rule.compiled or compile_rule(rule))[1]:
            r = ev(st, m, node)
            if r is True:
                continue
            if r is False:
                return [(st, False)]
            if isinstance(r, float):
                factor *= r
                continue
            assert isinstance(r, Unknown)
            if not r.split:
                soft.append(r)
                continue
            val = st.assume.get(r.key)
            if val is not None:
                if val != r.neg:
                    continue
                return [(st, False)]
            unknowns.append(r)
        if rule.problems and not unknowns:
            self.warn(f"rule:{rule.line}", f"rule on the path not fully understood ({'; '.join(rule.problems)}): "
                                          f"{shorten(rule.text, 120)}", rule.line, "unknown-match")
        alts: list[tuple[State, bool]] = []
        cur = st
        for u in unknowns:
            alts.append((cur.split(u, not u.neg), False))  # the other branch takes the value that fails the match
            self.warn(f"unknown:{u.key}", f"{rule.chain} rule {rule.index} depends on something the dump does not "
                                          f"say: whether {u.says}; both cases are shown (certain: false)",
                      rule.line, "unknown-match")
        for u in soft:
            if u.key not in cur.assume:
                cur.assume[u.key] = True
                cur.assume_one(u.says)
                self.warn(f"soft:{u.key}", f"{rule.chain} rule {rule.index}: assumed {u.says}", rule.line,
                          "unknown-match")
        if factor < 1.0:
            miss = cur.fork()
            miss.prob *= 1.0 - factor
            alts.append((miss, False))
            cur.prob *= factor
            cur.branch = factor
        alts.append((cur, True))
        return alts

    def apply(self, st: State, rule: Rule, stack: list[Frame], hook: str,
              base: Chain) -> tuple[str, str] | None:
        """Apply the rule's target. Returns (verdict, reason) when the table is done with the packet."""
        branch = st.branch
        st.branch = None
        printed = None
        if branch is not None:
            for m in rule.matches:
                if m.module == "statistic":
                    o = m.opt("--probability") or m.opt("--every")
                    printed = o.arg if o else None
        tgt = rule.target
        table = rule.table
        prefix = self.hints.assumed
        if prefix and not rule.line and (c := rule.comment) and c.startswith(prefix):
            st.assume_one(c[len(prefix):].strip(" :"))
        comment = rule.comment

        def step(action: str, note: str | None = None, target: str | None = None) -> None:
            st.add(PathStep(hook, table, rule.chain, rule.index, rule.line, rule.text, action, printed, branch, note,
                            comment, target))

        if tgt is None:
            step("no target (counts only)")
            return None
        name = tgt.name
        where = f"{table} {rule.chain} rule {rule.index}"
        why = f" ({comment})" if comment else ""
        if name == "ACCEPT":
            step("ACCEPT")
            return "accept", f"{where} accepts it{why}"
        if name == "DROP":
            step("DROP")
            return "drop", f"{where} drops it{why}"
        if name == "REJECT":
            o = tgt.opt("--reject-with")
            st.reject_with = o.arg if o else st.reject_default()
            step(f"REJECT with {st.reject_with}")
            return "reject", f"{where} rejects it with {st.reject_with}{why}"
        if name == "RETURN":
            step("RETURN")
            stack.pop()
            return None
        if name in ("QUEUE", "NFQUEUE"):
            step(name, "the verdict is given by a userspace program; assumed it accepts")
            st.assume_one(f"the userspace queue program accepts it ({where})")
            return "accept", f"{where} hands it to a userspace program (assumed to accept)"
        if name in ("DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"):
            if table != "nat":
                step(f"{name} (ignored outside the nat table)")
                self.warn(f"natoutside:{rule.line}", f"{where}: {name} outside the nat table has no effect",
                          rule.line)
                return None
            return self._nat(st, rule, name, step, where, why)
        if name == "MARK":
            before = st.mark
            st.mark = _apply_mark(st.mark, tgt)
            step(f"MARK {_opts_text(tgt.opts)} (mark {before:#x} -> {st.mark:#x})")
            return None
        if name == "CONNMARK":
            st.mark, st.ctmark = _apply_connmark(st.mark, st.ctmark, tgt)
            step(f"CONNMARK {_opts_text(tgt.opts)} (mark {st.mark:#x}, ctmark {st.ctmark:#x})")
            return None
        if name == "NOTRACK" or (name == "CT" and tgt.opt("--notrack")):
            st.untracked = True
            step("NOTRACK (no conntrack, so no NAT)")
            return None
        chain = self.rs.tables[table].chains.get(name)
        if chain is not None:
            step(f"{'goto' if tgt.goto else 'jump'} {name}", target=name)
            self.enter(stack, chain, self.candidates(chain, st), tgt.goto, where,
                       f" (line {self.rs.source_line(rule.line)})")
            return None
        if name in NONTERMINAL_TARGETS:
            step(f"{name} {_opts_text(tgt.opts)}".strip())
            return None
        return self._missing_chain(st, rule, name, step, where, hook)

    def _nat(self, st: State, rule: Rule, name: str, step, where: str, why: str) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
        tgt = rule.target
        assert tgt is not None
        pkt = st.pkt
        if name == "DNAT":
            o = tgt.opt("--to-destination")
            spec = o.arg if o else ""
            ip, port, text = _nat_spec(spec, pkt)
            if ip is None:
                step("DNAT (no usable destination)")
                st.assume_one(f"{where} DNATs to an unusable address {spec!r}")
                self.warn(f"baddnat:{rule.line}", f"{where}: DNAT target {spec!r} is unusable; the kernel would "
                                                  "refuse or mangle this rule", rule.line, "unknown-match")
                return "accept", f"{where} has a broken DNAT target"
            st.dnat_to(ip, port, text)
            step(f"DNAT to {st.dnat}")
            return "accept", ""
        if name == "REDIRECT":
            o = tgt.opt("--to-ports")
            local = primary_local(self.node, pkt)
            port = pkt.dport
            if o and o.arg:
                with contextlib.suppress(ValueError):
                    port = int(o.arg.split("-")[0].split(":")[0])
            st.dnat_to(local, port, None)
            step(f"REDIRECT to {st.dnat}")
            return "accept", ""
        if name == "MASQUERADE":
            st.masq = True
            st.snat_changed = True
            step("MASQUERADE (source becomes the outgoing interface's address)")
            return "accept", ""
        if name == "SNAT":
            o = tgt.opt("--to-source")
            spec = o.arg if o else ""
            ip, _port, text = _nat_spec(spec, pkt)
            st.masq = True
            st.snat_changed = ip is None or ip != pkt.src
            st.snat = text.rsplit(":", 1)[0] if text and ":" in text and "." in text else (text or None)
            if ip is not None:
                st.pkt = st.pkt.with_(src=ip)
            step(f"SNAT to {spec}")
            return "accept", ""
        step(f"{name} (not modelled)")
        st.assume_one(f"{where}: {name} is not modelled")
        return "accept", ""

    def _missing_chain(self, st: State, rule: Rule, name: str, step, where: str, hook: str) -> tuple[str, str] | None:  # type: ignore[no-untyped-def]
        hints = self.hints
        found = hints.endpoint(name, rule.comment) if hints.endpoint is not None and rule.table == "nat" else None
        if found is not None:
            ip, port = found
            ep = format_endpoint(ip, port)
            if ip == st.pkt.src:  # the endpoint chain's hairpin rule: -s <endpoint> -j KUBE-MARK-MASQ
                st.mark |= hints.hairpin_mark
            st.dnat_to(ip, port, None)
            st.assume_one(f"{name} (not in the dump) DNATs to {ep}, as the comment of {where} says")
            step(f"jump {name} (not in the dump; assumed DNAT to {ep})", target=name)
            self.warn(f"missing:{name}", f"{where} jumps to {name}, which is not in the dump; its comment "
                                         f"names the endpoint {ep}, so the outcome names it (certain: false)",
                      rule.line, "missing-chain")
            return "accept", ""
        bit = hints.mark_chains.get(name)
        if bit is not None:
            st.mark |= bit
            st.assume_one(f"{name} (not in the dump) sets mark {bit:#x} as {hints.writer}'s does")
            step(f"jump {name} (not in the dump; assumed MARK or {bit:#x})", target=name)
            self.warn(f"missing:{name}", f"{where} jumps to {name}, which is not in the dump; assumed "
                                         f"{hints.writer}'s MARK or {bit:#x}", rule.line, "missing-chain")
            return None
        st.assume_one(f"{name} (not in the dump) returns without a verdict")
        step(f"jump {name} (not in the dump; assumed to return)", target=name)
        self.warn(f"missing:{name}", f"{where} jumps to {name}, which is not in the dump (filtered or cut short); "
                                     "assumed it returns without a verdict", rule.line, "missing-chain")
        return None


# -- helpers -------------------------------------------------------------------------------------

def compile_rule(rule: Rule) -> tuple[str | None, tuple[tuple[Evaluator, Match], ...]]:
    """A rule's comment and each match with its evaluator, once per rule (a batch of questions walks the shared
    chains again and again)."""
    c = (comment_of(rule.matches), tuple((evaluator_of(m), m) for m in rule.matches))
    rule.compiled = c
    return c


@dataclass
class _DstIndex:
    by_dst: dict[object, list[int]]  # exact destination address -> rule positions
    by_dport: dict[int, list[int]]  # no destination address, one exact destination port -> positions
    generic: list[int]  # rules that can match any destination
    parsed: dict[int, Rule]  # rules parsed so far, by position


def _build_index(chain: Chain) -> _DstIndex | bool:
    """Index a long chain's rules by exact destination address or port, without parsing them.

    A rule lands in a bucket only when its text has exactly one non-negated `-d ADDR/32` (or, with
    no `-d`, one non-negated `--dport N`), so every rule that could match another packet stays in
    `generic`; order is kept by merging positions.
    """
    by_dst: dict[object, list[int]] = {}
    by_dport: dict[int, list[int]] = {}
    generic: list[int] = []
    for pos, raw in enumerate(chain.raw):
        text = raw.text
        if "," in text and re.search(r"\s-[sd]\s+\S*,", text):
            return False  # address lists expand into several rules: positions would shift
        found = _DST_RE.findall(text)
        if not found:
            ports = _DPORT_RE.findall(text)
            if len(ports) == 1 and not ports[0][0] and ":" not in ports[0][1] and ports[0][1].isdigit():
                by_dport.setdefault(int(ports[0][1]), []).append(pos)
            else:
                generic.append(pos)
            continue
        if len(found) == 1 and not found[0][0]:
            v = found[0][1]
            host = v
            if "/" in v:
                host, plen = v.split("/", 1)
                if plen not in ("32", "128"):
                    generic.append(pos)
                    continue
            try:
                ip = ip_of(host)
            except ValueError:
                generic.append(pos)
                continue
            by_dst.setdefault(ip, []).append(pos)
        else:
            generic.append(pos)
    return _DstIndex(by_dst, by_dport, generic, {})


_DPORT_RE = re.compile(r"(?:^|\s)(!\s+)?--(?:dport|destination-port)\s+(\S+)")
_DST_RE = re.compile(r"(?:^|\s)(!\s+)?(?:-d|--destination|--dst)\s+(\S+)")


def _nat_spec(spec: str, pkt: Packet) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address | None, int | None, str | None]:
    """Parse `ip[-ip][:port[-port]]` (IPv6 as `[ip]:port`). Returns (first ip, first port, text if a range)."""
    s = spec.strip()
    if not s:
        return None, None, None
    host, port_s = s, ""
    if s.startswith("["):
        end = s.find("]")
        host, rest = s[1:end], s[end + 1:]
        port_s = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port_s = s.split(":")
    first = host.split("-")[0]
    try:
        ip = ip_of(first) if first else None
    except ValueError:
        return None, None, None
    if ip is None or ip.is_unspecified:
        return None, None, None
    port = None
    if port_s:
        try:
            port = int(port_s.split("-")[0])
        except ValueError:
            return None, None, None
    text = None
    if "-" in host or "-" in port_s:
        text = s  # a range: the kernel picks within it per connection
    return ip, port, text


def _parse_mask(text: str, default_mask: int = 0xFFFFFFFF) -> tuple[int, int]:
    if "/" in text:
        v, m = text.split("/", 1)
        return int(v, 0), int(m, 0)
    return int(text, 0), default_mask


def _xmark(cur: int, value: int, mask: int) -> int:
    return ((cur & ~mask) ^ value) & 0xFFFFFFFF


def _apply_mark(mark: int, tgt: object) -> int:
    # libxt_MARK: --set-xmark v/m: (mark & ~m) ^ v; --set-mark v/m = --set-xmark v/(m|v);
    # --and-mark x = 0/~x; --or-mark x = x/x; --xor-mark x = x/0.
    for o in tgt.opts:  # type: ignore[attr-defined]
        try:
            if o.name == "--set-xmark":
                v, m = _parse_mask(o.arg)
                mark = _xmark(mark, v, m)
            elif o.name == "--set-mark":
                v, m = _parse_mask(o.arg)
                mark = _xmark(mark, v, m | v)
            elif o.name == "--or-mark":
                v = int(o.arg, 0)
                mark = _xmark(mark, v, v)
            elif o.name == "--and-mark":
                v = int(o.arg, 0)
                mark = _xmark(mark, 0, ~v & 0xFFFFFFFF)
            elif o.name == "--xor-mark":
                mark = _xmark(mark, int(o.arg, 0), 0)
        except ValueError:
            continue
    return mark


def _apply_connmark(mark: int, ctmark: int, tgt: object) -> tuple[int, int]:
    # xt_connmark: --save-mark: ct = (ct & ~ctmask) ^ (mark & nfmask);
    # --restore-mark: mark = (mark & ~nfmask) ^ (ct & ctmask); --set-xmark on the ct mark.
    opts = {o.name: o for o in tgt.opts}  # type: ignore[attr-defined]
    nfmask = ctmask = 0xFFFFFFFF
    if "--mask" in opts:
        nfmask = ctmask = int(opts["--mask"].arg, 0)
    if "--nfmask" in opts:
        nfmask = int(opts["--nfmask"].arg, 0)
    if "--ctmask" in opts:
        ctmask = int(opts["--ctmask"].arg, 0)
    if "--save-mark" in opts:
        ctmark = _xmark(ctmark, mark & nfmask, ctmask)
    elif "--restore-mark" in opts:
        mark = _xmark(mark, ctmark & ctmask, nfmask)
    else:
        ctmark = _apply_mark(ctmark, tgt)
    return mark, ctmark


def trace(rs: Ruleset, pkt: Packet, node: NodeFacts | None = None, hints: Hints | None = None) -> TraceResult:
    """Every fate of `pkt` on the node whose rules are `rs`, with probabilities summing to 1; `hints`: what the
    program that wrote them does where the dump is silent."""
    node = node or NodeFacts()
    if pkt.family != rs.family and rs.rule_count:
        from svctrace.errors import InputError

        raise InputError(f"the packet is IPv{pkt.family} but the dump holds IPv{rs.family} rules "
                         f"({'ip6tables' if rs.family == 6 else 'iptables'}-save)", source=rs.source)
    finals, walk_warnings, (facts, assumed) = walk(lambda: Walker(rs, node, hints), pkt, node)
    return TraceResult(pkt, merge_outcomes(finals), list(rs.warnings) + walk_warnings, rs, facts=facts,
                       assumed=assumed)
