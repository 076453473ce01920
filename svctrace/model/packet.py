"""Plain typed values shared by every layer: packets and what we know about a node.

Stdlib only. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from svctrace.model.host import Address, HostNet

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = Literal["forwarded", "local"]

PROTOCOLS = ("tcp", "udp", "sctp", "icmp", "icmpv6")
PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58, "ipv6-icmp": 58}
# ICMP echo-request, the packet `ping` sends.
ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128


def parse_ip(text: str) -> IPAddress:
    """An address, without brackets or zone. Raises ValueError with a readable message."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a connection, as the node sees it at a given moment of the walk."""

    family: int  # 4 or 6
    proto: str  # tcp, udp, sctp, icmp, icmpv6 (or a number as text for others)
    src: IPAddress
    dst: IPAddress
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    origin: Origin = "forwarded"
    iif: str | None = None  # input interface when known
    oif: str | None = None  # output interface when known
    mark: int = 0

    @staticmethod
    def make(
        *,
        src: str,
        dst: str,
        proto: str = "tcp",
        dport: int | None = None,
        sport: int | None = None,
        origin: Origin | None = None,
        icmp_type: int | None = None,
        iif: str | None = None,
        oif: str | None = None,
        mark: int = 0,
        local_ips: frozenset[IPAddress] | None = None,
    ) -> Packet:
        s = parse_ip(src)
        d = parse_ip(dst)
        if s.version != d.version:
            raise ValueError(f"source {src} and destination {dst} are not of the same IP family")
        p = proto.lower()
        if p in ("icmp", "icmpv6", "ipv6-icmp") or p == "icmp6":
            p = "icmpv6" if d.version == 6 else "icmp"
        elif p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {proto!r} (use tcp, udp, sctp or icmp)")
        if p in ("icmp", "icmpv6"):
            if dport is not None:
                raise ValueError("ICMP has no ports: drop --dport for --proto icmp")
            if icmp_type is None:
                icmp_type = ICMP_ECHO_REQUEST if p == "icmp" else ICMPV6_ECHO_REQUEST
        if dport is not None and not 0 <= dport <= 65535:
            raise ValueError(f"port {dport} is out of range 0-65535")
        if sport is not None and not 0 <= sport <= 65535:
            raise ValueError(f"port {sport} is out of range 0-65535")
        if origin is None:
            origin = "local" if local_ips is not None and s in local_ips else "forwarded"
        return Packet(
            family=d.version,
            proto=p,
            src=s,
            dst=d,
            sport=sport,
            dport=dport,
            icmp_type=icmp_type,
            origin=origin,
            iif=iif,
            oif=oif,
            mark=mark,
        )

    def with_(self, **changes: object) -> Packet:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def has_ports(self) -> bool:
        return self.proto in ("tcp", "udp", "sctp")

    def endpoint(self) -> str:
        """`ip:port` (or `[ip6]:port`), or just the ip when the protocol has no ports."""
        return format_endpoint(self.dst, self.dport if self.has_ports else None)

    def to_json(self) -> dict[str, object]:
        return {
            "family": f"ipv{self.family}",
            "protocol": self.proto,
            "src": str(self.src),
            "sport": self.sport,
            "dst": str(self.dst),
            "dport": self.dport,
            "origin": self.origin,
        }


def format_endpoint(ip: IPAddress | str, port: int | None) -> str:
    ip_s = str(ip)
    if port is None:
        return ip_s
    if ":" in ip_s:
        return f"[{ip_s}]:{port}"
    return f"{ip_s}:{port}"


LOOPBACK4 = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK6 = ipaddress.ip_network("::1/128")


@dataclass(frozen=True)
class NodeFacts:
    """What the node knows that the rules do not say."""

    local_ips: frozenset[IPAddress] = frozenset()
    # kube-proxy sets net.ipv4.conf.all.route_localnet=1 when it serves NodePorts on localhost.
    # None: infer from the dump (kube-proxy's "block incoming localnet connections" rule).
    route_localnet: bool | None = None
    ipsets: dict[str, IPSetDef] = field(default_factory=dict)
    returning_client: bool = False
    # The node's sysctls, addresses, routes, bridge ports and modules (svctrace.dataplane.host.load_host); None:
    # nothing known (a bare dump): the walk uses its old defaults and states no node-fact assumptions.
    host: HostNet | None = None
    # A returning client's previous endpoint (`ip:port`, as format_endpoint writes it): the one whose session-
    # affinity list holds the client. None: not known (the first connection's split decides).
    previous_endpoint: str | None = None
    # Seconds since the client's last new connection (when its affinity entry was last set). None: fresh.
    affinity_age: float | None = None
    # `local_ips` with their interfaces (`ip addr`), when the node's addresses were read without its other facts
    # (`host`, whose own `addresses` say the same). Empty: the interfaces are not known.
    addresses: tuple[Address, ...] = ()

    @staticmethod
    def make(
        *,
        local_ips: Iterable[str | IPAddress] = (),
        route_localnet: bool | None = None,
        returning_client: bool = False,
        ipsets: dict[str, IPSetDef] | None = None,
        host: HostNet | None = None,
        previous_endpoint: str | None = None,
        affinity_age: float | None = None,
        addresses: Iterable[Address] = (),
    ) -> NodeFacts:
        prev = None
        if previous_endpoint is not None:
            prev = _endpoint_text(previous_endpoint)
        if affinity_age is not None and affinity_age < 0:
            raise ValueError(f"the affinity age must be 0 or more seconds, not {affinity_age}")
        return NodeFacts(
            local_ips=frozenset(parse_ip(x) if isinstance(x, str) else x for x in local_ips),
            route_localnet=route_localnet,
            returning_client=returning_client or prev is not None,
            ipsets=dict(ipsets or {}),
            host=host,
            previous_endpoint=prev,
            affinity_age=affinity_age,
            addresses=tuple(addresses),
        )

    def is_local(self, ip: IPAddress) -> bool:
        if ip in self.local_ips:
            return True
        if ip.version == 4:
            return ip in LOOPBACK4
        return ip in LOOPBACK6


@dataclass
class IPSetDef:
    """One ipset from `ipset save`: its type (hash:ip,port ...) and members as tuples of text."""

    name: str
    type: str
    family: str = "inet"
    members: list[tuple[str, ...]] = field(default_factory=list)


def _endpoint_text(text: str) -> str:
    """`10.0.0.1:80` or `[fd00::1]:80` checked and written as format_endpoint writes it."""
    t = text.strip()
    host, sep, port = t.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not IP:PORT (an endpoint like 10.244.1.5:8080 or [fd00::5]:8080)")
    try:
        ip = parse_ip(host.strip("[]"))
    except ValueError:
        raise ValueError(f"{text!r} is not IP:PORT (an endpoint like 10.244.1.5:8080 or [fd00::5]:8080)") from None
    return format_endpoint(ip, int(port))
