"""NetworkPolicy, evaluated for one packet as the pods see it: after kube-proxy's DNAT (the pod IP and its
targetPort) and, when the walk masquerades, from the node's address.

What the API says (https://kubernetes.io/docs/concepts/services-networking/network-policies/): a pod is
isolated for a direction when a policy in its namespace selects it with that type in policyTypes (Ingress
always, Egress when egress rules are given, when policyTypes is left out); an isolated pod accepts what some
rule of some selecting policy allows. Two exceptions it states: a pod cannot block access to itself, and
traffic to and from the node where a pod runs is always allowed. Host-network pods are not subject to pod
policies. Which address a policy sees after SNAT is left to the plugin ("not defined whether this happens
before or after NetworkPolicy processing"); svctrace takes the translated packet, as Calico, Cilium and
kube-router see it on the destination node, and says so.

Cost: per question, the policies of the two pods' namespaces times their rules (linear).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace

from svctrace.model.cluster import (
    Cluster,
    LabelSelector,
    NetworkPolicy,
    Pod,
    PolicyPeer,
    PolicyPort,
    PolicyRule,
)

META_NAME = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Peer:
    """The other end as the policy sees it: an address, and the pod behind it when there is one."""

    ip: str
    pod: Pod | None
    known: bool = True  # False: an address of a pod CIDR with no Pod object (its labels are unknown)


@dataclass
class Verdict:
    """One direction (ingress to the backend, egress from the client) for one pod."""

    direction: str  # ingress / egress
    pod: Pod
    policies: list[NetworkPolicy] = field(
        default_factory=list
    )  # the ones selecting the pod for this direction
    allowed: bool | None = True  # None: it depends on something the snapshot does not say
    allowed_by: str | None = None  # "ns/policy rule N"
    why: str = ""  # the exemption that applies, or what is unknown
    service_port_rules: list[str] = field(
        default_factory=list
    )  # rules allowing the Service port, not the target

    @property
    def isolated(self) -> bool:
        return bool(self.policies)

    def names(self) -> str:
        return ", ".join(p.key for p in self.policies)


def _in(ip: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def selecting(cluster: Cluster, pod: Pod, direction: str) -> list[NetworkPolicy]:
    """The policies that isolate `pod` for the direction (Ingress / Egress)."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    return [
        p
        for p in by_namespace(cluster).get(pod.namespace, [])
        if kind in p.types and p.pod_selector.matches(pod.labels)
    ]


def by_namespace(cluster: Cluster) -> dict[str, list[NetworkPolicy]]:
    """The policies of each namespace, indexed once per Cluster (rebuilt when policies were added)."""
    index = cluster.__dict__.get("_policy_index")
    if index is None or index[0] != len(cluster.policies):
        out: dict[str, list[NetworkPolicy]] = {}
        for p in cluster.policies:
            out.setdefault(p.namespace, []).append(p)
        index = (len(cluster.policies), out)
        cluster.__dict__["_policy_index"] = index
    got: dict[str, list[NetworkPolicy]] = index[1]
    return got


def _namespace_match(cluster: Cluster, sel: LabelSelector, ns: str) -> bool | None:
    labels = cluster.namespace_labels(ns)
    if labels is not None:
        return sel.matches(labels)
    keys = {k for k, _ in sel.match_labels} | {k for k, _, _ in sel.match_expressions}
    got = sel.matches({META_NAME: ns})
    if keys <= {META_NAME}:
        return got  # the label the API server sets on every namespace decides alone
    return None


def _peer_match(cluster: Cluster, policy: NetworkPolicy, peer: PolicyPeer, other: Peer) -> bool | None:
    if peer.cidr is not None:
        return _in(other.ip, peer.cidr) and not any(_in(other.ip, x) for x in peer.except_)
    if other.pod is None:
        return None if not other.known else False  # a selector matches pods only
    pod = other.pod
    if pod.host_network:
        return False  # host-network pods carry the node's address; selectors do not reach them
    if peer.namespace_selector is None:
        ns_ok: bool | None = pod.namespace == policy.namespace
    else:
        ns_ok = _namespace_match(cluster, peer.namespace_selector, pod.namespace)
    pod_ok = True if peer.pod_selector is None else peer.pod_selector.matches(pod.labels)
    if ns_ok is False or not pod_ok:
        return False
    return ns_ok


def _port_match(port: PolicyPort, number: int, protocol: str, target: Pod | None) -> bool | None:
    if port.protocol.upper() != protocol.upper():
        return False
    if port.port is None:
        return True
    if isinstance(port.port, int):
        if port.end_port is not None:
            return port.port <= number <= port.end_port
        return port.port == number
    if target is None:
        return None  # a named port resolves on the destination pod, which is not in the snapshot
    named = target.port_named(port.port, protocol)
    return named is not None and named[1] == number


def _tri_any(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def _rule_match(
    cluster: Cluster,
    policy: NetworkPolicy,
    rule: PolicyRule,
    other: Peer,
    number: int,
    protocol: str,
    target: Pod | None,
) -> tuple[bool | None, bool | None]:
    """(peer matches, port matches) for one rule."""
    peer_ok = (
        True if rule.peers is None else _tri_any([_peer_match(cluster, policy, p, other) for p in rule.peers])
    )
    port_ok = (
        True
        if rule.ports is None
        else _tri_any([_port_match(q, number, protocol, target) for q in rule.ports])
    )
    return peer_ok, port_ok


def _port_text(q: PolicyPort) -> str:
    if q.port is None:
        return f"every {q.protocol} port"
    if q.end_port is not None:
        return f"{q.port}-{q.end_port}/{q.protocol}"
    return f"{q.port}/{q.protocol}"


def evaluate(
    cluster: Cluster,
    direction: str,
    pod: Pod,
    other: Peer,
    number: int,
    protocol: str,
    target: Pod | None,
    *,
    service_port: tuple[int, str] | None = None,
    pod_node_ips: list[str] | None = None,
) -> Verdict:
    """Does the `direction` side of `pod` let the packet through? `other` is the peer as seen (the source for
    ingress, the destination for egress); `number`/`protocol` the destination port after DNAT; `target` the
    destination pod (named ports resolve on it); `service_port` (port, name) names the Service port, to tell
    a rule written for it; `pod_node_ips` the addresses of the node `pod` runs on."""
    v = Verdict(direction, pod)
    if pod.host_network:
        return v
    v.policies = selecting(cluster, pod, direction)
    if not v.policies:
        return v
    if other.pod is not None and other.pod.key == pod.key:
        v.why = "a pod cannot block access to itself"
        return v
    if other.ip in (pod_node_ips or []):
        v.why = f"traffic from the pod's own node ({other.ip}) is always allowed"
        return v
    results: list[bool | None] = []
    rules_key = "ingress" if direction == "ingress" else "egress"
    for pol in v.policies:
        for i, rule in enumerate(getattr(pol, rules_key), 1):
            peer_ok, port_ok = _rule_match(cluster, pol, rule, other, number, protocol, target)
            if peer_ok is True and port_ok is True:
                v.allowed, v.allowed_by = True, f"{pol.key} {rules_key} rule {i}"
                return v
            results.append(
                None
                if (peer_ok is None or port_ok is None) and peer_ok is not False and port_ok is not False
                else False
            )
            if peer_ok is not False and port_ok is False and service_port is not None and rule.ports:
                sp_num, sp_name = service_port
                for q in rule.ports:
                    if q.protocol.upper() == protocol.upper() and (
                        q.port == sp_num or (sp_name and q.port == sp_name)
                    ):
                        v.service_port_rules.append(f"{pol.key} {rules_key} rule {i} ({_port_text(q)})")
    v.allowed = None if any(r is None for r in results) else False
    if v.allowed is None:
        v.why = _unknown_why(cluster, other)
    return v


def _unknown_why(cluster: Cluster, other: Peer) -> str:
    if other.pod is None and not other.known:
        return f"{other.ip} is a pod address with no Pod object in the snapshot, so its labels are unknown"
    if other.pod is not None and cluster.namespace_labels(other.pod.namespace) is None:
        return (
            f"namespace {other.pod.namespace}'s labels are not in the snapshot (no Namespace objects); "
            "a namespaceSelector on other labels cannot be decided"
        )
    return "a named port could not be resolved on the destination pod"


def _shape(p: Pod | None) -> object:
    """What evaluate() reads of a pod: pods of the same shape (a Deployment's replicas) get the same answer."""
    if p is None:
        return None
    return (p.namespace, frozenset(p.labels.items()), tuple(p.container_ports), p.node_name, p.host_network)


class Evaluator:
    """evaluate(), remembering its answers for pods of the same shape: a Service's replicas share their labels and
    ports, so a question costs (distinct pod shapes) x (policies), not endpoints x policies. The peer's address is
    part of the key only when some policy has an ipBlock."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.ip_blocks = any(
            peer.cidr is not None
            for pol in cluster.policies
            for rule in pol.ingress + pol.egress
            for peer in rule.peers or ()
        )
        self.cache: dict[object, Verdict] = {}

    def __call__(
        self,
        direction: str,
        pod: Pod,
        other: Peer,
        number: int,
        protocol: str,
        target: Pod | None,
        *,
        service_port: tuple[int, str] | None = None,
        pod_node_ips: list[str] | None = None,
    ) -> Verdict:
        itself = other.pod is not None and other.pod.key == pod.key
        key = (
            direction,
            _shape(pod),
            other.ip if self.ip_blocks else None,
            _shape(other.pod),
            other.known,
            itself,
            other.ip in (pod_node_ips or []),
            number,
            protocol,
            _shape(target),
            service_port,
        )
        got = self.cache.get(key)
        if got is None:
            got = evaluate(
                self.cluster,
                direction,
                pod,
                other,
                number,
                protocol,
                target,
                service_port=service_port,
                pod_node_ips=pod_node_ips,
            )
            self.cache[key] = got
        return got if got.pod is pod else replace(got, pod=pod)
