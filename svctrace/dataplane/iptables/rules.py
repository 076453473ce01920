"""The parsed form of an iptables ruleset: tables, chains, rules, matches, targets.

Rules are parsed lazily: loading groups the lines by chain, and a chain's rules are parsed the
first time something asks for them (see `Chain.rules`). A 100k-rule dump is mostly chains no
question ever visits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLES = tuple(BUILTIN_CHAINS)

# Targets the kernel provides, as opposed to jumps to user chains.
TERMINAL_TARGETS = frozenset({"ACCEPT", "DROP", "REJECT", "QUEUE", "NFQUEUE", "TPROXY"})
NAT_TARGETS = frozenset({"DNAT", "SNAT", "MASQUERADE", "REDIRECT", "NETMAP"})
NONTERMINAL_TARGETS = frozenset(
    {
        "MARK", "CONNMARK", "LOG", "NFLOG", "ULOG", "TRACE", "CHECKSUM", "TCPMSS", "DSCP", "TOS",
        "CLASSIFY", "SET", "CT", "NOTRACK", "AUDIT", "CONNSECMARK", "SECMARK", "HMARK", "TEE",
        "TTL", "HL", "ECN", "IDLETIMER", "LED", "RATEEST", "TCPOPTSTRIP", "SYNPROXY", "CLUSTERIP",
        "MASQ",
    }
)
KNOWN_TARGETS = TERMINAL_TARGETS | NAT_TARGETS | NONTERMINAL_TARGETS | {"RETURN"}


@dataclass(slots=True)
class Opt:
    """One option of a match or target: `--dport 80`, `! --ctstate NEW`, `--set`."""

    name: str
    args: tuple[str, ...] = ()
    neg: bool = False

    @property
    def arg(self) -> str:
        return self.args[0] if self.args else ""


def find_opt(opts: list[Opt], name: str) -> Opt | None:
    for o in opts:
        if o.name == name:
            return o
    return None


@dataclass(slots=True)
class Match:
    """A generic option (`module` is "-s", "-d", "-p", "-i", "-o", "-f") or a match module with options."""

    module: str
    opts: list[Opt] = field(default_factory=list)
    implicit: bool = False  # a protocol match loaded by `-p tcp` without `-m tcp`
    known: bool = True
    cache: object = None  # evaluator's precompiled form

    def opt(self, name: str) -> Opt | None:
        return find_opt(self.opts, name)


def comment_of(matches: list[Match]) -> str | None:
    """The rule's `-m comment --comment` text (several joined by a blank), or None."""
    parts = [o.arg for m in matches if m.module == "comment" for o in m.opts if o.name == "--comment"]
    return " ".join(parts) if parts else None


@dataclass(slots=True)
class Target:
    name: str
    opts: list[Opt] = field(default_factory=list)
    goto: bool = False

    def opt(self, name: str) -> Opt | None:
        return find_opt(self.opts, name)


@dataclass(slots=True)
class Rule:
    table: str
    chain: str
    index: int  # 1-based position in the chain, as `iptables -L --line-numbers` counts
    line: int  # line in the source
    text: str  # the rule as written, without counters
    matches: list[Match]
    target: Target | None
    counters: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)  # what the parser did not understand
    # The walker's precompiled form, made on first use (matches do not change once parsed): (comment, each
    # match with its evaluator): walker.compile_rule.
    compiled: tuple[str | None, tuple[tuple[Callable[..., Any], Match], ...]] | None = field(
        default=None, compare=False, repr=False)

    @property
    def comment(self) -> str | None:
        if self.compiled is not None:
            return self.compiled[0]
        return comment_of(self.matches)

    @property
    def understood(self) -> bool:
        return not self.problems and all(m.known for m in self.matches)

    def save_text(self) -> str:
        """The rule printed back in iptables-save syntax (canonical spelling, original order)."""
        from svctrace.dataplane.iptables.printer import rule_to_save

        return rule_to_save(self)


@dataclass(slots=True)
class RawRule:
    line: int
    text: str  # "-A CHAIN ..." without counters
    counters: tuple[int, int] | None = None


class Chain:
    """A chain. Its rules are parsed on first access of `rules`."""

    __slots__ = ("_parse", "_rules", "builtin", "counters", "decl_line", "dst_index", "name", "policy",
                 "raw", "table")

    def __init__(self, table: str, name: str, *, policy: str | None = None, decl_line: int | None = None,
                 counters: tuple[int, int] | None = None) -> None:
        self.table = table
        self.name = name
        self.policy = policy  # ACCEPT/DROP for built-in chains, None for user chains
        self.builtin = name in BUILTIN_CHAINS.get(table, ())
        self.decl_line = decl_line
        self.counters = counters
        self.raw: list[RawRule] = []
        self._rules: list[Rule] | None = None
        self._parse: Callable[[Chain], list[Rule]] | None = None
        self.dst_index: object = None  # built by the walker for long chains

    @property
    def rules(self) -> list[Rule]:
        if self._rules is None:
            assert self._parse is not None, "chain has no parser"
            self._rules = self._parse(self)
        return self._rules

    @property
    def parsed(self) -> bool:
        return self._rules is not None

    def __len__(self) -> int:
        return len(self._rules) if self._rules is not None else len(self.raw)

    def __repr__(self) -> str:
        return f"Chain({self.table}/{self.name}, {len(self)} rules)"


@dataclass
class Table:
    name: str
    chains: dict[str, Chain] = field(default_factory=dict)
    line: int | None = None


@dataclass
class Ruleset:
    """One node's iptables (or ip6tables) rules."""

    source: str
    family: int = 4
    tables: dict[str, Table] = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # list[svctrace.errors.Warn]
    format: str = "iptables-save"
    backend: str | None = None  # "nf_tables" / "legacy" when the header says
    version: str | None = None  # iptables version from the header
    has_counters: bool = False
    line_map: list[int] | None = None  # converted input (iptables -L): our line -> the input's line
    # The dump ends before its end: (the line it ends at, why), e.g. a table without COMMIT or a last rule cut in
    # the middle. Rules after that line are not known, so no walk of it is certain.
    cut: tuple[int, str] | None = None
    cache: dict[object, object] = field(default_factory=dict, compare=False, repr=False)  # derived views, once

    def chain(self, table: str, name: str) -> Chain | None:
        t = self.tables.get(table)
        return t.chains.get(name) if t else None

    def iter_chains(self) -> Iterator[Chain]:
        for t in self.tables.values():
            yield from t.chains.values()

    def iter_rules(self) -> Iterator[Rule]:
        for c in self.iter_chains():
            yield from c.rules

    @property
    def rule_count(self) -> int:
        return sum(len(c) for c in self.iter_chains())

    def has_kube_rules(self) -> bool:
        return any(c.name.startswith("KUBE-") and len(c) for c in self.iter_chains())

    def source_line(self, line: int) -> int:
        if self.line_map and 0 < line <= len(self.line_map):
            return self.line_map[line - 1] or line
        return line
