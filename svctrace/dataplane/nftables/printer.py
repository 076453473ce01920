"""Print the IR back in nft's text syntax (rules read from JSON get their text from here). Stdlib only."""

from __future__ import annotations

from typing import Any

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
                if ":" in target:  # an IPv6 address before a port: nft prints it in brackets
                    target = f"[{target}]"
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


# -- nft -j ------------------------------------------------------------------------------------------
# The JSON `nft -j list ruleset` (nft 1.0.6, schema 1) prints for an expression or statement: the inverse
# of jsonfmt's reader for the forms kube-proxy writes.

_JSON_OPS = {"implicit": "in"}


def expr_json(e: Expr | Verdict) -> Any:
    if isinstance(e, Verdict):
        return {e.kind: {"target": e.target}} if e.target else {e.kind: None}
    if isinstance(e, Payload):
        return {"payload": {"protocol": e.proto, "field": e.field}}
    if isinstance(e, Meta):
        return {"meta": {"key": e.key}}
    if isinstance(e, Ct):
        ct: dict[str, Any] = {"key": e.key}
        if e.family:
            ct["family"] = e.family
        if e.dir:
            ct["dir"] = e.dir
        return {"ct": ct}
    if isinstance(e, Fib):
        return {"fib": {"result": e.result, "flags": list(e.flags)}}
    if isinstance(e, Numgen):
        return {"numgen": {"mode": e.mode, "mod": e.mod, "offset": e.offset}}
    if isinstance(e, Concat):
        return {"concat": [expr_json(x) for x in e.items]}
    if isinstance(e, Binop):
        return {e.op: [expr_json(e.left), expr_json(e.right)]}
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Prefix):
        return {"prefix": {"addr": e.addr, "len": e.length}}
    if isinstance(e, Range):
        return {"range": [e.lo, e.hi]}
    if isinstance(e, SetRef):
        return "@" + e.name
    if isinstance(e, AnonSet):
        return {"set": [element_json(x) for x in e.elements]}
    if isinstance(e, MapLookup):
        return {"map": {"key": expr_json(e.key), "data": expr_json(e.data)}}
    raise TypeError(f"no JSON for {e!r}")


def element_json(el: Element) -> Any:
    key = expr_json(el.key)
    if el.comment is not None:
        key = {"elem": {"val": key, "comment": el.comment}}
    return [key, expr_json(el.data)] if el.data is not None else key


def stmt_json(s: Stmt, family: str = "ip") -> dict[str, Any]:
    """`family`: the table's (`ip6`: a plain `reject` is ICMPv6 port-unreachable)."""
    if isinstance(s, Match):
        return {"match": {"op": _JSON_OPS.get(s.op, s.op), "left": expr_json(s.left), "right": expr_json(s.right)}}
    if isinstance(s, Vmap):
        return {"vmap": {"key": expr_json(s.key), "data": expr_json(s.data)}}
    if isinstance(s, VerdictStmt):
        return expr_json(s.verdict)
    if isinstance(s, Mangle):
        return {"mangle": {"key": expr_json(s.key), "value": expr_json(s.value)}}
    if isinstance(s, Nat):
        nat: dict[str, Any] = {}
        if s.family:
            nat["family"] = s.family
        if s.addr is not None:
            nat["addr"] = expr_json(s.addr)
        if s.port is not None:
            nat["port"] = expr_json(s.port)
        if s.flags:
            nat["flags"] = s.flags[0] if len(s.flags) == 1 else list(s.flags)
        return {s.kind: nat or None}
    if isinstance(s, Reject):
        if s.type is None:
            return {"reject": {"type": "icmpv6" if family == "ip6" else "icmp", "expr": "port-unreachable"}}
        return {"reject": {"type": s.type, "expr": s.code}}
    if isinstance(s, Dynset):
        return {"set": {"op": s.op, "elem": expr_json(s.key), "set": "@" + s.set}}
    raise TypeError(f"no JSON for {s!r}")
