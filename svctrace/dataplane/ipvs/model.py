"""An IPVS table as `ipvsadm` shows it: virtual services and their real servers. Stdlib only.

What a listing cannot say is kept as None rather than guessed: an address `ipvsadm -L` (without
`-n`) printed as a host name it could not turn back into an address, a port cut off by ipvsadm's
fixed-width column, the weights of a `--stats` listing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import cast

from svctrace.errors import Warn
from svctrace.model.loading import keeps_objects
from svctrace.model.packet import IPAddress, format_endpoint

PROTOCOLS = ("tcp", "udp", "sctp")
# kube-proxy only ever writes Masq real servers; the others are ipvsadm's names for DR, IPIP, local.
FORWARD_METHODS = ("Masq", "Route", "Tunnel", "Local")


def _printed(host: str, ip: IPAddress | None, port: int | None) -> str:
    """`10.0.0.1:6443`, `[fd00::1]:443`, or the printed host with `?` for a port the listing lost."""
    if ip is not None and port is not None:
        return format_endpoint(ip, port)
    text = str(ip) if ip is not None else host
    if ":" in text and not text.startswith("["):
        text = f"[{text}]"
    return f"{text}:{port if port is not None else '?'}"


@dataclass
class RealServer:
    """One `-> RIP:port` line (or `-a ... -r RIP:port`)."""

    host: str  # the address as printed (an IP, a host name, a redacted placeholder)
    ip: IPAddress | None  # None when the printed host is not an address
    port: int | None  # None when the port was cut off or is a service name we do not know
    port_text: str  # the port as printed ("443", "http", "9" when truncated)
    line: int
    text: str  # the line as written, trailing spaces removed
    position: int = 0  # 1-based position under its virtual service, as listed
    forward: str | None = "Masq"  # Masq / Route / Tunnel / Local; None when the listing does not say
    weight: int | None = 1  # None when the listing does not say (--stats, --rate)
    active: int | None = None  # ActiveConn
    inactive: int | None = None  # InActConn
    persistent_conns: int | None = None  # --persistent-conn listings
    stats: dict[str, int] = field(default_factory=dict)  # --stats / --rate columns

    @property
    def endpoint(self) -> str:
        """`10.0.0.1:6443`, `[fd00::1]:443`, or the printed text with `?` for what is unknown."""
        return _printed(self.host, self.ip, self.port)

    def to_json(self) -> dict[str, object]:
        return {"address": str(self.ip) if self.ip is not None else None, "host": self.host,
                "port": self.port, "port_text": self.port_text, "forward": self.forward, "weight": self.weight,
                "active_conns": self.active, "inactive_conns": self.inactive, "line": self.line}


@dataclass
class VirtualService:
    """One `TCP VIP:port sched` line (or `-A -t VIP:port -s sched`) and its real servers."""

    protocol: str  # tcp / udp / sctp / fwm
    host: str  # the address as printed ("" for a firewall-mark service)
    ip: IPAddress | None
    port: int | None
    port_text: str
    line: int
    text: str
    scheduler: str | None = "rr"  # None when the listing does not show it (--stats, --rate)
    persistent: int | None = None  # `persistent 10800` / `-p 10800`: session affinity timeout in seconds
    netmask: str | None = None  # persistence granularity (`mask 255.255.255.0` / `-M`)
    flags: tuple[str, ...] = ()  # other flags as printed: ops, pe sip, scheduler flags (sh-port, ...)
    fwmark: int | None = None  # FWM services
    family: int = 4
    stats: dict[str, int] = field(default_factory=dict)
    maybe_cut: bool = False  # an elision or the end of the paste follows it: real servers may be missing
    _reals: list[RealServer] = field(default_factory=list, repr=False, compare=False)
    # The real servers' lines not read yet (a reader that checked their shape at load parses them when first asked
    # for): (parse, the lines, the first one's line number). A question reads a handful of a table's services.
    _pending: tuple[Callable[[str, int], list[RealServer]], str, int] | None = field(default=None, repr=False,
                                                                                  compare=False)

    @property
    def reals(self) -> list[RealServer]:
        """The real servers, in listed order (their `position` counts from 1)."""
        if self._pending is not None:
            parse, text, first = self._pending
            self._pending = None
            self._reals.extend(parse(text, first))
        return self._reals

    def _shown(self) -> list[tuple[str, object]]:
        """The fields with the real servers read, in the order they were declared in (`reals` before `stats`)."""
        out: list[tuple[str, object]] = []
        for f in fields(self):
            if f.name == "stats":
                out.append(("reals", self.reals))
            if f.compare:
                out.append((f.name, getattr(self, f.name)))
        return out

    def __repr__(self) -> str:
        return f"VirtualService({', '.join(f'{k}={v!r}' for k, v in self._shown())})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, VirtualService)
        return self._shown() == other._shown()

    __hash__ = None  # type: ignore[assignment]  # as a dataclass's, which compares by value

    @property
    def address(self) -> str:
        """`10.96.0.1:443`, `[fd20::1]:443`, `fwmark 1`, or the printed text when not an address."""
        if self.fwmark is not None:
            return f"fwmark {self.fwmark}"
        return _printed(self.host, self.ip, self.port)

    @property
    def label(self) -> str:
        """What the path calls the virtual service: `TCP 10.96.0.1:443 rr`."""
        proto = "FWM" if self.fwmark is not None else self.protocol.upper()
        where = str(self.fwmark) if self.fwmark is not None else self.address
        return f"{proto} {where} {self.scheduler or '?'}" + (f" persistent {self.persistent}"
                                                           if self.persistent is not None else "")

    @property
    def exact(self) -> bool:
        """The listing gave both the address and the port."""
        return self.fwmark is not None or (self.ip is not None and self.port is not None)

    def to_json(self) -> dict[str, object]:
        return {"protocol": self.protocol, "address": str(self.ip) if self.ip is not None else None,
                "host": self.host, "port": self.port, "fwmark": self.fwmark, "scheduler": self.scheduler,
                "persistent": self.persistent, "flags": list(self.flags), "line": self.line,
                "real_servers": [r.to_json() for r in self.reals]}


@dataclass
class IPVSTable:
    """The virtual services of one node, in the order listed."""

    source: str
    services: list[VirtualService] = field(default_factory=list)
    warnings: list[Warn] = field(default_factory=list)
    format: str = "ipvsadm -Ln"  # ipvsadm -Ln | -L | -Ln --stats | -Ln --rate | -Sn | ...
    numeric: bool | None = True  # False: -L without -n (names resolved, columns truncated)
    version: str | None = None  # the kernel's IPVS version from the header
    partial: bool = False  # the author elided part of the listing (`...`), or a caller knows it is cut
    _index: _Index | None = field(default=None, init=False, repr=False, compare=False)
    cache: dict[object, object] = field(default_factory=dict, repr=False, compare=False)  # the walkers' memos

    def __iter__(self) -> Iterator[VirtualService]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    @property
    def real_server_count(self) -> int:
        return sum(len(s.reals) for s in self.services)

    def addresses(self) -> set[IPAddress]:
        """Every virtual address the table names (kube-proxy binds the non-node ones to kube-ipvs0)."""
        return set(self._indexed().on_address)

    def by_address(self) -> dict[IPAddress, list[VirtualService]]:
        """The services on each virtual address, in listed order (not firewall-mark ones); read-only. Each address
        is hashed once here: `ipaddress` hashes in Python, and a big table has tens of thousands."""
        return cast("dict[IPAddress, list[VirtualService]]", self._indexed().on_address)

    def find(self, proto: str, ip: IPAddress, port: int | None, mark: int = 0) -> Lookup:
        """The virtual service the kernel would pick for a new connection, as ip_vs_service_find does:
        a firewall-mark service for the packet's mark first, then protocol+address+port, then a
        port-0 ("all ports", persistent) service on the address. `maybe` lists services whose
        address or port the listing lost and which could be the one."""
        index = self._indexed()
        if mark:
            s = index.marks.get((mark, ip.version))
            if s is not None:
                return Lookup(s, [])
        if proto not in PROTOCOLS:
            return Lookup(None, [])
        at = index.on_address.get(ip)
        s = (at.ports.get((proto, port)) or at.ports.get((proto, 0))) if at is not None else None
        if s is not None:
            return Lookup(s, [])
        maybe = [s for s in index.inexact if s.protocol == proto and (s.ip is None or s.ip == ip)
                 and (s.port is None or s.port == port) and s.family == ip.version]
        return Lookup(None, maybe)

    def position(self, vs: VirtualService) -> int:
        """Where `vs` is in `services` (0-based)."""
        pos = self._indexed().positions.get(id(vs))
        return pos if pos is not None and self.services[pos] is vs else self.services.index(vs)

    def services_on(self, ip: IPAddress) -> list[VirtualService]:
        """The services on an address, in listed order (not firewall-mark ones)."""
        return self._indexed().on_address.get(ip, [])

    @keeps_objects
    def _indexed(self) -> _Index:
        """The services by what `find` looks up, first listed first; rebuilt when services were added."""
        if self._index is None or self._index.count != len(self.services):
            index = _Index(len(self.services))
            spare = _At()
            for pos, s in enumerate(self.services):
                index.positions.setdefault(id(s), pos)
                if s.fwmark is not None:
                    index.marks.setdefault((s.fwmark, s.family), s)
                    continue
                if s.ip is not None:
                    at = index.on_address.setdefault(s.ip, spare)  # one hash: ipaddress hashes in Python
                    if at is spare:
                        at.ports = {}
                        spare = _At()
                    at.append(s)
                    at.ports.setdefault((s.protocol, s.port), s)
                if not s.exact:
                    index.inexact.append(s)
            self._index = index
        return self._index

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "format": self.format, "numeric": self.numeric, "partial": self.partial,
                "services": [s.to_json() for s in self.services],
                "warnings": [w.to_json() for w in self.warnings]}


@dataclass
class _Index:
    count: int  # len(services) when built
    marks: dict[tuple[int, int], VirtualService] = field(default_factory=dict)  # (fwmark, family)
    inexact: list[VirtualService] = field(default_factory=list)  # address or port lost by the listing
    on_address: dict[IPAddress, _At] = field(default_factory=dict)  # every virtual address the table names
    positions: dict[int, int] = field(default_factory=dict)  # id(service) -> its position


class _At(list["VirtualService"]):
    """The services on one address, in listed order; `ports`: the first by (protocol, port)."""

    __slots__ = ("ports",)
    ports: dict[tuple[str, int | None], VirtualService]


@dataclass
class Lookup:
    service: VirtualService | None
    maybe: list[VirtualService]
