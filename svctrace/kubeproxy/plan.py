"""The per-Service-port decisions of kube-proxy's ``syncProxyRules``, made once for the three renderers.

kube-proxy's iptables (1.24+) and nftables proxiers decide, for every Service port, the same things in the
same words (``pkg/proxy/iptables/proxier.go`` and ``pkg/proxy/nftables/proxier.go``, ``syncProxyRules``:
"Note the endpoint chains that will be used", "usesClusterPolicyChain", "hasInternalEndpoints",
"hasExternalEndpoints", "usesExternalChain", "usesFWChain", and the REJECT/DROP "has no (local) endpoints"
rules); its IPVS proxier asks a subset of them (``pkg/proxy/ipvs/proxier.go``: the Local sets, the
``loadBalancerSourceRanges`` sets and whether the node itself is let through). :func:`plan_port` answers them
as a :class:`PortPlan`; each renderer turns a plan into its own rules.

Before 1.24 (the KUBE-XLB layout) kube-proxy chose the endpoints with ``proxy.FilterEndpoints`` instead
(:func:`filter_endpoints_legacy`); :func:`plan_ports` picks by version and the plan's questions stay the same.

The steps before the loop are shared too: :func:`node_context` (the node's labels and IPs from its Node
object) and :func:`collect_ports` (every Service port of the family with its endpoints, sorted: kube-proxy
walks a Go map, and its unit tests sort as well).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from svctrace.kubeproxy.config import IPAddr, ProxyConfig
from svctrace.kubeproxy.endpoints import (
    EndpointInfo,
    EndpointSelection,
    EndpointSources,
    EndpointVerdict,
    KubeObject,
    ServicePortInfo,
    categorize_endpoints,
    choice_depends_on_node,
    endpoints_for_port,
    not_usable_reason,
    port_endpoints,
    seen_from,
    service_ports,
)
from svctrace.kubeproxy.versions import has

__all__ = ["NoEndpoints", "PortPlan", "Shared", "allows_node", "collect_ports", "filter_endpoints_legacy", "node_context",
           "plan_port", "plan_ports"]

#: What traffic meets when it has no endpoint to go to: REJECT (``reject-chain``) when the Service port has
#: no endpoints at all, DROP when only its Local policy finds none on this node.
NoEndpoints = Literal["reject", "drop"]

Ports = list[tuple[ServicePortInfo, tuple[EndpointInfo, ...]]]


def node_context(cfg: ProxyConfig, nodes: Iterable[KubeObject]) -> tuple[ProxyConfig, Mapping[str, str]]:
    """The Node named ``cfg.node_name`` gives the node's labels (unless ``cfg.node_labels`` is set) and, when
    ``cfg.node_ips`` is empty, its InternalIP/ExternalIP addresses."""
    labels: Mapping[str, str] = cfg.node_labels if cfg.node_labels is not None else {}
    for node in nodes:
        meta = node.get("metadata") or {}
        if meta.get("name") != cfg.node_name:
            continue
        if cfg.node_labels is None:
            labels = meta.get("labels") or {}
        if not cfg.node_ips:
            addrs = [str(a.get("address")) for a in (node.get("status") or {}).get("addresses") or []
                     if a.get("type") in ("InternalIP", "ExternalIP")]
            cfg = replace(cfg, node_ips=tuple(addrs))
        if cfg.node_pod_cidr is None and cfg.detect_local_mode == "NodeCIDR":
            # --detect-local-mode NodeCIDR: the Node's spec.podCIDRs of the proxier's family (cmd/kube-proxy).
            spec = node.get("spec") or {}
            cidrs = [str(c) for c in (spec.get("podCIDRs") or [spec.get("podCIDR")]) if c]
            mine = [c for c in cidrs if (":" in c) == cfg.is_ipv6]
            if mine:
                cfg = replace(cfg, node_pod_cidr=mine[0])
    return cfg, labels


@dataclass
class Shared:
    """What rendering several nodes of one cluster from the same objects computes once (``svctrace simulate``:
    every node). Most of a node's rules are every node's: only a port whose endpoint choice depends on the node
    (:func:`~svctrace.kubeproxy.endpoints.choice_depends_on_node`) or whose plan names the node's IP differs.
    Pass one instance to each node's generator, always with the same Services, EndpointSlices and Endpoints.

    A port whose choice does not depend on the node is collected once (each node then sees its endpoints with
    its own ``is_local``) and selected once, for the first node asked: its :class:`EndpointSelection` (and the
    endpoint behind an IPVS real server) is that node's on every node."""

    #: (family, version) -> the sorted ports with the first node's endpoints, and whether each is node-blind.
    ports: dict[tuple[str, object], list[tuple[ServicePortInfo, tuple[EndpointInfo, ...], bool]]] = field(
        default_factory=dict)
    sources: EndpointSources | None = None
    #: (family, version, port index) -> the node-blind port's selection (and the port as its kube-proxy read it).
    selections: dict[tuple[str, object, int], tuple[ServicePortInfo, EndpointSelection]] = field(
        default_factory=dict)
    #: (family, version, port index) -> a node-blind port's plan, when it does not read the node's IP either.
    plans: dict[tuple[str, object, int], PortPlan] = field(default_factory=dict)
    #: The renderers' own: a block of rules per (layout, PortPlan.key()).
    blocks: dict[object, Any] = field(default_factory=dict)
    #: id(plan) -> (the plan, its key): a plan shared by the nodes is keyed once (the plan is held: its id stays).
    keys: dict[int, tuple[PortPlan, tuple[object, ...]]] = field(default_factory=dict)

    def key_of(self, plan: PortPlan) -> tuple[object, ...]:
        """``plan.key()``, made once per plan object."""
        hit = self.keys.get(id(plan))
        if hit is not None and hit[0] is plan:
            return hit[1]
        key = plan.key()
        self.keys[id(plan)] = (plan, key)
        return key


def collect_ports(services: Iterable[KubeObject], endpoint_slices: Iterable[KubeObject] | None,
                  endpoints: Iterable[KubeObject] | None, cfg: ProxyConfig, shared: Shared | None = None) -> Ports:
    """Every Service port of the proxier's family with its endpoints, sorted by service port name.

    A Service's endpoints come from its EndpointSlices; a Service without any slice falls back to its v1
    Endpoints object in ``endpoints`` (old clusters)."""
    key = (cfg.ip_family, cfg.version)
    if shared is not None and (known := shared.ports.get(key)) is not None:
        # Another node collected them: a node-blind port's endpoints as this node sees them, the others anew.
        assert shared.sources is not None
        return [(sp, seen_from(eps, cfg.node_name) if blind else endpoints_for_port(
            sp, node_name=cfg.node_name, sources=shared.sources)) for sp, eps, blind in known]
    sources = EndpointSources(endpoint_slices, endpoints)
    base = []
    for svc in services:
        for sp in service_ports(svc, ip_family=cfg.ip_family, kube_version=cfg.version):
            eps, twice = port_endpoints(sp, node_name=cfg.node_name, sources=sources)
            base.append((sp, eps, not twice and not choice_depends_on_node(sp)))
    base.sort(key=lambda item: (item[0].service_port_name(), item[0].protocol))
    if shared is not None:
        shared.ports[key], shared.sources = base, sources
    return [(sp, eps) for sp, eps, _ in base]


@dataclass(frozen=True, slots=True)
class PortPlan:
    """What ``syncProxyRules`` decides for one Service port before it writes a rule."""

    service_port: ServicePortInfo
    selection: EndpointSelection
    #: ``clusterEndpoints`` / ``localEndpoints`` of ``CategorizeEndpoints`` (empty when unused).
    cluster_endpoints: tuple[EndpointInfo, ...]
    local_endpoints: tuple[EndpointInfo, ...]
    has_endpoints: bool
    #: The cluster-policy (KUBE-SVC- / ``service-``) and local-policy (KUBE-SVL- / ``local-``) chains are used.
    uses_cluster_chain: bool
    uses_local_chain: bool
    #: Internal (cluster IP) and external traffic go to the local-policy chain (else the cluster one).
    internal_local: bool
    external_local: bool
    #: ``hasInternalEndpoints`` / ``hasExternalEndpoints``: the policy's chain has an endpoint.
    has_internal: bool
    has_external: bool
    #: ``usesExternalChain``: the port has endpoints and is reachable other than by its cluster IP.
    uses_external_chain: bool
    #: The port has load-balancer IPs and ``loadBalancerSourceRanges``: a firewall chain filters sources.
    filters_sources: bool
    #: ``loadBalancerSourceRanges`` contain kube-proxy's ``nodeIP``: the node may reach its load-balancer IPs
    #: (``allowFromNode``; the LB IPs themselves become allowed sources, as the node uses them).
    allow_from_node: bool
    #: What cluster-IP traffic and external traffic meet when their chain has no endpoint (None: it has).
    internal_no_endpoints: NoEndpoints | None
    external_no_endpoints: NoEndpoints | None

    def key(self) -> tuple[object, ...]:
        """What a renderer's rules for this plan depend on: every decision and the endpoints (by address), not
        which node made them (the selection's node name, an endpoint's ``is_local``). Equal keys, with the
        renderer's own node-wide settings equal, give the same rules."""
        return (self.service_port, *(tuple(e.endpoint for e in eps) for eps in (
            self.cluster_endpoints, self.local_endpoints, self.selection.all_reachable_endpoints)),
            self.has_endpoints, self.uses_cluster_chain, self.uses_local_chain, self.internal_local,
            self.external_local, self.has_internal, self.has_external, self.uses_external_chain, self.filters_sources,
            self.allow_from_node, self.internal_no_endpoints, self.external_no_endpoints)

    @property
    def allowed_sources(self) -> tuple[str, ...]:
        """The sources a firewall chain lets through: the source ranges, and with ``allow_from_node`` the
        load-balancer IPs."""
        sp = self.service_port
        extra = sp.load_balancer_vips if self.allow_from_node else ()
        return (*sp.load_balancer_source_ranges, *extra)


def allows_node(node_ip: IPAddr | None, sp: ServicePortInfo) -> bool:
    """``allowFromNode``: kube-proxy's ``nodeIP`` is inside one of the port's ``loadBalancerSourceRanges``."""
    return node_ip is not None and any(
        node_ip in ipaddress.ip_network(cidr, strict=False) for cidr in sp.load_balancer_source_ranges)


def plan_port(sp: ServicePortInfo, sel: EndpointSelection, node_ip: IPAddr | None) -> PortPlan:
    """The decisions of ``syncProxyRules`` for one Service port (iptables/nftables proxier.go, 1.24+)."""
    cluster_eps = sel.cluster_endpoints or ()
    local_eps = sel.local_endpoints or ()
    has_endpoints = sel.has_any_endpoints
    # "Note the endpoint chains that will be used": usesClusterPolicyChain / usesLocalPolicyChain.
    has_internal = has_endpoints and (not sp.internal_policy_local or bool(local_eps))
    has_external = has_endpoints and (not sp.external_policy_local or bool(local_eps))
    # No endpoints at all: REJECT (nftables: goto reject-chain); endpoints, but none for a Local policy on
    # this node: DROP ("has no local endpoints").
    internal_no: NoEndpoints | None = "reject" if not has_endpoints else None if has_internal else "drop"
    external_no: NoEndpoints | None = "reject" if not has_endpoints else None if has_external else "drop"
    filters_sources = bool(sp.load_balancer_vips) and bool(sp.load_balancer_source_ranges)
    allow_from_node = filters_sources and allows_node(node_ip, sp)
    return PortPlan(
        service_port=sp, selection=sel, cluster_endpoints=cluster_eps, local_endpoints=local_eps,
        has_endpoints=has_endpoints,
        uses_cluster_chain=bool(cluster_eps) and sp.uses_cluster_endpoints,
        uses_local_chain=bool(local_eps) and sp.uses_local_endpoints,
        internal_local=sp.internal_policy_local, external_local=sp.external_policy_local,
        has_internal=has_internal, has_external=has_external,
        uses_external_chain=has_endpoints and sp.externally_accessible,
        filters_sources=filters_sources, allow_from_node=allow_from_node,
        internal_no_endpoints=internal_no, external_no_endpoints=external_no)


def plan_ports(ports: Ports, cfg: ProxyConfig, labels: Mapping[str, str],
               shared: Shared | None = None) -> list[PortPlan]:
    """:func:`plan_port` for every collected port, with ``CategorizeEndpoints`` on this node (before 1.24,
    :func:`filter_endpoints_legacy`); with ``shared`` (and ``ports`` from :func:`collect_ports` with it), a
    node-blind port's selection is made once."""
    node_ip = cfg.node_ip
    # 1.24 rewrote syncProxyRules around CategorizeEndpoints (terminating endpoints, topology, the
    # KUBE-EXT/KUBE-SVL chains); before, proxy.FilterEndpoints chose the endpoints.
    legacy = not has(cfg.version, "ext-svl-chains")

    def select(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...]) -> tuple[ServicePortInfo, EndpointSelection]:
        if legacy:
            return filter_endpoints_legacy(sp, eps, cfg, labels)
        return sp, categorize_endpoints(sp, eps, node_name=cfg.node_name, node_labels=labels)

    if shared is None:
        return [plan_port(*select(sp, eps), node_ip) for sp, eps in ports]
    blind = shared.ports[(cfg.ip_family, cfg.version)]
    out = []
    for i, (sp, eps) in enumerate(ports):
        if blind[i][2]:
            key = (cfg.ip_family, cfg.version, i)
            plan = shared.plans.get(key)
            if plan is None:
                chosen = shared.selections.get(key)
                if chosen is None:
                    chosen = shared.selections[key] = select(sp, eps)
                plan = plan_port(*chosen, node_ip)
                if not plan.filters_sources:  # then the node's IP is not read (allow_from_node)
                    shared.plans[key] = plan
            out.append(plan)
        else:
            out.append(plan_port(*select(sp, eps), node_ip))
    return out


def filter_endpoints_legacy(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], cfg: ProxyConfig,
                            labels: Mapping[str, str]) -> tuple[ServicePortInfo, EndpointSelection]:
    """The endpoints kube-proxy used before 1.24 (v1.22 ``proxy.FilterEndpoints``), as an
    :class:`EndpointSelection` (cluster: the ready endpoints used; local: with externalTrafficPolicy Local, the
    ready ones on this node), and the port as that kube-proxy read it."""
    itp_on = has(cfg.version, "internal-traffic-policy-filter")
    if sp.internal_policy_local and not itp_on:
        sp = replace(sp, internal_policy_local=False)  # the field is ignored (its gate was off)
    local_external = sp.external_policy_local
    # internalTrafficPolicy Local (beta, on from 1.22) keeps only this node's endpoints -- for every kind of
    # traffic, NodePorts included -- unless eTP is Local.
    itp_filter = sp.internal_policy_local and not local_external and itp_on
    pool = [e for e in eps if e.is_local] if itp_filter else list(eps)
    ready = [e for e in pool if e.ready]
    local: list[EndpointInfo] | None = [e for e in ready if e.is_local] if local_external else (
        ready if itp_filter else None)
    return sp, _legacy_selection(sp, eps, ready, local, itp_filter, cfg.node_name, labels)


def _legacy_selection(sp: ServicePortInfo, eps: tuple[EndpointInfo, ...], cluster: list[EndpointInfo],
                      local: list[EndpointInfo] | None, itp_filter: bool, node_name: str,
                      labels: Mapping[str, str]) -> EndpointSelection:
    """The endpoint choice of kube-proxy before 1.24, in the shape of :class:`EndpointSelection`."""
    used_c = {e.endpoint for e in cluster}
    used_l = {e.endpoint for e in local or ()}
    verdicts = []
    for e in eps:
        if e.endpoint in used_c:
            c_reason = "ready"
        elif itp_filter and not e.is_local:
            c_reason = "on another node (internalTrafficPolicy Local)"
        elif e.serving_terminating:
            c_reason = "terminating (kube-proxy before 1.24 ignores terminating endpoints)"
        else:
            c_reason = not_usable_reason(e)
        if local is None:
            l_reason = "the Service port does not use Local traffic policy"
        elif e.endpoint in used_l:
            l_reason = "ready, on this node"
        elif not e.is_local:
            l_reason = "on another node" if e.node_name else "on another node (no nodeName)"
        elif e.serving_terminating:
            l_reason = "terminating (kube-proxy before 1.24 ignores terminating endpoints)"
        else:
            l_reason = not_usable_reason(e)
        verdicts.append(EndpointVerdict(e, e.endpoint in used_c, e.endpoint in used_l, c_reason, l_reason))
    reachable = sorted({e.endpoint: e for e in [*cluster, *(local or ())]}.values(), key=lambda e: e.endpoint)
    return EndpointSelection(
        service_port=sp, node_name=node_name, zone=labels.get("topology.kubernetes.io/zone"), endpoints=eps,
        cluster_endpoints=tuple(cluster), local_endpoints=None if local is None else tuple(local),
        all_reachable_endpoints=tuple(reachable), has_any_endpoints=bool(cluster), topology_aware=False,
        topology_note="not modelled for kube-proxy before 1.24", cluster_terminating_fallback=False,
        local_terminating_fallback=False, verdicts=tuple(verdicts))
