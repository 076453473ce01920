"""What kube-proxy in IPVS mode programs on one node, recomputed from Kubernetes objects.

:func:`generate_ipvs` takes Services, EndpointSlices (or v1 Endpoints) and Nodes as plain dicts (what
``kubectl get -o json`` prints) and a :class:`~svctrace.kubeproxy.config.ProxyConfig`, and returns
:class:`IPVSRules`, which prints the node's dataplane the way the node's own tools print it:

* :meth:`IPVSRules.ipvsadm_save`: ``ipvsadm -Sn``. There is one virtual server per ClusterIP, external IP
  and load-balancer IP, and one per NodePort on every node address kube-proxy binds (nodePortAddresses
  semantics). Each has its real servers (``-m -w 1``; ``-w 0`` for a terminating endpoint that
  kube-proxy's graceful termination keeps while its connections drain).
* :meth:`IPVSRules.ipset_save`: ``ipset save``. These are the sets of ``ipsetInfo`` with the types and
  the ``create`` options kube-proxy uses.
* :meth:`IPVSRules.iptables_save`: the filter and nat rules that IPVS mode writes, in the canonical
  form that iptables 1.8.9 ``iptables-save`` prints once they are loaded. This includes the jumps from
  the built-in chains. :meth:`IPVSRules.iptables_restore` gives kube-proxy's own ``iptables-restore``
  input.
* :meth:`IPVSRules.kube_ipvs0_addresses` and :meth:`IPVSRules.ip_addr_json`: the addresses on the
  dummy interface ``kube-ipvs0``, and an ``ip -j addr`` that shows them.

The code follows kube-proxy **v1.30**, ``pkg/proxy/ipvs/proxier.go``:

* ``syncProxyRules`` decides the virtual servers, the ipset entries and the kube-ipvs0 addresses.
* ``syncEndpoint`` decides the real servers. It calls ``CategorizeEndpoints``
  (:func:`svctrace.kubeproxy.endpoints.categorize_endpoints`). A virtual server with the Local policy
  uses the local endpoints, and **falls back to the cluster endpoints when there are none**
  (kubernetes PR #97081).
* ``writeIptablesRules``, ``acceptIPVSTraffic`` and ``createAndLinkKubeChain`` write the iptables
  rules. The tables ``iptablesJumpChain``, ``iptablesChains``, ``ipsetInfo`` and
  ``ipsetWithIptablesChain`` are copied below.
* ``pkg/proxy/ipvs/ipset.go`` gives the set names and comments.
* ``pkg/proxy/ipvs/ipset/ipset.go`` gives ``createSet`` and ``Entry.String``.
* ``pkg/proxy/ipvs/netlink_linux.go`` gives ``GetAllLocalAddressesExcept`` and ``isValidForSet``.

``kube_version`` selects between the layouts since 1.26:

* 1.26+: KUBE-IPVS-FILTER and KUBE-IPVS-IPS (PR #108460), and ``KUBE-SERVICES -s 127.0.0.0/8 -j
  RETURN`` (PR #112950). Loopback addresses get no NodePort.
* 1.29+: KUBE-IPVS-OUT-FILTER (PR #119791). It stops the node from reaching a load-balancer IP
  whose ``loadBalancerSourceRanges`` leave the node out.
* 1.30+: KUBE-IPVS-FILTER returns for KUBE-EXTERNAL-IP-LOCAL (PR #121919). Later 1.28 and 1.29
  patch releases got this rule as a backport. ``kube_version`` ignores patch levels, so those
  releases are not modelled.

Older layouts (the nat KUBE-FIREWALL chain, NodePorts on 127.0.0.1) are refused. 1.31+ is written
like 1.30.

Normalisations, where kube-proxy itself is not deterministic:

* Service ports are processed sorted by service port name (:func:`svctrace.kubeproxy.plan.collect_ports`).
* Real servers are sorted by address (kube-proxy adds them in Go-set order).
* Set members are sorted (``ipset save`` prints them in hash order).
* Hash sets are printed without the ``bucketsize``/``initval`` options that ipset 7.11+ adds, so
  ``create`` lines carry exactly kube-proxy's ``ipset create`` options.

Not modelled:

* Local-traffic detectors other than ``--cluster-cidr``.
* nodePortAddresses matching addresses on kube-ipvs0 itself.
* Graceful termination of endpoints that left the slices, and of endpoints that became not-ready
  without terminating.
* The kubelet's own chains (KUBE-KUBELET-CANARY, KUBE-FIREWALL).

Pure standard library.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Final

from svctrace.dataplane.iptables.rules import BUILTIN_CHAINS
from svctrace.kubeproxy.config import IPAddr, ProxyConfig, nodeport_addresses, parse_ips
from svctrace.kubeproxy.endpoints import (
    ZONE_LABEL,
    EndpointInfo,
    EndpointSelection,
    IPFamily,
    KubeObject,
    ServicePortInfo,
    categorize_endpoints,
    choice_depends_on_node,
)
from svctrace.kubeproxy.ipvs_sets import (
    DUMMY_DEVICE,
    KUBE_CLUSTER_IP,
    KUBE_EXTERNAL_IP,
    KUBE_EXTERNAL_IP_LOCAL,
    KUBE_HEALTH_CHECK_NODE_PORT,
    KUBE_IPSET,
    KUBE_IPSETS,
    KUBE_IPVS_IPS,
    KUBE_LOAD_BALANCER,
    KUBE_LOAD_BALANCER_FW,
    KUBE_LOAD_BALANCER_LOCAL,
    KUBE_LOAD_BALANCER_SOURCE_CIDR,
    KUBE_LOAD_BALANCER_SOURCE_IP,
    KUBE_LOOP_BACK,
    KUBE_NODE_PORT_LOCAL_SCTP,
    KUBE_NODE_PORT_LOCAL_TCP,
    KUBE_NODE_PORT_LOCAL_UDP,
    KUBE_NODE_PORT_SCTP,
    KUBE_NODE_PORT_TCP,
    KUBE_NODE_PORT_UDP,
)
from svctrace.kubeproxy.names import join_host_port
from svctrace.kubeproxy.plan import Shared, collect_ports, node_context, plan_ports
from svctrace.kubeproxy.render.common import (
    SAVE_TABLES,
    IptRule,
    addr,
    forward_accept_rules,
    ip_addr_json,
    iptables_save,
    link,
    mac,
    masquerade_rules,
    quoted,
    user_and_builtin_chains,
)
from svctrace.kubeproxy.versions import has

__all__ = [
    "IPSet",
    "IPVSRules",
    "IptRule",
    "RealServer",
    "VirtualServer",
    "generate_ipvs",
    "ipset_name",
]



HASH_IP_PORT_NET: Final = "hash:ip,port,net"
BITMAP_PORT: Final = "bitmap:port"



# ipsetWithIptablesChain: (set, table, from chain, to, match flags, -p). The Local sets must come before
# the plain ones (their RETURN has to win).
_SET_RULES: Final = (
    (KUBE_LOOP_BACK, "nat", "KUBE-POSTROUTING", "MASQUERADE", "dst,dst,src", ""),
    (KUBE_LOAD_BALANCER, "nat", "KUBE-SERVICES", "KUBE-LOAD-BALANCER", "dst,dst", ""),
    (KUBE_LOAD_BALANCER_LOCAL, "nat", "KUBE-LOAD-BALANCER", "RETURN", "dst,dst", ""),
    (KUBE_NODE_PORT_LOCAL_TCP, "nat", "KUBE-NODE-PORT", "RETURN", "dst", "tcp"),
    (KUBE_NODE_PORT_TCP, "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "tcp"),
    (KUBE_NODE_PORT_LOCAL_UDP, "nat", "KUBE-NODE-PORT", "RETURN", "dst", "udp"),
    (KUBE_NODE_PORT_UDP, "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst", "udp"),
    (KUBE_NODE_PORT_LOCAL_SCTP, "nat", "KUBE-NODE-PORT", "RETURN", "dst,dst", "sctp"),
    (KUBE_NODE_PORT_SCTP, "nat", "KUBE-NODE-PORT", "KUBE-MARK-MASQ", "dst,dst", "sctp"),
    (KUBE_LOAD_BALANCER_FW, "filter", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL", "dst,dst", ""),
    (KUBE_LOAD_BALANCER_SOURCE_CIDR, "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
    (KUBE_LOAD_BALANCER_SOURCE_IP, "filter", "KUBE-SOURCE-RANGES-FIREWALL", "RETURN", "dst,dst,src", ""),
)



def ipset_name(name: str, ip_family: IPFamily) -> str:
    """``NewIPSet``: IPv6 sets are ``KUBE-6-...``, cut to ipset's 31 characters."""
    if ip_family == "IPv6" and name.startswith("KUBE-"):
        return ("KUBE-6-" + name[len("KUBE-"):])[:31]
    return name


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class RealServer:
    """One IPVS destination. Forwarding is always masquerade (``-m``)."""

    ip: str
    port: int
    weight: int = 1
    #: The endpoint behind it (None only when built by hand).
    endpoint: EndpointInfo | None = field(default=None, compare=False, repr=False)

    @property
    def address(self) -> str:
        return join_host_port(self.ip, self.port)


@dataclass(frozen=True)
class VirtualServer:
    """One IPVS virtual service."""

    protocol: str  # TCP / UDP / SCTP
    ip: str
    port: int
    scheduler: str
    persistent: int | None  # session affinity timeout (``-p``)
    sched_flags: tuple[str, ...]
    reals: tuple[RealServer, ...]
    kind: str  # ClusterIP / ExternalIP / LoadBalancer / NodePort
    service_port: str  # ns/name:port
    bound: bool  # the address is put on kube-ipvs0
    local_policy: bool  # syncEndpoint's onlyNodeLocalEndpoints

    @property
    def address(self) -> str:
        return join_host_port(self.ip, self.port)

    def save_lines(self) -> list[str]:
        """``ipvsadm -Sn`` (``print_service_entry`` with ``FMT_RULE``)."""
        opt = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}[self.protocol]
        head = f"-A {opt} {self.address} -s {self.scheduler}"
        if self.persistent is not None:
            head += f" -p {self.persistent}"
        if self.sched_flags:
            head += " -b " + ",".join(self.sched_flags)
        return [head] + [f"-a {opt} {self.address} -r {r.address} -m -w {r.weight}" for r in self.reals]


@dataclass(frozen=True)
class IPSet:
    """One of kube-proxy's ipsets, with its entries as ``Entry.String()`` spells them."""

    name: str
    type: str
    family: str  # inet / inet6
    comment: str
    entries: tuple[str, ...]

    def create_line(self) -> str:
        """``createSet``'s options, as ``ipset save`` prints them (without ipset 7.11's bucketsize/initval)."""
        if self.type == BITMAP_PORT:
            return f"create {self.name} {self.type} range 0-65535"
        return f"create {self.name} {self.type} family {self.family} hashsize 1024 maxelem 65536"

    def save_entries(self) -> list[str]:
        """The members as ``ipset save`` prints them: a host network (/32, /128) loses its prefix."""
        out = []
        for e in self.entries:
            if self.type == HASH_IP_PORT_NET:
                ip, proto_port, net = e.split(",", 2)
                n = ipaddress.ip_network(net, strict=False)
                net = str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                e = f"{ip},{proto_port},{net}"
            out.append(e)
        return sorted(out, key=_entry_key)

    @property
    def comment_arg(self) -> str:
        """``getComment``: the comment in double quotes, as kube-proxy writes it into its rules."""
        return f'"{self.comment}"'


def _entry_key(entry: str) -> tuple[object, ...]:
    return tuple(_part_key(p) for p in entry.split(","))


@lru_cache(maxsize=1 << 17)  # the nodes of a simulated cluster list the same members
def _part_key(p: str) -> tuple[object, ...]:
    proto, _, port = p.rpartition(":")
    try:
        return (0, int(ipaddress.ip_network(p, strict=False).network_address), p)
    except ValueError:
        pass
    if port.isdigit():
        return (1, proto, int(port))
    return (2, p, 0)


@lru_cache(maxsize=1 << 17)
def _ip_order(ip: str) -> tuple[int, int]:
    """Sorts as ``ipaddress.ip_address(ip)`` does within one family (the addresses of one node's table)."""
    a = ipaddress.ip_address(ip)
    return a.version, int(a)


@dataclass(frozen=True)
class IPVSRules:
    """The result of :func:`generate_ipvs`."""

    config: ProxyConfig
    virtual_servers: tuple[VirtualServer, ...]
    ipsets: tuple[IPSet, ...]
    #: table -> kube-proxy's chain lines (``iptablesChains``), in its order.
    chains: dict[str, tuple[str, ...]]
    #: table -> kube-proxy's rules (``writeIptablesRules``), in its order.
    rules: dict[str, tuple[IptRule, ...]]
    #: table -> the jumps from built-in chains (``iptablesJumpChain``, each ``EnsureRule(Prepend)``ed).
    jumps: dict[str, tuple[IptRule, ...]]
    #: The addresses on kube-ipvs0 (``activeBindAddrs``), sorted.
    bound_addresses: tuple[str, ...]
    #: The node addresses that get a virtual server for each NodePort.
    node_port_ips: tuple[str, ...]
    #: The endpoint selection of each Service port, in processing order.
    selections: tuple[EndpointSelection, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ipv6(self) -> bool:
        return self.config.is_ipv6

    # -- ipvsadm ---------------------------------------------------------------------------
    def ipvsadm_save(self) -> str:
        """``ipvsadm -Sn``."""
        lines = [line for vs in self.virtual_servers for line in vs.save_lines()]
        return "\n".join(lines) + "\n" if lines else ""

    # -- ipset -----------------------------------------------------------------------------
    def ipset(self, name: str) -> IPSet:
        """A set by kube-proxy's IPv4 name (``KUBE-CLUSTER-IP``) or its real name."""
        real = ipset_name(name, self.config.ip_family)
        for s in self.ipsets:
            if s.name in (name, real):
                return s
        raise KeyError(name)

    def ipset_save(self) -> str:
        """``ipset save``: every set of ``ipsetInfo``, in kube-proxy's order, each followed by its members."""
        out: list[str] = []
        for s in self.ipsets:
            out.append(s.create_line())
            out.extend(f"add {s.name} {e}" for e in s.save_entries())
        return "\n".join(out) + "\n"

    # -- iptables --------------------------------------------------------------------------
    def all_chains(self, table: str) -> list[str]:
        return user_and_builtin_chains(table, self.chains.get(table, ()))

    def loaded_rules(self, table: str) -> list[IptRule]:
        """The rules of a table as loaded: the built-in chains' jumps, then kube-proxy's rules."""
        return [*self.jumps.get(table, ()), *self.rules.get(table, ())]

    def chain_rules(self, table: str, chain: str) -> list[IptRule]:
        return [r for r in self.loaded_rules(table) if r.chain == chain]

    def iptables_save(self) -> str:
        """What ``iptables-save`` (1.8.9) prints for the filter and nat tables, if the node has nothing else."""
        return iptables_save(self.chains, [r for t in SAVE_TABLES for r in self.loaded_rules(t)], self.ipv6)

    def iptables_restore(self) -> str:
        """kube-proxy's own ``RestoreAll`` input (``--noflush``): nat chains and rules, then filter's."""
        out: list[str] = []
        for table in ("nat", "filter"):
            out.append(f"*{table}")
            out.extend(f":{c} - [0:0]" for c in self.chains[table])
            out.extend(r.restore_text() for r in self.rules[table])
            out.append("COMMIT")
        return "\n".join(out) + "\n"

    # -- kube-ipvs0 ------------------------------------------------------------------------
    def kube_ipvs0_addresses(self) -> list[str]:
        """What ``ip addr show kube-ipvs0`` lists: ``10.96.0.1/32`` (``/128`` for IPv6), sorted."""
        plen = 128 if self.ipv6 else 32
        return [f"{a}/{plen}" for a in self.bound_addresses]

    def ip_addr_json(self, node_ips: Iterable[str] | None = None) -> str:
        """An ``ip -j addr`` of the node: ``lo``, ``eth0`` carrying ``node_ips`` (``ip`` or ``ip/prefix``;
        /24 and /64 by default), and ``kube-ipvs0`` carrying the Service addresses."""
        node = self.config.node_name
        vips = [addr("inet6" if self.ipv6 else "inet", a, 128 if self.ipv6 else 32, "global",
                     None if self.ipv6 else DUMMY_DEVICE) for a in self.bound_addresses]
        dummy = link(3, DUMMY_DEVICE, ["BROADCAST", "NOARP"], 1500, "noop", "DOWN", "ether",
                     mac(node, DUMMY_DEVICE), "ff:ff:ff:ff:ff:ff", vips)
        return ip_addr_json(node, node_ips if node_ips is not None else self.config.node_ips, [dummy])

    def snapshot_files(self) -> dict[str, str]:
        """The node's files of a svctrace snapshot (``nodes/<name>/``) in IPVS mode."""
        return {"proxy-mode": "ipvs\n", "iptables-save": self.iptables_save(), "ipvsadm": self.ipvsadm_save(),
                "ipset": self.ipset_save(), "ip-addr.json": self.ip_addr_json()}

    def sysctls(self) -> dict[str, str]:
        """The sysctls ``NewProxier`` sets (``conn_reuse_mode`` depends on the kernel and is left out)."""
        out = {"net/ipv4/vs/conntrack": "1", "net/ipv4/vs/expire_nodest_conn": "1",
               "net/ipv4/vs/expire_quiescent_template": "1", "net/ipv4/ip_forward": "1"}
        if self.config.strict_arp:
            out |= {"net/ipv4/conf/all/arp_ignore": "1", "net/ipv4/conf/all/arp_announce": "2"}
        return out


# --------------------------------------------------------------------------- generation


def _node_address_set(cfg: ProxyConfig) -> list[IPAddr]:
    """``GetAllLocalAddressesExcept(kube-ipvs0)`` filtered by ``isValidForSet``: the proxier's family, no
    loopback, no IPv6 link-local."""
    addrs = cfg.interface_addresses if cfg.interface_addresses is not None else cfg.node_ips
    return [ip for ip in parse_ips(addrs) if cfg.family_ok(ip) and not ip.is_loopback
            and not (ip.version == 6 and ip.is_link_local)]


def _node_port_ips(cfg: ProxyConfig) -> list[IPAddr]:
    """The ``nodeIPs`` of ``syncProxyRules``. With ``NewNodePortAddresses``' matchAll (no CIDR of the family, or
    a zero CIDR), they are the whole node address set. Otherwise ``GetNodeIPs`` keeps the addresses inside the
    CIDRs, without loopback."""
    addresses = nodeport_addresses(cfg, "ipvs")
    if addresses.match_all:
        return sorted(_node_address_set(cfg))
    addrs = cfg.interface_addresses if cfg.interface_addresses is not None else cfg.node_ips
    return sorted(ip for ip in addresses.node_ips(addrs) if not ip.is_loopback)


@dataclass
class _Sets:
    ip_family: IPFamily
    entries: dict[str, set[str]] = field(default_factory=lambda: {s.name: set() for s in KUBE_IPSETS})

    def add(self, name: str, entry: str) -> None:
        self.entries[name].add(entry)

    def empty(self, name: str) -> bool:
        return not self.entries[name]

    def name(self, name: str) -> str:
        return ipset_name(name, self.ip_family)

    def comment(self, name: str) -> str:
        return f'"{KUBE_IPSET[name].comment}"'

    def result(self) -> tuple[IPSet, ...]:
        fam = "inet6" if self.ip_family == "IPv6" else "inet"
        return tuple(IPSet(self.name(s.name), s.type, fam, s.comment, tuple(sorted(self.entries[s.name])))
                     for s in KUBE_IPSETS)


def _chosen(sp: ServicePortInfo, eps: Sequence[EndpointInfo], only_local: bool, node: str,
            labels: Mapping[str, str]) -> tuple[EndpointInfo, ...]:
    """``syncEndpoint``'s endpoint list for one virtual server."""
    sel = categorize_endpoints(sp, eps, node_name=node, node_labels=labels)
    if only_local and sel.local_endpoints:
        return sel.local_endpoints
    # Cluster policy, or Local with no local endpoint: "Allow access from local PODs even if no local
    # endpoints exist" (PR #97081) -- external traffic then reaches remote endpoints unmasqueraded.
    return sel.cluster_endpoints or ()


def _real_servers(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], only_local: bool, cfg: ProxyConfig,
                  labels: Mapping[str, str]) -> tuple[RealServer, ...]:
    chosen = _chosen(sp, eps, only_local, cfg.node_name, labels)
    used = {e.endpoint for e in chosen}
    reals = [RealServer(e.ip, e.port, 1, e) for e in chosen]
    if cfg.drain_terminating:
        # GracefulTerminationManager.GracefulDeleteRS: a real server that syncEndpoint drops keeps weight 0
        # until its connections are gone. An endpoint that would be used, were it ready, was used before it
        # started terminating.
        for i, e in enumerate(eps):
            if not e.terminating or e.endpoint in used:
                continue
            as_ready = replace(e, ready=True, serving=True, terminating=False)
            again = _chosen(sp, (*eps[:i], as_ready, *eps[i + 1:]), only_local, cfg.node_name, labels)
            if any(x.endpoint == e.endpoint for x in again):
                reals.append(RealServer(e.ip, e.port, 0, e))
    return tuple(sorted(reals, key=lambda r: (_ip_order(r.ip), r.port)))


def generate_ipvs(
    services: Iterable[KubeObject],
    endpoint_slices: Iterable[KubeObject] | None,
    cfg: ProxyConfig,
    *,
    nodes: Iterable[KubeObject] = (),
    endpoints: Iterable[KubeObject] | None = None,
    shared: Shared | None = None,
) -> IPVSRules:
    """kube-proxy's IPVS table, ipsets, iptables rules and kube-ipvs0 addresses on ``cfg.node_name``.

    A Service's endpoints come from its EndpointSlices. A Service without any slice falls back to its v1
    Endpoints in ``endpoints``. The Node named ``cfg.node_name`` in ``nodes`` gives the node's labels
    (unless ``cfg.node_labels`` is set). When ``cfg.node_ips`` is empty, its InternalIP/ExternalIP
    addresses give the node IPs. ``shared``: several nodes of one cluster rendered from the same objects share
    what is the same on each (:class:`~svctrace.kubeproxy.plan.Shared`).
    """
    cfg, labels = node_context(cfg.for_mode("ipvs"), nodes)
    version = cfg.kube_version
    assert version is not None
    fam = cfg.ip_family
    ports = collect_ports(services, endpoint_slices, endpoints, cfg, shared)
    plans = plan_ports(ports, cfg, labels, shared)
    # A port's real servers are the same for every virtual server of it with the same policy, and on every node
    # where what categorize_endpoints reads of them is the same: made once.
    reals_of: dict[object, tuple[RealServer, ...]] = shared.blocks if shared is not None else {}
    zone = labels.get(ZONE_LABEL)

    sets = _Sets(fam)
    node_addresses = {str(ip) for ip in _node_address_set(cfg)}
    np_ips = [str(ip) for ip in _node_port_ips(cfg)] if any(sp.node_port for sp, _ in ports) else []
    servers: dict[tuple[str, str, int], VirtualServer] = {}
    bound: set[str] = set()
    no_node_access: list[tuple[str, str, int]] = []  # lbNoNodeAccessIPPortProtocolEntries (1.29+)
    notes: list[str] = []
    flags = ("mh-port",) if cfg.scheduler == "mh" else ()  # FlagSourceHash (0x10, IP_VS_SVC_F_SCHED2)

    def virtual(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], ip: str, port: int, kind: str,
                bind: bool, only_local: bool) -> None:
        # A port whose choice does not depend on the node: the same real servers whatever is_local says (their
        # `endpoint` is then the first node's view of it).
        rkey = ("ipvs-reals", sp, only_local, cfg.drain_terminating, *(
            (zone, eps) if choice_depends_on_node(sp) else
            [(e.endpoint, e.ready, e.serving, e.terminating, e.node_name) for e in eps]))
        reals = reals_of.get(rkey)
        if reals is None:
            reals = reals_of[rkey] = _real_servers(sp, eps, only_local, cfg, labels)
        vs = VirtualServer(sp.protocol, ip, port, cfg.scheduler, sp.session_affinity_seconds, flags,
                           reals, kind, sp.service_port_name(), bind, only_local)
        key = (sp.protocol, ip, port)
        if key in servers:
            notes.append(f"{vs.protocol} {vs.address} is both {servers[key].service_port} ({servers[key].kind}) "
                         f"and {vs.service_port} ({kind}); kube-proxy's later syncEndpoint wins (Go map order)")
        servers[key] = vs
        if bind:
            bound.add(ip)

    for (sp, eps), plan in zip(ports, plans, strict=True):
        proto = sp.protocol.lower()
        # Handle traffic that loops back to the originator with SNAT: every local endpoint, whatever its state.
        for e in eps:
            if e.is_local:
                sets.add(KUBE_LOOP_BACK, f"{e.ip},{proto}:{e.port},{e.ip}")
        # Capture the clusterIP (always bound to kube-ipvs0).
        sets.add(KUBE_CLUSTER_IP, f"{sp.cluster_ip},{proto}:{sp.port}")
        virtual(sp, eps, sp.cluster_ip, sp.port, "ClusterIP", True, plan.internal_local)
        # Capture externalIPs: not bound when the address is already the node's ("shouldBind").
        for eip in sp.external_ips:
            sets.add(KUBE_EXTERNAL_IP_LOCAL if plan.external_local else KUBE_EXTERNAL_IP,
                     f"{eip},{proto}:{sp.port}")
            virtual(sp, eps, eip, sp.port, "ExternalIP", eip not in node_addresses, plan.external_local)
        # Capture load-balancer ingress.
        for lbip in sp.load_balancer_vips:
            entry = f"{lbip},{proto}:{sp.port}"
            sets.add(KUBE_LOAD_BALANCER, entry)
            if plan.external_local:
                sets.add(KUBE_LOAD_BALANCER_LOCAL, entry)
            if plan.filters_sources:
                sets.add(KUBE_LOAD_BALANCER_FW, entry)
                for cidr in sp.load_balancer_source_ranges:
                    sets.add(KUBE_LOAD_BALANCER_SOURCE_CIDR, f"{entry},{cidr}")
                if plan.allow_from_node:
                    sets.add(KUBE_LOAD_BALANCER_SOURCE_IP, f"{entry},{lbip}")
                else:
                    no_node_access.append((lbip, proto, sp.port))
            virtual(sp, eps, lbip, sp.port, "LoadBalancer", lbip not in node_addresses, plan.external_local)
        if sp.node_port:
            if not np_ips:
                # "Skip nodePort configuration": a `continue` that also skips the health check node port.
                notes.append(f"{sp.service_port_name()}: no node address for NodePort {sp.node_port} "
                             "(nodePortAddresses match none); kube-proxy skips it and its health check port")
                continue
            if proto == "sctp":
                np_entries = [f"{ip},sctp:{sp.node_port}" for ip in np_ips]
                plain, local = KUBE_NODE_PORT_SCTP, KUBE_NODE_PORT_LOCAL_SCTP
            else:
                np_entries = [str(sp.node_port)]
                plain = KUBE_NODE_PORT_TCP if proto == "tcp" else KUBE_NODE_PORT_UDP
                local = KUBE_NODE_PORT_LOCAL_TCP if proto == "tcp" else KUBE_NODE_PORT_LOCAL_UDP
            for entry in np_entries:
                sets.add(plain, entry)
                if plan.external_local:
                    sets.add(local, entry)
            for ip in np_ips:
                virtual(sp, eps, ip, sp.node_port, "NodePort", False, plan.external_local)
        if sp.health_check_node_port:
            sets.add(KUBE_HEALTH_CHECK_NODE_PORT, str(sp.health_check_node_port))

    # "Set the KUBE-IPVS-IPS set to the activeBindAddrs".
    for ip in bound:
        sets.add(KUBE_IPVS_IPS, ip)
    chains, rules = _write_iptables_rules(cfg, sets, no_node_access)
    order = {"ClusterIP": 0, "ExternalIP": 1, "LoadBalancer": 2, "NodePort": 3}
    listed = sorted(servers.values(), key=lambda v: (order[v.kind], _ip_order(v.ip), v.port, v.protocol))
    return IPVSRules(
        config=cfg,
        virtual_servers=tuple(listed),
        ipsets=sets.result(),
        chains=chains,
        rules=rules,
        jumps=_jumps(version),
        bound_addresses=tuple(str(ipaddress.ip_address(b)) for b in sorted(bound, key=_ip_order)),
        node_port_ips=tuple(np_ips),
        selections=tuple(p.selection for p in plans),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- iptables


def _chains(version: str) -> dict[str, tuple[str, ...]]:
    """``iptablesChains``: the chains kube-proxy declares (and ``EnsureChain``s)."""
    nat = ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ")
    flt = ["KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL",
           "KUBE-IPVS-FILTER"]
    if has(version, "ipvs-out-filter-chain"):
        flt.append("KUBE-IPVS-OUT-FILTER")
    return {"nat": nat, "filter": tuple(flt)}


def _jumps(version: str) -> dict[str, tuple[IptRule, ...]]:
    """``iptablesJumpChain``, each ``EnsureRule(Prepend)``ed: the last one for a chain ends up first."""
    spec = [
        ("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
        ("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
        ("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
        ("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
        ("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules"),
        ("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
        ("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
        ("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter"),
    ]
    if has(version, "ipvs-out-filter-chain"):
        spec.append(("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter"))
    out: dict[str, list[IptRule]] = {t: [] for t in SAVE_TABLES}
    for table, src, dst, comment in spec:
        out[table].insert(0, IptRule(table, src, ("-m", "comment", "--comment", quoted(comment), "-j", dst)))
    return {t: tuple(sorted(rs, key=lambda r: BUILTIN_CHAINS[t].index(r.chain))) for t, rs in out.items()}


def _write_iptables_rules(cfg: ProxyConfig, sets: _Sets,
                          no_node_access: Sequence[tuple[str, str, int]]) -> tuple[
        dict[str, tuple[str, ...]], dict[str, tuple[IptRule, ...]]]:
    """``writeIptablesRules`` (with ``acceptIPVSTraffic``)."""
    version = cfg.kube_version
    assert version is not None
    mark = cfg.mark
    nat: list[IptRule] = []
    flt: list[IptRule] = []

    def rule(table: str, chain: str, *args: str) -> None:
        (nat if table == "nat" else flt).append(IptRule(table, chain, tuple(args)))

    def match_set(name: str, flags: str) -> tuple[str, ...]:
        return ("-m", "set", "--match-set", sets.name(name), flags)

    # Dismiss connects to localhost early in the service chain (PR #112950).
    rule("nat", "KUBE-SERVICES", "-s", "::1/128" if cfg.is_ipv6 else "127.0.0.0/8", "-j", "RETURN")
    for name, table, src, dst, flags, proto in _SET_RULES:
        if sets.empty(name):
            continue
        args: list[str] = ["-p", proto] if proto else []
        rule(table, src, *args, "-m", "comment", "--comment", sets.comment(name), *match_set(name, flags), "-j", dst)
    if not sets.empty(KUBE_CLUSTER_IP):
        head: tuple[str, ...] = ("-m", "comment", "--comment", sets.comment(KUBE_CLUSTER_IP), "-m", "set", "--match-set",
                sets.name(KUBE_CLUSTER_IP))
        if cfg.masquerade_all:
            rule("nat", "KUBE-SERVICES", *head, "dst,dst", "-j", "KUBE-MARK-MASQ")
        elif cfg.cluster_cidr is not None:
            # Masquerade off-cluster traffic to a service VIP (localDetector.IfNotLocal()).
            rule("nat", "KUBE-SERVICES", *head, "dst,dst", "!", "-s", cfg.cluster_cidr, "-j", "KUBE-MARK-MASQ")
        else:
            # No detector: masquerade the node's own connections whose source is a VIP.
            rule("nat", "KUBE-SERVICES", *head, "src,dst", "-j", "KUBE-MARK-MASQ")

    def external_ip_rules(head: tuple[str, ...]) -> None:
        # Traffic from off the node that does not come through a bridge, and traffic to a local address.
        rule("nat", "KUBE-SERVICES", *head, "-m", "physdev", "!", "--physdev-is-in",
             "-m", "addrtype", "!", "--src-type", "LOCAL", "-j", "ACCEPT")
        rule("nat", "KUBE-SERVICES", *head, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "ACCEPT")

    if not sets.empty(KUBE_EXTERNAL_IP):
        head = ("-m", "comment", "--comment", sets.comment(KUBE_EXTERNAL_IP), *match_set(KUBE_EXTERNAL_IP, "dst,dst"))
        rule("nat", "KUBE-SERVICES", *head, "-j", "KUBE-MARK-MASQ")
        external_ip_rules(head)
    if not sets.empty(KUBE_EXTERNAL_IP_LOCAL):
        external_ip_rules(("-m", "comment", "--comment", sets.comment(KUBE_EXTERNAL_IP_LOCAL),
                           *match_set(KUBE_EXTERNAL_IP_LOCAL, "dst,dst")))
    rule("nat", "KUBE-SERVICES", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODE-PORT")
    rule("nat", "KUBE-LOAD-BALANCER", "-j", "KUBE-MARK-MASQ")
    rule("filter", "KUBE-SOURCE-RANGES-FIREWALL", "-j", "DROP")
    if has(version, "ipvs-out-filter-chain"):
        # Disable LB access from the node: for IPVS, source and destination are both the LB IP.
        for ip, proto, port in no_node_access:
            rule("filter", "KUBE-IPVS-OUT-FILTER", "-s", ip, "-m", "ipvs", "--vaddr", ip, "--vproto", proto,
                 "--vport", str(port), "-j", "DROP")
    # acceptIPVSTraffic: must be the end of KUBE-SERVICES.
    for name in (KUBE_CLUSTER_IP, KUBE_LOAD_BALANCER):
        if not sets.empty(name):
            rule("nat", "KUBE-SERVICES", *match_set(name, "dst,dst"), "-j", "ACCEPT")
    flt.extend(forward_accept_rules(mark))
    rule("filter", "KUBE-NODE-PORT", "-m", "comment", "--comment", sets.comment(KUBE_HEALTH_CHECK_NODE_PORT),
         *match_set(KUBE_HEALTH_CHECK_NODE_PORT, "dst"), "-j", "ACCEPT")
    # KUBE-IPVS-FILTER: no access to the node's own ports through a VIP (issue #72236).
    returns = [(KUBE_LOAD_BALANCER, "dst,dst"), (KUBE_CLUSTER_IP, "dst,dst"), (KUBE_EXTERNAL_IP, "dst,dst")]
    if has(version, "ipvs-filter-external-ip-local"):
        returns.append((KUBE_EXTERNAL_IP_LOCAL, "dst,dst"))  # PR #121919
    returns.append((KUBE_HEALTH_CHECK_NODE_PORT, "dst"))
    for name, flags in returns:
        rule("filter", "KUBE-IPVS-FILTER", *match_set(name, flags), "-j", "RETURN")
    rule("filter", "KUBE-IPVS-FILTER", "-m", "conntrack", "--ctstate", "NEW", *match_set(KUBE_IPVS_IPS, "dst"),
         "-j", "REJECT")
    nat.extend(masquerade_rules(mark, bool(cfg.random_fully)))
    return _chains(version), {"nat": tuple(nat), "filter": tuple(flt)}
