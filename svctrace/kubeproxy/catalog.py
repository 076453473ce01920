"""What kube-proxy's (and its neighbours') chains are for, in plain words, by version.

Kept as data so the text output, the TUI and the study mode say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ChainMeaning:
    family: str  # short name of the chain family, e.g. "KUBE-SVC-*"
    meaning: str  # one sentence
    since: str | None = None
    until: str | None = None
    owner: str = "kube-proxy"


_EXACT: dict[str, ChainMeaning] = {
    "KUBE-SERVICES": ChainMeaning("KUBE-SERVICES", "kube-proxy's entry point: one rule per Service IP and port "
                                  "(nat: send to the Service's chain; filter: reject Services without endpoints)"),
    "KUBE-NODEPORTS": ChainMeaning("KUBE-NODEPORTS", "NodePort dispatch: one rule per node port, reached for "
                                   "packets addressed to one of the node's own addresses"),
    "KUBE-MARK-MASQ": ChainMeaning("KUBE-MARK-MASQ", "marks the packet (mark 0x4000) so that KUBE-POSTROUTING "
                                   "masquerades it on the way out"),
    "KUBE-MARK-DROP": ChainMeaning("KUBE-MARK-DROP", "marks the packet (mark 0x8000) for KUBE-FIREWALL to drop",
                                   until="1.25"),
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
                                        "loadBalancerSourceRanges", since="1.25"),
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
                                     "does not serve (ping included)", since="1.26"),
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
                               "(Local traffic policy)", since="1.24")),
    ("KUBE-EXT-", ChainMeaning("KUBE-EXT-*", "external traffic (NodePort, external IP, LoadBalancer) for a Service "
                               "port: decides masquerade, then goes to the SVC or SVL chain", since="1.24")),
    ("KUBE-FW-", ChainMeaning("KUBE-FW-*", "a LoadBalancer IP's firewall: only loadBalancerSourceRanges pass")),
    ("KUBE-XLB-", ChainMeaning("KUBE-XLB-*", "external traffic with externalTrafficPolicy Local: this node's "
                               "endpoints only, else drop", until="1.24")),
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


_SVC_COMMENT = re.compile(r"^(?P<svc>[\w.-]+/[\w.-]+(?::[\w.-]*)?)(?:\s+(?P<rest>.*))?$")


def service_of_comment(comment: str | None) -> str | None:
    """`ns/name:port` from a kube-proxy rule comment, if it has one."""
    if not comment:
        return None
    m = _SVC_COMMENT.match(comment.strip())
    return m.group("svc") if m else None
