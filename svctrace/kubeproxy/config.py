"""How kube-proxy runs on one node, and what it finds there: the one configuration of the three renderers.

:class:`ProxyConfig` holds kube-proxy's flags (``--cluster-cidr``, ``--masquerade-bit``, ``--nodeport-addresses``,
...) and the node's facts (its name, IPs and labels). Most fields mean the same in every proxy mode; the few that
belong to one mode say so. A renderer calls :meth:`ProxyConfig.for_mode` first: it fills in what the mode
assumes when a field is left unset (``None``) and refuses a kube-proxy version the mode's renderer does not
model.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, replace
from typing import Final, Literal

from svctrace.kubeproxy.endpoints import IPFamily
from svctrace.kubeproxy.versions import FEATURES, MODES
from svctrace.model.version import Version, parse_version

__all__ = ["IPAddr", "IPNet", "Mode", "NodePortAddresses", "ProxyConfig", "go_hex08", "nodeport_addresses",
           "parse_ips"]

Mode = Literal["iptables", "ipvs", "nftables"]
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Whether the node's iptables has ``--random-fully`` when ``random_fully`` is not given: kube-proxy's own unit
#: tests (the iptables corpus) run without it; IPVS mode assumes iptables 1.6.2+, every current distribution.
_DEFAULT_RANDOM_FULLY: Final[dict[Mode, bool]] = {"iptables": False, "ipvs": True, "nftables": True}

#: ``--nodeport-addresses`` as each mode's renderer reads it: (what an empty flag means, what ``primary`` means).
#: Empty: every local address (iptables, IPVS) or ``primary`` (nftables' default since 1.29). ``primary``
#: (1.29+, cmd/kube-proxy turns it into the node IP of each family): "node-ip" (IPVS), "node-ip-not-loopback"
#: (nftables: setupNFTables leaves loopback out), None (the iptables renderer does not model it: ignored).
_NODEPORT_FLAG: Final[dict[Mode, tuple[tuple[str, ...], Literal["node-ip", "node-ip-not-loopback"] | None]]] = {
    "iptables": ((), None), "ipvs": ((), "node-ip"), "nftables": (("primary",), "node-ip-not-loopback")}


@dataclass(frozen=True)
class ProxyConfig:
    """What kube-proxy needs to know about itself and the node."""

    node_name: str
    #: The node's IPs. The first one of the proxier's family is kube-proxy's ``nodeIP`` (the node itself may
    #: reach a load-balancer IP whose ``loadBalancerSourceRanges`` contain it; nftables mode's ``primary``
    #: NodePort address). When empty, the renderers take the InternalIP/ExternalIP of the Node object.
    node_ips: tuple[str, ...] = ()
    #: ``--cluster-cidr``: the pod range of kube-proxy's local-traffic detector. None: no detector (no
    #: ``! -s CIDR`` masquerade rules, no pod short-circuit; IPVS mode matches ``KUBE-CLUSTER-IP`` ``src,dst``).
    cluster_cidr: str | None = None
    _: KW_ONLY
    #: None: the mode's default in :data:`svctrace.kubeproxy.versions.MODES`.
    kube_version: str | None = None
    ip_family: IPFamily = "IPv4"
    masquerade_bit: int = 14
    #: The mark as kube-proxy spells it in its rules; None: ``fmt.Sprintf("%#08x", 1<<bit)`` = ``0x00004000``
    #: (kube-proxy's unit tests' fake proxier uses ``0x4000``).
    masquerade_mark: str | None = None
    masquerade_all: bool = False
    #: ``--nodeport-addresses`` CIDRs (or ``primary``). Empty: the mode's default -- every local address
    #: (iptables; IPVS without loopback), the node IP of the family (nftables, ``primary`` since 1.29).
    nodeport_addresses: tuple[str, ...] = ()
    #: Addresses on the node's interfaces (kube-ipvs0 aside), for nodePortAddresses and IPVS's ``shouldBind``.
    #: None: ``node_ips`` (iptables mode adds the loopback addresses).
    interface_addresses: tuple[str, ...] | None = None
    #: Labels of this node (the zone, for topology hints); taken from the Node objects when None.
    node_labels: Mapping[str, str] | None = None
    #: The node's iptables supports ``--random-fully`` (on the MASQUERADE rule). None: the mode's default.
    random_fully: bool | None = None
    #: ``--detect-local-mode``: how kube-proxy tells traffic from local pods (pkg/proxy/util/localdetector.go):
    #: ClusterCIDR (``-s clusterCIDR``), NodeCIDR (``-s`` the node's podCIDR), BridgeInterface (``-i bridge``),
    #: InterfaceNamePrefix (``-i prefix+``).
    detect_local_mode: str = "ClusterCIDR"
    #: The node's ``spec.podCIDR`` (NodeCIDR mode); None: taken from the Node object when there is one.
    node_pod_cidr: str | None = None
    #: ``detectLocal.bridgeInterface`` / ``--pod-bridge-interface`` (BridgeInterface mode).
    bridge_interface: str | None = None
    #: ``detectLocal.interfaceNamePrefix`` / ``--pod-interface-name-prefix`` (InterfaceNamePrefix mode).
    interface_name_prefix: str | None = None
    #: The kernel has nfnetlink_acct, so kube-proxy (1.30+) writes its nfacct counting rules. None: the mode's
    #: default (off: kube-proxy's unit tests run without it).
    nfacct: bool | None = None

    # -- iptables mode ----------------------------------------------------------------------------------
    #: ``--iptables-localhost-nodeports`` (forced off unless nodePortAddresses covers 127.0.0.1).
    localhost_nodeports: bool = True
    #: ``nf_conntrack_tcp_be_liberal`` is set (1.29+ then skips the INVALID DROP rule).
    conntrack_tcp_be_liberal: bool = False
    #: Add the rules the kubelet owns: INPUT/OUTPUT jumps to KUBE-FIREWALL and its localnet rule, and before
    #: 1.25 the KUBE-MARK-DROP mark rule and its KUBE-FIREWALL DROP.
    kubelet_rules: bool = False

    # -- IPVS mode --------------------------------------------------------------------------------------
    #: ``--ipvs-scheduler``. An empty value is kube-proxy's default, ``rr``.
    scheduler: str = "rr"
    #: ``--ipvs-strict-arp``. It changes only two sysctls, not the rules.
    strict_arp: bool = False
    #: A terminating endpoint that kube-proxy used before it started terminating is assumed to still carry
    #: connections: graceful termination keeps it with weight 0 (``GracefulDeleteRS``). False: gone.
    drain_terminating: bool = True

    # -- nftables mode ----------------------------------------------------------------------------------
    #: Service CIDRs kube-proxy knows (``ServiceCIDR`` objects); they get the "unallocated ClusterIPs" drop.
    service_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("node_ips", "nodeport_addresses", "interface_addresses", "service_cidrs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if not self.scheduler:
            object.__setattr__(self, "scheduler", "rr")
        if self.ip_family not in ("IPv4", "IPv6"):
            raise ValueError(f"ip_family must be IPv4 or IPv6, not {self.ip_family!r}")
        if self.kube_version is not None:
            parse_version(self.kube_version)
        if self.detect_local_mode not in DETECT_LOCAL_MODES:
            raise ValueError(f"detectLocalMode must be one of {', '.join(DETECT_LOCAL_MODES)}, not "
                             f"{self.detect_local_mode!r}")

    def for_mode(self, mode: Mode) -> ProxyConfig:
        """This configuration with the mode's defaults filled in; ValueError for a version the mode's renderer
        does not model."""
        cfg = replace(self, kube_version=self.kube_version or MODES[mode].default,
                      random_fully=_DEFAULT_RANDOM_FULLY[mode] if self.random_fully is None else self.random_fully,
                      nfacct=bool(self.nfacct))
        version = cfg.kube_version or MODES[mode].default
        missing = MODES[mode].unmodelled(version)
        if missing is not None:
            raise ValueError(f"kube-proxy {version} is not modelled in {mode} mode (svctrace models "
                             f"{MODES[mode].range_text}): it lacks {missing.says}")
        if mode != "iptables" and cfg.detect_local_mode != "ClusterCIDR":
            raise ValueError(f"--detect-local-mode {cfg.detect_local_mode} is modelled in iptables mode only "
                             f"(svctrace's {mode} renderer knows the ClusterCIDR detector)")
        need = {"NodeCIDR": "detect-local-node-cidr", "BridgeInterface": "detect-local-interface",
                "InterfaceNamePrefix": "detect-local-interface"}.get(cfg.detect_local_mode)
        if need is not None and not FEATURES[need].in_version(parse_version(version)):
            raise ValueError(f"--detect-local-mode {cfg.detect_local_mode} needs kube-proxy "
                             f"{FEATURES[need].since_text}+ (kube-proxy {version} has no such mode)")
        return cfg

    def local_detector(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """kube-proxy's LocalTrafficDetector as iptables arguments (IfLocal, IfNotLocal), None when it has none
        (the no-op detector: the mode's CIDR or interface is not known). pkg/proxy/util/localdetector.go."""
        mode = self.detect_local_mode
        if mode == "ClusterCIDR":
            return (("-s", self.cluster_cidr), ("!", "-s", self.cluster_cidr)) if self.cluster_cidr else None
        if mode == "NodeCIDR":
            cidr = self.node_pod_cidr
            return (("-s", cidr), ("!", "-s", cidr)) if cidr else None
        if mode == "BridgeInterface":
            i = self.bridge_interface
            return (("-i", i), ("!", "-i", i)) if i else None
        prefix = self.interface_name_prefix
        return (("-i", f"{prefix}+"), ("!", "-i", f"{prefix}+")) if prefix else None

    @property
    def version(self) -> Version:
        """(major, minor) of ``kube_version`` (set by :meth:`for_mode`)."""
        if self.kube_version is None:
            raise ValueError("ProxyConfig.version before for_mode(): no kube_version")
        return parse_version(self.kube_version)

    @property
    def mark(self) -> str:
        """The masquerade mark as written in the rules: Go's ``%#08x`` pads the digits alone (``0x00004000``)."""
        return self.masquerade_mark or go_hex08(1 << self.masquerade_bit)

    @property
    def is_ipv6(self) -> bool:
        return self.ip_family == "IPv6"

    def family_ok(self, ip: IPAddr | ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """The address (or network) is of the proxier's family."""
        return (ip.version == 6) == self.is_ipv6

    @property
    def node_ip(self) -> IPAddr | None:
        """kube-proxy's ``nodeIP``: the first of ``node_ips`` of the proxier's family."""
        return next((ip for ip in parse_ips(self.node_ips) if self.family_ok(ip)), None)


DETECT_LOCAL_MODES: Final = ("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix")


def go_hex08(value: int) -> str:
    """Go's ``%#08x``: unlike C, the zero padding applies to the digits alone (``0x00004000``)."""
    return f"0x{value:08x}"


def parse_ips(texts: tuple[str, ...] | list[str]) -> list[IPAddr]:
    """The addresses of ``ip`` or ``ip/prefix`` texts, each once, in order; what does not parse is left out."""
    out: list[IPAddr] = []
    for t in texts:
        try:
            ip = ipaddress.ip_interface(t.strip()).ip
        except ValueError:
            continue
        if ip not in out:
            out.append(ip)
    return out


@dataclass(frozen=True)
class NodePortAddresses:
    """``NewNodePortAddresses``: the ``--nodeport-addresses`` CIDRs of the proxier's family."""

    nets: tuple[IPNet, ...]
    #: ``MatchAll``: no CIDR of the family, or a zero CIDR (every local address takes NodePorts).
    match_all: bool
    #: ``ContainsIPv4Loopback``: a CIDR holds 127.0.0.1 (iptables' ``--iptables-localhost-nodeports``).
    contains_ipv4_loopback: bool

    def node_ips(self, addresses: tuple[str, ...] | list[str]) -> list[IPAddr]:
        """``GetNodeIPs``: the addresses (``ip`` or ``ip/prefix``) inside the CIDRs, each once, in order,
        loopback included."""
        return [ip for ip in parse_ips(addresses) if any(ip.version == n.version and ip in n for n in self.nets)]


def nodeport_addresses(cfg: ProxyConfig, mode: Mode) -> NodePortAddresses:
    """``--nodeport-addresses`` of ``cfg`` as ``mode``'s renderer reads it (:data:`_NODEPORT_FLAG`)."""
    default, primary = _NODEPORT_FLAG[mode]
    nets: list[IPNet] = []
    for text in cfg.nodeport_addresses or default:
        text = text.strip()
        if text == "primary" and primary is not None:
            ip = cfg.node_ip
            if ip is not None and not (primary == "node-ip-not-loopback" and ip.is_loopback):
                nets.append(ipaddress.ip_network(ip))
            continue
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        if cfg.family_ok(net):
            nets.append(net)
    loopback = ipaddress.ip_address("127.0.0.1")
    contains_loopback = any(n.version == 4 and (n.network_address.is_loopback or loopback in n) for n in nets)
    if not nets or any(n.prefixlen == 0 for n in nets):
        zero = ipaddress.ip_network("::/0" if cfg.is_ipv6 else "0.0.0.0/0")
        return NodePortAddresses((zero,), True, not cfg.is_ipv6)  # 0.0.0.0/0 holds 127.0.0.1
    return NodePortAddresses(tuple(nets), False, contains_loopback)
