"""What the three renderers share beside the plan: the node's ``ip -j addr`` for a snapshot."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable

__all__ = ["ip_addr_json"]


def ip_addr_json(node_name: str, node_ips: Iterable[str], extra: Iterable[dict[str, object]] = ()) -> str:
    """An ``ip -j addr`` of the node: ``lo`` and ``eth0`` carrying ``node_ips`` (``ip`` or ``ip/prefix``; /24
    and /64 by default), then the links of ``extra`` (made with :func:`link`)."""
    lo = link(1, "lo", ["LOOPBACK", "UP", "LOWER_UP"], 65536, "noqueue", "UNKNOWN", "loopback",
              "00:00:00:00:00:00", "00:00:00:00:00:00", [
                  addr("inet", "127.0.0.1", 8, "host", "lo"), addr("inet6", "::1", 128, "host", None)])
    eth_addrs = []
    for text in node_ips:
        iface = ipaddress.ip_interface(text if "/" in text else f"{text}/{64 if ':' in text else 24}")
        if iface.version == 6:
            eth_addrs.append(addr("inet6", str(iface.ip), iface.network.prefixlen, "global", None))
        else:
            plen = iface.network.prefixlen
            eth_addrs.append(addr("inet", str(iface.ip), plen, "global", "eth0",
                                  str(iface.network.broadcast_address) if plen < 31 else None))
    eth = link(2, "eth0", ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], 1500, "fq_codel", "UP", "ether",
               mac(node_name, "eth0"), "ff:ff:ff:ff:ff:ff", eth_addrs)
    return json.dumps([lo, eth, *extra], separators=(",", ":")) + "\n"


def link(index: int, name: str, flags: list[str], mtu: int, qdisc: str, state: str, link_type: str,
         mac_address: str, broadcast: str, addrs: list[dict[str, object]]) -> dict[str, object]:
    return {"ifindex": index, "ifname": name, "flags": flags, "mtu": mtu, "qdisc": qdisc, "operstate": state,
            "group": "default", "txqlen": 1000, "link_type": link_type, "address": mac_address,
            "broadcast": broadcast, "addr_info": addrs}


def addr(family: str, local: str, prefixlen: int, scope: str, label: str | None,
         broadcast: str | None = None) -> dict[str, object]:
    a: dict[str, object] = {"family": family, "local": local, "prefixlen": prefixlen}
    if broadcast is not None:
        a["broadcast"] = broadcast
    a["scope"] = scope
    if label is not None:
        a["label"] = label
    a |= {"valid_life_time": 4294967295, "preferred_life_time": 4294967295}
    return a


def mac(node: str, iface: str) -> str:
    """A stable, locally administered MAC address for the node's interface."""
    digest = hashlib.sha256(f"{node}/{iface}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))
