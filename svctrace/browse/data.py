"""The chain browser's data layer: a node's chains and rules, behind an adapter.

The browser never touches a `Ruleset` directly: it asks a `RulesAdapter` for tables, chains, rules
(as `RuleView`s) and search hits. `IptablesAdapter` serves iptables(-save) dumps; nftables and IPVS
nodes plug in through `register_adapter` (`svctrace.browse.adapters`: `NftAdapter`, `IPVSAdapter`).
Nothing here imports Textual.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Protocol

from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.rules import KNOWN_TARGETS, NAT_TARGETS, Rule, Ruleset
from svctrace.errors import InputError
from svctrace.kubeproxy.catalog import chain_meaning
from svctrace.model.snapshot import NodeFiles

TABLE_ORDER = ("filter", "nat", "mangle", "raw", "security")


@dataclass(frozen=True)
class ChainRef:
    table: str
    chain: str

    def __str__(self) -> str:
        return f"{self.table} {self.chain}"


@dataclass(frozen=True)
class ChainInfo:
    table: str
    name: str
    rule_count: int
    policy: str | None
    builtin: bool  # a built-in (iptables) or base (nftables) chain: the packet's entry from a hook
    meaning: str | None
    counters: tuple[int, int] | None = None
    note: str = ""  # shown dim after the name: a base chain's hook and priority, `vmap`, an ipset's type
    kind: str = "chain"  # chain / set / map / vmap / virtual-server / ipset
    empty: str | None = None  # what it means when it has no rules (None: the browser's default words)
    label: str = ""  # how the chain list shows it, when not by its name (kube-proxy's nft hashes left out)


@dataclass(frozen=True)
class MatchPart:
    """One piece of a rule's match list as the browser shows it: `! -s 10.244.0.0/16`."""

    text: str
    kind: str  # addr / proto / iface / module / random / other
    neg: bool = False
    head: str = ""  # a prefix of `text` shown dim (nftables: `ip daddr`, `ip saddr !=`), the rest styled by kind


@dataclass(frozen=True)
class RuleView:
    table: str
    chain: str
    index: int  # 1-based position, as the walker and `iptables -L --line-numbers` count
    line: int  # line in the dump
    text: str  # the rule as written (`-A CHAIN ...`)
    matches: tuple[MatchPart, ...]
    target: str | None  # ACCEPT, DNAT, KUBE-SVC-..., None for a rule without target
    target_args: str  # `--to-destination 10.244.1.10:8080`, `--set-xmark 0x4000/0x4000`
    target_kind: str  # jump / goto / accept / drop / reject / nat / return / mark / other / none
    jump: str | None  # the chain a jump or goto leads to (in the same table)
    comment: str | None
    counters: tuple[int, int] | None  # (packets, bytes) when the dump had -c
    problems: tuple[str, ...] = ()
    # Other places the rule leads to or looks at: an anonymous vmap's chains, the sets and maps it matches
    # on (label, where). `enter` follows `jump`, else these (a choice when there are several).
    branches: tuple[tuple[str, ChainRef], ...] = ()
    where: str = ""  # where it was read, when `line N` alone would not say it (`ipvsadm line 12`, `nft.json`)

    @property
    def ref(self) -> ChainRef:
        return ChainRef(self.table, self.chain)


@dataclass(frozen=True)
class SearchHit:
    table: str
    chain: str
    line: int
    text: str
    index: int | None = None  # the rule's 1-based position, when its line does not tell it apart
    where: str = ""


class RulesAdapter(Protocol):
    """What the chain browser needs from a node's dataplane dump."""

    node: str
    kind: str  # "iptables", "nftables", "ipvs"
    source: str  # where the rules came from (a path inside the snapshot, or the dump file)
    has_counters: bool

    def tables(self) -> list[str]: ...

    def entry(self) -> ChainRef | None:
        """Where the browser opens when nothing else is asked for."""
        ...

    def headings(self, table: str, chain: str) -> tuple[str, str, str]:
        """The titles of the rule columns (matches, target, comment) for this chain."""
        ...

    def chains(self, table: str) -> list[ChainInfo]: ...

    def chain_info(self, table: str, chain: str) -> ChainInfo | None: ...

    def rules(self, table: str, chain: str) -> list[RuleView]: ...

    def find_chain(self, name: str, prefer_table: str | None = None) -> ChainRef | None: ...

    def search(self, query: str, limit: int = 1000) -> list[SearchHit]: ...

    def rule_count(self) -> int: ...


# -- iptables --------------------------------------------------------------------------------------

_GENERIC = {"-s": "addr", "-d": "addr", "-p": "proto", "-i": "iface", "-o": "iface", "-f": "other"}


def _short_addr(v: str) -> str:
    return v[:-3] if v.endswith("/32") else v[:-4] if v.endswith("/128") else v


def _opt_args(args: tuple[str, ...]) -> str:
    out = []
    for a in args:
        out.append(f'"{a}"' if (not a or any(c in a for c in " \t")) else a)
    return " ".join(out)


def match_parts(rule: Rule) -> tuple[MatchPart, ...]:
    """The rule's matches, without the comment, in a compact iptables spelling."""
    parts: list[MatchPart] = []
    proto = None
    for m in rule.matches:
        if m.module == "comment":
            continue
        if m.module in _GENERIC:
            for o in m.opts:
                val = _short_addr(o.arg) if m.module in ("-s", "-d") else o.arg
                if m.module == "-p":
                    proto = o.arg.lower()
                parts.append(MatchPart(f"{'! ' if o.neg else ''}{m.module} {val}".strip(), _GENERIC[m.module], o.neg))
            continue
        if m.module == "statistic":
            prob = m.opt("--probability")
            every = m.opt("--every")
            if prob is not None:
                parts.append(MatchPart(f"random {prob.arg}", "random"))
                continue
            if every is not None:
                parts.append(MatchPart(f"every {every.arg}", "random"))
                continue
        implicit = m.implicit or (proto is not None and m.module == proto)
        head = "" if implicit else f"-m {m.module}"
        opts = " ".join(f"{'! ' if o.neg else ''}{o.name} {_opt_args(o.args)}".strip() for o in m.opts)
        text = f"{head} {opts}".strip()
        if text:
            parts.append(MatchPart(text, "module", any(o.neg for o in m.opts)))
    return tuple(parts)


def _target_kind(name: str | None, goto: bool, is_chain: bool) -> str:
    if name is None:
        return "none"
    if is_chain:
        return "goto" if goto else "jump"
    return {"ACCEPT": "accept", "DROP": "drop", "REJECT": "reject", "RETURN": "return",
            "MARK": "mark", "CONNMARK": "mark"}.get(name, "nat" if name in NAT_TARGETS else "other")


class IptablesAdapter:
    """An iptables ruleset (one node, one family). Rules are parsed per chain on first look."""

    kind = "iptables"

    def __init__(self, rs: Ruleset, node: str) -> None:
        self.rs = rs
        self.node = node
        self.source = rs.source
        self.has_counters = rs.has_counters or self._sniff_counters()
        self._views: dict[ChainRef, list[RuleView]] = {}

    def _sniff_counters(self) -> bool:
        for c in self.rs.iter_chains():
            if c.raw:
                return c.raw[0].counters is not None
        return False

    def tables(self) -> list[str]:
        names = list(self.rs.tables)
        return sorted(names, key=lambda t: TABLE_ORDER.index(t) if t in TABLE_ORDER else len(TABLE_ORDER))

    def entry(self) -> ChainRef | None:
        return self.find_chain("KUBE-SERVICES", "nat")

    def headings(self, table: str, chain: str) -> tuple[str, str, str]:
        return ("MATCHES", "TARGET", "COMMENT")

    def chains(self, table: str) -> list[ChainInfo]:
        t = self.rs.tables.get(table)
        if t is None:
            return []
        out = [self._info(table, c.name) for c in t.chains.values()]
        infos = [i for i in out if i is not None]
        # Built-in chains first (in hook order, as the dump lists them), then user chains by name.
        return [i for i in infos if i.builtin] + sorted((i for i in infos if not i.builtin), key=lambda i: i.name)

    def _info(self, table: str, name: str) -> ChainInfo | None:
        c = self.rs.chain(table, name)
        if c is None:
            return None
        m = chain_meaning(name)
        return ChainInfo(table, name, len(c), c.policy, c.builtin, m.meaning if m else None, c.counters)

    def chain_info(self, table: str, chain: str) -> ChainInfo | None:
        return self._info(table, chain)

    def rules(self, table: str, chain: str) -> list[RuleView]:
        return cached_views(self._views, table, chain, self._views_of)

    def _views_of(self, table: str, chain: str) -> list[RuleView]:
        c = self.rs.chain(table, chain)
        return [self._view(r) for r in c.rules] if c is not None else []

    def rule(self, table: str, chain: str, index: int) -> Rule | None:
        """The parsed rule behind a `RuleView` (its 1-based `index`)."""
        c = self.rs.chain(table, chain)
        return c.rules[index - 1] if c is not None and 0 < index <= len(c.rules) else None

    def _view(self, r: Rule) -> RuleView:
        tgt = r.target
        name = tgt.name if tgt else None
        is_chain = name is not None and (self.rs.chain(r.table, name) is not None or name not in KNOWN_TARGETS)
        args = ""
        if tgt is not None:
            args = " ".join(f"{'! ' if o.neg else ''}{o.name} {_opt_args(o.args)}".strip() for o in tgt.opts)
        return RuleView(
            table=r.table, chain=r.chain, index=r.index, line=self.rs.source_line(r.line), text=r.text,
            matches=match_parts(r), target=name, target_args=args,
            target_kind=_target_kind(name, bool(tgt and tgt.goto), is_chain),
            jump=name if is_chain else None, comment=r.comment, counters=r.counters, problems=tuple(r.problems),
        )

    def find_chain(self, name: str, prefer_table: str | None = None) -> ChainRef | None:
        return find_named(self.tables(), lambda t: self.rs.tables[t].chains, name, prefer_table)

    def search(self, query: str, limit: int = 1000) -> list[SearchHit]:
        """Rules whose text holds `query` (case-insensitive), in dump order; raw text, nothing parsed."""
        return list(self.iter_search(query, limit))

    def iter_search(self, query: str, limit: int = 1000) -> Iterator[SearchHit]:
        q = query.strip().lower()
        if not q:
            return
        n = 0
        for t in self.tables():
            for c in self.rs.tables[t].chains.values():
                hit_name = q in c.name.lower()
                for raw in c.raw:
                    if hit_name or q in raw.text.lower():
                        yield SearchHit(t, c.name, self.rs.source_line(raw.line), raw.text)
                        n += 1
                        if n >= limit:
                            return

    def rule_count(self) -> int:
        return self.rs.rule_count


def cached_views(views: dict[ChainRef, list[RuleView]], table: str, chain: str,
                 make: Callable[[str, str], list[RuleView]]) -> list[RuleView]:
    """A chain's rule views from an adapter's cache `views`, made by `make` on first use (a big chain takes a
    while, and the browser asks again at every redraw)."""
    ref = ChainRef(table, chain)
    got = views.get(ref)
    if got is None:
        got = views[ref] = make(table, chain)
    return got


def find_named(tables: list[str], names: Callable[[str], Collection[str]], name: str,
               prefer_table: str | None = None, mark: str = "") -> ChainRef | None:
    """The chain `name` among each table's `names` (`prefer_table`'s first): exact, then case-insensitive,
    then the first that starts with it. `mark` is what some names carry before them (nftables' `@` of a set),
    matched with or without it."""
    want = name.strip()
    order = sorted(tables, key=lambda t: t != prefer_table)
    bare = want[len(mark):] if mark and want.startswith(mark) else want
    for t in order:
        have = names(t)
        for n in (want, mark + bare) if mark else (want,):
            if n in have:
                return ChainRef(t, n)
    low = want.lower()
    lows = (low, mark + low) if mark else (low,)
    for test in (lambda c: c.lower() in lows, lambda c: c.lower().startswith(lows)):
        for t in order:
            for c in names(t):
                if test(c):
                    return ChainRef(t, c)
    return None


def rule_index_for_line(rules: list[RuleView], line: int) -> int:
    """Position (0-based) of the rule that came from `line` of the dump, or 0."""
    for i, r in enumerate(rules):
        if r.line == line:
            return i
    return 0


# -- the registry ----------------------------------------------------------------------------------

AdapterFactory = Callable[[NodeFiles, int], "RulesAdapter | None"]
_ADAPTERS: list[tuple[str, AdapterFactory]] = []


def register_adapter(kind: str, factory: AdapterFactory) -> None:
    """Teach the browser another dataplane: `factory(node_files, family)` returns an adapter or None.
    The last registered is asked first (unless the node's kube-proxy mode names another kind)."""
    _ADAPTERS[:] = [(k, f) for k, f in _ADAPTERS if k != kind]
    _ADAPTERS.insert(0, (kind, factory))


def iptables_adapter(nf: NodeFiles, family: int) -> IptablesAdapter | None:
    """The node's iptables (or ip6tables) dump, parsed once for the snapshot (explain reuses the parse)."""
    names = ("iptables-save", "iptables-legacy-save") if family == 4 else ("ip6tables-save", "ip6tables-legacy-save")
    for fname in names:
        if nf.has(fname, empty=False):
            return IptablesAdapter(nf.parsed(fname, load_ruleset, by_lines=True), nf.name)
    return None


_ADAPTERS.append(("iptables", iptables_adapter))


def adapter_for(nf: NodeFiles, family: int = 4, mode: str | None = None) -> RulesAdapter:
    """The first registered adapter that can read this node's files (slow: parses the dump). `mode`
    (kube-proxy's: iptables / ipvs / nftables): that kind's adapter is asked first."""
    import svctrace.browse.adapters  # noqa: F401  (registers the nftables and IPVS adapters)

    order = sorted(_ADAPTERS, key=lambda kf: kf[0] != mode)
    for _kind, factory in order:
        got = factory(nf, family)
        if got is not None:
            return got
    raise InputError(f"node {nf.name} has no dump the chain browser reads (iptables-save, nft, nft.json, ipvsadm)",
                     source=nf.path("iptables-save"))


def dataplanes(nf: NodeFiles) -> list[str]:
    """Which dataplane dumps a node's directory holds."""
    out = []
    for fname in ("iptables-save", "iptables-legacy-save", "ip6tables-save", "ip6tables-legacy-save", "nft.json",
                  "nft", "ipvsadm", "ipset"):
        if nf.has(fname, empty=False):
            out.append(fname)
    return out

