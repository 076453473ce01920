"""Read `nft -j list ruleset` (libnftables JSON, schema 1) into an `NftRuleset`. Stdlib only."""

from __future__ import annotations

import json
import re
from typing import Any

from svctrace.dataplane.nftables.ir import (
    AnonSet,
    Binop,
    Chain,
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
    NftRuleset,
    Notrack,
    NSet,
    Numgen,
    Opaque,
    Passive,
    Payload,
    Prefix,
    Range,
    Reject,
    Rule,
    SetRef,
    Stmt,
    Table,
    Unknown,
    Verdict,
    VerdictStmt,
    Vmap,
)
from svctrace.dataplane.nftables.printer import fmt_rule
from svctrace.dataplane.nftables.text import finish_ruleset
from svctrace.dataplane.nftables.values import TYPE_NAMES, expr_type
from svctrace.errors import InputError, shorten

_VERDICT_KEYS = ("accept", "drop", "continue", "return", "jump", "goto", "queue")
_OPS = {"==": "==", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "in": "implicit", "eq": "==",
        "ne": "!=", "lt": "<", "gt": ">", "le": "<=", "ge": ">="}


class _Bad(ValueError):
    pass


def _verdict(d: dict[str, Any]) -> Verdict | None:
    if len(d) != 1:
        return None
    k, v = next(iter(d.items()))
    if k not in _VERDICT_KEYS:
        return None
    if k in ("jump", "goto"):
        if not isinstance(v, dict) or "target" not in v:
            raise _Bad(f"{k} without a target")
        return Verdict(k, str(v["target"]))
    return Verdict(k)


def jexpr(x: Any) -> Expr:
    if isinstance(x, bool):
        return Const(int(x))
    if isinstance(x, int):
        return Const(x)
    if isinstance(x, str):
        return SetRef(x[1:]) if x.startswith("@") else Const(x)
    if isinstance(x, list):
        return ListLit(tuple(jexpr(i) for i in x))
    if not isinstance(x, dict) or len(x) != 1:
        raise _Bad(f"not an expression: {shorten(json.dumps(x), 80)}")
    k, v = next(iter(x.items()))
    if k == "payload":
        if "protocol" in v:
            return Payload(str(v["protocol"]), str(v["field"]))
        return Opaque(f"@{v.get('base')},{v.get('offset')},{v.get('len')}")
    if k == "meta":
        return Meta(str(v["key"]))
    if k == "ct":
        return Ct(str(v["key"]), v.get("dir"), v.get("family"))
    if k == "fib":
        flags = v.get("flags", [])
        return Fib(tuple([flags] if isinstance(flags, str) else flags), str(v.get("result")))
    if k == "numgen":
        return Numgen(str(v.get("mode", "random")), int(v["mod"]), int(v.get("offset", 0)))
    if k in ("jhash", "symhash"):
        return Hash(k, int(v["mod"]), int(v.get("offset", 0)))
    if k == "concat":
        return Concat(tuple(jexpr(i) for i in v))
    if k in ("&", "|", "^", "<<", ">>"):
        return Binop(k, jexpr(v[0]), jexpr(v[1]))
    if k == "prefix":
        return Prefix(str(v["addr"]), int(v["len"]))
    if k == "range":
        lo, hi = v
        return Range(lo if isinstance(lo, int | str) else json.dumps(lo), hi if isinstance(hi, int | str) else
                     json.dumps(hi))
    if k == "set":
        items = v if isinstance(v, list) else [v]
        return AnonSet(tuple(jelement(i) for i in items))
    if k == "map":
        data = jexpr(v["data"])
        if not isinstance(data, SetRef | AnonSet):
            raise _Bad("map data is not a set")
        return MapLookup(jexpr(v["key"]), data)
    if k == "elem":
        return jexpr(v["val"])
    return Opaque(f"{k} {json.dumps(v)}")


def jelement(x: Any) -> Element:
    """A set element: a value, {"elem": {...}} with a comment, or a [key, data] pair for maps."""
    if isinstance(x, list) and len(x) == 2:
        key, data = x
        el = jelement(key)
        d: Expr | Verdict | None
        if isinstance(data, dict):
            vd = _verdict(data)
            d = vd if vd is not None else jexpr(data)
        else:
            d = jexpr(data)
        return Element(el.key, d, el.comment)
    if isinstance(x, dict) and len(x) == 1 and "elem" in x:
        v = x["elem"]
        return Element(jexpr(v["val"]), None, v.get("comment"))
    return Element(jexpr(x))


def _nat_flags(v: dict[str, Any]) -> tuple[str, ...]:
    f = v.get("flags", ())
    return (f,) if isinstance(f, str) else tuple(f)


def jstmt(d: Any) -> Stmt | None:
    if not isinstance(d, dict) or len(d) != 1:
        raise _Bad(f"not a statement: {shorten(json.dumps(d), 80)}")
    k, v = next(iter(d.items()))
    vd = _verdict(d)
    if vd is not None:
        return VerdictStmt(vd)
    if k == "match":
        op = _OPS.get(str(v.get("op", "==")))
        if op is None:
            raise _Bad(f"match operator {v.get('op')!r}")
        return Match(jexpr(v["left"]), op, jexpr(v["right"]))
    if k == "vmap":
        data = jexpr(v["data"])
        if not isinstance(data, SetRef | AnonSet):
            raise _Bad("vmap data is not a set")
        return Vmap(jexpr(v["key"]), data)
    if k in ("counter", "log"):
        return Passive(k)
    if k == "comment":
        return None
    if k == "mangle":
        key = jexpr(v["key"])
        if not isinstance(key, Meta | Ct):
            return Unknown(f"mangle {json.dumps(v)}", "target")
        return Mangle(key, jexpr(v["value"]))
    if k in ("dnat", "snat"):
        v = v or {}
        addr = jexpr(v["addr"]) if "addr" in v else None
        port = jexpr(v["port"]) if "port" in v else None
        return Nat(k, v.get("family"), addr, port, _nat_flags(v))
    if k in ("masquerade", "redirect"):
        v = v or {}
        return Nat(k, None, None, jexpr(v["port"]) if "port" in v else None, _nat_flags(v))
    if k == "reject":
        if not v:
            return Reject()
        t = str(v.get("type", "icmp"))
        if t.startswith("tcp"):
            return Reject("tcp-reset")
        return Reject(t, str(v.get("expr", "port-unreachable")))
    if k == "set":
        name = str(v["set"]).lstrip("@")
        return Dynset(str(v.get("op", "update")), name, jexpr(v["elem"]))
    if k == "notrack":
        return Notrack()
    if k in ("limit", "quota"):
        return Limit(f"{k} {json.dumps(v)}")
    if k == "xt":
        kind = str(v.get("type", "target"))
        if kind == "match" and v.get("name") == "comment":
            return Passive("comment")
        return Unknown(f'xt {kind} "{v.get("name")}"', "target" if kind == "target" else "match")
    return Unknown(f"{k} {json.dumps(v)}", "target")


def _lines(text: str, word: str) -> list[int]:
    """The line of each `{"word":` in the text (counting newlines from the previous one: linear)."""
    out: list[int] = []
    line, pos = 1, 0
    for m in re.finditer(r'\{\s*"' + word + r'"\s*:', text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        out.append(line)
    return out


def load_json(text: str, source: str = "<nft-json>") -> NftRuleset:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", source=source, line=e.lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply to read (not `nft -j list ruleset` output)", source=source) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
        raise InputError('JSON without an "nftables" list: not `nft -j list ruleset` output', source=source)
    rs = NftRuleset(source=source, format="nft-json")
    rule_lines = _lines(text, "rule")
    n_rule = 0
    for obj in doc["nftables"]:
        if not isinstance(obj, dict) or len(obj) != 1:
            continue
        kind, v = next(iter(obj.items()))
        if kind in ("add", "create", "insert") and isinstance(v, dict) and len(v) == 1:
            kind, v = next(iter(v.items()))
        if not isinstance(v, dict):
            continue
        try:
            if kind == "metainfo":
                rs.version = v.get("version")
            elif kind == "table":
                _table(rs, v)
            elif kind == "chain":
                t = _table(rs, v, "table")
                c = t.chains.get(v["name"])
                if c is None:
                    c = Chain(t.key, str(v["name"]))
                    t.chains[c.name] = c
                if "hook" in v:
                    c.type, c.hook = v.get("type", "filter"), v["hook"]
                    c.priority = int(v.get("prio", 0))
                    c.priority_text = str(c.priority)
                    c.policy = v.get("policy", "accept")
                    c.device = v.get("dev")
                c.comment = v.get("comment")
            elif kind in ("set", "map"):
                _set(rs, v, kind == "map")
            elif kind == "element":
                t = _table(rs, v, "table")
                s = t.sets.get(v["name"])
                if s is None:
                    s = NSet(t.key, str(v["name"]))
                    t.sets[s.name] = s
                s.elements.extend(jelement(e) for e in v.get("elem", []))
            elif kind == "rule":
                line = rule_lines[n_rule] if n_rule < len(rule_lines) else None
                n_rule += 1
                _rule(rs, v, line)
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
            raise InputError(f"malformed {shorten(kind, 40)} object: {shorten(e)}", source=source) from None
    finish_ruleset(rs)
    return rs


def _table(rs: NftRuleset, v: dict[str, Any], name_key: str = "name") -> Table:
    fam, name = str(v.get("family", "ip")), str(v[name_key])
    key = f"{fam} {name}"
    t = rs.tables.get(key)
    if t is None:
        t = Table(fam, name)
        rs.tables[key] = t
    if name_key == "name":
        t.comment = v.get("comment", t.comment)
        fl = v.get("flags")
        if fl:
            t.flags = (fl,) if isinstance(fl, str) else tuple(fl)
    return t


def _set(rs: NftRuleset, v: dict[str, Any], is_map: bool) -> None:
    t = _table(rs, v, "table")
    s = NSet(t.key, str(v["name"]), is_map=is_map)
    typ = v.get("type")
    if isinstance(typ, str):
        s.key_types = (TYPE_NAMES.get(typ, typ),)
    elif isinstance(typ, list):
        s.key_types = tuple(TYPE_NAMES.get(str(x), str(x)) for x in typ)
    elif isinstance(typ, dict) and "typeof" in typ:
        kt = expr_type(jexpr(typ["typeof"]))
        s.key_types = kt if isinstance(kt, tuple) else (kt,)
    if is_map:
        data = v.get("map")
        if isinstance(data, list):
            s.data_type = " . ".join(TYPE_NAMES.get(str(x), str(x)) for x in data)
        elif isinstance(data, str):
            s.data_type = TYPE_NAMES.get(data, data)
        elif isinstance(data, dict) and "typeof" in data:
            dt = expr_type(jexpr(data["typeof"]))
            s.data_type = " . ".join(dt) if isinstance(dt, tuple) else dt
    fl = v.get("flags", ())
    s.flags = (fl,) if isinstance(fl, str) else tuple(fl)
    s.timeout = str(v["timeout"]) if "timeout" in v else None
    s.comment = v.get("comment")
    s.elements = [jelement(e) for e in v.get("elem", [])]
    t.sets[s.name] = s


def _rule(rs: NftRuleset, v: dict[str, Any], line: int | None) -> None:
    t = _table(rs, v, "table")
    c = t.chains.get(v["chain"])
    if c is None:
        c = Chain(t.key, str(v["chain"]))
        t.chains[c.name] = c
    stmts: list[Stmt] = []
    problems: list[str] = []
    for e in v.get("expr", []):
        try:
            s = jstmt(e)
        except (_Bad, KeyError, TypeError, ValueError, AttributeError, RecursionError) as ex:
            # a statement of another shape than nft writes: unknown, and the rule says so
            stmts.append(Unknown(shorten(json.dumps(e), 200), "match"))
            problems.append(f"not understood: {shorten(json.dumps(e))} ({shorten(ex, 80)})")
            continue
        if s is not None:
            stmts.append(s)
            if isinstance(s, Unknown):
                problems.append(f"not understood: {s.text!r}")
    comment = v.get("comment")
    r = Rule(t.key, c.name, 0, stmts, fmt_rule(stmts, comment), line, comment,
             int(v["handle"]) if "handle" in v else None, problems)
    c.rules.append(r)
