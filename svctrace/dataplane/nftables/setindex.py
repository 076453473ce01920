"""A set's or map's elements indexed for lookups by a packet's key, without parsing them all first.

kube-proxy's `service-ips` map holds one element per Service port (`10.96.0.10 . tcp . 53 : goto service-...`): at
20k Services, parsing every element into Matchers before the first lookup costs most of the first question. Elements
written the one way each of their values prints (a dotted IPv4 address, a decimal number, a protocol or service name
of the type's table) are indexed by their text as written; a packet's key is turned into those texts (`6` and
`tcp`, ...) and looked up. Only the other elements (prefixes, ranges, IPv6, hex, interface names) are parsed up front,
and those the lookup finds are parsed when found. The answer is the one `Matcher.hit` gives element by element: the
first element, in set order, whose every component equals the key, else the first whose ranges and prefixes hold it.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

from svctrace.dataplane.nftables.ir import Concat, Const, Element, Expr
from svctrace.dataplane.nftables.printer import fmt_expr
from svctrace.dataplane.nftables.values import ADDR4, ADDR6, ANY, IFNAME, SYMBOLS, BadValue, Matcher, matcher

_DOTTED = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DECIMAL = r"(?:0|[1-9]\d*)"
_NAMES: dict[str, dict[int, list[str]]] = {  # a symbol table's value -> every name that means it
    typ: {v: [n for n, v2 in table.items() if v2 == v] for v in set(table.values())} for typ, table in SYMBOLS.items()}

Matchers = tuple[Matcher, ...]


@functools.cache
def _plain(typ: str) -> str:
    """The texts of type `typ` that `matcher` reads as one exact value and `_texts` prints back as written (so equal
    values have equal texts), as a regular expression: a canonical dotted IPv4 address, a decimal without leading
    zeros, a name of the type's table."""
    if typ in (ADDR4, ANY):
        return _DOTTED
    if typ in (ADDR6, IFNAME):
        return "(?!)"
    names = sorted(SYMBOLS.get(typ, {}), key=len, reverse=True)
    return "(?:" + "|".join([*map(re.escape, names), _DECIMAL]) + ")"


def _texts(typ: str, v: Any) -> list[str]:
    """The texts a `_plain` element component of type `typ` equal to the packet's value `v` can have."""
    if isinstance(v, ipaddress.IPv4Address):
        return [str(v)] if typ in (ADDR4, ANY) else []
    if not isinstance(v, int) or typ in (ADDR4, ADDR6, ANY, IFNAME):
        return []
    table = SYMBOLS.get(typ, {})
    text = str(int(v))
    return [*_NAMES.get(typ, {}).get(int(v), ()), *([text] if text not in table else [])]


class SetIndex:
    def __init__(self, elements: Sequence[Element], types: tuple[str, ...],
                 bad: Callable[[Element, BadValue], None]) -> None:
        self.types = types
        self._elements = elements
        self._by_text: dict[tuple[str, ...], int] = {}  # texts of a plain element -> its first position
        self._parsed: dict[int, Matchers | None] = {}  # position -> matchers (None: not understood, ignored)
        self._exact: dict[tuple[Any, ...], int] = {}  # values of a parsed exact element -> its first position
        self._scan: list[int] = []  # parsed elements with a range, prefix or wildcard, in set order
        self._bad = bad
        self._all: list[tuple[Matchers, Element]] | None = None
        if not self._all_plain():
            for pos in range(len(elements)):
                if not self._add_plain(pos):
                    self._add_parsed(pos)

    def _all_plain(self) -> bool:
        """The common case, kube-proxy's maps: every element a concatenation of the same number of plain literals.
        Then one regular expression over all their texts says so, and none is parsed."""
        keys: list[tuple[Any, ...]] = [el.key.items if type(el.key) is Concat else (el.key,) for el in self._elements]
        n = len(keys[0]) if keys else 0
        if not n or (len(self.types) == 1 and n > 1) or {len(k) for k in keys} != {n} or \
                {type(c) for k in keys for c in k} != {Const}:
            return False
        texts: list[tuple[str, ...]] = [tuple([c.value for c in k]) for k in keys]  # str checked by join below
        try:
            joined = "\n".join(["\0".join(t) for t in texts])
        except TypeError:  # a number from JSON
            return False
        one = "\0".join(_plain(self.type(k)) for k in range(n))
        if re.fullmatch(f"(?:{one})(?:\n(?:{one}))*", joined) is None:
            return False
        for pos, t in enumerate(texts):
            self._by_text.setdefault(t, pos)
        return True

    def _add_plain(self, pos: int) -> bool:
        comps: tuple[Any, ...] = self.components(self._elements[pos])
        if (len(self.types) == 1 and len(comps) > 1) or any(type(c) is not Const for c in comps):
            return False
        texts: tuple[str, ...] = tuple([c.value for c in comps])  # str checked below
        one = "\0".join(_plain(self.type(k)) for k in range(len(texts)))
        if not all(type(t) is str for t in texts) or re.fullmatch(one, "\0".join(texts)) is None:
            return False
        self._by_text.setdefault(texts, pos)
        return True

    def _add_parsed(self, pos: int) -> None:
        ms = self._matchers(pos)
        if ms is None:
            return
        if all(m.exact for m in ms):
            self._exact.setdefault(tuple(m.lo for m in ms), pos)
        else:
            self._scan.append(pos)

    @staticmethod
    def components(el: Element) -> tuple[Expr, ...]:
        return el.key.items if isinstance(el.key, Concat) else (el.key,)

    def type(self, k: int) -> str:
        return self.types[k] if k < len(self.types) else ANY

    def _matchers(self, pos: int) -> Matchers | None:
        if pos in self._parsed:
            return self._parsed[pos]
        el = self._elements[pos]
        comps = self.components(el)
        ms: Matchers | None
        try:
            if len(self.types) == 1 and len(comps) > 1:
                raise BadValue(f"{fmt_expr(el.key)} does not fit the key")
            ms = tuple(matcher(self.type(k), c) for k, c in enumerate(comps))
        except BadValue as ex:
            self._bad(el, ex)
            ms = None
        self._parsed[pos] = ms
        return ms

    @property
    def all(self) -> list[tuple[Matchers, Element]]:
        """Every understood element with its matchers, in set order (for keys partly unknown)."""
        if self._all is None:
            self._all = [(ms, el) for pos, el in enumerate(self._elements)
                         if (ms := self._matchers(pos)) is not None]
        return self._all

    def get(self, vals: tuple[Any, ...]) -> Element | None:
        """The element a key of known values finds, as the walk of every element would."""
        hits: list[int] = []
        for texts in itertools.product(*(_texts(self.type(k), v) for k, v in enumerate(vals))):
            pos = self._by_text.get(texts)
            if pos is not None:
                hits.append(pos)
        try:
            pos = self._exact.get(vals)
        except TypeError:
            pos = None
        if pos is not None:
            hits.append(pos)
        if hits:
            return self._elements[min(hits)]
        for pos in self._scan:
            ms = self._parsed[pos]
            if ms is not None and all(m.hit(v) for m, v in zip(ms, vals, strict=False)):
                return self._elements[pos]
        return None
