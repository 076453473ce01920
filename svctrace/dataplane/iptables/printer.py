"""Print parsed rules back in canonical `iptables-save` syntax.

The printed form carries the same meaning as the input (the round-trip test checks
parse(print(parse(x))) == parse(x), and that the kernel loads both to the same rules): generic
options first in iptables-save's order, implicit protocol matches made explicit (`-m tcp`),
addresses with their prefix length, comments quoted.
"""

from __future__ import annotations

import ipaddress

from svctrace.dataplane.iptables.rules import Match, Opt, Rule, Ruleset

_GENERIC = ("-s", "-d", "-i", "-o", "-p", "-f")


def _quote(t: str, force: bool = False) -> str:
    if not force and t and not any(c in t for c in ' \t"\\\''):
        return t
    return '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=False)
    except ValueError:
        return v
    return str(net)


def _opt(o: Opt, force_quote: bool = False) -> str:
    parts = (["!"] if o.neg else []) + [o.name] + [_quote(a, force_quote) for a in o.args]
    return " ".join(parts)


def match_text(m: Match) -> str:
    if m.module in _GENERIC:
        o = m.opts[0]
        neg = "! " if o.neg else ""
        if m.module == "-f":
            return f"{neg}-f"
        v = _addr(o.arg) if m.module in ("-s", "-d") else o.arg
        return f"{neg}{m.module} {_quote(v)}"
    opts = " ".join(_opt(o, force_quote=(m.module == "comment")) for o in m.opts)
    return f"-m {m.module}" + (f" {opts}" if opts else "")


def rule_to_save(r: Rule) -> str:
    parts = [f"-A {r.chain}"]
    generic = [m for m in r.matches if m.module in _GENERIC]
    generic.sort(key=lambda m: _GENERIC.index(m.module))
    parts += [match_text(m) for m in generic]
    parts += [match_text(m) for m in r.matches if m.module not in _GENERIC]
    if r.target is not None:
        t = r.target
        parts.append(("-g " if t.goto else "-j ") + t.name)
        parts += [_opt(o) for o in t.opts]
    return " ".join(parts)


def ruleset_to_save(rs: Ruleset) -> str:
    """The whole ruleset in iptables-save form (tables in raw, mangle, nat, filter order)."""
    out: list[str] = []
    for tname in ("raw", "mangle", "nat", "filter", "security"):
        t = rs.tables.get(tname)
        if t is None:
            continue
        out.append(f"*{tname}")
        for c in t.chains.values():
            pol = (c.policy or "ACCEPT") if c.builtin else "-"
            out.append(f":{c.name} {pol} [0:0]")
        for c in t.chains.values():
            out.extend(rule_to_save(r) for r in c.rules)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def meaning(r: Rule) -> tuple:
    """A value equal for two rules exactly when they mean the same thing (for round-trip tests)."""
    generic = tuple(sorted((m.module, m.opts[0].neg, _addr(m.opts[0].arg) if m.module in ("-s", "-d")
                            else (m.opts[0].arg if m.opts[0].args else "")) for m in r.matches if m.module in _GENERIC))
    mods = tuple((m.module, tuple(sorted((o.name, o.args, o.neg) for o in m.opts)))
                 for m in r.matches if m.module not in _GENERIC)
    tgt = None
    if r.target is not None:
        tgt = (r.target.name, r.target.goto, tuple(sorted((o.name, o.args, o.neg) for o in r.target.opts)))
    return (r.chain, generic, mods, tgt)
