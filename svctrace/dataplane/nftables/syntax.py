"""nft's text syntax: a tokenizer and a parser for the statements of one rule.

The grammar covered is what `nft list ruleset` prints and `nft -f` reads for kube-proxy, CNIs and
iptables-nft translations: matches (`ip daddr 10.0.0.1`, `ip saddr != 10.0.0.0/8`,
`ip daddr . meta l4proto . th dport @set`, `ct state new`, `fib daddr type local`,
`meta mark & 0x4000 == 0`), verdict maps (`... vmap @service-ips`, `numgen random mod 3 vmap {...}`),
verdicts, NAT (`dnat to`, `dnat ip to numgen ... map {...}`, `masquerade fully-random`, `redirect to
:32080`), `meta mark set`, `update @set { ip saddr }`, counters, logs, limits, comments. Anything
else becomes an `Unknown` statement kept as written; parsing resumes at the next statement keyword.
Stdlib only.
"""

from __future__ import annotations

import re
from sys import intern
from typing import NamedTuple

from svctrace.dataplane.nftables.ir import (
    AnonSet,
    Binop,
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
    Notrack,
    Numgen,
    Opaque,
    Passive,
    Payload,
    Reject,
    SetRef,
    Stmt,
    Unknown,
    Verdict,
    VerdictStmt,
    Vmap,
)


class Tok(NamedTuple):
    kind: str  # w (word) s (quoted string) { } ; , : nl
    text: str
    line: int


_TOKEN = re.compile(r'[ \t\r\f\v]+|"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{};,]|[^\s{};,"#]+|"')


class LexError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


_PAD = str.maketrans({"{": " { ", "}": " } ", ";": " ; ", ",": " , "})
_PUNCT = {"{": "{", "}": "}", ";": ";", ",": ",", ":": ":"}


def tokenize_line(text: str, line: int, out: list[Tok]) -> str | None:
    """Append the tokens of one line to `out`; return the text of a trailing `#` comment, if any."""
    if '"' not in text and "#" not in text:  # fast path: no strings, no comment
        for w in text.translate(_PAD).split():
            p = _PUNCT.get(w)
            if p is not None:
                out.append(Tok(p, p, line))
            elif w[-1] == ":" and ":" not in w[:-1]:
                out.append(Tok("w", w[:-1], line))
                out.append(Tok(":", ":", line))
            else:
                out.append(Tok("w", intern(w), line))  # one copy of each word: a ruleset repeats its words
        return None
    comment = None
    for m in _TOKEN.finditer(text):
        s = m.group()
        c = s[0]
        if c in " \t\r\f\v":
            continue
        if c == '"':
            if len(s) == 1:
                raise LexError("unterminated quoted string", line)
            out.append(Tok("s", re.sub(r"\\(.)", r"\1", s[1:-1]), line))
        elif c == "#":
            comment = s[1:].strip()
            break
        elif s in "{};,":
            out.append(Tok(s, s, line))
        elif s == ":":
            out.append(Tok(":", s, line))
        elif s.endswith(":") and ":" not in s[:-1]:
            out.append(Tok("w", s[:-1], line))
            out.append(Tok(":", ":", line))
        else:
            out.append(Tok("w", s, line))
    return comment


def tokens_text(toks: list[Tok]) -> str:
    out: list[str] = []
    for t in toks:
        if t.kind == "s":
            out.append('"' + t.text.replace('"', '\\"') + '"')
        elif t.kind == "," and out:
            out[-1] += ","
        elif t.kind == "nl":
            continue
        else:
            out.append(t.text)
    return " ".join(out)


PAYLOAD_PROTOS = frozenset({"ip", "ip6", "tcp", "udp", "udplite", "sctp", "dccp", "th", "icmp", "icmpv6", "ether",
                            "vlan", "arp", "ah", "esp", "comp", "igmp", "gre", "dst", "hbh", "frag", "mh", "rt0",
                            "rt2", "srh"})
META_BARE = frozenset({"mark", "iif", "iifname", "iiftype", "oif", "oifname", "oiftype", "skuid", "skgid", "nftrace",
                       "rtclassid", "ibriport", "obriport", "ibrname", "obrname", "pkttype", "cpu", "iifgroup",
                       "oifgroup", "cgroup", "ipsec", "iifkind", "oifkind"})
VERDICTS = frozenset({"accept", "drop", "continue", "return", "jump", "goto", "queue"})
OPS = {"==": "==", "eq": "==", "!=": "!=", "ne": "!=", "!": "!=", "<": "<", "lt": "<", ">": ">", "gt": ">", "<=": "<=",
       "le": "<=", ">=": ">=", "ge": ">="}
BINOPS = {"&": "&", "and": "&", "|": "|", "or": "|", "^": "^", "xor": "^", "<<": "<<", "lshift": "<<", ">>": ">>",
          "rshift": ">>"}
NAT_FLAGS = frozenset({"random", "fully-random", "persistent", "netmap", "prefix"})
STMT_HEADS = (PAYLOAD_PROTOS | META_BARE | VERDICTS) | {
    "meta", "ct", "fib", "numgen", "jhash", "symhash", "counter", "log", "limit", "quota", "reject", "notrack",
    "dnat", "snat", "masquerade", "redirect", "comment", "update", "add", "delete", "xt", "tproxy", "fwd", "dup",
    "flow", "synproxy", "socket", "osf", "ipsec", "set", "secmark", "rt", "exthdr", "tunnel"}


class ParseFail(Exception):
    pass


def skip_group(toks: list[Tok], i: int) -> int:
    """The position after the `{ ... }` group (nested groups included) that starts at or after `i`."""
    depth = 0
    while i < len(toks):
        k = toks[i].kind
        i += 1
        if k == "{":
            depth += 1
        elif k == "}":
            depth -= 1
            if depth <= 0:
                return i
    return i


class StmtParser:
    """Statements of one rule from its tokens (no newlines, braces balanced)."""

    def __init__(self, toks: list[Tok]) -> None:
        self.t = toks
        self.i = 0
        self.comment: str | None = None
        self.problems: list[str] = []

    # -- token helpers
    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def kind(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.t[j].kind if j < len(self.t) else None

    def pw(self, k: int = 0) -> str | None:
        """The word at offset k (None for punctuation or the end)."""
        j = self.i + k
        if j < len(self.t):
            t = self.t[j]
            return t.text if t.kind == "w" else None
        return None

    def next(self) -> Tok:
        j = self.i
        if j >= len(self.t):
            raise ParseFail("unexpected end of rule")
        self.i = j + 1
        return self.t[j]

    def word(self) -> str:
        t = self.next()
        if t.kind not in ("w", "s"):
            raise ParseFail(f"expected a word, got {t.text!r}")
        return t.text

    def expect(self, kind: str) -> None:
        t = self.next()
        if t.kind != kind:
            raise ParseFail(f"expected {kind!r}, got {t.text!r}")

    # -- statements
    def parse(self) -> list[Stmt]:
        out: list[Stmt] = []
        while self.i < len(self.t):
            start = self.i
            try:
                s = self.stmt()
            except (ParseFail, ValueError) as e:
                self.i = start + 1
                while self.i < len(self.t):
                    t = self.t[self.i]
                    if t.kind == "w" and t.text in STMT_HEADS and t.text not in ("set", "add", "delete"):
                        break
                    if t.kind == "{":  # skip a brace group whole
                        self.i = skip_group(self.t, self.i)
                        continue
                    self.i += 1
                text = tokens_text(self.t[start:self.i])
                kind = "target" if text.startswith("xt target") else "match"
                self.problems.append(f"not understood: {text!r} ({e})")
                out.append(Unknown(text, kind))
                continue
            if s is not None:
                out.append(s)
        return out

    def stmt(self) -> Stmt | None:
        w = self.pw()
        t = self.peek()
        if t is not None and t.kind != "w":
            raise ParseFail(f"unexpected {t.text!r}")
        assert w is not None
        if w == "comment":
            self.i += 1
            self.comment = self.word()
            return None
        if w in ("accept", "drop", "continue", "return"):
            self.i += 1
            return VerdictStmt(Verdict(w))
        if w in ("jump", "goto"):
            self.i += 1
            return VerdictStmt(Verdict(w, self.word()))
        if w == "queue":
            self.i += 1
            while self.pw() in ("num", "to", "flags", "bypass", "fanout", "bypass,fanout") or (
                    self.pw() or "").replace("-", "").isdigit():
                self.i += 1
            return VerdictStmt(Verdict("queue"))
        if w == "counter":
            self.i += 1
            if self.pw() == "name":
                self.i += 2
            while self.pw() in ("packets", "bytes"):
                self.i += 2
            return Passive("counter")
        if w == "log":
            self.i += 1
            while self.pw() in ("prefix", "level", "group", "snaplen", "queue-threshold", "flags"):
                self.i += 2
                while self.kind() == ",":
                    self.i += 2
            return Passive("log")
        if w in ("limit", "quota"):
            return self._limit()
        if w == "ct" and self.pw(1) == "count":
            self.i += 2
            text = ["ct count"]
            while self.pw() is not None and (self.pw() == "over" or (self.pw() or "")[:1].isdigit()):
                text.append(self.word())
            return Limit(" ".join(text))
        if w == "reject":
            return self._reject()
        if w == "notrack":
            self.i += 1
            return Notrack()
        if w in ("dnat", "snat"):
            return self._nat(w)
        if w in ("masquerade", "redirect"):
            return self._masq(w)
        if w in ("update", "add", "delete") and (self.pw(1) or "").startswith("@"):
            self.i += 1
            name = self.word()[1:]
            self.expect("{")
            key = self.value_expr()
            while self.pw() in ("timeout", "expires", "counter", "packets", "bytes", "limit"):
                self.i += 1
                if self.pw() is not None and self.pw() not in ("timeout", "counter"):
                    self.i += 1
            self.expect("}")
            return Dynset(w, name, key)
        if w == "set" and self.pw(1) in ("update", "add"):  # old syntax: set update ip saddr timeout 3h @s
            self.i += 2
            key = self.value_expr()
            while self.pw() == "timeout":
                self.i += 2
            name = self.word()
            return Dynset("update", name.lstrip("@"), key)
        if w == "xt":
            self.i += 1
            kind = self.word()
            name = self.word()
            self.problems.append(f"xt {kind} {name}: an iptables extension (iptables-nft) that nft shows untranslated; "
                                 "not modelled")
            return Unknown(f'xt {kind} "{name}"', "target" if kind == "target" else "match")
        if w in ("tproxy", "fwd", "dup", "flow", "synproxy", "secmark"):
            raise ParseFail(f"{w} is not modelled")
        # an expression: a match, a vmap or a `set` statement
        left = self.expr()
        nw = self.pw()
        if nw == "vmap":
            self.i += 1
            return Vmap(left, self.set_source())
        if nw == "set" and isinstance(left, Meta | Ct):
            self.i += 1
            return Mangle(left, self.value_expr())
        op = "implicit"
        if nw in OPS:
            op = OPS[nw]
            self.i += 1
        elif self.peek() is None:
            raise ParseFail("a match without a value")
        right = self.rhs()
        return Match(left, op, right)

    def _limit(self) -> Stmt:
        start = self.i
        self.i += 1
        while True:
            w = self.pw()
            if w is None:
                break
            if w in ("rate", "over", "until", "burst", "packets", "bytes", "kbytes", "mbytes", "used", "inv") or \
                    w[:1].isdigit() or "/" in w:
                self.i += 1
                continue
            break
        return Limit(tokens_text(self.t[start:self.i]))

    def _reject(self) -> Reject:
        self.i += 1
        if self.pw() != "with":
            return Reject()
        self.i += 1
        kind = self.word()
        if kind == "tcp":
            if self.pw() == "reset":
                self.i += 1
            return Reject("tcp-reset")
        if kind in ("icmp", "icmpv6", "icmpx", "icmp6"):
            if self.pw() == "type":
                self.i += 1
            code = self.word()
            return Reject("icmpv6" if kind == "icmp6" else kind, code)
        raise ParseFail(f"reject with {kind}")

    def _nat(self, kind: str) -> Nat:
        self.i += 1
        family = None
        if self.pw() in ("ip", "ip6") and self.pw(1) in ("to", "addr", "prefix"):
            family = self.word()
        concat_data = False
        if self.pw() == "addr" and self.pw(1) == "." and self.pw(2) == "port":
            self.i += 3
            concat_data = True
        elif self.pw() == "prefix":
            self.i += 1
        if self.pw() == "to":
            self.i += 1
        addr: Expr | None = None
        port: Expr | None = None
        w = self.pw()
        if w is not None and w not in NAT_FLAGS and not self._starts_value_expr(w):
            self.i += 1
            addr, port = split_hostport(w)
        elif w is not None and w not in NAT_FLAGS:
            addr = self.value_expr()
            if concat_data and not isinstance(addr, MapLookup):
                concat_data = False
        flags = self._nat_flags()
        return Nat(kind, family, addr, port, flags)

    def _masq(self, kind: str) -> Nat:
        self.i += 1
        port: Expr | None = None
        if self.pw() == "to":
            self.i += 1
            w = self.word()
            _, port = split_hostport(w if w.startswith(":") else ":" + w)
        return Nat(kind, None, None, port, self._nat_flags())

    def _nat_flags(self) -> tuple[str, ...]:
        flags: list[str] = []
        while self.pw() in NAT_FLAGS:
            flags.append(self.word())
            while self.kind() == "," and self.pw(1) in NAT_FLAGS:
                self.i += 1
                flags.append(self.word())
        return tuple(flags)

    # -- expressions
    def _starts_value_expr(self, w: str) -> bool:
        return w in PAYLOAD_PROTOS or w in META_BARE or w in ("meta", "ct", "fib", "numgen", "jhash", "symhash") \
            or w.startswith("@")

    def primary(self) -> Expr:
        w = self.word()
        if w == "meta":
            return Meta(self.word())
        if w in META_BARE:
            return Meta(w)
        if w == "ct":
            d = None
            if self.pw() in ("original", "reply"):
                d = self.word()
            key = self.word()
            if key in ("ip", "ip6") and self.pw() in ("saddr", "daddr"):
                return Ct(self.word(), d, key)
            return Ct(key, d)
        if w == "fib":
            flags = [self.word()]
            while self.pw() == ".":
                self.i += 1
                flags.append(self.word())
            return Fib(tuple(flags), self.word())
        if w == "numgen":
            mode = self.word()
            if self.word() != "mod":
                raise ParseFail("numgen without mod")
            mod = int(self.word(), 0)
            off = 0
            if self.pw() == "offset":
                self.i += 1
                off = int(self.word(), 0)
            return Numgen(mode, mod, off)
        if w in ("jhash", "symhash"):
            if w == "jhash":
                self.expr()
            if self.word() != "mod":
                raise ParseFail(f"{w} without mod")
            mod = int(self.word(), 0)
            off = 0
            while self.pw() in ("seed", "offset"):
                k = self.word()
                v = int(self.word(), 0)
                if k == "offset":
                    off = v
            return Hash(w, mod, off)
        if w in ("socket", "osf", "rt", "ipsec", "exthdr", "tunnel"):
            parts = [w]
            while self.pw() is not None and re.fullmatch(r"[a-z][a-z0-9-]*", self.pw() or "") and \
                    self.pw() not in STMT_HEADS and self.pw() not in OPS and self.pw() not in ("vmap", "set", "map"):
                parts.append(self.word())
                if len(parts) >= 4:
                    break
            return Opaque(" ".join(parts))
        if w in PAYLOAD_PROTOS:
            f = self.word()
            if w in ("tcp", "ip6", "ip") and f == "option":
                return Opaque(f"{w} option {self.word()} {self.word()}")
            return Payload(w, f)
        raise ParseFail(f"{w!r} is not an expression")

    def expr(self) -> Expr:
        items = [self._binop(self.primary())]
        while self.pw() == ".":
            self.i += 1
            items.append(self._binop(self.primary()))
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def _binop(self, left: Expr) -> Expr:
        while self.pw() in BINOPS:
            op = BINOPS[self.word()]
            left = Binop(op, left, self.atom())
        return left

    def atom(self) -> Const:
        t = self.next()
        if t.kind not in ("w", "s"):
            raise ParseFail(f"expected a value, got {t.text!r}")
        if t.kind == "w" and t.text in VERDICTS:
            raise ParseFail(f"expected a value, got {t.text!r}")
        return Const(t.text)

    def rhs(self) -> Expr:
        t = self.peek()
        if t is None:
            raise ParseFail("missing value")
        if t.kind == "{":
            return self.anon_set()
        if t.kind == "w" and t.text.startswith("@"):
            self.i += 1
            return SetRef(t.text[1:])
        first: Expr = self.atom()
        if self.pw() == ".":
            items = [first]
            while self.pw() == ".":
                self.i += 1
                items.append(self.atom())
            return Concat(tuple(items))
        if self.kind() == ",":
            items = [first]
            while self.kind() == ",":
                self.i += 1
                items.append(self.atom())
            return ListLit(tuple(items))
        return first

    def value_expr(self) -> Expr:
        """A value on the right of `set` or `to`: an expression (maybe `... map {...}`) or literals."""
        w = self.pw()
        if w is not None and self._starts_value_expr(w) and not w.startswith("@"):
            e: Expr = self.expr()
        else:
            e = self.atom()
            if self.pw() == ".":
                items: list[Expr] = [e]
                while self.pw() == ".":
                    self.i += 1
                    items.append(self.atom())
                e = Concat(tuple(items))
            e = self._binop(e)
        if self.pw() == "map":
            self.i += 1
            e = MapLookup(e, self.set_source())
        return e

    def set_source(self) -> SetRef | AnonSet:
        t = self.peek()
        if t is not None and t.kind == "w" and t.text.startswith("@"):
            self.i += 1
            return SetRef(t.text[1:])
        if t is not None and t.kind == "{":
            return self.anon_set()
        raise ParseFail("expected @set or { ... }")

    def anon_set(self) -> AnonSet:
        self.expect("{")
        els = parse_elements(self)
        return AnonSet(tuple(els))


def parse_elements(p: StmtParser) -> list[Element]:
    """Elements up to and including the closing brace: `key [comment ".."] [timeout T] [: data], ...`."""
    out: list[Element] = []
    while True:
        t = p.peek()
        if t is None:
            raise ParseFail("set elements without a closing brace")
        if t.kind in ("nl", ","):
            p.i += 1
            continue
        if t.kind == "}":
            p.i += 1
            return out
        key: Expr = p.atom()
        if p.pw() == ".":
            items: list[Expr] = [key]
            while p.pw() == ".":
                p.i += 1
                items.append(p.atom())
            key = Concat(tuple(items))
        comment = None
        while p.pw() in ("comment", "timeout", "expires", "counter"):
            w = p.word()
            if w == "comment":
                comment = p.word()
            elif w == "counter":
                while p.pw() in ("packets", "bytes"):
                    p.i += 2
            else:
                p.word()
        data: Expr | Verdict | None = None
        if p.kind() == ":":
            p.i += 1
            dw = p.pw()
            if dw in ("accept", "drop", "continue", "return"):
                p.i += 1
                data = Verdict(dw)
            elif dw in ("jump", "goto"):
                p.i += 1
                data = Verdict(dw, p.word())
            else:
                d: Expr = p.atom()
                if p.pw() == ".":
                    ditems: list[Expr] = [d]
                    while p.pw() == ".":
                        p.i += 1
                        ditems.append(p.atom())
                    d = Concat(tuple(ditems))
                data = d
        out.append(Element(key, data, comment))


def split_hostport(w: str) -> tuple[Expr | None, Expr | None]:
    """`10.0.0.1:80`, `[fd00::1]:80`, `:8080`, `10.0.0.1`, `fd00::1`, `10.0.0.1-10.0.0.9:80-90`."""
    if w.startswith("["):
        end = w.find("]")
        host, rest = w[1:end], w[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif w.startswith(":"):
        host, port = "", w[1:]
    elif w.count(":") == 1:
        host, port = w.split(":")
    else:
        host, port = w, ""
    return (Const(host) if host else None), (Const(port) if port else None)


def parse_rule_tokens(toks: list[Tok]) -> tuple[list[Stmt], str | None, list[str]]:
    p = StmtParser([t for t in toks if t.kind != "nl"])
    stmts = p.parse()
    return stmts, p.comment, p.problems
