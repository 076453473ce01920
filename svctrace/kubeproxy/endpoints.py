"""kube-proxy's endpoint selection, as pure functions over Kubernetes objects given as plain dicts.

The objects are what ``kubectl get -o json`` prints: a Service, EndpointSlices (``discovery.k8s.io/v1``)
and, for clusters too old to have slices, the v1 Endpoints object.  Nothing here talks to a cluster.

The logic follows kube-proxy **v1.28** (``pkg/proxy/``):

* ``servicechangetracker.go`` / ``serviceport.go`` ``newBaseServiceInfo`` — which Services and ports
  are proxied at all (not ExternalName, not headless, a cluster IP of the proxier's IP family), the
  external IPs / load-balancer VIPs / source ranges of that family, the ClientIP affinity timeout,
  ``externalTrafficPolicy: Local`` (only for NodePort and LoadBalancer Services),
  ``internalTrafficPolicy: Local``, the health-check node port (LoadBalancer + eTP Local only).
* ``endpointslicecache.go`` — slices belong to the Service named by their
  ``kubernetes.io/service-name`` label; a slice port is matched to a Service port by **name and
  protocol** (a slice port with no name at all, or no/zero port number, is ignored); only the first
  address of an endpoint is used; conditions default to ready=true, serving=true, terminating=false
  when absent; duplicates (same ``ip:port``) keep the first one seen unless a later one is local
  (1.28's rule; 1.31+ prefers the non-terminating one instead); the list is sorted by the
  ``"ip:port"`` *string* (so ``10.0.0.10:80`` sorts before ``10.0.0.9:80``).
* ``topology.go`` ``CategorizeEndpoints`` (1.28, ``ProxyTerminatingEndpoints`` GA):

  - Cluster policy: the ready endpoints, filtered by topology hints when they can be used; if none,
    the serving-and-terminating ones (no topology then) — the *terminating fallback*.
  - Local policy: the ready endpoints on this node; if there are none, the serving-and-terminating
    ones on this node.  There is **no** fallback to other nodes: with no usable local endpoint, Local
    traffic is dropped (kube-proxy writes a "has no local endpoints" DROP rule).
  - Topology hints are used only when the Service asks for them (annotation
    ``service.kubernetes.io/topology-aware-hints``, which wins when present, else
    ``service.kubernetes.io/topology-mode``; any value but ``""``/``disabled``/``Disabled``), the node
    has a ``topology.kubernetes.io/zone`` label, **every ready** endpoint has ``hints.forZones``, and at
    least one is hinted for the node's zone.
  - ``hasAnyEndpoints``: some endpoint is usable somewhere in the cluster (ready, or
    serving-and-terminating).

The v1 Endpoints fallback mirrors kube-proxy before EndpointSlices: ``addresses`` are ready,
``notReadyAddresses`` are not (the old API has no serving/terminating conditions), ports matched by
name and protocol, ``nodeName`` decides locality.

Pure standard library.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Literal

from svctrace.kubeproxy.names import join_host_port, service_port_name
from svctrace.kubeproxy.versions import REFERENCE_VERSION, has

__all__ = [
    "HINTS_ANNOTATION",
    "SERVICE_NAME_LABEL",
    "TOPOLOGY_MODE_ANNOTATION",
    "ZONE_LABEL",
    "EndpointInfo",
    "EndpointSelection",
    "EndpointSources",
    "EndpointVerdict",
    "IPFamily",
    "ServicePortInfo",
    "categorize_endpoints",
    "choice_depends_on_node",
    "endpoints_for_port",
    "not_usable_reason",
    "port_endpoints",
    "seen_from",
    "select_endpoints",
    "service_ports",
]

IPFamily = Literal["IPv4", "IPv6"]
KubeObject = Mapping[str, Any]

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
ZONE_LABEL: Final = "topology.kubernetes.io/zone"
HINTS_ANNOTATION: Final = "service.kubernetes.io/topology-aware-hints"
TOPOLOGY_MODE_ANNOTATION: Final = "service.kubernetes.io/topology-mode"
DEFAULT_AFFINITY_SECONDS: Final = 10800


def _dotted(ip: str) -> bool:
    """A dotted IPv4 address as ipaddress reads it: inet_pton accepts exactly those texts (dataplane/addr.py), and
    ipaddress prints them back unchanged (no leading zeros to drop)."""
    try:
        socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError, ValueError):
        return False
    return True


@lru_cache(maxsize=1 << 16)
def _family_of(ip: str) -> IPFamily | None:
    ip = ip.strip()
    if _dotted(ip):
        return "IPv4"
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    return "IPv6" if addr.version == 6 else "IPv4"


# Each address is parsed once, not once per node and Service port that names it (a simulation of 5k
# Services on 3 nodes normalised 60k addresses).
@lru_cache(maxsize=1 << 16)
def _norm_ip(ip: str) -> str:
    ip = ip.strip()
    return ip if _dotted(ip) else str(ipaddress.ip_address(ip))


def _get(obj: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


# --------------------------------------------------------------------------- service ports


@dataclass(frozen=True)
class ServicePortInfo:
    """One port of one Service, as kube-proxy's ``BaseServicePortInfo`` sees it for one IP family."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # "TCP", "UDP" or "SCTP"
    port: int
    node_port: int  # 0: none
    target_port: int | str | None
    service_type: str
    cluster_ip: str
    external_ips: tuple[str, ...]
    load_balancer_vips: tuple[str, ...]
    load_balancer_source_ranges: tuple[str, ...]  # CIDRs of this family, normalised
    health_check_node_port: int  # 0: none
    session_affinity_seconds: int | None  # ClientIP affinity timeout; None: no affinity
    external_policy_local: bool
    internal_policy_local: bool
    hints_annotation: str
    ip_family: IPFamily

    def service_port_name(self, *, legacy_port_format: bool = False) -> str:
        """``ns/name:port`` (``ns/name`` for an unnamed port since 1.19)."""
        return service_port_name(self.namespace, self.name, self.port_name, legacy_port_format=legacy_port_format)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.name, self.port_name, self.protocol)

    @property
    def externally_accessible(self) -> bool:
        """Reachable other than by cluster IP (NodePort, external IP or load-balancer IP)."""
        return self.node_port != 0 or bool(self.load_balancer_vips) or bool(self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Some traffic uses Cluster policy (iTP Cluster, or any external traffic: short-circuiting)."""
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)


def _cluster_ip_for_family(spec: Mapping[str, Any], family: IPFamily) -> str:
    """``proxyutil.GetClusterIPByFamily``."""
    families = spec.get("ipFamilies") or []
    if not families:
        cip = spec.get("clusterIP") or ""
        if not cip or cip == "None":
            return ""
        return cip if _family_of(cip) == family else ""
    ips = spec.get("clusterIPs") or []
    for idx, fam in enumerate(families):
        if fam == family and idx < len(ips):
            return str(ips[idx])
    return ""


def service_ports(
    service: KubeObject,
    *,
    ip_family: IPFamily = "IPv4",
    kube_version: str | tuple[int, int] = REFERENCE_VERSION,
) -> list[ServicePortInfo]:
    """The ports kube-proxy proxies for this Service and IP family (empty: the Service is skipped).

    Skipped like ``ShouldSkipService``: ExternalName Services, headless ones (clusterIP ``None``) and
    those without a cluster IP of this family.  From 1.30 (``LoadBalancerIPMode`` beta) load-balancer
    ingress entries with ``ipMode: Proxy`` are not VIPs and get no rules.
    """
    ipmode_proxy_skipped = has(kube_version, "lb-ipmode-proxy")
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    status = service.get("status") or {}
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type == "ExternalName":
        return []
    cip = spec.get("clusterIP") or ""
    if not cip or cip == "None":
        return []
    cluster_ip = _cluster_ip_for_family(spec, ip_family)
    if not cluster_ip:
        return []
    cluster_ip = _norm_ip(cluster_ip)

    etp_local = svc_type in ("LoadBalancer", "NodePort") and spec.get("externalTrafficPolicy") == "Local"
    itp_local = spec.get("internalTrafficPolicy") == "Local"
    affinity: int | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        timeout = _get(spec, "sessionAffinityConfig", "clientIP", "timeoutSeconds")
        affinity = int(timeout) if timeout is not None else DEFAULT_AFFINITY_SECONDS

    annotations = meta.get("annotations") or {}
    if HINTS_ANNOTATION in annotations:
        hints = str(annotations[HINTS_ANNOTATION])
    else:
        hints = str(annotations.get(TOPOLOGY_MODE_ANNOTATION, ""))

    external_ips = tuple(_norm_ip(ip) for ip in spec.get("externalIPs") or [] if _family_of(ip) == ip_family)
    ranges: list[str] = []
    for text in spec.get("loadBalancerSourceRanges") or []:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue  # kube-proxy drops what it cannot parse
        if (net.version == 6) == (ip_family == "IPv6"):
            ranges.append(str(net))
    vips: list[str] = []
    for ing in _get(status, "loadBalancer", "ingress") or []:
        ip = ing.get("ip") or ""
        if not ip or _family_of(ip) != ip_family:
            continue
        if ipmode_proxy_skipped and ing.get("ipMode") == "Proxy":
            continue
        vips.append(_norm_ip(ip))
    hc = int(spec.get("healthCheckNodePort") or 0) if (svc_type == "LoadBalancer" and etp_local) else 0

    out: list[ServicePortInfo] = []
    for p in spec.get("ports") or []:
        out.append(ServicePortInfo(
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            port_name=str(p.get("name") or ""),
            protocol=str(p.get("protocol") or "TCP").upper(),
            port=int(p.get("port") or 0),
            node_port=int(p.get("nodePort") or 0),
            target_port=p.get("targetPort"),
            service_type=svc_type,
            cluster_ip=cluster_ip,
            external_ips=external_ips,
            load_balancer_vips=tuple(vips),
            load_balancer_source_ranges=tuple(ranges),
            health_check_node_port=hc,
            session_affinity_seconds=affinity,
            external_policy_local=etp_local,
            internal_policy_local=itp_local,
            hints_annotation=hints,
            ip_family=ip_family,
        ))
    return out


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class EndpointInfo:
    """One endpoint of one Service port (kube-proxy's ``BaseEndpointInfo``)."""

    ip: str
    port: int
    ready: bool
    serving: bool
    terminating: bool
    is_local: bool
    node_name: str | None = None
    zone: str | None = None
    zone_hints: frozenset[str] = frozenset()
    source: str = ""  # "EndpointSlice ns/name" or "Endpoints ns/name"
    #: ``ip:port`` (``[ip6]:port``), kube-proxy's ``Endpoint.String()`` (computed once: the renderers ask often).
    endpoint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoint", join_host_port(self.ip, self.port))

    @property
    def serving_terminating(self) -> bool:
        return self.serving and self.terminating


def _add_endpoint(found: dict[str, EndpointInfo], ep: EndpointInfo) -> None:
    # 1.28 endpointslicecache.addEndpoints: keep the first, unless a later duplicate is local.
    if ep.endpoint not in found or ep.is_local:
        found[ep.endpoint] = ep


class EndpointSources:
    """EndpointSlices and v1 Endpoints of any Services, indexed once by the Service they belong to
    (namespace and name), so that finding one Service's costs the same for 10 Services as for 20,000."""

    __slots__ = ("_legacy", "_slices")

    def __init__(self, endpoint_slices: Iterable[KubeObject] | None = None,
                 endpoints: Iterable[KubeObject] | None = None) -> None:
        self._slices: dict[tuple[str, str], list[KubeObject]] = {}
        for sl in endpoint_slices or ():
            meta = sl.get("metadata") or {}
            owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if isinstance(owner, str):
                self._slices.setdefault((meta.get("namespace") or "default", owner), []).append(sl)
        #: None: no v1 Endpoints were given (then a Service without slices has no endpoints at all).
        self._legacy: dict[tuple[str, str], list[KubeObject]] | None = None
        if endpoints is not None:
            self._legacy = {}
            for obj in endpoints:
                meta = obj.get("metadata") or {}
                self._legacy.setdefault((meta.get("namespace") or "default", str(meta.get("name") or "")), []).append(obj)

    def slices(self, namespace: str, name: str) -> list[KubeObject]:
        """The Service's EndpointSlices (``kubernetes.io/service-name`` label), in the order given."""
        return self._slices.get((namespace, name), [])

    def legacy(self, namespace: str, name: str) -> list[KubeObject] | None:
        """The Service's v1 Endpoints objects (None: no v1 Endpoints were given at all)."""
        return None if self._legacy is None else self._legacy.get((namespace, name), [])


def endpoints_for_port(
    service_port: ServicePortInfo,
    *,
    node_name: str,
    endpoint_slices: Iterable[KubeObject] | None = None,
    endpoints: Iterable[KubeObject] | None = None,
    sources: EndpointSources | None = None,
) -> tuple[EndpointInfo, ...]:
    """All endpoints kube-proxy knows for this Service port, deduplicated and in kube-proxy's order.

    ``endpoint_slices`` and ``endpoints`` may hold objects of any Services; only this Service's are
    used: its EndpointSlices when it has any (of any address type), else its v1 Endpoints object (the
    way kube-proxy worked before EndpointSlices).  The port of each endpoint is the slice's (or
    subset's) port whose name and protocol equal the Service port's.  For many Service ports, index
    the objects once as ``sources`` (:class:`EndpointSources`) instead.
    """
    if sources is None:
        sources = EndpointSources(endpoint_slices, endpoints)
    return port_endpoints(service_port, node_name=node_name, sources=sources)[0]


def _is_local(node: object, node_name: str) -> bool:
    """An endpoint is local when its nodeName is this node's (kube-proxy's ``IsLocal``)."""
    return bool(node_name) and node == node_name


def seen_from(endpoints: tuple[EndpointInfo, ...], node_name: str) -> tuple[EndpointInfo, ...]:
    """The endpoints :func:`port_endpoints` found for one node (none listed twice) as it finds them for
    ``node_name``: only ``is_local`` differs."""
    out = list(endpoints)
    for i, e in enumerate(out):
        local = _is_local(e.node_name, node_name)
        if local != e.is_local:
            out[i] = replace(e, is_local=local)
    return tuple(out)


def port_endpoints(service_port: ServicePortInfo, *, node_name: str,
                   sources: EndpointSources) -> tuple[tuple[EndpointInfo, ...], bool]:
    """:func:`endpoints_for_port`, and whether an endpoint was listed twice (then which copy is kept depends on
    the node: a local duplicate wins)."""
    sp = service_port
    found: dict[str, EndpointInfo] = {}
    seen = 0
    mine = sources.slices(sp.namespace, sp.name)
    legacy = sources.legacy(sp.namespace, sp.name)
    if mine:
        for sl in mine:
            meta = sl.get("metadata") or {}
            if sl.get("addressType") != sp.ip_family:
                continue
            source = f"EndpointSlice {sp.namespace}/{meta.get('name', '')}"
            for port in sl.get("ports") or []:
                if port.get("name") is None:
                    continue  # kube-proxy: "Ignoring port with nil name"
                num = port.get("port")
                if not num:
                    continue
                if port["name"] != sp.port_name or str(port.get("protocol") or "TCP").upper() != sp.protocol:
                    continue
                for ep in sl.get("endpoints") or []:
                    addrs = ep.get("addresses") or []
                    if not addrs:
                        continue
                    cond = ep.get("conditions") or {}
                    node = ep.get("nodeName")
                    zones = _get(ep, "hints", "forZones") or []
                    ip = addrs[0]
                    try:
                        ip = _norm_ip(ip)
                    except ValueError:
                        continue
                    seen += 1
                    _add_endpoint(found, EndpointInfo(
                        ip=ip,
                        port=int(num),
                        ready=cond.get("ready") is None or bool(cond.get("ready")),
                        serving=cond.get("serving") is None or bool(cond.get("serving")),
                        terminating=bool(cond.get("terminating")),
                        is_local=_is_local(node, node_name),
                        node_name=node,
                        zone=ep.get("zone"),
                        zone_hints=frozenset(str(z.get("name", "")) for z in zones),
                        source=source,
                    ))
    elif legacy is not None:
        for obj in legacy:
            source = f"Endpoints {sp.namespace}/{sp.name}"
            for subset in obj.get("subsets") or []:
                for port in subset.get("ports") or []:
                    if str(port.get("name") or "") != sp.port_name:
                        continue
                    if str(port.get("protocol") or "TCP").upper() != sp.protocol or not port.get("port"):
                        continue
                    for key, ready in (("addresses", True), ("notReadyAddresses", False)):
                        for addr in subset.get(key) or []:
                            ip = addr.get("ip") or ""
                            if _family_of(ip) != sp.ip_family:
                                continue
                            node = addr.get("nodeName")
                            seen += 1
                            _add_endpoint(found, EndpointInfo(
                                ip=_norm_ip(ip), port=int(port["port"]), ready=ready, serving=ready,
                                terminating=False, is_local=_is_local(node, node_name),
                                node_name=node, source=source,
                            ))
    return tuple(sorted(found.values(), key=lambda e: e.endpoint)), seen != len(found)


# --------------------------------------------------------------------------- categorize


@dataclass(frozen=True)
class EndpointVerdict:
    """Whether one endpoint is used for Cluster and for Local traffic policy, and why (not)."""

    endpoint: EndpointInfo
    cluster: bool
    local: bool
    cluster_reason: str
    local_reason: str

    @property
    def used(self) -> bool:
        return self.cluster or self.local


@dataclass(frozen=True)
class EndpointSelection:
    """``CategorizeEndpoints`` for one Service port on one node, with the reasons."""

    service_port: ServicePortInfo
    node_name: str
    zone: str | None
    endpoints: tuple[EndpointInfo, ...]
    #: Endpoints for Cluster policy; None when the Service port never uses Cluster policy.
    cluster_endpoints: tuple[EndpointInfo, ...] | None
    #: Endpoints for Local policy; None when the Service port never uses Local policy.
    local_endpoints: tuple[EndpointInfo, ...] | None
    #: Union of the two: the endpoints that get a KUBE-SEP chain on this node (kube-proxy's order).
    all_reachable_endpoints: tuple[EndpointInfo, ...]
    has_any_endpoints: bool
    topology_aware: bool
    topology_note: str
    cluster_terminating_fallback: bool
    local_terminating_fallback: bool
    verdicts: tuple[EndpointVerdict, ...]

    @property
    def all_endpoints_terminating(self) -> bool:
        """There are endpoints, none is ready, and some are serving while terminating."""
        return bool(self.endpoints) and not any(e.ready for e in self.endpoints) and any(
            e.serving_terminating for e in self.endpoints)

    @property
    def has_local_ready_endpoints(self) -> bool:
        return any(e.is_local and e.ready for e in self.endpoints)

    @property
    def internal_endpoints(self) -> tuple[EndpointInfo, ...]:
        """What traffic to the cluster IP is balanced over."""
        chosen = self.local_endpoints if self.service_port.internal_policy_local else self.cluster_endpoints
        return chosen or ()

    @property
    def external_endpoints(self) -> tuple[EndpointInfo, ...]:
        """What external traffic (NodePort, external IP, LB IP) from outside the node is balanced over."""
        chosen = self.local_endpoints if self.service_port.external_policy_local else self.cluster_endpoints
        return chosen or ()

    @property
    def has_internal_endpoints(self) -> bool:
        if self.service_port.internal_policy_local:
            return self.has_any_endpoints and bool(self.local_endpoints)
        return self.has_any_endpoints

    @property
    def has_external_endpoints(self) -> bool:
        if self.service_port.external_policy_local:
            return self.has_any_endpoints and bool(self.local_endpoints)
        return self.has_any_endpoints

    def verdict(self, endpoint: str) -> EndpointVerdict | None:
        """The verdict for ``"ip:port"``."""
        for v in self.verdicts:
            if v.endpoint.endpoint == endpoint:
                return v
        return None


_NO_TOPOLOGY = ("", "disabled", "Disabled")  # hints annotations that do not ask for topology-aware routing


def choice_depends_on_node(sp: ServicePortInfo) -> bool:
    """Whether which endpoints this port uses (:func:`categorize_endpoints`; before 1.24, plan.py's
    ``filter_endpoints_legacy``) can differ from node to node: with a Local traffic policy (the node's own
    endpoints) or topology hints asked for (the node's zone). Otherwise every node chooses the same endpoints
    (an endpoint listed twice aside: see :func:`port_endpoints`)."""
    return sp.internal_policy_local or sp.external_policy_local or sp.hints_annotation not in _NO_TOPOLOGY


def _can_use_topology(
    sp: ServicePortInfo, endpoints: Sequence[EndpointInfo], zone: str | None,
) -> tuple[bool, str]:
    """``canUseTopology`` (1.28, TopologyAwareHints on), with the reason when it says no."""
    hint = sp.hints_annotation
    if hint in _NO_TOPOLOGY:
        return False, "the Service does not ask for topology-aware routing"
    if not zone:
        return False, f"the node has no {ZONE_LABEL} label"
    has_zone = False
    for ep in endpoints:
        if not ep.ready:
            continue
        if not ep.zone_hints:
            return False, f"endpoint {ep.endpoint} has no zone hint"
        if zone in ep.zone_hints:
            has_zone = True
    if not has_zone:
        return False, f"no endpoint is hinted for zone {zone}"
    return True, f"topology hints for zone {zone} are used"


def not_usable_reason(ep: EndpointInfo) -> str:
    """Why an endpoint that is not ready cannot be used: terminating, not serving, or just not ready."""
    if ep.terminating and not ep.serving:
        return "terminating and not serving"
    if ep.terminating:
        return "terminating"
    return "not ready"


def categorize_endpoints(
    service_port: ServicePortInfo,
    endpoints: Sequence[EndpointInfo],
    *,
    node_name: str,
    node_labels: Mapping[str, str] | None = None,
) -> EndpointSelection:
    """kube-proxy 1.28 ``CategorizeEndpoints``: which endpoints Cluster and Local policy use here."""
    sp = service_port
    zone = (node_labels or {}).get(ZONE_LABEL) or None
    eps = tuple(endpoints)

    use_topology = False
    topo_note = "the Service port never uses Cluster traffic policy"
    cluster: list[EndpointInfo] | None = None
    cluster_fallback = False
    has_any = False
    if sp.uses_cluster_endpoints:
        use_topology, topo_note = _can_use_topology(sp, eps, zone)
        cluster = [e for e in eps if e.ready and (not use_topology or (zone or "") in e.zone_hints)]
        if not cluster:
            cluster = [e for e in eps if e.serving_terminating]
            cluster_fallback = bool(cluster)
        has_any = bool(cluster)

    local: list[EndpointInfo] | None = None
    local_fallback = False
    if sp.uses_local_endpoints:
        has_local_ready = has_local_st = False
        for e in eps:
            if e.ready:
                has_any = True
                has_local_ready = has_local_ready or e.is_local
            elif e.serving_terminating:
                has_any = True
                has_local_st = has_local_st or e.is_local
        local = []
        if has_local_ready:
            local = [e for e in eps if e.is_local and e.ready]
        elif has_local_st:
            local_fallback = True
            local = [e for e in eps if e.is_local and e.serving_terminating]

    if cluster is None:
        reachable = list(local or [])
    elif local is None or (not use_topology and not local_fallback):
        reachable = list(cluster)
    else:
        merged = {e.endpoint: e for e in cluster}
        merged.update({e.endpoint: e for e in local})
        # kube-proxy builds this from a Go map (random order); sorted here for stable output.
        reachable = sorted(merged.values(), key=lambda e: e.endpoint)

    cluster_set = {e.endpoint for e in cluster or ()}
    local_set = {e.endpoint for e in local or ()}
    verdicts: list[EndpointVerdict] = []
    for e in eps:
        # Cluster policy
        if cluster is None:
            c_reason = "the Service port does not use Cluster traffic policy"
        elif e.endpoint in cluster_set:
            c_reason = ("serving while terminating: no ready endpoint anywhere (terminating fallback)"
                        if cluster_fallback else "ready")
        elif e.ready:
            c_reason = f"no hint for this zone ({zone})"
        elif e.serving_terminating:
            c_reason = "terminating (ready endpoints exist)"
        else:
            c_reason = not_usable_reason(e)
        # Local policy
        if local is None:
            l_reason = "the Service port does not use Local traffic policy"
        elif not e.is_local:
            l_reason = "on another node" if e.node_name else "on another node (no nodeName)"
        elif e.endpoint in local_set:
            l_reason = ("serving while terminating: no ready endpoint on this node (terminating fallback)"
                        if local_fallback else "ready, on this node")
        elif e.serving_terminating:
            l_reason = "terminating (ready endpoints exist on this node)"
        else:
            l_reason = not_usable_reason(e)
        verdicts.append(EndpointVerdict(e, e.endpoint in cluster_set, e.endpoint in local_set, c_reason, l_reason))

    return EndpointSelection(
        service_port=sp,
        node_name=node_name,
        zone=zone,
        endpoints=eps,
        cluster_endpoints=None if cluster is None else tuple(cluster),
        local_endpoints=None if local is None else tuple(local),
        all_reachable_endpoints=tuple(reachable),
        has_any_endpoints=has_any,
        topology_aware=use_topology,
        topology_note=topo_note,
        cluster_terminating_fallback=cluster_fallback,
        local_terminating_fallback=local_fallback,
        verdicts=tuple(verdicts),
    )


def select_endpoints(
    service: KubeObject,
    endpoint_slices: Iterable[KubeObject] | None = None,
    *,
    node_name: str,
    node_labels: Mapping[str, str] | None = None,
    node: KubeObject | None = None,
    endpoints: Iterable[KubeObject] | None = None,
    ip_family: IPFamily = "IPv4",
    kube_version: str | tuple[int, int] = REFERENCE_VERSION,
) -> list[EndpointSelection]:
    """One :class:`EndpointSelection` per proxied port of ``service`` (see :func:`service_ports`).

    ``node`` (a Node object) supplies the labels when ``node_labels`` is not given.  Pass
    ``endpoint_slices`` (preferred) or, for old clusters, the v1 ``endpoints`` objects.
    """
    if node_labels is None and node is not None:
        node_labels = _get(node, "metadata", "labels") or {}
    sources = EndpointSources(endpoint_slices, endpoints)
    out: list[EndpointSelection] = []
    for sp in service_ports(service, ip_family=ip_family, kube_version=kube_version):
        eps = endpoints_for_port(sp, node_name=node_name, sources=sources)
        out.append(categorize_endpoints(sp, eps, node_name=node_name, node_labels=node_labels))
    return out
