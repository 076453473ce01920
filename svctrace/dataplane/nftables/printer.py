"""Print the IR back in nft's text syntax (rules read from JSON get their text from here). Stdlib only."""

from __future__ import annotations

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
    Prefix,
    Range,
    Reject,
    SetRef,
    Stmt,
    Unknown,
    Verdict,
    VerdictStmt,
    Vmap,
)


def _marky(e: Expr) -> bool:
    """A mark (or a mark masked): nft prints the numbers next to it as 0x%08x."""
    if isinstance(e, Binop):
        return _marky(e.left)
    return isinstance(e, Meta | Ct) and e.key == "mark"


def _hex(e: Expr) -> str:
    return f"0x{e.value:08x}" if isinstance(e, Const) and isinstance(e.value, int) else fmt_expr(e)


def _const(v: str | int) -> str:
    if isinstance(v, int):
        return str(v)
    if v == "" or any(c in v for c in ' \t{};,"#'):
        return '"' + v.replace('"', '\\"') + '"'
    return v


def fmt_expr(e: Expr | Verdict) -> str:
    if isinstance(e, Verdict):
        return e.text()
    if isinstance(e, Payload):
        return f"{e.proto} {e.field}"
    if isinstance(e, Meta):
        return f"meta {e.key}"
    if isinstance(e, Ct):
        parts = ["ct"]
        if e.dir:
            parts.append(e.dir)
        if e.family:
            parts.append(e.family)
        parts.append(e.key)
        return " ".join(parts)
    if isinstance(e, Fib):
        return f"fib {' . '.join(e.flags)} {e.result}"
    if isinstance(e, Numgen):
        return f"numgen {e.mode} mod {e.mod}" + (f" offset {e.offset}" if e.offset else "")
    if isinstance(e, Hash):
        return f"{e.kind} mod {e.mod}" + (f" offset {e.offset}" if e.offset else "")
    if isinstance(e, Concat):
        return " . ".join(fmt_expr(x) for x in e.items)
    if isinstance(e, Binop):
        right = _hex(e.right) if _marky(e.left) else fmt_expr(e.right)
        return f"{fmt_expr(e.left)} {e.op} {right}"
    if isinstance(e, Const):
        return _const(e.value)
    if isinstance(e, Prefix):
        return f"{e.addr}/{e.length}"
    if isinstance(e, Range):
        return f"{e.lo}-{e.hi}"
    if isinstance(e, ListLit):
        return ",".join(fmt_expr(x) for x in e.items)
    if isinstance(e, SetRef):
        return f"@{e.name}"
    if isinstance(e, AnonSet):
        return "{ " + ", ".join(fmt_element(x) for x in e.elements) + " }"
    if isinstance(e, MapLookup):
        return f"{fmt_expr(e.key)} map {fmt_expr(e.data)}"
    if isinstance(e, Opaque):
        return e.text
    raise TypeError(f"not an expression: {e!r}")


def fmt_element(el: Element) -> str:
    out = fmt_expr(el.key)
    if el.comment:
        out += f' comment "{el.comment}"'
    if el.data is not None:
        out += " : " + fmt_expr(el.data)
    return out


def fmt_stmt(s: Stmt) -> str:
    if isinstance(s, Match):
        op = "" if s.op == "implicit" or (s.op == "==" and not isinstance(s.left, Binop)) else s.op + " "
        right = _hex(s.right) if _marky(s.left) else fmt_expr(s.right)
        return f"{fmt_expr(s.left)} {op}{right}"
    if isinstance(s, Vmap):
        return f"{fmt_expr(s.key)} vmap {fmt_expr(s.data)}"
    if isinstance(s, VerdictStmt):
        return s.verdict.text()
    if isinstance(s, Mangle):
        return f"{fmt_expr(s.key)} set {fmt_expr(s.value)}"
    if isinstance(s, Nat):
        if s.kind in ("masquerade", "redirect"):
            out = s.kind
            if s.port is not None:
                out += f" to :{fmt_expr(s.port)}"
        else:
            out = s.kind + (f" {s.family}" if s.family else "")
            target = fmt_expr(s.addr) if s.addr is not None else ""
            if s.port is not None:
                target += f":{fmt_expr(s.port)}"
            out += f" to {target}"
        if s.flags:
            out += " " + ",".join(s.flags)
        return out
    if isinstance(s, Reject):
        if s.type is None:
            return "reject"
        if s.type == "tcp-reset":
            return "reject with tcp reset"
        return f"reject with {s.type} {s.code}"
    if isinstance(s, Dynset):
        return f"{s.op} @{s.set} {{ {fmt_expr(s.key)} }}"
    if isinstance(s, Passive):
        return s.kind
    if isinstance(s, Limit):
        return s.text
    if isinstance(s, Notrack):
        return "notrack"
    if isinstance(s, Unknown):
        return s.text
    raise TypeError(f"not a statement: {s!r}")


def fmt_rule(stmts: list[Stmt], comment: str | None = None) -> str:
    out = " ".join(fmt_stmt(s) for s in stmts)
    if comment:
        out += f' comment "{comment}"'
    return out
