"""What kube-proxy's (and its neighbours') chains, sets and maps are for, in plain words, by version,
for every mode: iptables chains (`chain_meaning`, also IPVS mode's iptables chains), IPVS mode's ipsets
(`ipset_meaning`), nftables mode's chains (`nft_chain_meaning`, `nft_filter_hook_meaning`).

Kept as data so the text output, the TUI and the study mode say the same thing. Version cut-offs come
from the feature table (kubeproxy/versions.py), never written here.
"""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.kubeproxy.ipvs_sets import KUBE_IPSET
from svctrace.kubeproxy.names import NFT_CHAIN
from svctrace.kubeproxy.versions import FEATURES


@dataclass(frozen=True)
class ChainMeaning:
    family: str  # short name of the chain family, e.g. "KUBE-SVC-*"
    meaning: str  # one sentence
    since: str | None = None
    until: str | None = None
    owner: str = "kube-proxy"


def _since(feature: str) -> str:
    return FEATURES[feature].since_text


_EXACT: dict[str, ChainMeaning] = {
    "KUBE-SERVICES": ChainMeaning("KUBE-SERVICES", "kube-proxy's entry point: one rule per Service IP and port "
                                  "(nat: send to the Service's chain; filter: reject Services without endpoints)"),
    "KUBE-NODEPORTS": ChainMeaning("KUBE-NODEPORTS", "NodePort dispatch: one rule per node port, reached for "
                                   "packets addressed to one of the node's own addresses"),
    "KUBE-MARK-MASQ": ChainMeaning("KUBE-MARK-MASQ", "marks the packet (mark 0x4000) so that KUBE-POSTROUTING "
                                   "masquerades it on the way out"),
    "KUBE-MARK-DROP": ChainMeaning("KUBE-MARK-DROP", "marks the packet (mark 0x8000) for KUBE-FIREWALL to drop",
                                   until=_since("proxy-firewall-chain")),
    "KUBE-POSTROUTING": ChainMeaning("KUBE-POSTROUTING", "masquerades (source NAT to the node's address) the "
                                     "packets KUBE-MARK-MASQ marked, and clears the mark"),
    "KUBE-FORWARD": ChainMeaning("KUBE-FORWARD", "lets forwarded Service traffic through even under a FORWARD "
                                 "policy of DROP (marked packets and established connections)"),
    "KUBE-FIREWALL": ChainMeaning("KUBE-FIREWALL", "drops packets marked by KUBE-MARK-DROP and blocks outside "
                                  "connections to 127.0.0.0/8 (route_localnet protection)"),
    "KUBE-EXTERNAL-SERVICES": ChainMeaning("KUBE-EXTERNAL-SERVICES", "rejects or drops external traffic "
                                           "(NodePort, external IP, LoadBalancer) to Services with no usable "
                                           "endpoints"),
    "KUBE-PROXY-FIREWALL": ChainMeaning("KUBE-PROXY-FIREWALL", "drops LoadBalancer traffic from sources outside "
                                        "loadBalancerSourceRanges", since=_since("proxy-firewall-chain")),
    "KUBE-PROXY-CANARY": ChainMeaning("KUBE-PROXY-CANARY", "an empty marker kube-proxy watches to notice that "
                                      "someone flushed the rules"),
    "KUBE-KUBELET-CANARY": ChainMeaning("KUBE-KUBELET-CANARY", "an empty marker the kubelet watches to notice "
                                        "flushed rules", owner="kubelet"),
    "KUBE-IPTABLES-HINT": ChainMeaning("KUBE-IPTABLES-HINT", "an empty marker the kubelet creates in the iptables "
                                       "backend it uses (legacy or nft)", owner="kubelet"),
    "KUBE-LOAD-BALANCER": ChainMeaning("KUBE-LOAD-BALANCER", "IPVS mode: LoadBalancer traffic handling"),
    "KUBE-LOOP-BACK": ChainMeaning("KUBE-LOOP-BACK", "IPVS mode: masquerades hairpin traffic"),
    "KUBE-NODE-PORT": ChainMeaning("KUBE-NODE-PORT", "IPVS mode: NodePort traffic handling"),
    "KUBE-IPVS-FILTER": ChainMeaning("KUBE-IPVS-FILTER", "IPVS mode: rejects traffic to a Service IP on a port it "
                                     "does not serve (ping included)", since=_since("ipvs-filter-chain")),
    "KUBE-HOSTPORTS": ChainMeaning("KUBE-HOSTPORTS", "hostPort dispatch (CNI portmap or kubenet)", owner="CNI"),
    "KUBE-PORTALS-CONTAINER": ChainMeaning("KUBE-PORTALS-CONTAINER", "userspace proxy (before 1.2): redirects "
                                           "Service IPs to kube-proxy's own port", until="1.2"),
    "KUBE-PORTALS-HOST": ChainMeaning("KUBE-PORTALS-HOST", "userspace proxy (before 1.2): the same for local "
                                      "processes", until="1.2"),
    "KUBE-NODEPORT-CONTAINER": ChainMeaning("KUBE-NODEPORT-CONTAINER", "userspace proxy: NodePorts", until="1.2"),
    "KUBE-NODEPORT-HOST": ChainMeaning("KUBE-NODEPORT-HOST", "userspace proxy: NodePorts from the node",
                                       until="1.2"),
}

_PREFIX: list[tuple[str, ChainMeaning]] = [
    ("KUBE-SVC-", ChainMeaning("KUBE-SVC-*", "a Service port's load balancer (Cluster traffic policy): picks one "
                               "endpoint at random")),
    ("KUBE-SVL-", ChainMeaning("KUBE-SVL-*", "a Service port's load balancer over this node's endpoints only "
                               "(Local traffic policy)", since=_since("ext-svl-chains"))),
    ("KUBE-EXT-", ChainMeaning("KUBE-EXT-*", "external traffic (NodePort, external IP, LoadBalancer) for a Service "
                               "port: decides masquerade, then goes to the SVC or SVL chain",
                               since=_since("ext-svl-chains"))),
    ("KUBE-FW-", ChainMeaning("KUBE-FW-*", "a LoadBalancer IP's firewall: only loadBalancerSourceRanges pass")),
    ("KUBE-XLB-", ChainMeaning("KUBE-XLB-*", "external traffic with externalTrafficPolicy Local: this node's "
                               "endpoints only, else drop", until=_since("ext-svl-chains"))),
    ("KUBE-SEP-", ChainMeaning("KUBE-SEP-*", "one endpoint of a Service port: DNAT to the pod (and masquerade "
                               "when the pod talks to itself)")),
    ("KUBE-HP-", ChainMeaning("KUBE-HP-*", "one hostPort mapping", owner="CNI")),
    ("CNI-", ChainMeaning("CNI-*", "a CNI plugin's chain (portmap, bridge masquerade...)", owner="CNI")),
    ("cali-", ChainMeaning("cali-*", "Calico's policy and routing chains", owner="Calico")),
    ("WEAVE", ChainMeaning("WEAVE*", "Weave Net's chains", owner="Weave Net")),
    ("FLANNEL-", ChainMeaning("FLANNEL-*", "flannel's masquerade and forward rules", owner="flannel")),
    ("DOCKER", ChainMeaning("DOCKER*", "Docker's chains", owner="Docker")),
    ("CILIUM_", ChainMeaning("CILIUM_*", "Cilium's chains", owner="Cilium")),
    ("AWS-", ChainMeaning("AWS-*", "the AWS VPC CNI's SNAT and connmark chains", owner="AWS VPC CNI")),
    ("KIND-", ChainMeaning("KIND-*", "kind's masquerade agent", owner="kind")),
    ("LIBVIRT_", ChainMeaning("LIBVIRT_*", "libvirt's chains", owner="libvirt")),
]

_BUILTIN = {
    "PREROUTING": "packets arriving from the network, before routing",
    "INPUT": "packets addressed to the node itself",
    "FORWARD": "packets the node routes on",
    "OUTPUT": "packets the node itself sends",
    "POSTROUTING": "every packet leaving, after routing",
}


def chain_meaning(name: str) -> ChainMeaning | None:
    m = _EXACT.get(name)
    if m is not None:
        return m
    for prefix, meaning in _PREFIX:
        if name.startswith(prefix):
            return meaning
    if name in _BUILTIN:
        return ChainMeaning(name, _BUILTIN[name], owner="kernel")
    return None


def ipset_meaning(name: str) -> str | None:
    """What kube-proxy's IPVS mode keeps in the ipset `name`, None for a set it does not make (the sets' table:
    :data:`svctrace.kubeproxy.ipvs_sets.KUBE_IPSETS`)."""
    found = KUBE_IPSET.get(name)
    return None if found is None else found.meaning


# -- nftables mode (pkg/proxy/nftables/proxier.go): the table `kube-proxy`'s chains.
_NFT_EXACT: dict[str, str] = {
    "services": "kube-proxy's entry point: looks the destination up in the @service-ips and @service-nodeports "
                "verdict maps, which send it to the Service port's chain",
    "masquerading": "masquerades (source NAT to the node's address) the packets mark-for-masquerade marked, and "
                    "clears the mark",
    "mark-for-masquerade": "marks the packet (mark 0x4000) so that the masquerading chain masquerades it on the "
                           "way out",
    "reject-chain": "rejects the packet: where @no-endpoint-services and @no-endpoint-nodeports send Services "
                    "without endpoints",
    "cluster-ips-check": "rejects traffic to a ClusterIP on a port it does not serve, drops traffic to "
                         "unallocated ClusterIPs",
    "firewall-check": "sends traffic to a LoadBalancer IP with source ranges to its firewall chain "
                      "(@firewall-ips)",
    "service-endpoints-check": "drops or rejects new connections to Service IPs without endpoints "
                               "(@no-endpoint-services)",
    "nodeport-endpoints-check": "drops or rejects new connections to node ports without endpoints "
                                "(@no-endpoint-nodeports)",
    "nat-prerouting": "DNAT for packets arriving from the network: jumps to services",
    "nat-output": "DNAT for packets the node itself sends: jumps to services",
    "nat-postrouting": "source NAT on the way out: jumps to masquerading",
}
# The per-Service-port chains, by the kind names.NFT_CHAIN reads.
_NFT_KINDS: dict[str, str] = {
    "service": "a Service port's load balancer (Cluster traffic policy): numgen picks one endpoint at random",
    "local": "a Service port's load balancer over this node's endpoints only (Local traffic policy)",
    "external": "external traffic (NodePort, external IP, LoadBalancer) for a Service port: decides "
                "masquerade, then goes to the service chain",
    "firewall": "a LoadBalancer IP's firewall: only loadBalancerSourceRanges pass",
    "endpoint": "one endpoint of a Service port: DNAT to the pod (and masquerade when the pod talks to itself)",
}
_NFT_FILTER_HOOKS: dict[str, str] = {
    "prerouting": "packets arriving, before routing", "input": "packets for the node itself",
    "forward": "packets the node routes on", "output": "packets the node itself sends",
    "postrouting": "every packet leaving",
}


def nft_chain_meaning(name: str) -> str | None:
    """What an nftables chain of kube-proxy's table is for; an iptables-nft table's KUBE-* chains read as
    `chain_meaning` says."""
    if name in _NFT_EXACT:
        return _NFT_EXACT[name]
    m = NFT_CHAIN.match(name)
    if m:
        return _NFT_KINDS[m.group(1)]
    cm = chain_meaning(name)
    return cm.meaning if cm else None


def nft_filter_hook_meaning(hook: str | None) -> str | None:
    """What a filter base chain on `hook` sees, for a base chain with no meaning of its own."""
    return _NFT_FILTER_HOOKS.get(hook or "")
