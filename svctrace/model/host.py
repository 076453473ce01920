"""The node's own network, as values: sysctls, addresses, routes, policy rules, bridge ports, kernel modules.

Read once from a node's snapshot files by `svctrace.dataplane.host` (the parsers and the route lookup live
there); the walkers read it through `NodeFacts.host`. Every part is None when its file was not collected:
the walk then assumes the usual value and says so (`HostNet.assumed`). Stdlib only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from svctrace.model.packet import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Address:
    """One address of an interface (`ip -j addr`)."""

    ifname: str
    ip: IPAddress
    prefixlen: int
    scope: str = "global"  # global / link / host / site
    secondary: bool = False

    @property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(f"{self.ip}/{self.prefixlen}", strict=False)


@dataclass(frozen=True, slots=True)
class Route:
    """One route of one table (`ip -j route show table all`)."""

    table: str  # "main", "local", "default" or a number as text
    type: str  # unicast / local / broadcast / blackhole / unreachable / prohibit / throw / ...
    dst: IPNetwork
    dev: str | None = None
    gateway: IPAddress | None = None
    prefsrc: IPAddress | None = None
    metric: int = 0
    line: int | None = None  # where in the file (text form), or the entry's index + 1 (JSON)

    def text(self) -> str:
        head = "" if self.type == "unicast" else f"{self.type} "
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        parts = [f"{head}{dst}"]
        if self.gateway is not None:
            parts.append(f"via {self.gateway}")
        if self.dev:
            parts.append(f"dev {self.dev}")
        if self.prefsrc is not None:
            parts.append(f"src {self.prefsrc}")
        if self.table != "main":
            parts.append(f"table {self.table}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One routing policy rule (`ip -j rule`)."""

    priority: int
    table: str | None  # the table looked up (action "lookup"), else None
    action: str = "lookup"  # lookup / blackhole / unreachable / prohibit / goto / nop
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    iif: str | None = None
    oif: str | None = None
    fwmark: int | None = None
    fwmask: int = 0xFFFFFFFF
    invert: bool = False  # `not`
    other: tuple[str, ...] = ()  # selectors svctrace does not model (ipproto, dport, uidrange, l3mdev, ...)

    def text(self) -> str:
        sel = [] if not self.invert else ["not"]
        sel.append(f"from {self.src or 'all'}")
        if self.dst is not None:
            sel.append(f"to {self.dst}")
        if self.fwmark is not None:
            sel.append(
                f"fwmark {self.fwmark:#x}" + (f"/{self.fwmask:#x}" if self.fwmask != 0xFFFFFFFF else "")
            )
        if self.iif:
            sel.append(f"iif {self.iif}")
        if self.oif:
            sel.append(f"oif {self.oif}")
        sel.extend(self.other)
        act = f"lookup {self.table}" if self.action == "lookup" else self.action
        return f"{self.priority}: {' '.join(sel)} {act}"


# What the kernel does when a rule table holds nothing (a node with no `ip rule` output): the three default rules.
DEFAULT_RULES = (PolicyRule(0, "local"), PolicyRule(32766, "main"), PolicyRule(32767, "default"))


@dataclass
class HostNet:
    """A node's network facts; each part None when its file was not in the snapshot."""

    sysctls: dict[str, str] | None = None
    addresses: list[Address] | None = None
    links: dict[str, str | None] | None = (
        None  # every interface of `ip -j addr` -> the bridge it is a port of
    )
    routes: list[Route] | None = None
    rules: list[PolicyRule] | None = None
    hairpin: dict[str, bool] | None = None  # bridge port -> hairpin_mode
    modules: frozenset[str] | None = None  # loaded modules (/proc/modules), None when not collected
    sources: dict[str, str] = field(default_factory=dict)  # part -> the file it came from
    node: str = ""
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the route lookup's index

    # -- sysctls ---------------------------------------------------------------------------------------
    def sysctl(self, key: str) -> str | None:
        if self.sysctls is None:
            return None
        v = self.sysctls.get(key)
        if v is None and ".conf." in key:  # sysctl writes an interface's dots as slashes
            pre, _, rest = key.partition(".conf.")
            dev, _, leaf = rest.rpartition(".")
            v = self.sysctls.get(f"{pre}.conf.{dev.replace('.', '/')}.{leaf}")
        return v

    def sysctl_int(self, key: str) -> int | None:
        v = self.sysctl(key)
        if v is None:
            return None
        try:
            return int(v.split()[0])
        except (ValueError, IndexError):
            return None

    def rp_filter(self, dev: str) -> int | None:
        """The effective rp_filter of an interface: the larger of conf.all and conf.<dev> (the kernel's
        IN_DEV_RPFILTER is IN_DEV_MAXCONF), None when neither was collected."""
        vals = [
            v
            for v in (
                self.sysctl_int("net.ipv4.conf.all.rp_filter"),
                self.sysctl_int(f"net.ipv4.conf.{dev}.rp_filter"),
            )
            if v is not None
        ]
        return max(vals) if vals else None

    def route_localnet(self, dev: str | None = None) -> bool | None:
        """conf.all or conf.<dev> route_localnet (IN_DEV_ROUTE_LOCALNET is IN_DEV_ORCONF)."""
        vals = [
            v
            for v in (
                self.sysctl_int("net.ipv4.conf.all.route_localnet"),
                self.sysctl_int(f"net.ipv4.conf.{dev}.route_localnet") if dev else None,
            )
            if v is not None
        ]
        return any(vals) if vals else None

    @property
    def br_netfilter(self) -> bool | None:
        """Whether br_netfilter is loaded: its sysctls exist (built in or loaded), or /proc/modules lists it.
        None when neither file says."""
        if self.modules is not None and "br_netfilter" in self.modules:
            return True
        if self.sysctls is not None:
            # no net.bridge.* key among the collected sysctls: the keys do not exist, br_netfilter is not loaded
            return any(k.startswith("net.bridge.bridge-nf-call-") for k in self.sysctls)
        if self.modules is not None:
            return False
        return None

    def bridge_nf(self, family: int = 4) -> bool | None:
        """Whether bridged IPv4 (IPv6) frames go through iptables: br_netfilter loaded and bridge-nf-call-* on."""
        loaded = self.br_netfilter
        if loaded is False:
            return False
        v = self.sysctl_int("net.bridge.bridge-nf-call-" + ("iptables" if family == 4 else "ip6tables"))
        if v is None:
            return None
        return bool(v)

    # -- interfaces --------------------------------------------------------------------------------------
    def bridge_of(self, ifname: str) -> str | None:
        return (self.links or {}).get(ifname)

    def local_addresses(self) -> list[IPAddress]:
        return [a.ip for a in self.addresses or ()]
