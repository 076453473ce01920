"""Which add-ons run in the cluster, told from its DaemonSets, Deployments and pods (any namespace): the CNI
(and whether it enforces NetworkPolicy) and what provisions LoadBalancer addresses. Each answer names the
object it rests on; with nothing recognised, the answer says it is an assumption."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from svctrace.model.cluster import Cluster

T = TypeVar("T")


@dataclass(frozen=True)
class Addon:
    name: str
    enforces: bool | None  # for a CNI: enforces NetworkPolicy (None: only when configured to)
    evidence: str  # "DaemonSet kube-system/calico-node"


# (name, enforces NetworkPolicy, workload/pod name prefixes, image substrings). Canal is Calico's policy
# engine (Felix) on Flannel's network; aws-node enforces only with its network-policy agent (a container
# named aws-network-policy-agent); kindnet gained policies late and optionally.
CNIS: tuple[tuple[str, bool | None, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Calico", True, ("calico-node", "canal"), ("calico/node", "calico/cni")),
    ("Cilium", True, ("cilium", "anetd"), ("cilium/cilium",)),
    ("Antrea", True, ("antrea-agent",), ("antrea/antrea",)),
    ("kube-router", True, ("kube-router",), ("kube-router",)),
    ("Weave Net", True, ("weave-net",), ("weaveworks/weave-kube", "weave-kube")),
    ("Kube-OVN", True, ("kube-ovn-cni",), ("kube-ovn",)),
    ("OVN-Kubernetes", True, ("ovnkube-node",), ("ovn-kubernetes", "ovn-daemonset")),
    ("Azure NPM", True, ("azure-npm",), ("azure-npm",)),
    ("AWS VPC CNI network policy agent", True, (), ("aws-network-policy-agent",)),
    ("AWS VPC CNI", None, ("aws-node",), ("amazon-k8s-cni",)),
    ("kindnet", None, ("kindnet",), ("kindnetd",)),
    ("Flannel", False, ("kube-flannel", "flannel"), ("flannel/flannel", "coreos/flannel")),
)

# What provisions status.loadBalancer.ingress: (name, workload/pod name prefixes, image substrings).
LB_CONTROLLERS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("MetalLB", ("metallb",), ("metallb/controller", "metallb/speaker")),
    ("kube-vip", ("kube-vip",), ("kube-vip/kube-vip",)),
    ("k3s ServiceLB (klipper-lb)", ("svclb-",), ("klipper-lb",)),
    ("AWS Load Balancer Controller", ("aws-load-balancer-controller",), ("aws-load-balancer-controller",)),
    (
        "a cloud-controller-manager",
        ("cloud-controller-manager", "cloud-provider"),
        ("cloud-controller-manager",),
    ),
    ("OpenELB", ("openelb",), ("openelb",)),
)

# loadBalancerClass values and the controller that serves each.
LB_CLASSES = {
    "service.k8s.aws/nlb": "AWS Load Balancer Controller",
    "io.cilium/bgp-control-plane": "Cilium",
    "io.cilium/l2-announcer": "Cilium",
    "kube-vip.io/kube-vip-class": "kube-vip",
}

# providerID schemes set by a cloud provider whose cloud-controller-manager provisions load balancers.
CLOUD_PROVIDER_IDS = {
    "aws": "AWS",
    "gce": "GCP",
    "azure": "Azure",
    "openstack": "OpenStack",
    "digitalocean": "DigitalOcean",
    "hcloud": "Hetzner Cloud",
    "linode": "Linode",
    "vsphere": "vSphere",
    "oci": "Oracle Cloud",
    "ibm": "IBM Cloud",
    "alicloud": "Alibaba Cloud",
    "scaleway": "Scaleway",
    "exoscale": "Exoscale",
}


def _things(cluster: Cluster) -> list[tuple[str, str, list[str]]]:
    """(evidence, name, images) for every workload and every pod no listed workload owns."""
    out = [(w.key, w.name, w.images) for w in cluster.workloads]
    names = [w.name for w in cluster.workloads]
    for p in cluster.pods:
        if any(p.name.startswith(n + "-") for n in names):
            continue
        out.append((f"pod {p.key}", p.name, p.images))
    return out


def _found(cluster: Cluster, prefixes: tuple[str, ...], images: tuple[str, ...]) -> str | None:
    for evidence, name, imgs in _things(cluster):
        if any(
            name == p or name.startswith(p + "-") or (p.endswith("-") and name.startswith(p))
            for p in prefixes
        ):
            return evidence
        if any(s in img for s in images for img in imgs):
            return evidence
    return None


def cnis(cluster: Cluster) -> list[Addon]:
    out = []
    for name, enforces, prefixes, images in CNIS:
        ev = _found(cluster, prefixes, images)
        if ev is not None:
            out.append(Addon(name, enforces, ev))
    return out


@dataclass(frozen=True)
class Enforcement:
    enforced: bool | None  # None: unknown (assumed enforced)
    text: str  # one clause: "Calico enforces NetworkPolicy here (DaemonSet kube-system/calico-node)"


def _once(cluster: Cluster, key: str, make: Callable[[], T]) -> T:
    """A cluster-wide answer computed once per Cluster (the TUI asks one question per Service)."""
    memo = cluster.__dict__.setdefault("_addons", {})
    if key not in memo:
        memo[key] = make()
    got: T = memo[key]
    return got


def policy_enforcement(cluster: Cluster) -> Enforcement:
    return _once(cluster, "enforcement", lambda: _policy_enforcement(cluster))


def _policy_enforcement(cluster: Cluster) -> Enforcement:
    found = cnis(cluster)
    yes = [a for a in found if a.enforces]
    if yes:
        return Enforcement(True, f"{yes[0].name} enforces NetworkPolicy here ({yes[0].evidence})")
    if found and all(a.enforces is False for a in found):
        names = ", ".join(f"{a.name} ({a.evidence})" for a in found)
        return Enforcement(False, f"the cluster's CNI, {names}, does not enforce NetworkPolicy")
    if found:
        a = found[0]
        return Enforcement(
            None, f"{a.name} ({a.evidence}) enforces NetworkPolicy only when configured to: assumed enforced"
        )
    return Enforcement(
        None, "no CNI recognised among the cluster's DaemonSets and pods: assumed to enforce NetworkPolicy"
    )


def lb_provisioners(cluster: Cluster) -> list[Addon]:
    return _once(cluster, "lb", lambda: _lb_provisioners(cluster))


def _lb_provisioners(cluster: Cluster) -> list[Addon]:
    out = []
    for name, prefixes, images in LB_CONTROLLERS:
        ev = _found(cluster, prefixes, images)
        if ev is not None:
            out.append(Addon(name, None, ev))
    clouds = sorted(
        {
            CLOUD_PROVIDER_IDS[n.provider_id.split("://", 1)[0]]
            for n in cluster.nodes.values()
            if n.provider_id and n.provider_id.split("://", 1)[0] in CLOUD_PROVIDER_IDS
        }
    )
    for c in clouds:
        first = next(
            n.name
            for n in cluster.nodes.values()
            if n.provider_id and CLOUD_PROVIDER_IDS.get(n.provider_id.split("://", 1)[0]) == c
        )
        out.append(Addon(f"the {c} cloud provider", None, f"node {first}'s providerID"))
    return out
