"""`ipset save` / `ipset list` dumps, and membership tests for `-m set --match-set NAME FLAGS`."""

from __future__ import annotations

import ipaddress
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from svctrace.dataplane.addr import addr_key
from svctrace.errors import InputError, Warn, shorten
from svctrace.model.loading import keeps_objects
from svctrace.model.packet import IPSetDef, Packet


@dataclass
class IPSetListing(IPSetDef):
    """An ipset as the dump lists it: where it was declared, and the line each member was read from (for
    the chain browser, which shows a set's members as rules with their lines)."""

    line: int = 0
    text: str = ""  # the create (or Name:) line
    typed: bool = False  # a create or Type: line gave its type (else `type` is the default hash:ip)
    # each member as written, when the reader found every one written in the one way of writing its value (`_canonical`)
    canonical: list[str] | None = field(default=None, repr=False, compare=False)
    _lines: list[tuple[int, str]] = field(default_factory=list, repr=False, compare=False)
    # What `members` and `member_lines` hold, not split yet (the reader of `ipset save` leaves them so: a question
    # looks a member up by its text): (each member as written, their lines, the first one's line number).
    _pending: tuple[list[str], str, int] | None = field(default=None, repr=False, compare=False)

    @property  # type: ignore[misc]  # a field of IPSetDef, split when first read
    def members(self) -> list[tuple[str, ...]]:
        """The members, each split into its dimensions (`10.0.0.1,tcp:80` -> ("10.0.0.1", "tcp:80"))."""
        self._fill()
        return self._members

    @members.setter
    def members(self, value: list[tuple[str, ...]]) -> None:
        self._members = value

    @property
    def member_lines(self) -> list[tuple[int, str]]:
        """(line, line text), one per member."""
        self._fill()
        return self._lines

    @member_lines.setter
    def member_lines(self, value: list[tuple[int, str]]) -> None:
        self._lines = value

    @property
    def size(self) -> int:
        """How many members (without splitting them)."""
        return len(self._pending[0]) if self._pending is not None else len(self._members)

    def _fill(self) -> None:
        if self._pending is not None:
            texts, block, first = self._pending
            self._pending = None
            self._members = [tuple(t.split(",")) for t in texts]
            self._lines = list(zip(range(first, first + len(texts)), block.splitlines(), strict=True))

    def _shown(self) -> list[tuple[str, object]]:
        return [("name", self.name), ("type", self.type), ("family", self.family), ("members", self.members),
                ("line", self.line), ("text", self.text), ("typed", self.typed), ("member_lines", self.member_lines)]

    def __repr__(self) -> str:
        return f"IPSetListing({', '.join(f'{k}={v!r}' for k, v in self._shown())})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, IPSetListing)
        return self._shown() == other._shown()

    __hash__ = None  # type: ignore[assignment]  # as a dataclass's, which compares by value

    def add(self, member: str, no: int, line: str) -> None:
        self.members.append(tuple(member.split(",")))
        self.member_lines.append((no, line))


# `ipset save` as the tool prints it: a `create NAME TYPE ...` line, then an `add NAME MEMBER` line per member.
_CREATE = re.compile(r"^create (\S+) (\S+)((?: \S+)*)$", re.M)


@keeps_objects
def parse_ipset(text: str, source: str = "<ipset>") -> tuple[dict[str, IPSetListing], list[Warn]]:
    """Read `ipset save` (create/add lines) or `ipset list` (Name:/Type:/Members:) output."""
    fast = _parse_save(text, source)
    if fast is not None:
        return fast
    sets: dict[str, IPSetListing] = {}
    warns: list[Warn] = []
    current: IPSetListing | None = None
    in_members = False
    seen_any = False
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if parts[0] == "create" and len(parts) >= 3:
            fam = "inet6" if "inet6" in parts else "inet"
            sets[parts[1]] = IPSetListing(parts[1], parts[2], fam, line=no, text=line, typed=True)
            seen_any = True
        elif parts[0] == "add" and len(parts) >= 3:
            s = sets.get(parts[1])
            if s is None:
                s = sets[parts[1]] = IPSetListing(parts[1], "hash:ip", line=no)
                warns.append(Warn(f"ipset {parts[1]} has members but no create line", source, no, "ipset"))
            s.add(parts[2], no, line)
            seen_any = True
        elif line.startswith("Name:") and len(parts) >= 2:
            current = sets.setdefault(parts[1], IPSetListing(parts[1], "hash:ip", line=no, text=line))
            in_members = False
            seen_any = True
        elif line.startswith("Type:") and current is not None and len(parts) >= 2:
            current.type = parts[1]
            current.typed = True
        elif line.startswith("Header:") and current is not None and "inet6" in line:
            current.family = "inet6"
        elif line.startswith("Members:"):
            in_members = True
        elif in_members and current is not None:
            if re.fullmatch(r"\.{2,}|…", parts[0]):
                warns.append(Warn(f"ipset {current.name}: members elided here", source, no, "ipset"))
                continue
            current.add(parts[0], no, line)
        else:
            warns.append(Warn(f"not ipset syntax, skipped: {shorten(line, 60)}", source, no, "ipset"))
    if not seen_any and text.strip():
        raise InputError("no ipset create/add lines found: expected `ipset save` output", source=source, line=1)
    return sets, warns


def _parse_save(text: str, source: str) -> tuple[dict[str, IPSetListing], list[Warn]] | None:
    """`parse_ipset` of what `ipset save` prints (`_CREATE`, single spaces, each set's members right after it), read
    a set at a time by regular expressions instead of line by line; None for any other text."""
    if not text.startswith("create "):
        return None
    if not text.endswith("\n"):
        text += "\n"
    creates = list(_CREATE.finditer(text))
    if not creates or creates[0].start() != 0:
        return None
    sets: dict[str, IPSetListing] = {}
    no = 1
    for i, m in enumerate(creates):
        name, typ, _ = m.groups()
        line = m.group(0)
        s = sets[name] = IPSetListing(name, typ, "inet6" if "inet6" in line.split() else "inet", line=no, text=line,
                                      typed=True)
        block = text[m.end() + 1:creates[i + 1].start() if i + 1 < len(creates) else len(text)]
        n = block.count("\n")
        if n:
            lines = block.splitlines()
            if n != len(lines):
                return None
            kinds = typ.split(":", 1)[1].split(",") if typ.startswith("hash:") else []
            pat = _canonical(kinds) if kinds else None
            texts = re.findall(rf"^add {re.escape(name)} ({pat.pattern[1:-1]})$", block, re.M) if pat else []
            if len(texts) == len(lines):
                s.canonical = texts
            else:
                texts = re.findall(rf"^add {re.escape(name)} (\S+)$", block, re.M)
                if len(texts) != len(lines):
                    return None  # a line of another shape (blank, a comment, another set's, options, spaces around)
            s._pending = (texts, block, no + 1)
        no += 1 + n
    return sets, []


def _dim_value(pkt: Packet, flag: str, kind: str) -> str | None:
    side_src = flag == "src"
    if kind in ("ip", "net"):
        return str(pkt.src if side_src else pkt.dst)
    if kind == "port":
        port = pkt.sport if side_src else pkt.dport
        return None if port is None else f"{pkt.proto}:{port}"
    if kind == "iface":
        return None
    if kind == "mark":
        return str(pkt.mark)
    return None


def _member_dim_ok(member: str, value: str, kind: str, any_proto: bool = False) -> bool:
    if kind in ("ip", "net"):
        try:
            return ipaddress.ip_address(value) in ipaddress.ip_network(member.split(" ")[0], strict=False)
        except ValueError:
            return False
    if kind == "port":
        proto, _, port = value.partition(":")
        m = member
        mproto = "tcp"
        if ":" in m:
            mproto, m = m.split(":", 1)
        if any_proto:  # bitmap:port stores bare port numbers, for whatever protocol the rule matched
            mproto = proto
        if "-" in m:
            lo, hi = m.split("-", 1)
            return mproto == proto and int(lo) <= int(port) <= int(hi)
        try:
            return mproto == proto and int(m) == int(port)
        except ValueError:
            return False
    return member == value


def member_of(s: IPSetDef, pkt: Packet, flags: list[str]) -> bool | None:
    """Whether the packet's (flags) tuple is in the set; None when the set type is not modelled."""
    typ = s.type.split(":", 1)[1] if ":" in s.type else s.type
    kinds = typ.split(",")
    if len(flags) < len(kinds):
        flags = flags + [flags[-1]] * (len(kinds) - len(flags))
    values = []
    for flag, kind in zip(flags, kinds, strict=False):
        v = _dim_value(pkt, flag, kind)
        if v is None:
            return None
        values.append(v)
    bitmap = s.type.startswith("bitmap:")
    index = cached_index(s, "members", lambda: _MemberIndex(s, kinds, bitmap))
    if index.texts and ",".join(values) in index.texts:
        return True
    key = _exact_key(values, kinds, bitmap, member=False)
    if key is not None and key in index.exact:
        return True
    return any(all(_member_dim_ok(member[i], values[i], kinds[i], bitmap) for i in range(len(kinds)))
               for member in index.rest)


# A member's text when it is the one way of writing its value, as `_dim_value` writes a packet's: a dotted IPv4
# address inet_pton reads (0-255, no leading zero) and `tcp:80`/`udp:80`/`sctp:80` (no leading zero). Equal such
# texts are equal members and unequal ones unequal, so a set of them answers without parsing a member.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_DIM_TEXT = {"ip": rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", "port": r"(?:tcp|udp|sctp):(?:[1-9]\d{0,4}|0)"}
_DIM_TEXT["net"] = _DIM_TEXT["ip"]
_CANONICAL: dict[tuple[str, ...], re.Pattern[str]] = {}


def _canonical(kinds: list[str]) -> re.Pattern[str] | None:
    """The lines (`,`-joined members, one a line) written only in `_DIM_TEXT`'s forms, for a set of these kinds."""
    if not all(k in _DIM_TEXT for k in kinds):
        return None
    key = tuple(kinds)
    pat = _CANONICAL.get(key)
    if pat is None:
        pat = _CANONICAL[key] = re.compile("^" + ",".join(_DIM_TEXT[k] for k in kinds) + "$", re.M)
    return pat


class _MemberIndex:
    """A set's members split once: those written in the one way of writing their value (`_DIM_TEXT`), as their
    texts; the others every dimension of which is one value (an address, a port), as keys to look up; and the rest
    (networks, port ranges, what does not parse), tested one by one."""

    def __init__(self, s: IPSetDef, kinds: list[str], bitmap: bool) -> None:
        self.exact: set[tuple[object, ...]] = set()
        self.rest: list[tuple[str, ...]] = []
        # a dict of texts, not a set: a dict of strings is no container to the garbage collector, which would
        # otherwise go through every member at each of its next collections (milliseconds at 20k Services)
        self.texts: dict[str, None] = {}
        pat = None if bitmap else _canonical(kinds)
        canonical = getattr(s, "canonical", None)
        if pat is not None and canonical is not None and len(canonical) == _size(s) and all(
                t.count(",") + 1 == len(kinds) for t in canonical[:1]):
            self.texts = dict.fromkeys(canonical)  # the reader found each written so
            return
        members = s.members
        if pat is not None:
            n = len(kinds)
            joined = [",".join(m) if len(m) == n else "" for m in members]  # a text of another length does not match
            lines = "\n".join(joined)
            if lines.count("\n") == len(joined) - 1:  # no member's text holds a line break
                self.texts = dict.fromkeys(pat.findall(lines))
            # the members whose text is not in the set of texts take the keys below (none when every text is)
            members = [] if len(self.texts) == len(members) else [
                m for m, text in zip(members, joined, strict=True) if text not in self.texts]
        for member in members:
            if len(member) < len(kinds):
                continue
            key = _exact_key(list(member[:len(kinds)]), kinds, bitmap, member=True)
            if key is None:
                self.rest.append(member)
            else:
                self.exact.add(key)


def _exact_key(values: list[str], kinds: list[str], bitmap: bool, *, member: bool) -> tuple[object, ...] | None:
    """The one value each dimension holds, in a form equal for equal values (`_member_dim_ok` compares these);
    None when a member's dimension is a network, a range, or does not parse."""
    key: list[object] = []
    for v, kind in zip(values, kinds, strict=True):
        try:
            if kind in ("ip", "net"):
                text = v.split(" ")[0] if member else v
                if "/" in text:
                    return None
                key.append(addr_key(text))
            elif kind == "port":
                proto, port = v.split(":", 1) if ":" in v else ("tcp", v)
                if "-" in port:
                    return None
                key.append(int(port) if bitmap else (proto, int(port)))
            else:
                key.append(v)
        except ValueError:
            return None
    return tuple(key)


def _size(s: IPSetDef) -> int:
    return s.size if isinstance(s, IPSetListing) else len(s.members)


_INDEXES: dict[tuple[int, str], tuple[weakref.ref[IPSetDef], int, Any]] = {}
T = TypeVar("T")


def cached_index(s: IPSetDef, what: str, build: Callable[[], T]) -> T:
    """An index of `s`'s members built once per set (and again when members were added), kept while `s` lives."""
    key = (id(s), what)
    hit = _INDEXES.get(key)
    if hit is not None and hit[0]() is s and hit[1] == _size(s):
        return cast(T, hit[2])
    index = build()

    def forget(_: object) -> None:
        _INDEXES.pop(key, None)

    _INDEXES[key] = (weakref.ref(s, forget), _size(s), index)
    return index
