"""kube-proxy's endpoint selection (svctrace.kubeproxy.endpoints), checked against kube-proxy 1.28's rules.

The terminating-endpoint cases are the Service/EndpointSlice objects of kube-proxy's own
TestTerminatingEndpointsTrafficPolicyLocal/Cluster (tests/fixtures/kube-proxy/012..019, transcribed from
pkg/proxy/iptables/rules_test.go); the endpoints each policy uses are those in the KUBE-SVC / KUBE-SVL
chains of the corpus's expected rules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from svctrace.kubeproxy.endpoints import (
    EndpointInfo,
    EndpointSelection,
    EndpointSources,
    EndpointVerdict,
    categorize_endpoints,
    endpoints_for_port,
    select_endpoints,
    service_ports,
)
from svctrace.model.version import parse_version

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kube-proxy"
NODE = "node-a"


def svc(name: str = "web", ns: str = "ns", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", None)
    annotations = spec.pop("annotations", None)
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": ns}, "spec": spec}
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if status:
        obj["status"] = status
    spec.setdefault("clusterIP", "10.96.0.10")
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    return obj


def ep(ip: str, node: str | None = None, zones: list[str] | None = None, **cond: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"addresses": [ip], "conditions": cond}
    if node is not None:
        d["nodeName"] = node
    if zones is not None:
        d["hints"] = {"forZones": [{"name": z} for z in zones]}
    return d


def eslice(endpoints: list[dict[str, Any]], *, svc_name: str = "web", ns: str = "ns", name: str = "web-1",
           family: str = "IPv4", ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc_name}},
        "addressType": family,
        "endpoints": endpoints,
        "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def one(service: dict[str, Any], slices: list[dict[str, Any]], **kw: Any) -> EndpointSelection:
    sels = select_endpoints(service, slices, node_name=kw.pop("node_name", NODE), **kw)
    assert len(sels) == 1
    return sels[0]


def verdict(sel: EndpointSelection, endpoint: str) -> EndpointVerdict:
    v = sel.verdict(endpoint)
    assert v is not None, endpoint
    return v


def eps_of(endpoints: tuple[EndpointInfo, ...] | None) -> list[str] | None:
    return None if endpoints is None else [e.endpoint for e in endpoints]


# --------------------------------------------------------------------------- service ports


def test_service_port_fields() -> None:
    s = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000,
            ports=[{"name": "http", "port": 80, "nodePort": 30080, "targetPort": "web"}],
            externalIPs=["198.51.100.1", "2001:db8::1", "not-an-ip"],
            loadBalancerSourceRanges=[" 203.0.113.7/25", "2001:db8::/64", "junk"],
            sessionAffinity="ClientIP",
            status={"loadBalancer": {"ingress": [{"ip": "203.0.113.200"}, {"hostname": "lb.example"},
                                                 {"ip": "2001:db8::200"}]}})
    [sp] = service_ports(s)
    assert sp.service_port_name() == "ns/web:http"
    assert sp.protocol == "TCP" and sp.port == 80 and sp.node_port == 30080 and sp.target_port == "web"
    assert sp.external_ips == ("198.51.100.1",)
    assert sp.load_balancer_source_ranges == ("203.0.113.0/25",)  # trimmed, masked, this family only
    assert sp.load_balancer_vips == ("203.0.113.200",)  # hostname-only ingress and IPv6 dropped
    assert sp.health_check_node_port == 31000
    assert sp.session_affinity_seconds == 10800  # the API default when the timeout is absent
    assert sp.external_policy_local and not sp.internal_policy_local
    assert sp.externally_accessible and sp.uses_cluster_endpoints and sp.uses_local_endpoints


def test_skipped_services() -> None:
    assert service_ports(svc(type="ExternalName", externalName="example.com")) == []
    assert service_ports(svc(clusterIP="None")) == []
    assert service_ports(svc(clusterIP="")) == []
    assert service_ports(svc(clusterIP="fd00::10")) == []  # IPv4 proxier, IPv6 service
    assert len(service_ports(svc(clusterIP="fd00::10"), ip_family="IPv6")) == 1


def test_dual_stack_cluster_ip_by_family() -> None:
    s = svc(clusterIP="10.96.0.10", clusterIPs=["10.96.0.10", "fd00::10"], ipFamilies=["IPv4", "IPv6"])
    assert service_ports(s)[0].cluster_ip == "10.96.0.10"
    assert service_ports(s, ip_family="IPv6")[0].cluster_ip == "fd00::10"


def test_external_policy_local_only_for_nodeport_and_lb() -> None:
    assert not service_ports(svc(externalTrafficPolicy="Local", externalIPs=["198.51.100.1"]))[0].external_policy_local
    assert service_ports(svc(type="NodePort", externalTrafficPolicy="Local"))[0].external_policy_local
    # health-check node port: LoadBalancer with eTP Local only
    assert service_ports(svc(type="NodePort", externalTrafficPolicy="Local",
                             healthCheckNodePort=31000))[0].health_check_node_port == 0
    assert service_ports(svc(type="LoadBalancer", healthCheckNodePort=31000))[0].health_check_node_port == 0


def test_ip_mode_proxy_ingress_skipped_from_1_30() -> None:
    s = svc(type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "Proxy"},
                                                                      {"ip": "203.0.113.2", "ipMode": "VIP"}]}})
    assert service_ports(s, kube_version="1.28")[0].load_balancer_vips == ("203.0.113.1", "203.0.113.2")
    assert service_ports(s, kube_version="1.30")[0].load_balancer_vips == ("203.0.113.2",)


def test_hints_annotation_precedence() -> None:
    both = svc(annotations={"service.kubernetes.io/topology-aware-hints": "disabled",
                            "service.kubernetes.io/topology-mode": "Auto"})
    assert service_ports(both)[0].hints_annotation == "disabled"
    assert service_ports(svc(annotations={"service.kubernetes.io/topology-mode": "Auto"}))[0].hints_annotation == "Auto"


def test_unnamed_port_names() -> None:
    sp = service_ports(svc(ports=[{"port": 80}]))[0]
    assert sp.service_port_name() == "ns/web"
    assert sp.service_port_name(legacy_port_format=True) == "ns/web:"


def test_parse_version() -> None:
    assert parse_version("1.28") == (1, 28)
    assert parse_version("v1.28.3") == (1, 28)
    assert parse_version("1.27.4-gke.900") == (1, 27)
    assert parse_version((1, 16)) == (1, 16)
    with pytest.raises(ValueError):
        parse_version("latest")


# --------------------------------------------------------------------------- endpoints of a port


def test_port_matched_by_name_and_protocol() -> None:
    s = svc(ports=[{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}])
    sl = eslice([ep("10.0.0.1")], ports=[
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "dns", "port": 5353, "protocol": "TCP"},  # same name, wrong protocol: not the UDP port's
        {"port": 9999, "protocol": "UDP"},  # no name at all: kube-proxy ignores it
        {"name": "dns", "port": 0, "protocol": "UDP"},  # zero port: ignored
    ])
    http, dns = service_ports(s)
    assert [e.endpoint for e in endpoints_for_port(http, node_name=NODE, endpoint_slices=[sl])] == ["10.0.0.1:8080"]
    assert endpoints_for_port(dns, node_name=NODE, endpoint_slices=[sl]) == ()


def test_slices_of_other_services_families_and_namespaces_ignored() -> None:
    [sp] = service_ports(svc())
    slices = [
        eslice([ep("10.0.0.1")]),
        eslice([ep("10.0.0.2")], svc_name="other"),
        eslice([ep("10.0.0.3")], ns="other-ns"),
        eslice([ep("fd00::4")], family="IPv6"),
        eslice([ep("10.0.0.5")], name="web-fqdn", family="FQDN"),
    ]
    assert [e.ip for e in endpoints_for_port(sp, node_name=NODE, endpoint_slices=slices)] == ["10.0.0.1"]


def test_condition_defaults_and_first_address_only() -> None:
    [sp] = service_ports(svc())
    sl = eslice([{"addresses": ["10.0.0.1", "10.0.0.99"]}, ep("10.0.0.2", ready=False, terminating=True),
                 {"addresses": []}])
    a, b = endpoints_for_port(sp, node_name=NODE, endpoint_slices=[sl])
    assert (a.ip, a.ready, a.serving, a.terminating, a.is_local) == ("10.0.0.1", True, True, False, False)
    assert (b.ready, b.serving, b.terminating) == (False, True, True)  # serving defaults to true


def test_sorted_by_endpoint_string_not_numerically() -> None:
    [sp] = service_ports(svc())
    sl = eslice([ep("10.0.0.9"), ep("10.0.0.10"), ep("10.0.0.100")])
    got = [e.endpoint for e in endpoints_for_port(sp, node_name=NODE, endpoint_slices=[sl])]
    assert got == ["10.0.0.100:8080", "10.0.0.10:8080", "10.0.0.9:8080"]


def test_duplicates_keep_first_unless_a_later_one_is_local() -> None:
    [sp] = service_ports(svc())
    remote_first = [eslice([ep("10.0.0.1", "node-b")], name="a"), eslice([ep("10.0.0.1", NODE)], name="b")]
    [e] = endpoints_for_port(sp, node_name=NODE, endpoint_slices=remote_first)
    assert e.is_local
    local_first = [eslice([ep("10.0.0.1", NODE, ready=False)], name="a"), eslice([ep("10.0.0.1", "node-b")], name="b")]
    [e] = endpoints_for_port(sp, node_name=NODE, endpoint_slices=local_first)
    assert e.is_local and not e.ready


def test_no_node_name_is_never_local() -> None:
    [sp] = service_ports(svc())
    [e] = endpoints_for_port(sp, node_name="", endpoint_slices=[eslice([ep("10.0.0.1", "")])])
    assert not e.is_local


def test_v1_endpoints_fallback() -> None:
    legacy = {"metadata": {"name": "web", "namespace": "ns"}, "subsets": [{
        "addresses": [{"ip": "10.0.0.1", "nodeName": NODE}, {"ip": "10.0.0.2", "nodeName": "node-b"}],
        "notReadyAddresses": [{"ip": "10.0.0.3", "nodeName": NODE}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "other", "port": 1}],
    }]}
    s = svc(type="NodePort", externalTrafficPolicy="Local", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    [sel] = select_endpoints(s, None, node_name=NODE, endpoints=[legacy])
    assert [e.endpoint for e in sel.endpoints] == ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert eps_of(sel.local_endpoints) == ["10.0.0.1:8080"]
    assert verdict(sel, "10.0.0.3:8080").cluster_reason == "not ready"
    assert all(e.source == "Endpoints ns/web" for e in sel.endpoints)


def test_endpoints_fallback_is_per_service() -> None:
    """A Service with slices uses them (even an empty one); one with none falls back to v1 Endpoints."""
    legacy = [{"metadata": {"name": name, "namespace": "ns"},
               "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"name": "http", "port": 1}]}]}
              for name in ("web", "old", "empty")]
    slices = [eslice([ep("10.0.0.1")]), eslice([], svc_name="empty", name="empty-1")]
    got = {name: [e.ip for e in select_endpoints(svc(name), slices, node_name=NODE, endpoints=legacy)[0].endpoints]
           for name in ("web", "old", "empty")}
    assert got == {"web": ["10.0.0.1"], "old": ["10.0.0.7"], "empty": []}


def test_indexed_sources_find_each_services_objects() -> None:
    """One EndpointSources over every Service's objects gives each port what the unindexed lookup gives."""
    legacy = [{"metadata": {"name": name, "namespace": ns},
               "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 1}]}]}
              for name, ns, ip in (("old", "ns", "10.0.0.7"), ("old", "other-ns", "10.0.0.8"))]
    slices = [eslice([ep("10.0.0.1")]), eslice([ep("10.0.0.2")], ns="other-ns"),
              eslice([ep("10.0.0.3")], name="web-2"), eslice([], svc_name="empty", name="empty-1")]
    sources = EndpointSources(slices, legacy)
    for name in ("web", "old", "empty", "missing"):
        [sp] = service_ports(svc(name))
        indexed = endpoints_for_port(sp, node_name=NODE, sources=sources)
        assert indexed == endpoints_for_port(sp, node_name=NODE, endpoint_slices=slices, endpoints=legacy)
    [web] = service_ports(svc())
    assert [e.ip for e in endpoints_for_port(web, node_name=NODE, sources=sources)] == ["10.0.0.1", "10.0.0.3"]
    [old] = service_ports(svc("old"))
    assert [e.ip for e in endpoints_for_port(old, node_name=NODE, sources=sources)] == ["10.0.0.7"]
    assert endpoints_for_port(old, node_name=NODE, sources=EndpointSources(slices)) == ()


def test_slices_win_over_endpoints() -> None:
    legacy = {"metadata": {"name": "web", "namespace": "ns"},
              "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "ports": [{"name": "http", "port": 1}]}]}
    sel = select_endpoints(svc(), [eslice([ep("10.0.0.1")])], node_name=NODE, endpoints=[legacy])[0]
    assert [e.ip for e in sel.endpoints] == ["10.0.0.1"]


# --------------------------------------------------------------------------- categorize


def test_ready_endpoints_only_when_any_ready() -> None:
    sel = one(svc(), [eslice([ep("10.0.0.1"), ep("10.0.0.2", ready=False, serving=True, terminating=True),
                              ep("10.0.0.3", ready=False, serving=False, terminating=True), ep("10.0.0.4", ready=False)])])
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080"]
    assert sel.local_endpoints is None  # never uses Local policy
    assert sel.has_any_endpoints and not sel.cluster_terminating_fallback
    reasons = {v.endpoint.ip: v.cluster_reason for v in sel.verdicts}
    assert reasons == {"10.0.0.1": "ready", "10.0.0.2": "terminating (ready endpoints exist)",
                       "10.0.0.3": "terminating and not serving", "10.0.0.4": "not ready"}
    assert all(v.local_reason == "the Service port does not use Local traffic policy" for v in sel.verdicts)


def test_cluster_terminating_fallback_ignores_nodes() -> None:
    sel = one(svc(), [eslice([ep("10.0.0.1", "node-b", ready=False, serving=True, terminating=True),
                              ep("10.0.0.2", NODE, ready=False, serving=False, terminating=True)])])
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080"]
    assert sel.cluster_terminating_fallback and sel.has_any_endpoints and sel.all_endpoints_terminating
    assert "terminating fallback" in sel.verdicts[0].cluster_reason


def test_no_usable_endpoints() -> None:
    sel = one(svc(), [eslice([ep("10.0.0.1", ready=False, serving=False, terminating=True), ep("10.0.0.2", ready=False)])])
    assert sel.cluster_endpoints == () and not sel.has_any_endpoints
    assert not sel.has_internal_endpoints and sel.internal_endpoints == ()


def test_external_local_uses_local_then_local_terminating_never_remote() -> None:
    s = svc(type="NodePort", externalTrafficPolicy="Local", ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    sel = one(s, [eslice([ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b"),
                          ep("10.0.0.3", NODE, ready=False, serving=True, terminating=True)])])
    assert eps_of(sel.local_endpoints) == ["10.0.0.1:8080"]
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    assert verdict(sel, "10.0.0.2:8080").local_reason == "on another node"
    assert verdict(sel, "10.0.0.3:8080").local_reason == "terminating (ready endpoints exist on this node)"

    sel = one(s, [eslice([ep("10.0.0.2", "node-b"), ep("10.0.0.3", NODE, ready=False, serving=True, terminating=True)])])
    assert eps_of(sel.local_endpoints) == ["10.0.0.3:8080"] and sel.local_terminating_fallback
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.2:8080"]
    # the union gets SEP chains: the terminating local endpoint and the ready remote one
    assert eps_of(sel.all_reachable_endpoints) == ["10.0.0.2:8080", "10.0.0.3:8080"]

    sel = one(s, [eslice([ep("10.0.0.2", "node-b")])])
    assert sel.local_endpoints == () and sel.has_any_endpoints
    assert sel.has_internal_endpoints and not sel.has_external_endpoints  # kube-proxy: "has no local endpoints"


def test_internal_traffic_policy_local() -> None:
    sel = one(svc(internalTrafficPolicy="Local"), [eslice([ep("10.0.0.1", NODE), ep("10.0.0.2", "node-b")])])
    assert sel.cluster_endpoints is None  # ClusterIP-only service with iTP Local never uses Cluster policy
    assert eps_of(sel.local_endpoints) == ["10.0.0.1:8080"]
    assert eps_of(sel.internal_endpoints) == ["10.0.0.1:8080"]
    assert eps_of(sel.all_reachable_endpoints) == ["10.0.0.1:8080"]
    sel = one(svc(internalTrafficPolicy="Local"), [eslice([ep("10.0.0.2", "node-b")])])
    assert sel.has_any_endpoints and not sel.has_internal_endpoints


ZONE = {"topology.kubernetes.io/zone": "zone-a"}
AUTO = {"service.kubernetes.io/topology-mode": "Auto"}


def test_topology_hints_filter_cluster_endpoints() -> None:
    sl = eslice([ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2", ["zone-b"]), ep("10.0.0.3", "n3", ["zone-a", "zone-b"])])
    sel = one(svc(annotations=AUTO), [sl], node_labels=ZONE)
    assert sel.topology_aware
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080", "10.0.0.3:8080"]
    assert verdict(sel, "10.0.0.2:8080").cluster_reason == "no hint for this zone (zone-a)"
    # the zone label may also come from the Node object
    sel2 = select_endpoints(svc(annotations=AUTO), [sl], node_name=NODE,
                            node={"metadata": {"name": NODE, "labels": ZONE}})[0]
    assert eps_of(sel2.cluster_endpoints) == eps_of(sel.cluster_endpoints)


@pytest.mark.parametrize(("annotations", "labels", "endpoints", "why"), [
    ({}, ZONE, [ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2", ["zone-b"])], "does not ask"),
    ({"service.kubernetes.io/topology-mode": "Disabled"}, ZONE,
     [ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2", ["zone-b"])], "does not ask"),
    (AUTO, {}, [ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2", ["zone-b"])], "no topology.kubernetes.io/zone"),
    (AUTO, ZONE, [ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2")], "has no zone hint"),
    (AUTO, ZONE, [ep("10.0.0.1", "n1", ["zone-b"]), ep("10.0.0.2", "n2", ["zone-c"])], "no endpoint is hinted"),
])
def test_topology_hints_not_used(annotations: dict[str, str], labels: dict[str, str],
                                 endpoints: list[dict[str, Any]], why: str) -> None:
    sel = one(svc(annotations=annotations), [eslice(endpoints)], node_labels=labels)
    assert not sel.topology_aware and why in sel.topology_note
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def test_topology_only_looks_at_ready_endpoints_and_not_at_fallback() -> None:
    # a not-ready endpoint without hints does not disable topology
    sel = one(svc(annotations=AUTO), [eslice([ep("10.0.0.1", "n1", ["zone-a"]), ep("10.0.0.2", "n2", ["zone-b"]),
                                              ep("10.0.0.3", "n3", ready=False)])], node_labels=ZONE)
    assert sel.topology_aware and eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080"]
    # the terminating fallback ignores hints
    sel = one(svc(annotations=AUTO), [eslice([
        ep("10.0.0.1", "n1", ["zone-b"], ready=False, serving=True, terminating=True),
        ep("10.0.0.2", "n2", ["zone-a"], ready=False, serving=True, terminating=True)])], node_labels=ZONE)
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080"] and sel.cluster_terminating_fallback


def test_topology_with_local_policy_merges_reachable() -> None:
    s = svc(type="NodePort", externalTrafficPolicy="Local", annotations=AUTO,
            ports=[{"name": "http", "port": 80, "nodePort": 30080}])
    sel = one(s, [eslice([ep("10.0.0.1", NODE, ["zone-b"]), ep("10.0.0.2", "n2", ["zone-a"])])], node_labels=ZONE)
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.2:8080"]
    assert eps_of(sel.local_endpoints) == ["10.0.0.1:8080"]
    assert eps_of(sel.all_reachable_endpoints) == ["10.0.0.1:8080", "10.0.0.2:8080"]


def test_categorize_directly() -> None:
    [sp] = service_ports(svc())
    eps = (EndpointInfo("10.0.0.1", 80, ready=True, serving=True, terminating=False, is_local=False),)
    sel = categorize_endpoints(sp, eps, node_name=NODE)
    assert eps_of(sel.cluster_endpoints) == ["10.0.0.1:80"] and sel.zone is None


# --------------------------------------------------------------------------- kube-proxy's own cases

# (fixture, Cluster-policy endpoints, Local-policy endpoints) as in the corpus's KUBE-SVC / KUBE-SVL chains.
KUBE_PROXY_CASES = [
    ("012-TestTerminatingEndpointsTrafficPolicyLocal-ready-endpoints-exist",
     ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"], ["10.0.1.1:80", "10.0.1.2:80"]),
    ("013-TestTerminatingEndpointsTrafficPolicyLocal-only-terminating-endpoints-exist",
     ["10.0.1.5:80"], ["10.0.1.2:80", "10.0.1.3:80"]),
    ("014-TestTerminatingEndpointsTrafficPolicyLocal-terminating-endpoints-on-remote-node", ["10.0.1.5:80"], []),
    ("015-TestTerminatingEndpointsTrafficPolicyLocal-no-usable-endpoints-on-any-node", [], []),
    ("016-TestTerminatingEndpointsTrafficPolicyCluster-ready-endpoints-exist",
     ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.5:80"], None),
    ("017-TestTerminatingEndpointsTrafficPolicyCluster-only-terminating-endpoints-exist",
     ["10.0.1.2:80", "10.0.1.3:80", "10.0.1.5:80"], None),
    ("018-TestTerminatingEndpointsTrafficPolicyCluster-terminating-endpoints-on-remote-node", ["10.0.1.5:80"], None),
    ("019-TestTerminatingEndpointsTrafficPolicyCluster-no-usable-endpoints-on-any-node", [], None),
]


@pytest.mark.parametrize(("case", "cluster", "local"), KUBE_PROXY_CASES, ids=[c[0][:3] for c in KUBE_PROXY_CASES])
def test_kube_proxy_terminating_cases(case: str, cluster: list[str], local: list[str] | None) -> None:
    fx = json.loads((FIXTURES / f"{case}.json").read_text())
    [sel] = select_endpoints(fx["services"][0], fx["endpointSlices"], node_name=fx["config"]["node_name"])
    assert eps_of(sel.cluster_endpoints) == cluster
    assert eps_of(sel.local_endpoints) == local
    assert sel.has_any_endpoints == bool(cluster)
    for v in sel.verdicts:  # every verdict says why
        assert v.cluster_reason and v.local_reason
    if case.startswith("013"):
        assert sel.local_terminating_fallback and not sel.cluster_terminating_fallback
        assert verdict(sel, "10.0.1.4:80").local_reason == "terminating and not serving"
        assert verdict(sel, "10.0.1.5:80").local_reason == "on another node"
    if case.startswith("015"):
        # the same IP twice (local and remote, neither usable): deduplicated, the local one kept
        [e] = sel.endpoints
        assert e.is_local and not sel.all_endpoints_terminating
