"""The chain browser's readers for kube-proxy's other modes: nftables (`NftAdapter`) and IPVS (`IPVSAdapter`).

`NftAdapter` shows `nft list ruleset` (or `nft -j`): its tables, their chains (base chains with their
hook, priority and policy), and their sets and maps as `@name` entries whose rows are the elements, so a
verdict map can be opened and its targets followed. `IPVSAdapter` shows an IPVS node as it is: the virtual
servers as the chains of an `ipvs` table (their real servers as rules), the iptables tables kube-proxy
keeps beside them, and the ipsets those rules match on as an `ipsets` table. Both speak the chain and rule
names the engine's paths use (`PathStep.table` `ip kube-proxy` / `ipvs`), so a trace lights them up.
Registered with `register_adapter` on import. Nothing here imports Textual.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import replace

from svctrace.browse.data import (
    TABLE_ORDER,
    ChainInfo,
    ChainRef,
    IptablesAdapter,
    MatchPart,
    RuleView,
    SearchHit,
    cached_views,
    find_named,
    iptables_adapter,
    register_adapter,
)
from svctrace.dataplane.detect import has_kube_proxy_table, said_mode
from svctrace.dataplane.ipset import IPSetListing, parse_ipset
from svctrace.dataplane.ipvs import IPVSTable, VirtualService, load_ipvs, schedule
from svctrace.dataplane.ipvs.schedulers import KNOWN as SCHEDULER_NAMES
from svctrace.dataplane.nftables import NftRuleset, ir, load_nft
from svctrace.dataplane.nftables.printer import fmt_element, fmt_expr, fmt_stmt
from svctrace.errors import InputError, SvctraceError
from svctrace.kubeproxy.catalog import ipset_meaning, nft_chain_meaning, nft_filter_hook_meaning
from svctrace.kubeproxy.names import nft_chain_owner
from svctrace.kubeproxy.recover import nft_chain_label
from svctrace.kubeproxy.walk import complete_nft
from svctrace.model.snapshot import NodeFiles

# -- nftables ----------------------------------------------------------------------------------------

_COUNTER = re.compile(r"\bcounter packets (\d+) bytes (\d+)")


def _verdict(v: ir.Verdict) -> tuple[str, str, str | None]:
    """(target as shown, target kind, chain it leads to) of a verdict."""
    if v.kind in ("jump", "goto") and v.target:
        return nft_chain_label(v.target) or v.target, v.kind, v.target
    return v.kind, {"accept": "accept", "drop": "drop", "return": "return"}.get(v.kind, "other"), None


def _match_kind(e: ir.Expr) -> str:
    if isinstance(e, ir.Payload):
        if e.field in ("saddr", "daddr"):
            return "addr"
        if e.field == "protocol" or e.field == "nexthdr":
            return "proto"
        return "module"
    if isinstance(e, ir.Meta):
        if e.key in ("iifname", "oifname", "iif", "oif"):
            return "iface"
        return "proto" if e.key in ("l4proto", "nfproto", "protocol") else "module"
    if isinstance(e, ir.Numgen | ir.Hash):
        return "random"
    return "module"


def _set_refs(e: object) -> Iterator[str]:
    if isinstance(e, ir.SetRef):
        yield e.name
    elif isinstance(e, ir.Concat | ir.ListLit):
        for x in e.items:
            yield from _set_refs(x)
    elif isinstance(e, ir.MapLookup):
        yield from _set_refs(e.data)


def _short_chain(name: str) -> str:
    """An endpoint chain by its endpoint (`10.244.1.10/8080`), any other chain by its name."""
    n = nft_chain_owner(name)
    return n.endpoint if n and n.endpoint else name


class NftAdapter:
    """An nftables ruleset: tables, chains and rules, plus each table's sets and maps as `@name`."""

    kind = "nftables"

    def __init__(self, rs: NftRuleset, node: str, fname: str = "nft") -> None:
        self.rs = rs
        self.node = node
        self.source = rs.source
        self.fname = fname
        self.json = rs.format == "nft-json"  # a JSON dump is one line: lines say nothing there
        self.has_counters = any(_COUNTER.search(r.text) for _, r in zip(range(400), rs.iter_rules(), strict=False))
        self._views: dict[ChainRef, list[RuleView]] = {}

    # -- tables and chains --
    def tables(self) -> list[str]:
        # kube-proxy's own table first, then the others in dump order
        return sorted(self.rs.tables, key=lambda k: not k.endswith(" kube-proxy"))

    def entry(self) -> ChainRef | None:
        for t in self.tables():
            if "services" in self.rs.tables[t].chains:
                return ChainRef(t, "services")
        tables = self.tables()
        return ChainRef(tables[0], "") if tables else None

    def headings(self, table: str, chain: str) -> tuple[str, str, str]:
        if chain.startswith("@"):
            s = self._set(table, chain)
            if s is not None and s.is_map:
                return ("ELEMENT", "VERDICT" if s.data_type == "verdict" else "DATA", "COMMENT")
            return ("ELEMENT", "", "COMMENT")
        return ("MATCHES", "ACTION", "COMMENT")

    def _set(self, table: str, name: str) -> ir.NSet | None:
        t = self.rs.tables.get(table)
        return t.sets.get(name[1:] if name.startswith("@") else name) if t is not None else None

    def chains(self, table: str) -> list[ChainInfo]:
        t = self.rs.tables.get(table)
        if t is None:
            return []
        infos = [self._chain_info(t, c) for c in t.chains.values()]
        base = [i for i in infos if i.builtin]
        rest = sorted((i for i in infos if not i.builtin), key=lambda i: i.label or i.name)
        sets = sorted((self._set_info(t, s) for s in t.sets.values()), key=lambda i: i.name)
        return base + rest + sets

    def _chain_info(self, t: ir.Table, c: ir.Chain) -> ChainInfo:
        meaning = nft_chain_meaning(c.name)
        note = ""
        if c.is_base:
            prio = c.priority_text if c.priority_text is not None else c.priority
            note = f"{c.type or '?'} {c.hook} {prio}"
            base = f"base chain: type {c.type or '?'} hook {c.hook} priority {prio}; policy {c.policy or 'accept'}"
            if c.type == "filter" and not meaning:
                meaning = nft_filter_hook_meaning(c.hook)
            meaning = base + (f"; {meaning}" if meaning else "")
        if c.comment:
            meaning = (meaning + " " if meaning else "") + f"“{c.comment}”"
        if c.assumed:
            note = (note + " assumed").strip()
            meaning = (meaning or "") + " (not in the dump: svctrace assumed the base chain kube-proxy always writes)"
        return ChainInfo(t.key, c.name, len(c.rules), c.policy if c.is_base else None, c.is_base, meaning,
                         note=note, label=nft_chain_label(c.name))

    def _set_info(self, t: ir.Table, s: ir.NSet) -> ChainInfo:
        kind = "vmap" if s.is_map and s.data_type == "verdict" else "map" if s.is_map else "set"
        typ = " . ".join(s.key_types) + (f" : {s.data_type}" if s.is_map and s.data_type else "")
        word = {"vmap": "verdict map", "map": "map", "set": "set"}[kind]
        meaning = f"{word} of {typ}" + (f": {s.comment}" if s.comment else "")
        dynamic = s.dynamic or "dynamic" in s.flags
        if dynamic:
            meaning += " (rules add to it at run time" + (f", entries time out after {s.timeout}" if s.timeout
                                                          else "") + ")"
        empty = ("empty: kube-proxy's rules fill it at run time (session affinity), a new client is not in it"
                 if dynamic else "empty: nothing matches it")
        return ChainInfo(t.key, "@" + s.name, len(s.elements), None, False, meaning, note=kind, kind=kind,
                         empty=empty)

    def chain_info(self, table: str, chain: str) -> ChainInfo | None:
        t = self.rs.tables.get(table)
        if t is None:
            return None
        if chain.startswith("@"):
            s = t.sets.get(chain[1:])
            return self._set_info(t, s) if s is not None else None
        c = t.chains.get(chain)
        return self._chain_info(t, c) if c is not None else None

    # -- rules --
    def rules(self, table: str, chain: str) -> list[RuleView]:
        return cached_views(self._views, table, chain, self._views_of)

    def _views_of(self, table: str, chain: str) -> list[RuleView]:
        t = self.rs.tables.get(table)
        if t is None:
            return []
        if chain.startswith("@"):
            s = t.sets.get(chain[1:])
            return [self._element_view(t, s, i, el) for i, el in enumerate(s.elements, 1)] if s else []
        c = t.chains.get(chain)
        return [self._rule_view(t, r) for r in c.rules] if c is not None else []

    def _where(self, line: int | None) -> tuple[int, str]:
        if self.json or not line:
            return 0, self.fname
        return line, f"{self.fname} line {line}"

    def _rule_view(self, t: ir.Table, r: ir.Rule) -> RuleView:
        parts: list[MatchPart] = []
        actions: list[ir.Stmt] = []
        branches: list[tuple[str, ChainRef]] = []

        def ref_set(name: str) -> None:
            if name in t.sets and all(b[1].chain != "@" + name for b in branches):
                branches.append(("@" + name, ChainRef(t.key, "@" + name)))

        for s in r.stmts:
            if isinstance(s, ir.Match):
                parts.append(self._match(s))
                for name in _set_refs(s.right):
                    ref_set(name)
            elif isinstance(s, ir.Passive):
                continue
            elif isinstance(s, ir.Limit) or (isinstance(s, ir.Unknown) and s.kind == "match"):
                parts.append(MatchPart(fmt_stmt(s), "other"))
            else:
                actions.append(s)
        target: str | None = None
        args = ""
        kind = "none"
        jump: str | None = None
        for a in actions[:-1]:  # a statement before the last action (`meta mark set ... accept`)
            parts.append(MatchPart(fmt_stmt(a), "other"))
            if isinstance(a, ir.Dynset):
                ref_set(a.set)
        last = actions[-1] if actions else None
        if isinstance(last, ir.VerdictStmt):
            target, kind, jump = _verdict(last.verdict)
        elif isinstance(last, ir.Vmap):
            parts.append(MatchPart(fmt_expr(last.key), _match_kind(last.key) if not isinstance(
                last.key, ir.Concat) else "other"))
            kind = "vmap"
            if isinstance(last.data, ir.SetRef):
                target = f"vmap @{last.data.name}"
                jump = "@" + last.data.name if last.data.name in t.sets else None
            else:
                target = "vmap"
                shown = []
                for el in last.data.elements:
                    key = fmt_expr(el.key)
                    if isinstance(el.data, ir.Verdict):
                        tgt, _k, chain = _verdict(el.data)
                        shown.append(f"{key}{'↷' if el.data.kind == 'goto' else '→'}{_short_chain(chain or tgt)}")
                        if chain:
                            branches.append((f"{key} : {el.data.text()}", ChainRef(t.key, chain)))
                    else:
                        shown.append(f"{key}:{fmt_expr(el.data) if el.data is not None else '?'}")
                args = ", ".join(shown)
                chains = [b for b in branches if not b[1].chain.startswith("@")]
                if len(chains) == 1:  # `numgen random mod 1 vmap { 0 : goto ... }`: one way only
                    jump = chains[0][1].chain
        elif isinstance(last, ir.Nat):
            text = fmt_stmt(last)
            target, args, kind = last.kind, text[len(last.kind):].strip(), "nat"
        elif isinstance(last, ir.Reject):
            text = fmt_stmt(last)
            target, args, kind = "reject", text[len("reject"):].strip(), "reject"
        elif isinstance(last, ir.Mangle):
            target, args, kind = f"{fmt_expr(last.key)} set", fmt_expr(last.value), "mark"
        elif isinstance(last, ir.Dynset):
            target, args, kind = f"{last.op} @{last.set}", f"{{ {fmt_expr(last.key)} }}", "other"
            ref_set(last.set)
        elif last is not None:
            target, kind = fmt_stmt(last), "other"
        cm = _COUNTER.search(r.text)
        counters = (int(cm.group(1)), int(cm.group(2))) if cm else None
        line, where = self._where(r.line)
        problems = tuple(r.problems) + (("not in the dump: svctrace assumed what kube-proxy always writes",)
                                        if r.assumed else ())
        return RuleView(table=t.key, chain=r.chain, index=r.index, line=line, text=r.text, matches=tuple(parts),
                        target=target, target_args=args, target_kind=kind, jump=jump, comment=r.comment,
                        counters=counters, problems=problems, branches=tuple(branches), where=where)

    def _match(self, s: ir.Match) -> MatchPart:
        text = fmt_stmt(s)
        left = fmt_expr(s.left)
        neg = s.op == "!="
        head = left + (f" {s.op}" if s.op not in ("implicit", "==") else "")
        if not text.startswith(head):
            head = ""
        kind = _match_kind(s.left)
        if isinstance(s.right, ir.SetRef):
            kind = "set"
        return MatchPart(text, kind, neg, head)

    def _element_view(self, t: ir.Table, s: ir.NSet, index: int, el: ir.Element) -> RuleView:
        key = fmt_expr(el.key)
        target: str | None = None
        kind = "member"
        jump: str | None = None
        if isinstance(el.data, ir.Verdict):
            target, kind, jump = _verdict(el.data)
        elif el.data is not None:
            target, kind = fmt_expr(el.data), "other"
        line, where = self._where(s.line)
        if line:
            where += f" (the {'map' if s.is_map else 'set'})"
        return RuleView(table=t.key, chain="@" + s.name, index=index, line=line,
                        text=f"add element {t.key} {s.name} {{ {fmt_element(el)} }}",
                        matches=(MatchPart(key, "addr"),), target=target, target_args="", target_kind=kind,
                        jump=jump, comment=el.comment, counters=None, where=where)

    # -- finding --
    def find_chain(self, name: str, prefer_table: str | None = None) -> ChainRef | None:
        def names(t: str) -> list[str]:
            tb = self.rs.tables[t]
            return list(tb.chains) + ["@" + s for s in tb.sets]

        return find_named(self.tables(), names, name, prefer_table, "@")

    def search(self, query: str, limit: int = 1000) -> list[SearchHit]:
        q = query.strip().lower()
        out: list[SearchHit] = []
        if not q:
            return out
        for t in self.tables():
            for info in self.chains(t):
                hit_name = q in info.name.lower()
                if info.name.startswith("@"):
                    s = self.rs.tables[t].sets[info.name[1:]]
                    texts = [(i, f"{fmt_element(el)}", s.line) for i, el in enumerate(s.elements, 1)]
                else:
                    c = self.rs.tables[t].chains[info.name]
                    texts = [(r.index, r.text, r.line) for r in c.rules]
                for i, text, line in texts:
                    if hit_name or q in text.lower():
                        ln, where = self._where(line)
                        out.append(SearchHit(t, info.name, ln, text, index=i, where=where))
                        if len(out) >= limit:
                            return out
        return out

    def rule_count(self) -> int:
        return self.rs.rule_count


# -- IPVS ------------------------------------------------------------------------------------------

IPVS_TABLE = "ipvs"
IPSET_TABLE = "ipsets"


class IPVSAdapter:
    """An IPVS-mode node: `ipvs` (virtual servers → real servers), the iptables tables, and `ipsets`."""

    kind = "ipvs"

    def __init__(self, table: IPVSTable, node: str, iptables: IptablesAdapter | None = None,
                 ipsets: dict[str, IPSetListing] | None = None, ipset_source: str = "") -> None:
        self.ipvs = table
        self.node = node
        self.iptables = iptables
        self.ipsets = ipsets or {}
        self.ipset_source = ipset_source
        self.source = table.source
        self.has_counters = False  # the browser's PKTS/BYTES columns are iptables' counters
        self._ipt_file = iptables.source.rsplit("/", 1)[-1] if iptables is not None else "iptables-save"
        self._by_label = {vs.label: vs for vs in table.services}
        self._views: dict[ChainRef, list[RuleView]] = {}

    def tables(self) -> list[str]:
        out = [IPVS_TABLE]
        if self.iptables is not None:
            out += sorted(self.iptables.tables(), key=lambda t: (t != "nat", TABLE_ORDER.index(t)
                                                                 if t in TABLE_ORDER else len(TABLE_ORDER)))
        if self.ipsets:
            out.append(IPSET_TABLE)
        return out

    def entry(self) -> ChainRef | None:
        return ChainRef(IPVS_TABLE, "")

    def headings(self, table: str, chain: str) -> tuple[str, str, str]:
        if table == IPVS_TABLE:
            return ("WEIGHT, SHARE OF NEW CONNECTIONS", "FORWARD → REAL SERVER", "CONNECTIONS")
        if table == IPSET_TABLE:
            return ("MEMBER", "", "")
        return ("MATCHES", "TARGET", "COMMENT")

    # -- chains --
    def chains(self, table: str) -> list[ChainInfo]:
        if table == IPVS_TABLE:
            return [self._vs_info(vs) for vs in self.ipvs.services]
        if table == IPSET_TABLE:
            return [self._set_info(s) for s in sorted(self.ipsets.values(), key=lambda s: s.name)]
        return self.iptables.chains(table) if self.iptables is not None else []

    def _vs_info(self, vs: VirtualService) -> ChainInfo:
        sched = vs.scheduler or "?"
        how = SCHEDULER_NAMES.get(sched, sched)
        meaning = (f"IPVS virtual server {vs.address} ({vs.protocol.upper()}), scheduler {sched} ({how})"
                   + (f", persistent {vs.persistent}s (a client keeps its real server)" if vs.persistent else "")
                   + ": each new connection goes to one of its real servers")
        return ChainInfo(IPVS_TABLE, vs.label, len(vs.reals), None, False, meaning, kind="virtual-server",
                         empty="no real server: IPVS answers a new connection with ICMP port unreachable "
                               "(connection refused)")

    def _set_info(self, s: IPSetListing) -> ChainInfo:
        what = ipset_meaning(s.name)
        typ = s.type if s.typed else "?"
        meaning = f"ipset {typ} ({s.family})" + (f": {what}" if what else "")
        return ChainInfo(IPSET_TABLE, s.name, len(s.members), None, False, meaning, note=typ, kind="ipset",
                         empty="empty set: no packet matches it")

    def chain_info(self, table: str, chain: str) -> ChainInfo | None:
        if table == IPVS_TABLE:
            vs = self._by_label.get(chain)
            return self._vs_info(vs) if vs is not None else None
        if table == IPSET_TABLE:
            s = self.ipsets.get(chain)
            return self._set_info(s) if s is not None else None
        return self.iptables.chain_info(table, chain) if self.iptables is not None else None

    # -- rules --
    def rules(self, table: str, chain: str) -> list[RuleView]:
        return cached_views(self._views, table, chain, self._views_of)

    def _views_of(self, table: str, chain: str) -> list[RuleView]:
        if table == IPVS_TABLE:
            vs = self._by_label.get(chain)
            return self._reals(vs) if vs is not None else []
        if table == IPSET_TABLE:
            s = self.ipsets.get(chain)
            return [RuleView(table=IPSET_TABLE, chain=s.name, index=i, line=line, text=text,
                             matches=(MatchPart(",".join(member), "addr"),), target=None, target_args="",
                             target_kind="member", jump=None, comment=None, counters=None,
                             where=f"ipset line {line}")
                    for i, (member, (line, text)) in enumerate(zip(s.members, s.member_lines, strict=True), 1)
                    ] if s is not None else []
        if self.iptables is not None:
            return [self._with_sets(v) for v in self.iptables.rules(table, chain)]
        return []

    def _with_sets(self, v: RuleView) -> RuleView:
        """An iptables rule says which of the node's dumps it is in, and leads to the ipsets it matches on."""
        assert self.iptables is not None
        rule = self.iptables.rule(v.table, v.chain, v.index)
        names = [o.args[0] for m in (rule.matches if rule else []) for o in m.opts
                 if o.name == "--match-set" and o.args and o.args[0] in self.ipsets]
        return replace(v, where=f"{self._ipt_file} line {v.line}",
                       branches=v.branches + tuple((n, ChainRef(IPSET_TABLE, n)) for n in names))

    def _reals(self, vs: VirtualService) -> list[RuleView]:
        shares = {id(p.real): p.share for p in schedule(vs).picks}
        out = []
        for r in vs.reals:
            share = shares.get(id(r))
            parts = [MatchPart(f"weight {r.weight if r.weight is not None else '?'}", "other")]
            parts.append(MatchPart(f"{share * 100:.1f}%" if share is not None else "never picked (weight 0)",
                                   "random"))
            conns = None
            if r.active is not None or r.inactive is not None:
                conns = f"active {r.active if r.active is not None else '?'}, inactive " \
                        f"{r.inactive if r.inactive is not None else '?'}"
            out.append(RuleView(table=IPVS_TABLE, chain=vs.label, index=r.position, line=r.line, text=r.text,
                                matches=tuple(parts), target=r.forward or "?", target_args=f"→ {r.endpoint}",
                                target_kind="nat", jump=None, comment=conns, counters=None,
                                where=f"ipvsadm line {r.line}"))
        return out

    # -- finding --
    def find_chain(self, name: str, prefer_table: str | None = None) -> ChainRef | None:
        want = name.strip()
        low = want.lower()
        ipvs_first = prefer_table == IPVS_TABLE
        if want in self._by_label:
            return ChainRef(IPVS_TABLE, want)
        if want in self.ipsets and prefer_table == IPSET_TABLE:
            return ChainRef(IPSET_TABLE, want)
        if self.iptables is not None and not ipvs_first:
            got = self.iptables.find_chain(want, prefer_table)
            if got is not None:
                return got
        if want in self.ipsets:
            return ChainRef(IPSET_TABLE, want)
        for label in self._by_label:  # `10.96.0.1:443`, `tcp 10.96.0.1`
            if low in label.lower():
                return ChainRef(IPVS_TABLE, label)
        for s in self.ipsets:
            if s.lower().startswith(low):
                return ChainRef(IPSET_TABLE, s)
        if self.iptables is not None and ipvs_first:
            return self.iptables.find_chain(want, prefer_table)
        return None

    def virtual_server(self, proto: str, ip: str, port: int) -> VirtualService | None:
        for vs in self.ipvs.services:
            if vs.protocol == proto.lower() and str(vs.ip) == ip and vs.port == port:
                return vs
        return None

    def search(self, query: str, limit: int = 1000) -> list[SearchHit]:
        q = query.strip().lower()
        out: list[SearchHit] = []
        if not q:
            return out
        for vs in self.ipvs.services:
            hit_name = q in vs.label.lower() or q in vs.text.lower()
            for r in vs.reals:
                if hit_name or q in r.text.lower():
                    out.append(SearchHit(IPVS_TABLE, vs.label, r.line, r.text, index=r.position,
                                         where=f"ipvsadm line {r.line}"))
            if hit_name and not vs.reals:
                out.append(SearchHit(IPVS_TABLE, vs.label, vs.line, vs.text, where=f"ipvsadm line {vs.line}"))
        if self.iptables is not None:
            for h in self.iptables.iter_search(query, limit):
                out.append(h)
        for s in sorted(self.ipsets.values(), key=lambda s: s.name):
            hit_name = q in s.name.lower()
            for i, (dims, (line, text)) in enumerate(zip(s.members, s.member_lines, strict=True), 1):
                if hit_name or q in ",".join(dims).lower():
                    out.append(SearchHit(IPSET_TABLE, s.name, line, text, index=i, where=f"ipset line {line}"))
        return out[:limit]

    def rule_count(self) -> int:
        return self.ipvs.real_server_count + (self.iptables.rule_count() if self.iptables is not None else 0)


# -- the factories ---------------------------------------------------------------------------------

def _nft_factory(nf: NodeFiles, family: int) -> NftAdapter | None:
    said = said_mode(nf)
    if said and said != "nftables":
        return None
    for fname in ("nft.json", "nft"):  # the file explain walks
        text = nf.get(fname)
        if not text:
            continue
        has_iptables = any(nf.get(f) for f in ("iptables-save", "iptables-legacy-save", "ip6tables-save"))
        if not said and has_iptables and not has_kube_proxy_table(text):
            return None  # an iptables-nft backend's view of iptables rules: the iptables dump says it better
        try:
            return NftAdapter(complete_nft(nf.parsed(fname, load_nft)), nf.name, fname)
        except SvctraceError:
            if said == "nftables" or not has_iptables:
                raise  # the node's own rules cannot be read: say why
            return None
    return None


def _ipvs_factory(nf: NodeFiles, family: int) -> IPVSAdapter | None:
    said = said_mode(nf)
    text = nf.get("ipvsadm")
    if not text or (said and said != "ipvs"):
        return None
    try:
        table = nf.parsed("ipvsadm", load_ipvs)
    except SvctraceError:
        if said == "ipvs":
            raise  # the node's own rules cannot be read: say why
        return None  # no virtual server: not an IPVS-mode node
    sets: dict[str, IPSetListing] = {}
    if nf.get("ipset"):
        with contextlib.suppress(InputError):  # no ipset syntax at all: the browser shows no sets
            sets = nf.parsed("ipset", parse_ipset)[0]
    return IPVSAdapter(table, nf.name, iptables_adapter(nf, family), sets, nf.path("ipset"))


register_adapter("ipvs", _ipvs_factory)
register_adapter("nftables", _nft_factory)
