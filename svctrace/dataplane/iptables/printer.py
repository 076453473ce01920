"""Print parsed rules back in canonical `iptables-save` syntax.

The printed form carries the same meaning as the input (the round-trip test checks
parse(print(parse(x))) == parse(x), and that the kernel loads both to the same rules): generic
options first in iptables-save's order, implicit protocol matches made explicit (`-m tcp`),
addresses with their prefix length, comments quoted.
"""

from __future__ import annotations

import ipaddress
import math

from svctrace.dataplane.iptables.rules import Match, Opt, Rule, Ruleset, Target

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


# -- a rule as the kernel holds it ------------------------------------------------------------------
# What `iptables-save` (iptables 1.8.9) prints for a rule loaded from `iptables-restore` input: the
# extensions' save functions (extensions/libxt_*.c) print each option in their own order and spelling,
# and what the kernel stores replaces what was written (a probability rounded to 1/2^31, MARK --or-mark as
# --set-xmark, REJECT's default reject-with, recent's default mask and side). The kube-proxy renderers
# print their dumps with it.

_CTSTATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
_PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def save_probability(printed: str) -> str:
    """What iptables-save prints for `--probability printed`: the kernel keeps `lround(p * 2^31)`."""
    stored = math.floor(float(printed) * 0x80000000 + 0.5)
    return f"{stored / 0x80000000:.11f}"


def xtables_save_string(value: str) -> str:
    """`xtables_save_string`: bare when only [A-Za-z0-9_-], else double-quoted with `"`, `\\` and `'`
    escaped."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    return '"' + "".join("\\" + c if c in "\"\\'" else c for c in value) + '"'


def _hexmark(text: str) -> str:
    """A mark[/mask] as libxt_mark prints it: hex, the mask left out when it is 0xffffffff."""
    value, _, mask = text.partition("/")
    out = f"0x{int(value, 0):x}"
    if mask and int(mask, 0) != 0xFFFFFFFF:
        out += f"/0x{int(mask, 0):x}"
    return out


def _bang(o: Opt) -> str:
    return "! " if o.neg else ""


def _saved_match(m: Match, family: int) -> list[str]:
    by = {o.name: o for o in m.opts}
    if m.module == "comment":
        return [f"--comment {xtables_save_string(o.arg)}" for o in m.opts]
    if m.module == "conntrack":
        return [f"{_bang(o)}{o.name} {','.join(s for s in _CTSTATES if s in o.arg.split(','))}"
                if o.name == "--ctstate" else _opt(o) for o in m.opts]
    if m.module == "mark":
        return [f"{_bang(o)}--mark {_hexmark(o.arg)}" for o in m.opts]
    if m.module == "statistic":
        out = [f"--mode {by['--mode'].arg}"] if "--mode" in by else []
        if "--probability" in by:
            out.append(f"--probability {save_probability(by['--probability'].arg)}")
        return out
    if m.module == "recent":  # recent_save
        out = [f for f in ("--set", "--rcheck", "--update", "--remove") if f in by]
        if "--seconds" in by:
            out.append(f"--seconds {by['--seconds'].arg}")
        out += [f for f in ("--reap",) if f in by]
        out.append(f"--name {by['--name'].arg if '--name' in by else 'DEFAULT'}")
        out.append("--mask " + ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" if family == 6 else "255.255.255.255"))
        out.append("--rdest" if "--rdest" in by else "--rsource")
        return out
    if m.module == "addrtype":
        return [f"{_bang(by[k])}{k} {by[k].arg}" for k in ("--src-type", "--dst-type") if k in by]
    if m.module == "nfacct" and "--nfacct-name" in by:
        # libxt_nfacct.c nfacct_print_name: printf(" %snfacct-name ", ...) then xtables_save_string's " %s":
        # two spaces before the name, as real dumps show (`--nfacct-name  localhost_nps_accepted_pkts`).
        return [f"--nfacct-name  {by['--nfacct-name'].arg}"]
    if m.module == "ipvs":  # ipvs_mt_dump: proto (as a number), vaddr/mask, vport
        out = []
        if "--vproto" in by:
            p = by["--vproto"].arg
            out.append(f"{_bang(by['--vproto'])}--vproto {_PROTO_NUMBERS.get(p.lower(), p)}")
        if "--vaddr" in by:
            out.append(f"{_bang(by['--vaddr'])}--vaddr {_addr(by['--vaddr'].arg)}")
        if "--vport" in by:
            out.append(f"{_bang(by['--vport'])}--vport {by['--vport'].arg}")
        return out
    return [_opt(o) for o in m.opts]


def _saved_target(t: Target, family: int) -> list[str]:
    if t.name == "REJECT" and not t.opts:
        return ["--reject-with " + ("icmp6-port-unreachable" if family == 6 else "icmp-port-unreachable")]
    if t.name == "MARK" and t.opts:
        o = t.opts[0]
        value = int(o.arg, 0)
        mask = {"--or-mark": value, "--xor-mark": 0, "--set-mark": 0xFFFFFFFF}.get(o.name)
        if mask is not None:
            return [f"--set-xmark 0x{value:x}/0x{mask:x}"]
    return [_opt(o) for o in t.opts]


def rule_as_loaded(r: Rule, family: int = 4) -> str:
    """The rule as `iptables-save` (1.8.9) prints it once loaded: generic options first (`-s`/`-d` with a
    prefix length), then the matches in the order they were loaded (a protocol's options under `-m tcp`),
    each in its extension's spelling, then the target."""
    parts = [f"-A {r.chain}"]
    generic = sorted((m for m in r.matches if m.module in _GENERIC), key=lambda m: _GENERIC.index(m.module))
    for m in generic:
        o = m.opts[0]
        parts.append(f"{_bang(o)}{m.module}" if m.module == "-f" else
                     f"{_bang(o)}{m.module} {_addr(o.arg) if m.module in ('-s', '-d') else o.arg}")
    for m in r.matches:
        if m.module not in _GENERIC:
            parts += [f"-m {m.module}", *_saved_match(m, family)]
    if r.target is not None:
        parts += [("-g " if r.target.goto else "-j ") + r.target.name, *_saved_target(r.target, family)]
    return " ".join(parts)
