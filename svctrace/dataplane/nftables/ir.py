"""The nftables ruleset as plain typed values: tables, chains, sets and maps, rules of statements.

Both readers (`nft list ruleset` text and `nft -j list ruleset` JSON) build these; the walker reads
them. Literals stay as written (text or JSON number) and get their type from the expression they are
compared with, as nft itself does. Stdlib only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from svctrace.errors import Warn

# -- expressions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    """`ip daddr`, `tcp dport`, `th dport`, `icmp type` ..."""

    proto: str
    field: str


@dataclass(frozen=True, slots=True)
class Meta:
    key: str


@dataclass(frozen=True, slots=True)
class Ct:
    key: str
    dir: str | None = None  # original / reply
    family: str | None = None  # `ct original ip saddr`


@dataclass(frozen=True, slots=True)
class Fib:
    flags: tuple[str, ...]  # saddr / daddr / mark / iif / oif
    result: str  # type / oif / oifname


@dataclass(frozen=True, slots=True)
class Numgen:
    mode: str  # random / inc
    mod: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Hash:
    """`jhash ip saddr mod 2`, `symhash mod 2`: a bucket the dump cannot predict."""

    kind: str
    mod: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Concat:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Binop:
    op: str  # & | ^ << >>
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Const:
    """A literal as written: `10.0.0.1`, `tcp`, `0x4000`, `new`, `"eth0"` (quotes removed), 80."""

    value: str | int


@dataclass(frozen=True, slots=True)
class Prefix:
    addr: str
    length: int


@dataclass(frozen=True, slots=True)
class Range:
    lo: str | int
    hi: str | int


@dataclass(frozen=True, slots=True)
class ListLit:
    """A comma list outside braces: `ct state established,related` (flags)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class SetRef:
    name: str


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # accept drop continue return jump goto queue
    target: str | None = None

    def text(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind


@dataclass(frozen=True, slots=True)
class Element:
    """One element of a set or map: a key (maybe a concatenation, prefix or range) and its data."""

    key: Expr
    data: Expr | Verdict | None = None
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class AnonSet:
    elements: tuple[Element, ...]


@dataclass(frozen=True, slots=True)
class MapLookup:
    """`numgen random mod 2 map { 0 : 10.0.0.1 . 80, ... }`, `ip daddr map @m`."""

    key: Expr
    data: SetRef | AnonSet


@dataclass(frozen=True, slots=True)
class Opaque:
    """An expression svctrace does not evaluate (`rt nexthop`, `socket transparent`, raw payload...)."""

    text: str


Expr = (Payload | Meta | Ct | Fib | Numgen | Hash | Concat | Binop | Const | Prefix | Range | ListLit | SetRef
        | AnonSet | MapLookup | Opaque)

# -- statements -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    left: Expr
    op: str  # == != < > <= >= in (implicit: flags for bitmask types, equality otherwise)
    right: Expr


@dataclass(frozen=True, slots=True)
class Vmap:
    key: Expr
    data: SetRef | AnonSet


@dataclass(frozen=True, slots=True)
class VerdictStmt:
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Mangle:
    """`meta mark set ...`, `ct mark set ...`."""

    key: Meta | Ct
    value: Expr


@dataclass(frozen=True, slots=True)
class Nat:
    kind: str  # dnat snat masquerade redirect
    family: str | None = None
    addr: Expr | None = None
    port: Expr | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    type: str | None = None  # icmp icmpv6 icmpx tcp-reset
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Dynset:
    """`update @affinity-... { ip saddr }`: adds the packet's key to a set at run time."""

    op: str  # update add delete
    set: str
    key: Expr


@dataclass(frozen=True, slots=True)
class Passive:
    """Statements without an effect on the walk: counter, log, comment-only, nftrace ..."""

    kind: str


@dataclass(frozen=True, slots=True)
class Limit:
    """`limit rate ...`, `quota ...`, `ct count ...`: a first packet is under it (assumed, uncertain)."""

    text: str


@dataclass(frozen=True, slots=True)
class Notrack:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    """A statement svctrace does not understand, kept as written.

    kind "match": it may or may not match (both cases are walked); "target": an action whose effect
    is not modelled (`xt target DNAT`: assumed to do nothing, uncertain).
    """

    text: str
    kind: str = "match"


Stmt = Match | Vmap | VerdictStmt | Mangle | Nat | Reject | Dynset | Passive | Limit | Notrack | Unknown

# -- objects ----------------------------------------------------------------------------------------


Parsed = tuple[list[Stmt], str | None, list[str]]  # a rule's statements, comment and what was not understood


class LineReader(Protocol):
    """Reads a rule kept as its line of the dump (a big dump's rules are kept so: a line costs less than its
    tokens or statements)."""

    def text(self, raw: str, line: int | None) -> str: ...

    def parse(self, raw: str, line: int | None) -> Parsed: ...


class Rule:
    """One rule. Read from text, its statements are parsed the first time someone asks for them
    (`stmts`, `comment`, `problems`): a walk visits a handful of a big ruleset's chains."""

    __slots__ = ("_comment", "_parse", "_problems", "_raw", "_reader", "_stmts", "_text", "assumed", "chain",
                 "handle", "index", "line", "table")

    def __init__(self, table: str, chain: str, index: int, stmts: list[Stmt] | None,
                 text: str | Callable[[], str] | None, line: int | None = None, comment: str | None = None,
                 handle: int | None = None, problems: list[str] | None = None, assumed: bool = False,
                 parse: Callable[[], Parsed] | None = None, raw: str | None = None,
                 reader: LineReader | None = None) -> None:
        self.table = table  # "ip kube-proxy"
        self.chain = chain
        self.index = index  # 1-based position in its chain
        # the rule as nft prints it (made on first use when given as a function, or as None with `raw`)
        self._text = text
        self.line = line
        self.handle = handle
        self.assumed = assumed  # not in the dump: svctrace filled in what kube-proxy always writes
        self._stmts = stmts
        self._comment = comment
        self._problems = problems  # None: none
        self._parse = parse if stmts is None else None
        self._raw = raw  # the rule's line as written, read by `reader` (text and statements) on first use
        self._reader = reader

    def _load(self) -> None:
        if self._stmts is None:
            if self._reader is not None:
                assert self._raw is not None
                self._stmts, self._comment, self._problems = self._reader.parse(self._raw, self.line)
                return
            assert self._parse is not None, "rule without statements or parser"
            self._stmts, self._comment, self._problems = self._parse()
            self._parse = None

    @property
    def text(self) -> str:
        t = self._text
        if isinstance(t, str):
            return t
        if t is None:
            assert self._reader is not None and self._raw is not None, "rule without text"
            t = self._reader.text(self._raw, self.line)
        else:
            t = t()
        self._text = t
        return t

    @property
    def parsed(self) -> bool:
        return self._stmts is not None

    @property
    def stmts(self) -> list[Stmt]:
        self._load()
        assert self._stmts is not None
        return self._stmts

    @property
    def comment(self) -> str | None:
        self._load()
        return self._comment

    @property
    def problems(self) -> list[str]:
        self._load()
        return self._problems if self._problems is not None else []

    def __repr__(self) -> str:
        return f"Rule({self.table} {self.chain} #{self.index}: {self.text[:60]})"


@dataclass(slots=True)
class Chain:
    table: str
    name: str
    type: str | None = None  # filter / nat / route (base chains)
    hook: str | None = None  # prerouting input forward output postrouting ingress ...
    priority: int | None = None
    priority_text: str | None = None
    policy: str | None = None  # accept / drop
    device: str | None = None
    comment: str | None = None
    rules: list[Rule] = field(default_factory=list)
    line: int | None = None
    assumed: bool = False

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def __len__(self) -> int:
        return len(self.rules)


@dataclass
class NSet:
    """A named set (`is_map` False) or map (data type `verdict` for a vmap)."""

    table: str
    name: str
    key_types: tuple[str, ...] = ()
    data_type: str | None = None
    is_map: bool = False
    flags: tuple[str, ...] = ()
    timeout: str | None = None
    comment: str | None = None
    elements: list[Element] = field(default_factory=list)
    line: int | None = None
    dynamic: bool = False  # a rule adds to it at run time (session affinity): a new client is not in it
    index: object = None  # the walker's compiled lookup (built on first use)


@dataclass
class Table:
    family: str  # ip ip6 inet arp bridge netdev
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    sets: dict[str, NSet] = field(default_factory=dict)
    comment: str | None = None
    flags: tuple[str, ...] = ()
    line: int | None = None
    guessed: bool = False  # chains pasted without their `table` line
    iptables_nft: bool = False  # written by iptables-nft: nft shows translations of xtables matches

    def looks_iptables_nft(self) -> bool:
        return self.iptables_nft or (self.family in ("ip", "ip6") and self.name in
                                     ("filter", "nat", "mangle", "raw", "security") and
                                     any(c.isupper() for name in self.chains for c in name[:1]))

    @property
    def key(self) -> str:
        return f"{self.family} {self.name}"


@dataclass
class NftRuleset:
    source: str = "<nft>"
    format: str = "nft"  # nft (text), nft-json
    tables: dict[str, Table] = field(default_factory=dict)  # "ip kube-proxy" -> Table, in dump order
    warnings: list[Warn] = field(default_factory=list)
    orphans: list[Rule] = field(default_factory=list)  # rule lines outside any chain (grep-filtered pastes)
    hidden: int = 0  # rules nft could not print ("# Warning: XT target DNAT not found")
    backend: str = "nf_tables"
    version: str | None = None
    lazy: bool = False  # rules parsed as the walk reaches them (big dumps): problems reported on the path
    cache: dict[object, object] = field(default_factory=dict, repr=False, compare=False)  # the walker's
    # The dump ends before its end (braces left open): (the line it ends at, why). No walk of it is certain.
    cut: tuple[int, str] | None = None

    def table(self, key: str) -> Table | None:
        return self.tables.get(key)

    def chain(self, table: str, name: str) -> Chain | None:
        t = self.tables.get(table)
        if t is None and " " not in table:  # a bare table name: the first family holding it
            t = next((x for x in self.tables.values() if x.name == table), None)
        return t.chains.get(name) if t is not None else None

    def iter_rules(self) -> Iterator[Rule]:
        for t in self.tables.values():
            for c in t.chains.values():
                yield from c.rules

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables.values() for c in t.chains.values() if not c.assumed)

    @property
    def family(self) -> int:
        """4 unless the tables are IPv6-only."""
        fams = {t.family for t in self.tables.values()}
        return 6 if "ip6" in fams and not fams & {"ip", "inet"} else 4

    def source_line(self, line: int | None) -> int | None:
        return line

    def problems(self) -> list[tuple[Rule, str]]:
        return [(r, p) for r in self.iter_rules() for p in r.problems]
