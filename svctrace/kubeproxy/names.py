"""kube-proxy's iptables chain names, recomputed exactly as kube-proxy computes them.

kube-proxy (``pkg/proxy/iptables/proxier.go``) names each per-service chain after a hash of the
*service port name* and the lower-case protocol::

    portProtoHash(name, proto)  = base32(sha256(name + proto))[:16]
    KUBE-SVC-<hash>   servicePortPolicyClusterChain    (Cluster traffic policy; before 1.24 the only one)
    KUBE-SVL-<hash>   servicePortPolicyLocalChainName  (Local traffic policy, 1.24+)
    KUBE-EXT-<hash>   serviceExternalChainName         (NodePort / LB / external IPs, 1.24+)
    KUBE-FW-<hash>    serviceFirewallChainName         (loadBalancerSourceRanges)
    KUBE-XLB-<hash>   serviceLBChainName               (externalTrafficPolicy Local, before 1.24)
    KUBE-SEP-<base32(sha256(name + proto + endpoint))[:16]>   servicePortEndpointChainName

The *service port name* is ``ServicePortName.String()``: ``"ns/name:port"``.  Since Kubernetes 1.19 an
unnamed port (``port == ""``) gives just ``"ns/name"``; before that the colon was always there
(``"ns/name:"``).  ``legacy_port_format=True`` selects the old form.  The endpoint is
``net.JoinHostPort(ip, port)``: ``"10.0.0.1:80"`` or ``"[2001:db8::1]:80"``.

In nftables mode (``pkg/proxy/nftables/proxier.go``) a per-service chain is ``<kind>-`` plus
``hashAndTruncate`` of ``ns/name/proto/port`` (``__ip/port`` appended for an endpoint):
``service-ULMVA6XW-ns1/svc1/tcp/p80``, ``endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80``.
:func:`service_chain_name_base` and :func:`endpoint_chain_name_base` write such a name, :data:`NFT_CHAIN` is the
one pattern that reads it.

Pure standard library; nothing here touches the network or the kernel.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple

__all__ = [
    "CHAIN_PREFIXES",
    "FAMILIES",
    "NFT_CHAIN",
    "NFT_CHAIN_KINDS",
    "NFT_CHAIN_NAME_BASE_LENGTH_MAX",
    "NFT_NAME_LENGTH_MAX",
    "SEP_PREFIX",
    "ChainFamily",
    "ChainOwner",
    "EndpointOwner",
    "NftChainOwner",
    "build_chain_index",
    "build_endpoint_chain_index",
    "chain_family",
    "chain_name",
    "endpoint_chain_name_base",
    "endpoint_hash",
    "ext_chain",
    "fw_chain",
    "join_host_port",
    "nft_chain_owner",
    "parse_service_port_name",
    "port_proto_hash",
    "sep_chain",
    "service_chain_name_base",
    "service_port_name",
    "svc_chain",
    "svl_chain",
    "xlb_chain",
]

ChainFamily = Literal["SVC", "SVL", "EXT", "FW", "XLB"]

#: Per service-port chain families, in the order an index prefers them (newest layout first).
FAMILIES: Final[tuple[ChainFamily, ...]] = ("SVC", "SVL", "EXT", "FW", "XLB")

CHAIN_PREFIXES: Final[dict[ChainFamily, str]] = {
    "SVC": "KUBE-SVC-",
    "SVL": "KUBE-SVL-",
    "EXT": "KUBE-EXT-",
    "FW": "KUBE-FW-",
    "XLB": "KUBE-XLB-",
}

SEP_PREFIX: Final = "KUBE-SEP-"

_HASH_LEN: Final = 16

#: knftables ``NameLengthMax``; nftables mode's chain name bases leave room for the longest kind prefix.
NFT_NAME_LENGTH_MAX: Final = 256
NFT_CHAIN_NAME_BASE_LENGTH_MAX: Final = NFT_NAME_LENGTH_MAX - 16

#: nftables mode's per-service chain kinds, the prefixes proxier.go puts before the chain name base:
#: Cluster policy, Local policy, external traffic, loadBalancerSourceRanges, one endpoint.
NFT_CHAIN_KINDS: Final = ("service", "local", "external", "firewall", "endpoint")
#: A kube-proxy nftables per-service chain name. ``hashAndTruncate`` writes the first 8 characters of
#: base32(sha256(...)), so the hash is of the RFC 4648 alphabet A-Z2-7; an unnamed port leaves ``port`` empty.
NFT_CHAIN: Final = re.compile(r"^(service|local|external|firewall|endpoint)-[A-Z2-7]{8}-"
                              r"(?P<ns>[^/]+)/(?P<name>[^/]+)/(?P<proto>[a-z]+)/(?P<port>[^_/]*)(?:__(?P<ep>.+))?$")


class ChainOwner(NamedTuple):
    """Which service port a per-service chain (SVC/SVL/EXT/FW/XLB) belongs to."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    family: ChainFamily


class EndpointOwner(NamedTuple):
    """Which service port and endpoint a KUBE-SEP chain belongs to."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    endpoint: str


class NftChainOwner(NamedTuple):
    """Which service port (and endpoint) an nftables per-service chain belongs to, read from its name."""

    kind: str  # one of NFT_CHAIN_KINDS
    namespace: str
    name: str
    protocol: str  # lower-case
    port_name: str  # "" for an unnamed port
    endpoint: str | None  # `10.180.0.1/80` (IPv6 colons as dots) for an endpoint chain


def nft_chain_owner(chain: str) -> NftChainOwner | None:
    """The owner of a kube-proxy nftables per-service chain, None for any other chain."""
    m = NFT_CHAIN.match(chain)
    if m is None:
        return None
    return NftChainOwner(m.group(1), m["ns"], m["name"], m["proto"], m["port"], m["ep"])


@functools.lru_cache(maxsize=1 << 18)
def _sha256_b32(data: str, length: int) -> str:
    """The first ``length`` characters of base32(sha256(data)), kube-proxy's chain-name hash (iptables mode keeps
    16, nftables mode's ``hashAndTruncate`` 8)."""
    # base32 encodes each 5 bytes into 8 characters on their own: the first length*5/8 bytes of the digest
    # give the first ``length`` characters of the whole digest's encoding.
    digest = hashlib.sha256(data.encode("utf-8")).digest()
    return base64.b32encode(digest[:(length * 5 + 7) // 8]).decode("ascii")[:length]


def _hash16(data: str) -> str:
    return _sha256_b32(data, _HASH_LEN)


def _hash_and_truncate(name: str) -> str:
    """nftables ``hashAndTruncate``: the first 8 base32 characters of sha256(name), a dash, the name; cut to
    :data:`NFT_CHAIN_NAME_BASE_LENGTH_MAX` with ``...``."""
    out = _sha256_b32(name, 8) + "-" + name
    if len(out) > NFT_CHAIN_NAME_BASE_LENGTH_MAX:
        out = out[:NFT_CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return out


def service_chain_name_base(namespace: str, name: str, port_name: str, protocol: str) -> str:
    """nftables ``servicePortChainNameBase``: ``ULMVA6XW-ns1/svc1/tcp/p80`` (an unnamed port ends in ``/tcp/``)."""
    return _hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


def endpoint_chain_name_base(namespace: str, name: str, port_name: str, protocol: str, ip: str, port: int) -> str:
    """nftables ``servicePortEndpointChainNameBase``: ``5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80``; IPv6 colons
    become dots."""
    return _hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}__{ip.replace(':', '.')}/{port}")


def service_port_name(namespace: str, name: str, port_name: str, *, legacy_port_format: bool = False) -> str:
    """``ServicePortName.String()``: ``ns/name:port``, or ``ns/name`` for an unnamed port (1.19+).

    With ``legacy_port_format`` (kube-proxy before 1.19) the colon is always present: ``ns/name:``.
    """
    base = f"{namespace}/{name}"
    if port_name or legacy_port_format:
        return f"{base}:{port_name}"
    return base


def parse_service_port_name(text: str) -> tuple[str, str, str, bool]:
    """Split ``ns/name[:port]`` into ``(namespace, name, port_name, legacy_port_format)``.

    ``legacy_port_format`` is True only when the text proves the pre-1.19 form (``ns/name:``, a colon
    with an empty port name).  Raises ``ValueError`` when the text is not of that shape.
    """
    ns, sep, rest = text.partition("/")
    if not sep or not ns or not rest or "/" in rest:
        raise ValueError(f"not a service port name: {text!r}")
    name, colon, port = rest.partition(":")
    if not name or ":" in port:
        raise ValueError(f"not a service port name: {text!r}")
    return ns, name, port, bool(colon) and not port


def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """kube-proxy's ``portProtoHash``: ``base32(sha256(name + lower(protocol)))[:16]``."""
    return _hash16(service_port_name + protocol.lower())


def endpoint_hash(service_port_name: str, protocol: str, endpoint: str) -> str:
    """The 16-character hash of a KUBE-SEP chain (``name + lower(protocol) + "ip:port"``)."""
    return _hash16(service_port_name + protocol.lower() + endpoint)


def chain_name(
    family: ChainFamily,
    namespace: str,
    name: str,
    port_name: str,
    protocol: str,
    *,
    legacy_port_format: bool = False,
) -> str:
    """The ``KUBE-<family>-XXXX`` chain of a service port."""
    spn = service_port_name(namespace, name, port_name, legacy_port_format=legacy_port_format)
    return CHAIN_PREFIXES[family] + port_proto_hash(spn, protocol)


def svc_chain(
    namespace: str, name: str, port_name: str, protocol: str, *, legacy_port_format: bool = False
) -> str:
    """``KUBE-SVC-XXXX`` (``servicePortPolicyClusterChain``; ``servicePortChainName`` before 1.24)."""
    return chain_name("SVC", namespace, name, port_name, protocol, legacy_port_format=legacy_port_format)


def svl_chain(
    namespace: str, name: str, port_name: str, protocol: str, *, legacy_port_format: bool = False
) -> str:
    """``KUBE-SVL-XXXX`` (``servicePortPolicyLocalChainName``)."""
    return chain_name("SVL", namespace, name, port_name, protocol, legacy_port_format=legacy_port_format)


def ext_chain(
    namespace: str, name: str, port_name: str, protocol: str, *, legacy_port_format: bool = False
) -> str:
    """``KUBE-EXT-XXXX`` (``serviceExternalChainName``)."""
    return chain_name("EXT", namespace, name, port_name, protocol, legacy_port_format=legacy_port_format)


def fw_chain(
    namespace: str, name: str, port_name: str, protocol: str, *, legacy_port_format: bool = False
) -> str:
    """``KUBE-FW-XXXX`` (``serviceFirewallChainName``)."""
    return chain_name("FW", namespace, name, port_name, protocol, legacy_port_format=legacy_port_format)


def xlb_chain(
    namespace: str, name: str, port_name: str, protocol: str, *, legacy_port_format: bool = False
) -> str:
    """``KUBE-XLB-XXXX`` (``serviceLBChainName``, externalTrafficPolicy Local before 1.24)."""
    return chain_name("XLB", namespace, name, port_name, protocol, legacy_port_format=legacy_port_format)


def sep_chain(
    namespace: str,
    name: str,
    port_name: str,
    protocol: str,
    endpoint: str,
    *,
    legacy_port_format: bool = False,
) -> str:
    """``KUBE-SEP-XXXX`` (``servicePortEndpointChainName``); ``endpoint`` is ``"ip:port"`` / ``"[ip6]:port"``."""
    spn = service_port_name(namespace, name, port_name, legacy_port_format=legacy_port_format)
    return SEP_PREFIX + endpoint_hash(spn, protocol, endpoint)


def join_host_port(host: str, port: int | str) -> str:
    """Go's ``net.JoinHostPort``: brackets around a host that contains a colon (IPv6)."""
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def chain_family(chain: str) -> ChainFamily | Literal["SEP"] | None:
    """The family of a kube-proxy per-service chain name, or None for any other chain."""
    if chain.startswith(SEP_PREFIX):
        return "SEP"
    for family, prefix in CHAIN_PREFIXES.items():
        if chain.startswith(prefix):
            return family
    return None


def build_chain_index(
    candidates: Iterable[tuple[str, str, str, str]],
    *,
    families: Iterable[ChainFamily] = FAMILIES,
) -> dict[str, ChainOwner]:
    """Map every chain name kube-proxy could give these service ports to its owner.

    ``candidates`` are ``(namespace, name, port_name, protocol)``.  Each is hashed in both port-name
    formats (1.19+ and legacy; they differ only for an unnamed port) and for every family.  Where two
    candidates collide (never seen in practice) the first one given wins.  Protocols are stored
    lower-case, as kube-proxy hashes them.
    """
    fams = tuple(families)
    index: dict[str, ChainOwner] = {}
    for ns, name, port_name, protocol in candidates:
        proto = protocol.lower()
        for legacy in (False, True):
            if legacy and port_name:
                continue  # same string as the modern format
            h = port_proto_hash(service_port_name(ns, name, port_name, legacy_port_format=legacy), proto)
            for family in fams:
                index.setdefault(CHAIN_PREFIXES[family] + h, ChainOwner(ns, name, port_name, proto, family))
    return index


def build_endpoint_chain_index(
    candidates: Iterable[tuple[str, str, str, str, str]],
) -> dict[str, EndpointOwner]:
    """Map KUBE-SEP chain names to ``(namespace, name, port_name, protocol, endpoint)``.

    ``candidates`` are ``(namespace, name, port_name, protocol, endpoint)`` with the endpoint as
    ``"ip:port"``; both port-name formats are indexed, as in :func:`build_chain_index`.
    """
    index: dict[str, EndpointOwner] = {}
    for ns, name, port_name, protocol, endpoint in candidates:
        proto = protocol.lower()
        for legacy in (False, True):
            if legacy and port_name:
                continue
            spn = service_port_name(ns, name, port_name, legacy_port_format=legacy)
            index.setdefault(
                SEP_PREFIX + endpoint_hash(spn, proto, endpoint),
                EndpointOwner(ns, name, port_name, proto, endpoint),
            )
    return index
