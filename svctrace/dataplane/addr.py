"""Reading addresses fast: dumps print tens of thousands of them (every virtual server, real server and ipset
member), and `ipaddress.ip_address` costs a few microseconds each."""

from __future__ import annotations

import ipaddress
import socket

from svctrace.model.packet import IPAddress


def ip_of(text: str) -> IPAddress:
    """`ipaddress.ip_address(text)` (ValueError alike). A dotted IPv4 address goes through inet_pton, which accepts
    exactly the texts ipaddress does (four decimals 0-255, no leading zeros, nothing around them), 2-3x faster."""
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except (OSError, TypeError, ValueError):
        return ipaddress.ip_address(text)
