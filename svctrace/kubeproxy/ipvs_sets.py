"""What kube-proxy's IPVS mode programs beside the IPVS table (its ipsets, the kube-ipvs0 addresses), as far as an
`ipvsadm` dump tells.

kube-proxy (pkg/proxy/ipvs/proxier.go, syncProxyRules) creates, per Service port:
  - a virtual server on the ClusterIP, bound to the dummy interface `kube-ipvs0` (so the address is
    local and IPVS sees the packet at LOCAL_IN), and one per external IP and load-balancer IP (bound
    too unless the address is already on another interface: `shouldBind := !nodeAddressSet.Has`);
  - for a NodePort, a virtual server on every node address (not bound: they are the node's own);
  - the ipsets its iptables rules match on: KUBE-CLUSTER-IP (hash:ip,port: ClusterIP,proto:port),
    KUBE-NODE-PORT-TCP/-UDP (bitmap:port), KUBE-NODE-PORT-SCTP-HASH (hash:ip,port; kube-proxy ipset.go names it so), KUBE-LOOP-BACK
    (hash:ip,port,ip: local endpoint ip,proto:port,ip for hairpin masquerade), KUBE-IPVS-IPS (hash:ip:
    every address bound to kube-ipvs0, since 1.26), KUBE-LOAD-BALANCER*, KUBE-EXTERNAL-IP*,
    KUBE-HEALTH-CHECK-NODE-PORT.

Without an `ipset save`, `infer_kube_ipsets` rebuilds the sets the table implies. A dump does not say
which virtual address is a ClusterIP and which an external or load-balancer IP, nor which NodePorts
have externalTrafficPolicy=Local: every virtual server on an address that is not a node address is
taken as a ClusterIP, the Local and load-balancer sets as empty, and NodePorts are recognised by the
port range (30000-32767) appearing on node addresses. The IPVS walker marks every decision that used an
inferred set as an assumption.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar, cast

from svctrace.kubeproxy.versions import FEATURES
from svctrace.model.loading import keeps_objects
from svctrace.model.packet import IPAddress, IPSetDef, NodeFacts

if TYPE_CHECKING:
    from svctrace.dataplane.ipvs.model import IPVSTable

T = TypeVar("T")
NODEPORT_RANGE = (30000, 32767)  # kube-apiserver --service-node-port-range default
# pkg/proxy/ipvs/ipset.go: the set names.
KUBE_LOOP_BACK: Final = "KUBE-LOOP-BACK"
KUBE_CLUSTER_IP: Final = "KUBE-CLUSTER-IP"
KUBE_EXTERNAL_IP: Final = "KUBE-EXTERNAL-IP"
KUBE_EXTERNAL_IP_LOCAL: Final = "KUBE-EXTERNAL-IP-LOCAL"
KUBE_LOAD_BALANCER: Final = "KUBE-LOAD-BALANCER"
KUBE_LOAD_BALANCER_LOCAL: Final = "KUBE-LOAD-BALANCER-LOCAL"
KUBE_LOAD_BALANCER_FW: Final = "KUBE-LOAD-BALANCER-FW"
KUBE_LOAD_BALANCER_SOURCE_IP: Final = "KUBE-LOAD-BALANCER-SOURCE-IP"
KUBE_LOAD_BALANCER_SOURCE_CIDR: Final = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
KUBE_NODE_PORT_TCP: Final = "KUBE-NODE-PORT-TCP"
KUBE_NODE_PORT_LOCAL_TCP: Final = "KUBE-NODE-PORT-LOCAL-TCP"
KUBE_NODE_PORT_UDP: Final = "KUBE-NODE-PORT-UDP"
KUBE_NODE_PORT_LOCAL_UDP: Final = "KUBE-NODE-PORT-LOCAL-UDP"
KUBE_NODE_PORT_SCTP: Final = "KUBE-NODE-PORT-SCTP-HASH"
KUBE_NODE_PORT_LOCAL_SCTP: Final = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
KUBE_HEALTH_CHECK_NODE_PORT: Final = "KUBE-HEALTH-CHECK-NODE-PORT"
KUBE_IPVS_IPS: Final = "KUBE-IPVS-IPS"


@dataclass(frozen=True)
class KubeIPSet:
    """One of kube-proxy's IPVS-mode ipsets: the one home of its name, type, comment and meaning."""

    name: str
    #: The ipset type (``hash:ip,port``, ``bitmap:port``, ...).
    type: str
    #: ``ipsetInfo``'s comment: what ``ipset save`` shows and the set's iptables rules carry.
    comment: str
    #: What kube-proxy keeps in the set, in plain words (:func:`svctrace.kubeproxy.catalog.ipset_meaning`).
    meaning: str


#: ``ipsetInfo`` (pkg/proxy/ipvs/ipset.go), in kube-proxy's order: every set the generator writes and
#: :func:`infer_kube_ipsets` can fill.
KUBE_IPSETS: Final[tuple[KubeIPSet, ...]] = (
    KubeIPSet(KUBE_LOOP_BACK, "hash:ip,port,ip",
              "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
              "endpoint ip,proto:port,ip of local endpoints: masquerade a pod that reaches itself (hairpin)"),
    KubeIPSet(KUBE_CLUSTER_IP, "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose",
              "every Service cluster IP and port (ip,proto:port): masquerade and accept"),
    KubeIPSet(KUBE_EXTERNAL_IP, "hash:ip,port",
              "Kubernetes service external ip + port for masquerade and filter purpose",
              "Service external IPs and ports"),
    KubeIPSet(KUBE_EXTERNAL_IP_LOCAL, "hash:ip,port",
              "Kubernetes service external ip + port with externalTrafficPolicy=local",
              "Service external IPs and ports with externalTrafficPolicy Local"),
    KubeIPSet(KUBE_LOAD_BALANCER, "hash:ip,port", "Kubernetes service lb portal", "LoadBalancer IPs and ports"),
    KubeIPSet(KUBE_LOAD_BALANCER_FW, "hash:ip,port",
              "Kubernetes service load balancer ip + port for load balancer with sourceRange",
              "LoadBalancer IPs and ports with loadBalancerSourceRanges"),
    KubeIPSet(KUBE_LOAD_BALANCER_LOCAL, "hash:ip,port",
              "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
              "LoadBalancer IPs and ports with externalTrafficPolicy Local"),
    KubeIPSet(KUBE_LOAD_BALANCER_SOURCE_IP, "hash:ip,port,ip",
              "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
              "LoadBalancer IP,port and an allowed source IP"),
    KubeIPSet(KUBE_LOAD_BALANCER_SOURCE_CIDR, "hash:ip,port,net",
              "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
              "LoadBalancer IP,port and an allowed source CIDR"),
    KubeIPSet(KUBE_NODE_PORT_TCP, "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose",
              "TCP node ports"),
    KubeIPSet(KUBE_NODE_PORT_LOCAL_TCP, "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
              "TCP node ports with externalTrafficPolicy Local"),
    KubeIPSet(KUBE_NODE_PORT_UDP, "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose",
              "UDP node ports"),
    KubeIPSet(KUBE_NODE_PORT_LOCAL_UDP, "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
              "UDP node ports with externalTrafficPolicy Local"),
    # kube-proxy names the SCTP sets *-HASH: they are hash:ip,port, not bitmaps.
    KubeIPSet(KUBE_NODE_PORT_SCTP, "hash:ip,port",
              "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
              "SCTP node ports (ip,sctp:port)"),
    KubeIPSet(KUBE_NODE_PORT_LOCAL_SCTP, "hash:ip,port",
              "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
              "SCTP node ports with externalTrafficPolicy Local"),
    KubeIPSet(KUBE_HEALTH_CHECK_NODE_PORT, "bitmap:port", "Kubernetes health check node port",
              "health check node ports of Local-policy LoadBalancers"),
    KubeIPSet(KUBE_IPVS_IPS, "hash:ip", "Addresses on the ipvs interface",
              f"every address bound to kube-ipvs0 (since {FEATURES['ipvs-filter-chain'].since_text}): "
              "KUBE-IPVS-FILTER rejects other ports"),
)
#: The dummy interface kube-proxy's IPVS mode binds every Service address to (pkg/proxy/ipvs/proxier.go,
#: ``defaultDummyDevice``).
DUMMY_DEVICE: Final = "kube-ipvs0"
KUBE_IPSET: Final[dict[str, KubeIPSet]] = {s.name: s for s in KUBE_IPSETS}
#: The sets :func:`infer_kube_ipsets` can fill (all of them), with their types.
INFERRED_SETS: Final[dict[str, str]] = {s.name: s.type for s in KUBE_IPSETS}


@dataclass
class Layout:
    """Which virtual addresses are the node's own (NodePorts) and which sit on kube-ipvs0."""

    node_addresses: set[IPAddress] = field(default_factory=set)
    node_ports: dict[str, set[int]] = field(default_factory=dict)  # proto -> NodePort numbers
    vips: set[IPAddress] = field(default_factory=set)  # addresses kube-proxy binds to kube-ipvs0


def once(table: IPVSTable, what: str, inputs: tuple[object, ...], build: Callable[[], T]) -> T:
    """What `build` makes of `table` and `inputs` (the same objects, or equal sets), made again only when they
    changed. Every question on a node asks for the same layout, sets and addresses, and each is linear in the table
    or the rules."""
    hit = cast("tuple[int, tuple[object, ...], T] | None", table.cache.get(what))
    if hit is not None and hit[0] == len(table.services) and len(hit[1]) == len(inputs) and all(
            a is b or (isinstance(a, set | frozenset) and a == b) for a, b in zip(hit[1], inputs, strict=True)):
        return hit[2]
    value = build()
    table.cache[what] = (len(table.services), inputs, value)
    return value


def layout(table: IPVSTable, local_ips: frozenset[IPAddress] | set[IPAddress] = frozenset()) -> Layout:
    """The layout of `table` on a node with `local_ips` (once per table and addresses: see `once`)."""
    return once(table, "layout", (local_ips,), lambda: _layout(table, local_ips))


def node_layout(table: IPVSTable, node: NodeFacts) -> Layout:
    """The layout of `table` on `node`, from the addresses kube-proxy counts as the node's own: every local address
    but those on its dummy interface, where it binds each Service address (pkg/proxy/ipvs/proxier.go,
    syncProxyRules: ``nodeAddressSet = GetAllLocalAddressesExcept(defaultDummyDevice)``). An ``ip -j addr`` of an
    IPVS node lists every cluster IP on kube-ipvs0; counted as the node's, they would leave no Service address on
    kube-ipvs0."""
    return layout(table, own_addresses(table, node))


def own_addresses(table: IPVSTable, node: NodeFacts) -> frozenset[IPAddress]:
    """`node`'s local addresses without those only on kube-proxy's dummy interface (see `node_layout`); the same set
    for every question asked with the same facts (`once`), so what is cached on it is found by identity."""
    return once(table, "own-addresses", (node.local_ips, node.addresses, node.host), lambda: _own_addresses(node))


def _own_addresses(node: NodeFacts) -> frozenset[IPAddress]:
    addresses = node.addresses or (node.host.addresses if node.host is not None else None)
    if not addresses:
        return node.local_ips
    dummy = {a.ip for a in addresses if a.ifname == DUMMY_DEVICE}
    if dummy:
        dummy.difference_update(a.ip for a in addresses if a.ifname != DUMMY_DEVICE)
    return node.local_ips - dummy if dummy else node.local_ips


@keeps_objects
def _layout(table: IPVSTable, local_ips: frozenset[IPAddress] | set[IPAddress]) -> Layout:
    lo, hi = NODEPORT_RANGE
    # The addresses by their position in `addrs`: `ipaddress` hashes in Python, so sets of addresses are made by set
    # algebra on sets that hold their hashes, and an address is looked up at most once.
    groups = table.by_address()
    addrs: list[IPAddress] = []
    keys_of: list[set[tuple[str, int]]] = []
    bare: list[IPAddress] = []  # addresses whose services all lost their port
    for a, services in groups.items():
        keys = {(s.protocol, s.port) for s in services if s.port is not None}
        if keys:
            addrs.append(a)
            keys_of.append(keys)
        else:
            bare.append(a)
    in_range = {k for keys in keys_of for k in keys if lo <= k[1] <= hi}
    seen_on: dict[tuple[str, int], set[int]] = {}
    for i, keys in enumerate(keys_of):
        for k in keys:
            seen_on.setdefault(k, set()).add(i)
    everything = set(groups)
    mine = everything & local_ips
    if bare:
        mine.difference_update(bare)
    if len(mine) == len(addrs):
        node = set(range(len(addrs)))
    else:
        node = {i for i, a in enumerate(addrs) if (mine and a in mine) or a.is_loopback}
    np_keys = {k for k in in_range if len(seen_on[k]) >= 2 or seen_on[k] & node}
    changed = True
    while changed:
        changed = False
        for i, keys in enumerate(keys_of):
            if i in node:
                continue
            only_np = all(lo <= p <= hi for _, p in keys)
            if only_np and (len(keys) >= 2 or keys & np_keys):
                node.add(i)
                changed = True
        more = {k for k in in_range if seen_on[k] & node} - np_keys
        if more:
            np_keys |= more
            changed = True
    everything.difference_update(bare)
    if 2 * len(node) <= len(addrs):
        node_addresses = {addrs[i] for i in node}
        vips = everything - node_addresses
    else:
        vips = {a for i, a in enumerate(addrs) if i not in node}
        node_addresses = everything - vips
    out = Layout(node_addresses=node_addresses, vips=vips)
    for proto, port in np_keys:
        out.node_ports.setdefault(proto, set()).add(port)
    return out


def infer_kube_ipsets(table: IPVSTable, local_ips: frozenset[IPAddress] | set[IPAddress] = frozenset(),
                      names: set[str] | None = None) -> dict[str, IPSetDef]:
    """kube-proxy's ipsets as the IPVS table implies them (see the module docstring for the limits); once per
    table, addresses and names (see `once`): the sets are shared, read-only."""
    return once(table, "ipsets", (local_ips, names), lambda: _infer_kube_ipsets(table, local_ips, names))


def _infer_kube_ipsets(table: IPVSTable, local_ips: frozenset[IPAddress] | set[IPAddress],
                       names: set[str] | None) -> dict[str, IPSetDef]:
    lay = layout(table, local_ips)
    fam = "inet6" if any(a.version == 6 for a in table.addresses()) and not any(
        a.version == 4 for a in table.addresses()) else "inet"
    sets = {n: IPSetDef(n, t, fam) for n, t in INFERRED_SETS.items() if names is None or n in names}

    seen: set[tuple[str, tuple[str, ...]]] = set()

    def add(name: str, member: tuple[str, ...]) -> None:
        if name in sets and (name, member) not in seen:
            seen.add((name, member))
            sets[name].members.append(member)

    for s in table.services:
        if s.ip is None or s.port is None or s.fwmark is not None:
            continue
        if s.ip in lay.vips:
            add("KUBE-CLUSTER-IP", (str(s.ip), f"{s.protocol}:{s.port}"))
            add("KUBE-IPVS-IPS", (str(s.ip),))
        elif s.port in lay.node_ports.get(s.protocol, set()):
            if s.protocol == "sctp":
                add("KUBE-NODE-PORT-SCTP-HASH", (str(s.ip), f"sctp:{s.port}"))
            else:
                add(f"KUBE-NODE-PORT-{s.protocol.upper()}", (f"{s.protocol}:{s.port}",))
        for r in s.reals:
            # A connection whose source is the endpoint it is sent to started on this node, so the
            # endpoint is local: kube-proxy lists it in KUBE-LOOP-BACK for the hairpin masquerade.
            if r.ip is not None and r.port is not None:
                add("KUBE-LOOP-BACK", (str(r.ip), f"{s.protocol}:{r.port}", str(r.ip)))
    return sets


def ipset_names_in_rules(texts: list[str]) -> set[str]:
    out: set[str] = set()
    for t in texts:
        out.update(re.findall(r"--match-set\s+(\S+)", t))
    return out

