"""A node's own network, read once from its snapshot files, and the kernel's route lookup over it.

The one home of the parsers of `sysctl`, `ip-addr.json` (`ip-addr`), `ip-route.json` (`ip-route`),
`ip-rule.json` (`ip-rule`), `hairpin-mode` and `modules` (docs/snapshots.md). Each parser raises InputError
naming the file and line; `load_host` turns a damaged file into a warning and leaves that part unknown
(the walk then assumes the usual value and says so).

`lookup` is fib_lookup() for the common case: the policy rules in priority order (from, to, iif, oif,
fwmark, not; a rule with a selector svctrace does not model is skipped, with a note), and in each table the
longest prefix, then the lowest metric (net/ipv4/fib_rules.c, fib_trie.c). `select_source` is
inet_select_addr() (net/ipv4/devinet.c), which MASQUERADE uses for the new source (nf_nat_masquerade.c).
IPv4 only: an IPv6 question gets None (unknown).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from svctrace.dataplane.addr import ip_of
from svctrace.errors import InputError, Warn
from svctrace.model.host import DEFAULT_RULES, Address, HostNet, IPNetwork, PolicyRule, Route
from svctrace.model.loading import keeps_objects
from svctrace.model.packet import IPAddress
from svctrace.model.snapshot import NodeFiles

HOST_FILES = (
    "sysctl",
    "ip-addr.json",
    "ip-addr",
    "ip-route.json",
    "ip-route",
    "ip-rule.json",
    "ip-rule",
    "hairpin-mode",
    "modules",
)


# -- sysctl ------------------------------------------------------------------------------------------

_SYSCTL_LINE = re.compile(r"^\s*([A-Za-z0-9_.\-/:@]+)\s*=\s*(.*?)\s*$")


def parse_sysctl(text: str, where: str = "sysctl") -> dict[str, str]:
    """`sysctl` output: `key = value` lines (also `key=value`); `#` comments and blank lines skipped."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("sysctl:"):
            continue
        m = _SYSCTL_LINE.match(s)
        if m is None:
            raise InputError(f"not a `key = value` sysctl line: {s[:80]!r}", source=where, line=n)
        out[m.group(1)] = m.group(2)
    return out


# -- ip addr ------------------------------------------------------------------------------------------


def _json(text: str, where: str, what: str) -> list[Any]:
    try:
        doc = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as e:
        raise InputError(f"broken JSON: {e.msg}", source=where, line=e.lineno) from None
    if not isinstance(doc, list):
        raise InputError(f"not {what} output (a JSON array was expected)", source=where, line=1)
    return doc


def _ip(value: object, where: str, line: int | None, what: str) -> IPAddress:
    try:
        return ip_of(str(value).split("%")[0])
    except ValueError:
        raise InputError(f"{what} {value!r} is not an IP address", source=where, line=line) from None


@keeps_objects
def parse_ip_addr_json(text: str, where: str = "ip-addr.json") -> tuple[list[Address], dict[str, str | None]]:
    """`ip -j addr`: (addresses in the kernel's order, every interface -> the bridge it is a port of)."""
    addrs: list[Address] = []
    links: dict[str, str | None] = {}
    for i, link in enumerate(_json(text, where, "`ip -j addr`"), 1):
        if not isinstance(link, dict) or "ifname" not in link:
            raise InputError(f"entry {i} is not an interface (no ifname)", source=where, line=1)
        name = str(link["ifname"]).split("@")[0]
        links[name] = str(link["master"]) if link.get("master") else None
        for a in link.get("addr_info") or []:
            if not isinstance(a, dict) or not a.get("local"):
                continue
            try:
                plen = int(a.get("prefixlen", 32))
            except (TypeError, ValueError):
                raise InputError(
                    f"interface {name}: prefixlen {a.get('prefixlen')!r} is not a number",
                    source=where,
                    line=1,
                ) from None
            addrs.append(
                Address(
                    name,
                    _ip(a["local"], where, 1, f"interface {name}: address"),
                    plen,
                    str(a.get("scope") or "global"),
                    bool(a.get("secondary")),
                )
            )
    return addrs, links


_ADDR_TEXT = re.compile(r"^\d+:\s+(\S+?)(?:@\S+)?\s+(inet6?)\s+([0-9a-fA-F.:]+)/(\d+)(.*)$")


def parse_ip_addr_text(text: str, where: str = "ip-addr") -> tuple[list[Address], dict[str, str | None]]:
    """`ip -o addr` (one address a line)."""
    addrs: list[Address] = []
    links: dict[str, str | None] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _ADDR_TEXT.match(line.strip())
        if m is None:
            if re.match(r"^\d+:\s+\S+", line.strip()):
                continue  # a link line without an address
            raise InputError(f"not an `ip -o addr` line: {line.strip()[:80]!r}", source=where, line=n)
        name, rest = m.group(1), m.group(5)
        links.setdefault(name, None)
        scope = re.search(r"\bscope\s+(\S+)", rest)
        addrs.append(
            Address(
                name,
                _ip(m.group(3), where, n, "address"),
                int(m.group(4)),
                scope.group(1) if scope else "global",
                " secondary" in rest,
            )
        )
    return addrs, links


# -- ip route -------------------------------------------------------------------------------------------

ROUTE_TYPES = (
    "unicast",
    "local",
    "broadcast",
    "multicast",
    "anycast",
    "blackhole",
    "unreachable",
    "prohibit",
    "throw",
    "nat",
)


def _net(text: str, where: str, line: int | None, family: int = 4) -> IPNetwork:
    if text == "default":
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InputError(f"{text!r} is not an address or prefix", source=where, line=line) from None


def parse_ip_route_json(text: str, where: str = "ip-route.json") -> list[Route]:
    """`ip -j route show table all`: a route's table is `table` (absent: main), its type `type` (absent: unicast)."""
    out: list[Route] = []
    for i, r in enumerate(_json(text, where, "`ip -j route`"), 1):
        if not isinstance(r, dict) or "dst" not in r:
            raise InputError(f"route {i} has no dst", source=where, line=1)
        try:
            dst = _net(str(r["dst"]), where, 1, 6 if ":" in str(r["dst"]) else 4)
        except InputError as e:
            raise InputError(f"route {i}: {e.message}", source=where, line=1) from None
        gw = r.get("gateway")
        if gw is None and isinstance(r.get("via"), dict):
            gw = r["via"].get("host")
        nh = r.get("nexthops")
        dev = r.get("dev")
        if dev is None and isinstance(nh, list) and nh and isinstance(nh[0], dict):
            dev, gw = nh[0].get("dev"), nh[0].get("gateway", gw)  # multipath: the first hop stands for all
        try:
            metric = int(r.get("metric") or 0)
        except (TypeError, ValueError):
            metric = 0
        out.append(
            Route(
                str(r.get("table") or "main"),
                str(r.get("type") or "unicast"),
                dst,
                str(dev) if dev else None,
                _ip(gw, where, 1, f"route {i}: gateway") if gw else None,
                _ip(r["prefsrc"], where, 1, f"route {i}: prefsrc") if r.get("prefsrc") else None,
                metric,
                i,
            )
        )
    return out


def parse_ip_route_text(text: str, where: str = "ip-route") -> list[Route]:
    """`ip route show table all` text (nexthop lines of multipath routes are skipped: the first hop stands)."""
    out: list[Route] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line[0].isspace():
            continue
        words = line.split()
        typ = "unicast"
        if words[0] in ROUTE_TYPES:
            typ = words.pop(0)
        if not words:
            raise InputError(f"route without a destination: {line.strip()[:80]!r}", source=where, line=n)
        dst = _net(words.pop(0), where, n, 6 if ":" in line.split()[0 if typ == "unicast" else 1] else 4)
        kv: dict[str, str] = {}
        i = 0
        while i < len(words):
            w = words[i]
            if w in (
                "dev",
                "via",
                "src",
                "table",
                "metric",
                "proto",
                "scope",
                "mtu",
                "realm",
                "pref",
                "expires",
                "weight",
                "initcwnd",
                "advmss",
                "nhid",
            ) and i + 1 < len(words):
                kv.setdefault(w, words[i + 1])
                i += 2
            else:
                i += 1
        try:
            metric = int(kv.get("metric", "0"))
        except ValueError:
            metric = 0
        gw = kv.get("via")
        if gw and " " not in gw and gw in ("inet", "inet6"):
            gw = None
        out.append(
            Route(
                kv.get("table", "main"),
                typ,
                dst,
                kv.get("dev"),
                _ip(gw, where, n, "gateway") if gw else None,
                _ip(kv["src"], where, n, "src") if "src" in kv else None,
                metric,
                n,
            )
        )
    return out


# -- ip rule --------------------------------------------------------------------------------------------

_MODELLED = {
    "priority",
    "src",
    "srclen",
    "dst",
    "dstlen",
    "iif",
    "oif",
    "fwmark",
    "fwmask",
    "table",
    "action",
    "not",
    "protocol",
    "flags",
    "tos",
    "l3mdev",
}


def _fwmark(v: object) -> int:
    return int(str(v), 0)


def parse_ip_rule_json(text: str, where: str = "ip-rule.json") -> list[PolicyRule]:
    """`ip -j rule`."""
    out: list[PolicyRule] = []
    for i, r in enumerate(_json(text, where, "`ip -j rule`"), 1):
        if not isinstance(r, dict) or "priority" not in r:
            raise InputError(f"rule {i} has no priority", source=where, line=1)
        try:
            src = dst = None
            if r.get("src") not in (None, "all"):
                src = _net(f"{r['src']}/{r.get('srclen', 32 if ':' not in str(r['src']) else 128)}", where, 1)
            if r.get("dst") not in (None, "all"):
                dst = _net(f"{r['dst']}/{r.get('dstlen', 32 if ':' not in str(r['dst']) else 128)}", where, 1)
            action = str(r.get("action") or "lookup")
            if action in ("to_tbl", "unicast"):
                action = "lookup"
            table = str(r["table"]) if r.get("table") is not None else None
            other = tuple(f"{k} {r[k]}" for k in r if k not in _MODELLED and r[k] not in (None, ""))
            if r.get("l3mdev"):
                other += ("l3mdev",)
            out.append(
                PolicyRule(
                    int(r["priority"]),
                    table,
                    action if table is not None or action != "lookup" else "nop",
                    src,
                    dst,
                    r.get("iif"),
                    r.get("oif"),
                    _fwmark(r["fwmark"]) if r.get("fwmark") is not None else None,
                    _fwmark(r.get("fwmask", "0xffffffff")),
                    bool(r.get("not")),
                    other,
                )
            )
        except (TypeError, ValueError) as e:
            raise InputError(f"rule {i}: {e}", source=where, line=1) from None
    return out


_RULE_TEXT = re.compile(r"^\s*(\d+):\s+(.*)$")


def parse_ip_rule_text(text: str, where: str = "ip-rule") -> list[PolicyRule]:
    """`ip rule` text: `PRIO: [not] from SRC [to DST] [fwmark M[/MASK]] [iif X] [oif Y] lookup TABLE`."""
    out: list[PolicyRule] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _RULE_TEXT.match(line)
        if m is None:
            raise InputError(f"not an `ip rule` line: {line.strip()[:80]!r}", source=where, line=n)
        words = m.group(2).split()
        kw: dict[str, str] = {}
        other: list[str] = []
        invert = False
        action, table = "nop", None
        i = 0
        while i < len(words):
            w = words[i]
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if w == "not":
                invert = True
                i += 1
            elif w in ("from", "to", "fwmark", "iif", "oif") and nxt:
                kw[w] = nxt
                i += 2
            elif w in ("lookup", "table") and nxt:
                action, table = "lookup", nxt
                i += 2
            elif w in ("blackhole", "unreachable", "prohibit"):
                action = w
                i += 1
            elif w == "goto" and nxt:
                action = "goto"
                other.append(f"goto {nxt}")
                i += 2
            elif w in ("[detached]", "proto", "protocol") or w.startswith("["):
                i += 2 if w in ("proto", "protocol") else 1
            else:
                other.append(w)
                i += 1
        try:
            mark = mask = None
            if "fwmark" in kw:
                v, _, mk = kw["fwmark"].partition("/")
                mark, mask = int(v, 0), int(mk, 0) if mk else 0xFFFFFFFF
        except ValueError:
            raise InputError(f"fwmark {kw['fwmark']!r} is not a number", source=where, line=n) from None
        src = _net(kw["from"], where, n) if kw.get("from", "all") != "all" else None
        dst = _net(kw["to"], where, n) if kw.get("to", "all") != "all" else None
        out.append(
            PolicyRule(
                int(m.group(1)),
                table,
                action,
                src,
                dst,
                kw.get("iif"),
                kw.get("oif"),
                mark,
                mask if mask is not None else 0xFFFFFFFF,
                invert,
                tuple(other),
            )
        )
    return out


# -- bridge ports and modules ----------------------------------------------------------------------------


def parse_hairpin(text: str, where: str = "hairpin-mode") -> dict[str, bool]:
    """`IFACE VALUE` lines: each bridge port's /sys/class/net/IFACE/brport/hairpin_mode (0 or 1). The raw
    `grep -H . /sys/class/net/*/brport/hairpin_mode` form (`PATH:VALUE`) is read as well."""
    out: dict[str, bool] = {}
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        m = re.fullmatch(r"(?:/sys/class/net/)?(\S+?)(?:/brport/hairpin_mode:|\s+)([01])", s)
        if m is None:
            raise InputError(f"not an `IFACE 0|1` hairpin_mode line: {s[:80]!r}", source=where, line=n)
        out[m.group(1)] = m.group(2) == "1"
    return out


def parse_modules(text: str, where: str = "modules") -> frozenset[str]:
    """/proc/modules lines (`name size refcount deps state offset`), or one module name a line."""
    out: set[str] = set()
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        name = s.split()[0]
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise InputError(f"not a /proc/modules line: {s[:80]!r}", source=where, line=n)
        out.add(name.replace("-", "_"))
    return frozenset(out)


PARSERS: dict[str, Any] = {}  # file name -> parser (filled below)


def check_host_files(files: dict[str, str], where: str) -> dict[str, str]:
    """Node fact files given by hand (`simulate --node-facts`): each known file parsed (InputError naming
    `where/FILE` and the line when damaged); unknown names are refused."""
    out: dict[str, str] = {}
    for fname, text in sorted(files.items()):
        parser = PARSERS.get(fname)
        if parser is None:
            raise InputError(
                f"not a node fact file (expected {', '.join(HOST_FILES)})", source=f"{where}/{fname}"
            )
        parser(text, f"{where}/{fname}")
        out[fname] = text
    return out


# -- the node's HostNet ------------------------------------------------------------------------------------


def load_host(
    nf: NodeFiles | None, warnings: list[Warn] | None = None, *, where: str | None = None
) -> HostNet:
    """The node's network facts from its files (each part parsed once and cached on `nf`); a damaged file is a
    warning in `warnings` and leaves its part unknown. `where`: the directory the files were read from, when
    they are not a snapshot's (`trace DIR`)."""
    host = HostNet(node=nf.name if nf is not None else "")
    if nf is None:
        return host

    def path(fname: str) -> str:
        return f"{where}/{fname}" if where is not None else nf.path(fname)

    def part(fname: str, parser: Any) -> Any:
        if nf.get(fname) is None:
            return None
        try:
            got = nf.parsed("host:" + fname, lambda text, _p: parser(text, path(fname)), nf.files[fname])
        except InputError as e:
            if warnings is not None:
                w = Warn(f"{e.message}; this fact is assumed instead", e.source, e.line, "snapshot")
                if w not in warnings:
                    warnings.append(w)
            return None
        host.sources[fname] = path(fname)
        return got

    host.sysctls = part("sysctl", parse_sysctl)
    got = part("ip-addr.json", parse_ip_addr_json) or part("ip-addr", parse_ip_addr_text)
    if got is not None:
        host.addresses, host.links = got
    host.routes = part("ip-route.json", parse_ip_route_json) or part("ip-route", parse_ip_route_text)
    host.rules = part("ip-rule.json", parse_ip_rule_json) or part("ip-rule", parse_ip_rule_text)
    host.hairpin = part("hairpin-mode", parse_hairpin)
    host.modules = part("modules", parse_modules)
    return host


# -- the route lookup ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteHit:
    """What fib_lookup found: the route (None: no route at all), the rule that led there, and notes on what
    was skipped (rules with selectors svctrace does not model)."""

    route: Route | None
    rule: PolicyRule | None
    notes: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.route is not None and self.route.type == "local"

    @property
    def kind(self) -> str:
        """local / unicast / broadcast / blackhole / unreachable / prohibit / none"""
        if self.route is None:
            return "none" if self.rule is None or self.rule.action == "lookup" else self.rule.action
        return self.route.type

    def text(self) -> str:
        if self.route is None:
            return (
                f"no route (rule {self.rule.text()})"
                if self.rule is not None and self.rule.action != "lookup"
                else "no route"
            )
        return self.route.text()


def _rule_matches(
    r: PolicyRule, src: IPAddress | None, dst: IPAddress, iif: str | None, oif: str | None, mark: int
) -> bool:
    ok = True
    if r.src is not None:
        ok = ok and src is not None and src.version == r.src.version and src in r.src
    if r.dst is not None:
        ok = ok and dst.version == r.dst.version and dst in r.dst
    if r.iif is not None:
        ok = ok and iif == r.iif
    if r.oif is not None:
        ok = ok and oif == r.oif
    if r.fwmark is not None:
        ok = ok and (mark & r.fwmask) == (r.fwmark & r.fwmask)
    return ok != r.invert


_Index = dict[str, tuple[list[int], dict[tuple[int, int], Route]]]


def _index(host: HostNet) -> _Index:
    """Per table: the prefix lengths present (longest first) and (prefix length, network) -> the best route (lowest
    metric), so that a lookup costs one dict probe per prefix length whatever the number of routes (a node
    with a route per pod or per node has thousands)."""
    idx: _Index | None = host.cache.get("routes")
    if idx is None:
        idx = {}
        for rt in host.routes or ():
            if rt.dst.version != 4 or (rt.type == "broadcast" and rt.dst.prefixlen != 32):
                continue
            lens, by = idx.setdefault(rt.table, ([], {}))
            key = (rt.dst.prefixlen, int(rt.dst.network_address))
            old = by.get(key)
            if old is None or rt.metric < old.metric:
                by[key] = rt
            if rt.dst.prefixlen not in lens:
                lens.append(rt.dst.prefixlen)
        for lens, _ in idx.values():
            lens.sort(reverse=True)
        host.cache["routes"] = idx
    return idx


def _table_lookup(host: HostNet, table: str, dst: IPAddress) -> Route | None:
    """The longest prefix in `table` holding `dst`, the lowest metric among equals."""
    got = _index(host).get(table)
    if got is None:
        return None
    lens, by = got
    d = int(dst)
    for plen in lens:
        rt = by.get((plen, d & (((1 << plen) - 1) << (32 - plen)) if plen else 0))
        if rt is not None:
            return rt
    return None


def lookup(
    host: HostNet,
    dst: IPAddress,
    *,
    src: IPAddress | None = None,
    iif: str | None = None,
    oif: str | None = None,
    mark: int = 0,
) -> RouteHit | None:
    """The route the kernel takes to `dst` (None: the routes were not collected, or IPv6). `iif` is "lo" for the
    node's own packets (that is how rules see them)."""
    if host.routes is None or dst.version != 4:
        return None
    rules = sorted(host.rules if host.rules else DEFAULT_RULES, key=lambda r: r.priority)
    notes: list[str] = []
    for r in rules:
        if r.other:
            notes.append(f"rule `{r.text()}` skipped: svctrace does not model {', '.join(r.other)}")
            continue
        if not _rule_matches(r, src, dst, iif, oif, mark):
            continue
        if r.action in ("blackhole", "unreachable", "prohibit"):
            return RouteHit(None, r, tuple(notes))
        if r.action != "lookup" or r.table is None:
            continue
        rt = _table_lookup(host, r.table, dst)
        if rt is None or rt.type == "throw":
            continue
        return RouteHit(rt, r, tuple(notes))
    return RouteHit(None, None, tuple(notes))


def select_source(host: HostNet, dev: str | None, near: IPAddress | None) -> IPAddress | None:
    """inet_select_addr(dev, near, RT_SCOPE_UNIVERSE): the first primary global address of `dev` in the subnet of
    `near` (the next hop), else its first primary global address, else the first global address of any other
    interface. None when the addresses were not collected."""
    if host.addresses is None:
        return None
    fam = near.version if near is not None else 4
    cands = [a for a in host.addresses if a.ip.version == fam and a.scope not in ("host", "link")]
    mine = [a for a in cands if a.ifname == dev and not a.secondary]
    for a in mine:
        if near is not None and near in a.network:
            return a.ip
    if mine:
        return mine[0].ip
    others = [a for a in cands if not a.secondary and not a.ip.is_loopback]
    return others[0].ip if others else None


PARSERS.update(
    {
        "sysctl": parse_sysctl,
        "ip-addr.json": parse_ip_addr_json,
        "ip-addr": parse_ip_addr_text,
        "ip-route.json": parse_ip_route_json,
        "ip-route": parse_ip_route_text,
        "ip-rule.json": parse_ip_rule_json,
        "ip-rule": parse_ip_rule_text,
        "hairpin-mode": parse_hairpin,
        "modules": parse_modules,
    }
)
