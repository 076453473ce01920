"""nft data types: what a literal means once the expression it is compared with gives it a type.

`tcp` is protocol 6 next to `meta l4proto`, `new` is a conntrack state bit next to `ct state`,
`10.0.0.0/8` is a prefix next to `ip saddr`. Values become Python values the walker compares with
the packet: addresses as `ipaddress` objects, everything else as ints, interface names as text.
Stdlib only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from svctrace.dataplane.nftables.ir import Binop, Concat, Const, Ct, Expr, Fib, Hash, Meta, Numgen, Payload

ADDR4 = "ipv4_addr"
ADDR6 = "ipv6_addr"
PROTO = "inet_proto"
SERVICE = "inet_service"
MARK = "mark"
IFNAME = "ifname"
IFINDEX = "iface_index"
CT_STATE = "ct_state"
CT_STATUS = "ct_status"
CT_DIR = "ct_dir"
FIB_TYPE = "fib_addrtype"
ICMP_TYPE = "icmp_type"
ICMP6_TYPE = "icmpv6_type"
NFPROTO = "nf_proto"
PKTTYPE = "pkt_type"
INT = "integer"
VERDICT = "verdict"
ANY = "?"

FLAG_TYPES = frozenset({CT_STATE, CT_STATUS, "tcp_flag"})

PROTO_NUMBERS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "icmpv6": 58,
                 "ipv6-icmp": 58, "sctp": 132, "udplite": 136, "dccp": 33, "ipip": 4, "ipv6": 41, "vrrp": 112}
SERVICES = {"ssh": 22, "smtp": 25, "domain": 53, "http": 80, "https": 443, "ntp": 123, "bgp": 179, "ldap": 389,
            "kerberos": 88, "ftp": 21, "telnet": 23, "imap": 143, "pop3": 110, "snmp": 161, "mysql": 3306,
            "postgresql": 5432, "http-alt": 8080, "webcache": 8080}
CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
CT_STATUSES = {"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16, "dnat": 32,
               "dying": 512}
FIB_TYPES = {"unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4, "multicast": 5, "blackhole": 6,
             "unreachable": 7, "prohibit": 8, "throw": 9, "nat": 10, "xresolve": 11}
ICMP_TYPES = {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5, "echo-request": 8,
              "router-advertisement": 9, "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
              "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
              "address-mask-request": 17, "address-mask-reply": 18}
ICMP6_TYPES = {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
               "echo-request": 128, "echo-reply": 129, "mld-listener-query": 130, "mld-listener-report": 131,
               "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
               "nd-neighbor-advert": 136, "nd-redirect": 137}
NFPROTOS = {"ipv4": 2, "ipv6": 10}
PKTTYPES = {"host": 0, "unicast": 0, "broadcast": 1, "multicast": 2, "other": 3}
CT_DIRS = {"original": 0, "reply": 1}
SYMBOLS: dict[str, dict[str, int]] = {PROTO: PROTO_NUMBERS, SERVICE: SERVICES, CT_STATE: CT_STATES,
                                      CT_STATUS: CT_STATUSES, FIB_TYPE: FIB_TYPES, ICMP_TYPE: ICMP_TYPES,
                                      ICMP6_TYPE: ICMP6_TYPES, NFPROTO: NFPROTOS, PKTTYPE: PKTTYPES,
                                      CT_DIR: CT_DIRS}

# Chain priorities by name (nft's `priority dstnat - 10`), for the ip, ip6 and inet families; bridge differs.
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
BRIDGE_PRIORITIES = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}
FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")

TYPE_NAMES = {"ipv4_addr": ADDR4, "ipv6_addr": ADDR6, "inet_proto": PROTO, "inet_service": SERVICE, "mark": MARK,
              "ifname": IFNAME, "iface_index": IFINDEX, "ct_state": CT_STATE, "ct_status": CT_STATUS,
              "ct_dir": CT_DIR, "fib_addrtype": FIB_TYPE, "icmp_type": ICMP_TYPE, "icmpv6_type": ICMP6_TYPE,
              "nf_proto": NFPROTO, "pkt_type": PKTTYPE, "integer": INT, "verdict": VERDICT}

_PAYLOAD_TYPES = {
    ("ip", "saddr"): ADDR4, ("ip", "daddr"): ADDR4, ("ip", "protocol"): PROTO,
    ("ip6", "saddr"): ADDR6, ("ip6", "daddr"): ADDR6, ("ip6", "nexthdr"): PROTO,
    ("icmp", "type"): ICMP_TYPE, ("icmpv6", "type"): ICMP6_TYPE,
}
_META_TYPES = {"l4proto": PROTO, "protocol": INT, "mark": MARK, "iifname": IFNAME, "oifname": IFNAME,
               "iif": IFINDEX, "oif": IFINDEX, "nfproto": NFPROTO, "pkttype": PKTTYPE, "ibrname": IFNAME,
               "obrname": IFNAME}
_CT_TYPES = {"state": CT_STATE, "status": CT_STATUS, "mark": MARK, "direction": CT_DIR, "protocol": PROTO,
             "proto-src": SERVICE, "proto-dst": SERVICE, "l3proto": NFPROTO}


def priority_value(text: str | int, family: str = "ip") -> int | None:
    """`dstnat - 10` -> -110, `filter` -> 0, `-110` -> -110; None when it is not a priority."""
    if isinstance(text, int):
        return text
    names = BRIDGE_PRIORITIES if family == "bridge" else PRIORITIES
    t = text.replace(" ", "")
    m = re.fullmatch(r"([a-z]+)?([+-]?\d+)?", t)
    if m is None:
        m2 = re.fullmatch(r"([a-z]+)([+-])(\d+)", t)
        if m2 is None:
            return None
        base = names.get(m2.group(1))
        if base is None:
            return None
        return base + int(m2.group(3)) * (1 if m2.group(2) == "+" else -1)
    name, num = m.group(1), m.group(2)
    if name is None and num is None:
        return None
    base = 0
    if name is not None:
        if name not in names:
            return None
        base = names[name]
    if num is not None:
        if name is not None and num[0] not in "+-":
            return None
        base += int(num)
    return base


def expr_type(e: Expr, family: str = "ip") -> str | tuple[str, ...]:
    """The data type of an expression (a tuple for a concatenation)."""
    if isinstance(e, Payload):
        t = _PAYLOAD_TYPES.get((e.proto, e.field))
        if t is not None:
            return t
        if e.field in ("sport", "dport"):
            return SERVICE
        return INT
    if isinstance(e, Meta):
        return _META_TYPES.get(e.key, INT)
    if isinstance(e, Ct):
        if e.key in ("saddr", "daddr", "ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr"):
            return ADDR6 if (e.family == "ip6" or family == "ip6") else ADDR4
        return _CT_TYPES.get(e.key, INT)
    if isinstance(e, Fib):
        return {"type": FIB_TYPE, "oif": IFINDEX, "oifname": IFNAME}.get(e.result, INT)
    if isinstance(e, Numgen | Hash):
        return INT
    if isinstance(e, Concat):
        out: list[str] = []
        for x in e.items:
            xt = expr_type(x, family)
            out.extend(xt if isinstance(xt, tuple) else (xt,))
        return tuple(out)
    if isinstance(e, Binop):
        return expr_type(e.left, family)
    return ANY


def declared_types(text: str) -> tuple[tuple[str, ...], str | None]:
    """`ipv4_addr . inet_proto . inet_service : verdict` -> ((ADDR4, PROTO, SERVICE), VERDICT)."""
    key, _, data = text.partition(":")
    keys = tuple(TYPE_NAMES.get(k.strip(), k.strip()) for k in key.split(".") if k.strip())
    d = data.strip()
    return keys, (TYPE_NAMES.get(d, d) if d else None)


# -- values -----------------------------------------------------------------------------------------

Value = ipaddress.IPv4Address | ipaddress.IPv6Address | int | str


@dataclass(frozen=True, slots=True)
class Matcher:
    """One component of a set element or a right-hand side: an exact value, a range or a prefix."""

    lo: Value
    hi: Value | None = None  # a range (inclusive) when set
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    wildcard: bool = False  # interface name `eth*`

    def hit(self, v: Value) -> bool:
        if self.net is not None:
            return isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address) and v.version == self.net.version \
                and v in self.net
        if self.wildcard:
            return isinstance(v, str) and isinstance(self.lo, str) and v.startswith(self.lo)
        if self.hi is not None:
            try:
                return self.lo <= v <= self.hi  # type: ignore[operator]
            except TypeError:
                return False
        return v == self.lo

    @property
    def exact(self) -> bool:
        return self.net is None and self.hi is None and not self.wildcard


class BadValue(ValueError):
    pass


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None


def scalar(typ: str, raw: str | int) -> Value:
    """A single literal of a type."""
    if isinstance(raw, int):
        if typ in (ADDR4, ADDR6):
            return ipaddress.ip_address(raw)
        return raw
    t = raw.strip()
    if typ in (ADDR4, ADDR6):
        try:
            return ipaddress.ip_address(t.strip("[]"))
        except ValueError:
            raise BadValue(f"{t!r} is not an address") from None
    if typ in (IFNAME,):
        return t.strip('"')
    table = SYMBOLS.get(typ)
    if table is not None and t in table:
        return table[t]
    if typ == ICMP_TYPE and t in ICMP6_TYPES:
        return ICMP6_TYPES[t]
    if typ in (ANY,):
        try:
            return ipaddress.ip_address(t)
        except ValueError:
            pass
        if t in PROTO_NUMBERS:
            return PROTO_NUMBERS[t]
        try:
            return int(t, 0)
        except ValueError:
            return t
    if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", t):
        return int(t, 0)
    raise BadValue(f"{t!r} is not a {typ.replace('_', ' ')}")


def matcher(typ: str, raw: object) -> Matcher:
    """A literal (text, JSON number or prefix/range form) as a Matcher of that type."""
    from svctrace.dataplane.nftables.ir import Prefix, Range

    if isinstance(raw, Prefix):
        try:
            net = ipaddress.ip_network(f"{raw.addr}/{raw.length}", strict=False)
        except ValueError:
            raise BadValue(f"{raw.addr}/{raw.length} is not a prefix") from None
        return Matcher(net.network_address, net=net)
    if isinstance(raw, Range):
        lo, hi = scalar(typ, raw.lo), scalar(typ, raw.hi)
        return Matcher(lo, hi)
    if isinstance(raw, Const):
        raw = raw.value
    if isinstance(raw, int):
        return Matcher(scalar(typ, raw))
    if not isinstance(raw, str):
        raise BadValue(f"{raw!r} is not a value")
    t = raw.strip()
    if typ == IFNAME:
        name = t.strip('"')
        if name.endswith("*") and not name.endswith("\\*"):
            return Matcher(name[:-1], wildcard=True)
        return Matcher(name.replace("\\*", "*"))
    if typ in (ADDR4, ADDR6, ANY) and "/" in t:
        try:
            net = ipaddress.ip_network(t, strict=False)
            return Matcher(net.network_address, net=net)
        except ValueError:
            if typ != ANY:
                raise BadValue(f"{t!r} is not a prefix") from None
    table = SYMBOLS.get(typ)
    if table is not None and t in table:
        return Matcher(table[t])
    if "-" in t and not t.startswith("-"):
        a, _, b = t.partition("-")
        if a and b:
            try:
                return Matcher(scalar(typ, a), scalar(typ, b))
            except BadValue:
                pass
    return Matcher(scalar(typ, t))


def flags_value(typ: str, raw: object) -> int:
    """`new`, `established,related` (ListLit), 8, ["established", "related"] -> a bitmask."""
    from svctrace.dataplane.nftables.ir import ListLit

    if isinstance(raw, ListLit):
        out = 0
        for x in raw.items:
            out |= flags_value(typ, x)
        return out
    if isinstance(raw, Const):
        raw = raw.value
    if isinstance(raw, list | tuple):
        out = 0
        for x in raw:
            out |= flags_value(typ, x)
        return out
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        out = 0
        for part in raw.split(","):
            p = part.strip()
            v = scalar(typ, p)
            if not isinstance(v, int):
                raise BadValue(f"{p!r} is not a {typ}")
            out |= v
        return out
    raise BadValue(f"{raw!r} is not a {typ}")
