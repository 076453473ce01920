"""What kube-proxy in IPVS mode programs on a node (svctrace.kubeproxy.render.ipvs).

Proof, in three parts:

* Round trip through svctrace's own IPVS reader and walker. ``load_ipvs(ipvsadm_save())`` parses
  without warnings. Then packets are walked through ``trace(ipvs, iptables_save, ipset_save)``. Each
  expectation (backends, shares, masquerade) is reasoned out from kube-proxy v1.30's
  ``pkg/proxy/ipvs/proxier.go`` in the comment next to it, not copied from the walker.
* The kernel (root only). ``ipset restore`` loads ``ipset_save()`` into a network namespace made by the
  test, and ``ipset save`` prints the same sets back. ``iptables_save()`` passes ``iptables-restore
  --test`` there. Loaded for real, ``iptables-save`` prints it back line for line. The exception is
  the ``-m ipvs`` rules of KUBE-IPVS-OUT-FILTER when the kernel has no IPVS match.
* The wild IPVS-mode dumps in tests/corpus/wild. The same objects give the same ``ipvsadm -Sn``
  lines as ipvsadm/008, and the same rules, line for line, as iptables-save/028 and iptables-S/004,
  apart from what those older kube-proxies wrote differently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import WILD, need_corpus

from svctrace.dataplane.contract import Outcome, TraceResult
from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.ipvs import load_ipvs
from svctrace.kubeproxy.config import ProxyConfig
from svctrace.kubeproxy.render.ipvs import IPVSRules, generate_ipvs, ipset_name
from svctrace.kubeproxy.walk import trace_ipvs as trace
from svctrace.model.packet import NodeFacts, Packet

NODE_A, NODE_B, NODE_C = "node-a", "node-b", "node-c"
NODE_IPS = {NODE_A: "192.168.5.10", NODE_B: "192.168.5.11", NODE_C: "192.168.5.12"}
CLUSTER_CIDR = "10.244.0.0/16"
OUTSIDE = "203.0.113.7"  # a client off the cluster, inside the LB source range below
STRANGER = "192.0.2.9"  # a client off the cluster, outside that range


def svc(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None, ns: str = "web") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                           "spec": spec}
    if status:
        obj["status"] = status
    return obj


def ep(ip: str, node: str, **cond: bool) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": cond}


def eps(name: str, endpoints: list[dict[str, Any]], port: int, proto: str = "TCP", port_name: str = "",
        ns: str = "web", fam: str = "IPv4") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
            "addressType": fam, "endpoints": endpoints,
            "ports": [{"name": port_name, "port": port, "protocol": proto}]}


SERVICES = [
    # ClusterIP, three ready endpoints (one on node-a).
    svc("web", {"clusterIP": "10.96.0.20", "ports": [{"port": 80, "targetPort": 8080}]}),
    # NodePort, eTP Cluster, both endpoints elsewhere.
    svc("shop", {"type": "NodePort", "clusterIP": "10.96.0.21", "ports": [{"port": 80, "nodePort": 30080}]}),
    # LoadBalancer with loadBalancerSourceRanges that leave the nodes out.
    svc("lb", {"type": "LoadBalancer", "clusterIP": "10.96.0.22", "loadBalancerSourceRanges": ["203.0.113.0/24"],
               "ports": [{"port": 443, "nodePort": 30443}]},
        {"loadBalancer": {"ingress": [{"ip": "198.51.100.22"}]}}),
    # LoadBalancer with externalTrafficPolicy Local: one endpoint on node-a, one on node-b.
    svc("local", {"type": "LoadBalancer", "clusterIP": "10.96.0.23", "externalTrafficPolicy": "Local",
                  "healthCheckNodePort": 32000, "ports": [{"port": 80, "nodePort": 30081}]},
        {"loadBalancer": {"ingress": [{"ip": "198.51.100.23"}]}}),
    # Session affinity.
    svc("sticky", {"clusterIP": "10.96.0.24", "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}, "ports": [{"port": 80}]}),
    # No endpoints at all.
    svc("empty", {"clusterIP": "10.96.0.25", "ports": [{"port": 80}]}),
    # A rolling update: two ready endpoints and one terminating.
    svc("rolling", {"clusterIP": "10.96.0.26", "ports": [{"port": 80}]}),
    # UDP + TCP DNS, and an external IP with eTP Local (one that is the node's own address, one that is not).
    svc("dns", {"clusterIP": "10.96.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]},
        ns="kube-system"),
    svc("ext", {"type": "NodePort", "clusterIP": "10.96.0.27", "externalTrafficPolicy": "Local",
                "externalIPs": ["203.0.113.50", NODE_IPS[NODE_A]], "ports": [{"port": 8443, "nodePort": 30843}]}),
    # SCTP NodePort: hash:ip,port sets.
    svc("sctp", {"type": "NodePort", "clusterIP": "10.96.0.28",
                 "ports": [{"port": 9999, "protocol": "SCTP", "nodePort": 30999}]}),
    # Skipped by kube-proxy: headless and ExternalName.
    svc("headless", {"clusterIP": "None", "ports": [{"port": 80}]}),
    svc("extname", {"type": "ExternalName", "externalName": "example.com"}),
]

SLICES = [
    eps("web", [ep("10.244.1.11", NODE_A), ep("10.244.2.12", NODE_B), ep("10.244.3.13", NODE_C)], 8080),
    eps("shop", [ep("10.244.2.31", NODE_B), ep("10.244.3.32", NODE_C)], 8080),
    eps("lb", [ep("10.244.1.41", NODE_A), ep("10.244.2.42", NODE_B)], 8443),
    eps("local", [ep("10.244.1.21", NODE_A), ep("10.244.2.22", NODE_B)], 8080),
    eps("sticky", [ep("10.244.2.51", NODE_B), ep("10.244.3.52", NODE_C)], 80),
    eps("empty", [], 80),
    eps("rolling", [ep("10.244.2.61", NODE_B), ep("10.244.3.62", NODE_C),
                    ep("10.244.1.63", NODE_A, ready=False, serving=False, terminating=True)], 80),
    eps("dns", [ep("10.244.1.53", NODE_A), ep("10.244.2.53", NODE_B)], 53, "UDP", "dns", ns="kube-system"),
    {**eps("dns", [ep("10.244.1.53", NODE_A), ep("10.244.2.53", NODE_B)], 53, "TCP", "dns-tcp", ns="kube-system"),
     "metadata": {"name": "dns-tcp-xyz", "namespace": "kube-system", "labels": {"kubernetes.io/service-name": "dns"}}},
    eps("ext", [ep("10.244.2.71", NODE_B)], 8443),
    eps("sctp", [ep("10.244.2.81", NODE_B)], 9999, "SCTP"),
]


def config(node: str = NODE_A, **kw: Any) -> ProxyConfig:
    return ProxyConfig(node, (NODE_IPS[node],), CLUSTER_CIDR, **kw)


def rules_on(node: str = NODE_A, **kw: Any) -> IPVSRules:
    return generate_ipvs(SERVICES, SLICES, config(node, **kw))


def walk(rules: IPVSRules, src: str, dst: str, dport: int | None, proto: str = "tcp", **pkt: Any) -> TraceResult:
    table = load_ipvs(rules.ipvsadm_save(), "ipvsadm")
    assert table.warnings == []
    ruleset = load_ruleset(rules.iptables_save(), "iptables-save")
    sets, warns = parse_ipset(rules.ipset_save())
    assert warns == []
    local = [*rules.config.node_ips, *(a.split("/")[0] for a in rules.kube_ipvs0_addresses())]
    node = NodeFacts.make(local_ips=local, ipsets=sets)
    packet = Packet.make(src=src, dst=dst, dport=dport, proto=proto, sport=40000 if dport else None, **pkt)
    return trace(table, ruleset, packet, node, kube_version=rules.config.kube_version)


def by_backend(r: TraceResult) -> dict[str | None, Outcome]:
    out: dict[str | None, Outcome] = {}
    for o in r.outcomes:
        assert o.dnat not in out, (o.dnat, r.outcomes)
        out[o.dnat] = o
    assert abs(sum(o.probability for o in r.outcomes) - 1) < 1e-9
    return out


def balanced(r: TraceResult, backends: list[str], masquerade: bool | dict[str, bool],
             via: tuple[str, str] | None = None) -> None:
    """Every outcome accepted, one per backend, equal shares, masquerade as given (and, with ``via``, each path
    has a step in that chain whose action starts so)."""
    got = by_backend(r)
    if via is not None:
        for o in r.outcomes:
            assert any(s.chain == via[0] and s.action.startswith(via[1]) for s in o.path), (
                via, [(s.chain, s.action) for s in o.path])
    assert sorted(b for b in got if b) == sorted(backends), [(o.dnat, o.verdict, o.reason) for o in r.outcomes]
    for b, o in got.items():
        assert o.verdict == "accept", (b, o.reason)
        assert o.probability == pytest.approx(1 / len(backends)), (b, o.probability)
        want = masquerade if isinstance(masquerade, bool) else masquerade[str(b)]
        assert o.masquerade is want, (b, o.masquerade, [s.rule for s in o.path])
        # The KUBE-EXTERNAL-IP-LOCAL ACCEPT rule has `-m physdev`, which no dump decides; the set match beside it
        # fails for these packets, so the rule does not match whatever physdev would say: no doubt.
        assert o.certain, (b, o.assumptions)


# --------------------------------------------------------------------------- the IPVS table


def test_ipvsadm_save_parses_and_lists_every_address() -> None:
    r = rules_on(NODE_A)
    text = r.ipvsadm_save()
    table = load_ipvs(text, "ipvsadm")
    assert table.warnings == [] and table.format == "ipvsadm -Sn"
    got = {(s.protocol, str(s.ip), s.port) for s in table.services}
    node_ip = NODE_IPS[NODE_A]
    want = {
        ("tcp", "10.96.0.20", 80), ("tcp", "10.96.0.21", 80), ("tcp", "10.96.0.22", 443), ("tcp", "10.96.0.23", 80),
        ("tcp", "10.96.0.24", 80), ("tcp", "10.96.0.25", 80), ("tcp", "10.96.0.26", 80), ("udp", "10.96.0.10", 53),
        ("tcp", "10.96.0.10", 53), ("tcp", "10.96.0.27", 8443), ("sctp", "10.96.0.28", 9999),
        # external and load-balancer IPs
        ("tcp", "203.0.113.50", 8443), ("tcp", node_ip, 8443), ("tcp", "198.51.100.22", 443),
        ("tcp", "198.51.100.23", 80),
        # NodePorts, on the one node address (no 127.0.0.1 since 1.26)
        ("tcp", node_ip, 30080), ("tcp", node_ip, 30443), ("tcp", node_ip, 30081), ("tcp", node_ip, 30843),
        ("sctp", node_ip, 30999),
    }
    assert got == want
    # Headless and ExternalName Services get nothing; the ClusterIP of a Service without endpoints stays.
    empty = next(s for s in table.services if str(s.ip) == "10.96.0.25")
    assert empty.reals == []
    sticky = next(s for s in table.services if str(s.ip) == "10.96.0.24")
    assert sticky.persistent == 600 and sticky.scheduler == "rr"
    assert "-A -t 10.96.0.24:80 -s rr -p 600" in text.splitlines()
    assert "-A --sctp-service 10.96.0.28:9999 -s rr" in text.splitlines()
    assert "-a -u 10.96.0.10:53 -r 10.244.1.53:53 -m -w 1" in text.splitlines()


def test_kube_ipvs0_binds_service_addresses_but_not_node_addresses() -> None:
    r = rules_on(NODE_A)
    # ClusterIPs always; an external/LB IP unless a node interface has it already ("shouldBind").
    assert r.kube_ipvs0_addresses() == [f"{a}/32" for a in (
        "10.96.0.10", "10.96.0.20", "10.96.0.21", "10.96.0.22", "10.96.0.23", "10.96.0.24", "10.96.0.25",
        "10.96.0.26", "10.96.0.27", "10.96.0.28", "198.51.100.22", "198.51.100.23", "203.0.113.50")]
    ipvs_ips = {e[0] for e in parse_ipset(r.ipset_save())[0]["KUBE-IPVS-IPS"].members}
    assert ipvs_ips == {a.split("/")[0] for a in r.kube_ipvs0_addresses()}
    links = json.loads(r.ip_addr_json())
    assert [link["ifname"] for link in links] == ["lo", "eth0", "kube-ipvs0"]
    assert [a["local"] for a in links[1]["addr_info"]] == [NODE_IPS[NODE_A]]
    assert links[1]["addr_info"][0]["prefixlen"] == 24 and links[1]["addr_info"][0]["broadcast"] == "192.168.5.255"
    assert [f"{a['local']}/{a['prefixlen']}" for a in links[2]["addr_info"]] == r.kube_ipvs0_addresses()
    assert links[2]["operstate"] == "DOWN" and "NOARP" in links[2]["flags"]
    files = r.snapshot_files()
    assert files["proxy-mode"] == "ipvs\n" and files["ip-addr.json"] == r.ip_addr_json()
    assert set(files) == {"proxy-mode", "iptables-save", "ipvsadm", "ipset", "ip-addr.json"}


def test_weights_local_policy_and_terminating_endpoints() -> None:
    def reals(r: IPVSRules, addr: str) -> list[tuple[str, int]]:
        vs = next(v for v in r.virtual_servers if v.address == addr)
        return [(x.address, x.weight) for x in vs.reals]

    a, c = rules_on(NODE_A), rules_on(NODE_C)
    # Rolling update: the terminating endpoint is kept with weight 0 while it drains (GracefulDeleteRS).
    assert reals(a, "10.96.0.26:80") == [("10.244.1.63:80", 0), ("10.244.2.61:80", 1), ("10.244.3.62:80", 1)]
    assert reals(rules_on(NODE_A, drain_terminating=False), "10.96.0.26:80") == [
        ("10.244.2.61:80", 1), ("10.244.3.62:80", 1)]
    # eTP Local: the ClusterIP uses every endpoint; the node's own addresses only the local one...
    assert reals(a, "10.96.0.23:80") == [("10.244.1.21:8080", 1), ("10.244.2.22:8080", 1)]
    for addr in ("198.51.100.23:80", f"{NODE_IPS[NODE_A]}:30081"):
        assert reals(a, addr) == [("10.244.1.21:8080", 1)]
    # ...and a node without a local endpoint falls back to all of them (PR #97081).
    for addr in ("198.51.100.23:80", f"{NODE_IPS[NODE_C]}:30081"):
        assert reals(c, addr) == [("10.244.1.21:8080", 1), ("10.244.2.22:8080", 1)]


def test_internal_traffic_policy_local_and_other_inputs() -> None:
    objs = [svc("itp", {"clusterIP": "10.96.0.40", "internalTrafficPolicy": "Local", "ports": [{"port": 80}]})]
    sl = [eps("itp", [ep("10.244.2.91", NODE_B)], 80)]
    # onlyNodeLocalEndpoints for the ClusterIP: the local endpoint on node-b; on node-a there is none, and the
    # fallback (cluster endpoints) is empty too, because such a Service never uses Cluster policy.
    on_b = generate_ipvs(objs, sl, config(NODE_B))
    assert [x.address for x in on_b.virtual_servers[0].reals] == ["10.244.2.91:80"]
    on_a = generate_ipvs(objs, sl, config(NODE_A))
    assert on_a.virtual_servers[0].reals == ()
    (o,) = walk(on_a, "10.244.1.99", "10.96.0.40", 80).outcomes
    assert o.verdict == "reject"
    # v1 Endpoints (no slices) and the node's addresses from its Node object.
    legacy = [{"metadata": {"name": "itp", "namespace": "web"},
               "subsets": [{"addresses": [{"ip": "10.244.2.91", "nodeName": NODE_B}], "ports": [{"port": 80}]}]}]
    node = {"metadata": {"name": NODE_B, "labels": {}},
            "status": {"addresses": [{"type": "InternalIP", "address": NODE_IPS[NODE_B]}]}}
    from_objs = generate_ipvs(objs, None, ProxyConfig(NODE_B), nodes=[node], endpoints=legacy)
    assert from_objs.config.node_ips == (NODE_IPS[NODE_B],)
    assert from_objs.ipvsadm_save() == on_b.ipvsadm_save()


def test_scheduler_and_node_port_addresses() -> None:
    r = rules_on(NODE_A, scheduler="mh", interface_addresses=(NODE_IPS[NODE_A], "172.17.0.1", "127.0.0.1",
                                                                "10.0.0.5"), nodeport_addresses=("172.17.0.0/16",))
    assert r.node_port_ips == ("172.17.0.1",)
    assert "-A -t 172.17.0.1:30080 -s mh -b mh-port" in r.ipvsadm_save().splitlines()
    every = rules_on(NODE_A, interface_addresses=(NODE_IPS[NODE_A], "172.17.0.1", "127.0.0.1", "fe80::1"))
    assert every.node_port_ips == ("172.17.0.1", NODE_IPS[NODE_A])  # no loopback, no other family
    none = rules_on(NODE_A, nodeport_addresses=("10.99.0.0/16",))
    assert none.node_port_ips == () and not any(v.kind == "NodePort" for v in none.virtual_servers)
    # kube-proxy's `continue` skips the health check port of a NodePort it could not place.
    assert none.ipset("KUBE-HEALTH-CHECK-NODE-PORT").entries == ()
    assert rules_on(NODE_A).ipset("KUBE-HEALTH-CHECK-NODE-PORT").entries == ("32000",)
    with pytest.raises(ValueError, match="not modelled"):
        generate_ipvs([], None, config(kube_version="1.25"))


# --------------------------------------------------------------------------- ipsets and iptables


def test_ipsets_hold_what_kube_proxy_puts_in_them() -> None:
    r = rules_on(NODE_A)
    sets, warns = parse_ipset(r.ipset_save())
    assert warns == []
    types = {n: s.type for n, s in sets.items()}
    assert types == {
        "KUBE-LOOP-BACK": "hash:ip,port,ip", "KUBE-CLUSTER-IP": "hash:ip,port", "KUBE-EXTERNAL-IP": "hash:ip,port",
        "KUBE-EXTERNAL-IP-LOCAL": "hash:ip,port", "KUBE-LOAD-BALANCER": "hash:ip,port",
        "KUBE-LOAD-BALANCER-FW": "hash:ip,port", "KUBE-LOAD-BALANCER-LOCAL": "hash:ip,port",
        "KUBE-LOAD-BALANCER-SOURCE-IP": "hash:ip,port,ip", "KUBE-LOAD-BALANCER-SOURCE-CIDR": "hash:ip,port,net",
        "KUBE-NODE-PORT-TCP": "bitmap:port", "KUBE-NODE-PORT-LOCAL-TCP": "bitmap:port",
        "KUBE-NODE-PORT-UDP": "bitmap:port", "KUBE-NODE-PORT-LOCAL-UDP": "bitmap:port",
        "KUBE-NODE-PORT-SCTP-HASH": "hash:ip,port", "KUBE-NODE-PORT-LOCAL-SCTP-HASH": "hash:ip,port",
        "KUBE-HEALTH-CHECK-NODE-PORT": "bitmap:port", "KUBE-IPVS-IPS": "hash:ip"}

    def members(name: str) -> set[str]:
        return {",".join(m) for m in sets[name].members}

    # Every local endpoint (ready or not): ip,proto:port,ip.
    assert members("KUBE-LOOP-BACK") == {"10.244.1.11,tcp:8080,10.244.1.11", "10.244.1.41,tcp:8443,10.244.1.41",
                                         "10.244.1.21,tcp:8080,10.244.1.21", "10.244.1.63,tcp:80,10.244.1.63",
                                         "10.244.1.53,udp:53,10.244.1.53", "10.244.1.53,tcp:53,10.244.1.53"}
    assert "10.96.0.10,udp:53" in members("KUBE-CLUSTER-IP") and len(members("KUBE-CLUSTER-IP")) == 11
    assert members("KUBE-EXTERNAL-IP") == set()
    assert members("KUBE-EXTERNAL-IP-LOCAL") == {"203.0.113.50,tcp:8443", "192.168.5.10,tcp:8443"}
    assert members("KUBE-LOAD-BALANCER") == {"198.51.100.22,tcp:443", "198.51.100.23,tcp:80"}
    assert members("KUBE-LOAD-BALANCER-LOCAL") == {"198.51.100.23,tcp:80"}
    assert members("KUBE-LOAD-BALANCER-FW") == {"198.51.100.22,tcp:443"}
    assert members("KUBE-LOAD-BALANCER-SOURCE-CIDR") == {"198.51.100.22,tcp:443,203.0.113.0/24"}
    assert members("KUBE-LOAD-BALANCER-SOURCE-IP") == set()  # the node IP is not in the range
    assert members("KUBE-NODE-PORT-TCP") == {"30080", "30443", "30081", "30843"}
    assert members("KUBE-NODE-PORT-LOCAL-TCP") == {"30081", "30843"}
    assert members("KUBE-NODE-PORT-SCTP-HASH") == {"192.168.5.10,sctp:30999"}
    assert members("KUBE-HEALTH-CHECK-NODE-PORT") == {"32000"}
    # When the range holds the node IP, the node may use the LB IP itself: ingress,proto:port,ingress.
    wide = generate_ipvs(SERVICES, SLICES, ProxyConfig(NODE_A, (OUTSIDE,), CLUSTER_CIDR))
    assert wide.ipset("KUBE-LOAD-BALANCER-SOURCE-IP").entries == ("198.51.100.22,tcp:443,198.51.100.22",)
    assert not any(r.chain == "KUBE-IPVS-OUT-FILTER" for r in wide.rules["filter"])


def test_iptables_rules_of_1_30() -> None:
    r = rules_on(NODE_A)
    text = r.iptables_save()
    lines = text.splitlines()
    for line in [
        ":KUBE-IPVS-OUT-FILTER - [0:0]",
        "-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-FILTER",
        "-A INPUT -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
        "-A INPUT -m comment --comment \"kubernetes health check rules\" -j KUBE-NODE-PORT",
        "-A OUTPUT -m comment --comment \"kubernetes ipvs access filter\" -j KUBE-IPVS-OUT-FILTER",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst "
        "-j REJECT --reject-with icmp-port-unreachable",
        "-A KUBE-IPVS-OUT-FILTER -s 198.51.100.22/32 -m ipvs --vproto 6 --vaddr 198.51.100.22/32 --vport 443 -j DROP",
        "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source "
        "cidr for packet filter purpose\" -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN",
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
        "-A KUBE-SERVICES -m comment --comment \"Kubernetes service external ip + port with "
        "externalTrafficPolicy=local\" -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -m physdev ! "
        "--physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        "-A KUBE-NODE-PORT -p sctp -m comment --comment \"Kubernetes nodeport SCTP port for masquerade purpose "
        "with type \\'hash ip:port\\'\" -m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ",
    ]:
        assert line in lines, line
    assert "KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ" not in text  # the set is empty: no rule
    # The version knobs.
    r29 = rules_on(NODE_A, kube_version="1.29")
    assert "KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN" not in r29.iptables_save()
    assert "KUBE-IPVS-OUT-FILTER" in r29.iptables_save()
    r28 = rules_on(NODE_A, kube_version="v1.28.4")
    assert "KUBE-IPVS-OUT-FILTER" not in r28.iptables_save()
    assert "KUBE-IPVS-FILTER" in r28.iptables_save()
    # No detector: ClusterIP traffic is masqueraded when its source is a VIP (src,dst).
    bare = generate_ipvs(SERVICES, SLICES, ProxyConfig(NODE_A, (NODE_IPS[NODE_A],), None, random_fully=False))
    assert ("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" "
            "-m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ") in bare.iptables_save().splitlines()
    assert ("-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE"
            in bare.iptables_save().splitlines())
    # kube-proxy's own restore input: nat first, its args as written (mark as %#08x, comments quoted).
    restore = r.iptables_restore()
    assert restore.startswith("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n")
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000" in restore.splitlines()
    assert ("-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" "
            "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ") in restore.splitlines()


def test_ipv6_names_and_forms() -> None:
    v6svc = [svc("six", {"clusterIP": "fd00:96::20", "ipFamilies": ["IPv6"], "clusterIPs": ["fd00:96::20"],
                         "type": "LoadBalancer", "loadBalancerSourceRanges": ["2001:db8:1::/48"],
                         "ports": [{"port": 80, "nodePort": 30680}]},
                 {"loadBalancer": {"ingress": [{"ip": "2001:db8:99::1"}]}})]
    v6eps = [eps("six", [ep("fd00:244::5", NODE_A)], 8080, fam="IPv6")]
    r = generate_ipvs(v6svc, v6eps, ProxyConfig(NODE_A, ("2001:db8::10",), "fd00:244::/56", ip_family="IPv6"))
    assert ipset_name("KUBE-LOAD-BALANCER-SOURCE-CIDR", "IPv6") == "KUBE-6-LOAD-BALANCER-SOURCE-CID"
    assert "create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536" in r.ipset_save()
    assert "-A -t [fd00:96::20]:80 -s rr" in r.ipvsadm_save().splitlines()
    assert "-a -t [2001:db8::10]:30680 -r [fd00:244::5]:8080 -m -w 1" in r.ipvsadm_save().splitlines()
    assert r.kube_ipvs0_addresses() == ["2001:db8:99::1/128", "fd00:96::20/128"]
    text = r.iptables_save()
    assert "-A KUBE-SERVICES -s ::1/128 -j RETURN" in text.splitlines()
    assert "--reject-with icmp6-port-unreachable" in text
    assert load_ipvs(r.ipvsadm_save()).warnings == []


# --------------------------------------------------------------------------- walks


def test_cluster_ip_three_endpoints() -> None:
    r = rules_on(NODE_A)
    backends = ["10.244.1.11:8080", "10.244.2.12:8080", "10.244.3.13:8080"]
    # rr over three weight-1 servers: 1/3 each. A pod source is inside --cluster-cidr: no KUBE-MARK-MASQ.
    balanced(walk(r, "10.244.1.99", "10.96.0.20", 80), backends, False)
    # From off the cluster (a routed client): `! -s 10.244.0.0/16 ... KUBE-CLUSTER-IP dst,dst -> KUBE-MARK-MASQ`.
    balanced(walk(r, "192.168.5.99", "10.96.0.20", 80), backends, True, via=("KUBE-SERVICES", "jump KUBE-MARK-MASQ"))
    # Hairpin: the pod 10.244.1.11 reaching itself matches KUBE-LOOP-BACK dst,dst,src -> MASQUERADE.
    hairpin = walk(r, "10.244.1.11", "10.96.0.20", 80)
    balanced(hairpin, backends, {"10.244.1.11:8080": True, "10.244.2.12:8080": False, "10.244.3.13:8080": False})
    (self_o,) = [o for o in hairpin.outcomes if o.dnat == "10.244.1.11:8080"]
    assert [(s.chain, s.rule) for s in self_o.path if s.action.startswith("MASQUERADE")] == [("KUBE-POSTROUTING", 1)]
    # The node itself (OUTPUT): its source is not a pod address, so it is marked too.
    balanced(walk(r, NODE_IPS[NODE_A], "10.96.0.20", 80, origin="local"), backends, True)
    # A port the ClusterIP does not serve: KUBE-IPVS-FILTER rejects it (1.26+).
    (o,) = walk(r, "10.244.1.99", "10.96.0.20", 22).outcomes
    assert o.verdict == "reject" and any(s.chain == "KUBE-IPVS-FILTER" for s in o.path)


def test_node_port_from_outside() -> None:
    r = rules_on(NODE_A)
    # KUBE-SERVICES -> addrtype LOCAL -> KUBE-NODE-PORT -> KUBE-NODE-PORT-TCP dst -> KUBE-MARK-MASQ; IPVS on the
    # node address picks either endpoint; KUBE-POSTROUTING masquerades the marked packet.
    balanced(walk(r, OUTSIDE, NODE_IPS[NODE_A], 30080), ["10.244.2.31:8080", "10.244.3.32:8080"], True,
             via=("KUBE-NODE-PORT", "jump KUBE-MARK-MASQ"))
    # The same Service through its ClusterIP from a pod: no mark.
    balanced(walk(r, "10.244.1.99", "10.96.0.21", 80), ["10.244.2.31:8080", "10.244.3.32:8080"], False)
    # UDP: KUBE-NODE-PORT-UDP is empty, and the ClusterIP balances over both DNS pods.
    balanced(walk(r, "10.244.1.99", "10.96.0.10", 53, proto="udp"), ["10.244.1.53:53", "10.244.2.53:53"], False)


def test_load_balancer_with_source_ranges() -> None:
    r = rules_on(NODE_A)
    backends = ["10.244.1.41:8443", "10.244.2.42:8443"]
    # Inside the range: KUBE-LOAD-BALANCER marks (eTP Cluster), filter INPUT -> KUBE-PROXY-FIREWALL ->
    # KUBE-LOAD-BALANCER-FW -> KUBE-SOURCE-RANGES-FIREWALL, where KUBE-LOAD-BALANCER-SOURCE-CIDR returns.
    balanced(walk(r, OUTSIDE, "198.51.100.22", 443), backends, True, via=("KUBE-SOURCE-RANGES-FIREWALL", "RETURN"))
    # Outside the range: the chain ends in DROP before IPVS sees the packet.
    (o,) = walk(r, STRANGER, "198.51.100.22", 443).outcomes
    assert o.verdict == "drop" and o.dnat is None
    assert o.path[-1].chain == "KUBE-SOURCE-RANGES-FIREWALL"
    # Its NodePort is not filtered (the source ranges apply to the LB IP only).
    balanced(walk(r, STRANGER, NODE_IPS[NODE_A], 30443), backends, True)
    # The node itself: its connection to the LB IP (bound on kube-ipvs0, so also its source) is scheduled by
    # IPVS at LOCAL_OUT, then filter OUTPUT -> KUBE-IPVS-OUT-FILTER drops it, since the range leaves the node
    # IP out (1.29+, lbNoNodeAccessIPPortProtocolEntries).
    (o,) = walk(r, "198.51.100.22", "198.51.100.22", 443, origin="local").outcomes
    assert o.verdict == "drop" and o.path[-1].chain == "KUBE-IPVS-OUT-FILTER"
    # A node inside the range instead gets KUBE-LOAD-BALANCER-SOURCE-IP and no OUT-FILTER rule.
    inside = generate_ipvs(SERVICES, SLICES, ProxyConfig(NODE_A, (OUTSIDE,), CLUSTER_CIDR))
    balanced(walk(inside, "198.51.100.22", "198.51.100.22", 443, origin="local"), backends, True)


def test_external_traffic_policy_local() -> None:
    # node-a has a local endpoint: the node-address and LB virtual servers hold it alone, and
    # KUBE-NODE-PORT-LOCAL-TCP / KUBE-LOAD-BALANCER-LOCAL RETURN before the mark: the client IP is kept.
    a = rules_on(NODE_A)
    balanced(walk(a, OUTSIDE, NODE_IPS[NODE_A], 30081), ["10.244.1.21:8080"], False, via=("KUBE-NODE-PORT", "RETURN"))
    balanced(walk(a, OUTSIDE, "198.51.100.23", 80), ["10.244.1.21:8080"], False, via=("KUBE-LOAD-BALANCER", "RETURN"))
    # The ClusterIP ignores eTP: both endpoints.
    balanced(walk(a, "10.244.1.99", "10.96.0.23", 80), ["10.244.1.21:8080", "10.244.2.22:8080"], False)
    # The health check node port passes KUBE-IPVS-FILTER (KUBE-HEALTH-CHECK-NODE-PORT dst RETURN) and reaches
    # kube-proxy's health server on the node.
    (hc,) = walk(a, OUTSIDE, NODE_IPS[NODE_A], 32000).outcomes
    assert hc.verdict == "accept" and hc.delivery == "local" and hc.dnat is None
    # node-c has none: syncEndpoint falls back to the cluster endpoints (PR #97081), still without the mark,
    # so the packet reaches a remote pod with the client's address (its reply does not come back this way).
    c = rules_on(NODE_C)
    balanced(walk(c, OUTSIDE, NODE_IPS[NODE_C], 30081), ["10.244.1.21:8080", "10.244.2.22:8080"], False,
             via=("KUBE-NODE-PORT", "RETURN"))
    balanced(walk(c, OUTSIDE, "198.51.100.23", 80), ["10.244.1.21:8080", "10.244.2.22:8080"], False)
    # External IP with eTP Local that is not the node's: bound to kube-ipvs0, KUBE-EXTERNAL-IP-LOCAL has no
    # mark rule, and KUBE-IPVS-FILTER lets it through (the 1.30 RETURN for KUBE-EXTERNAL-IP-LOCAL).
    outs = walk(a, OUTSIDE, "203.0.113.50", 8443).outcomes
    assert {o.dnat for o in outs if o.verdict == "accept"} == {"10.244.2.71:8443"}
    assert all(not o.masquerade for o in outs)


def test_session_affinity_becomes_persistence() -> None:
    r = rules_on(NODE_A)
    res = walk(r, "10.244.1.99", "10.96.0.24", 80)
    # -p 600: the first connection is still round robin; later ones from this client stick.
    balanced(res, ["10.244.2.51:80", "10.244.3.52:80"], False)
    assert all("persistent 600" in (s.note or "") for o in res.outcomes for s in o.path if s.table == "ipvs")


def test_service_without_endpoints_is_refused() -> None:
    # kube-proxy keeps the virtual server; IPVS finds no destination and answers port unreachable.
    (o,) = walk(rules_on(NODE_A), "10.244.1.99", "10.96.0.25", 80).outcomes
    assert o.verdict == "reject" and o.reject_with == "icmp-port-unreachable" and o.dnat is None


def test_terminating_endpoint_gets_no_new_connection() -> None:
    # Weight 0: rr skips it. The two ready ones share the new connections.
    balanced(walk(rules_on(NODE_A), "10.244.1.99", "10.96.0.26", 80), ["10.244.2.61:80", "10.244.3.62:80"], False)


# --------------------------------------------------------------------------- the kernel (root)


def _netns_ok() -> bool:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "ipset", "iptables-restore")):
        return False
    name = f"svct-ipvs-probe-{os.getpid()}"
    try:
        if subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=20).returncode != 0:
            return False
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


NETNS = _netns_ok()


def _kernel_has_ipvs_match() -> bool:
    try:
        return "ipvs" in Path("/proc/net/ip_tables_matches").read_text().split()
    except OSError:
        return False


def _strip_save(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _norm_ipset(text: str) -> list[str]:
    """``ipset save`` with ipset 7.11+'s bucketsize/initval dropped, members sorted per set."""
    out: list[str] = []
    adds: list[str] = []
    for line in text.splitlines():
        if line.startswith("create "):
            out += sorted(adds)
            adds = []
            out.append(re.sub(r" bucketsize \d+ initval 0x[0-9a-f]+", "", line))
        elif line.startswith("add "):
            adds.append(line)
    return out + sorted(adds)


KERNEL_CASES = {
    "node-a 1.30": lambda: rules_on(NODE_A),
    "node-c 1.28 masquerade-all": lambda: rules_on(NODE_C, kube_version="1.28", masquerade_all=True),
    "no detector mh 1.29": lambda: generate_ipvs(SERVICES, SLICES, ProxyConfig(
        NODE_B, (NODE_IPS[NODE_B],), None, scheduler="mh", kube_version="1.29", masquerade_bit=5, random_fully=False)),
}


@pytest.mark.kernel
@pytest.mark.skipif(not NETNS, reason="needs root, `ip netns add`, ipset and iptables-restore")
@pytest.mark.parametrize("case", list(KERNEL_CASES))
def test_kernel_loads_it_and_prints_it_back(case: str, tmp_path: Path) -> None:
    """ipset restore + iptables-restore inside a namespace made here; ipset save and iptables-save agree."""
    rules = KERNEL_CASES[case]()
    save = rules.iptables_save()
    expect = _strip_save(save)
    if not _kernel_has_ipvs_match():
        # This kernel cannot hold `-m ipvs` (no CONFIG_IP_VS): `--test` still parses them, the real load
        # goes without them.
        expect = [line for line in expect if " -m ipvs " not in line]
    (tmp_path / "ipset").write_text(rules.ipset_save())
    (tmp_path / "save").write_text(save)
    (tmp_path / "load").write_text("\n".join(expect) + "\n")
    name = f"svct-ipvs-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        def run(*argv: str, stdin: Path | None = None) -> str:
            with (stdin or Path(os.devnull)).open() as f:
                p = subprocess.run(["ip", "netns", "exec", name, *argv], stdin=f, capture_output=True, text=True,
                                   timeout=60)
            assert p.returncode == 0, (argv, p.stdout, p.stderr)
            return p.stdout

        run("ipset", "restore", stdin=tmp_path / "ipset")
        assert _norm_ipset(run("ipset", "save")) == _norm_ipset(rules.ipset_save())
        run("iptables-restore", "--test", stdin=tmp_path / "save")
        # kube-proxy's own input (`RestoreAll` with --noflush) is accepted too.
        (tmp_path / "kube-proxy").write_text(rules.iptables_restore())
        run("iptables-restore", "--test", "--noflush", stdin=tmp_path / "kube-proxy")
        run("iptables-restore", stdin=tmp_path / "load")
        assert _strip_save(run("iptables-save")) == expect
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@pytest.mark.kernel
@pytest.mark.skipif(not NETNS or not shutil.which("ip6tables-restore"), reason="needs root, ip netns, ip6tables")
def test_kernel_loads_the_ipv6_rules(tmp_path: Path) -> None:
    v6svc = [svc("six", {"clusterIP": "fd00:96::20", "ipFamilies": ["IPv6"], "clusterIPs": ["fd00:96::20"],
                         "type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32001,
                         "loadBalancerSourceRanges": ["2001:db8::/32"], "ports": [{"port": 80, "nodePort": 30680}]},
                 {"loadBalancer": {"ingress": [{"ip": "2001:db8:99::1"}]}})]
    v6eps = [eps("six", [ep("fd00:244::5", NODE_A)], 8080, fam="IPv6")]
    rules = generate_ipvs(v6svc, v6eps, ProxyConfig(NODE_A, ("2001:db8::10",), "fd00:244::/56", ip_family="IPv6"))
    expect = _strip_save(rules.iptables_save())
    (tmp_path / "ipset").write_text(rules.ipset_save())
    (tmp_path / "load").write_text(rules.iptables_save())
    name = f"svct-ipvs6-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
    try:
        def run(argv: list[str], stdin: Path | None = None) -> str:
            with (stdin or Path(os.devnull)).open() as f:
                p = subprocess.run(["ip", "netns", "exec", name, *argv], stdin=f, capture_output=True, text=True,
                                   timeout=60)
            assert p.returncode == 0, (argv, p.stdout, p.stderr)
            return p.stdout

        run(["ipset", "restore"], tmp_path / "ipset")
        assert _norm_ipset(run(["ipset", "save"])) == _norm_ipset(rules.ipset_save())
        run(["ip6tables-restore"], tmp_path / "load")
        assert _strip_save(run(["ip6tables-save"])) == expect
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


# --------------------------------------------------------------------------- the wild dumps


def test_same_ipvsadm_lines_as_wild_008() -> None:
    """ipvsadm/008: a calico-vxlan node with one NodePort+LoadBalancer Service (ClusterIP 10.106.147.222, LB IP
    10.12.32.160, NodePort 30470, one endpoint 10.126.142.9:80) on docker0, vxlan.calico, eth0 and lo."""
    need_corpus()
    wild = [line for line in (WILD / "ipvsadm/008-ipvsadm-S-n-calico-vxlan-annotated.txt").read_text().splitlines()
            if line.startswith(("-A", "-a"))]
    objs = [svc("nginx", {"type": "LoadBalancer", "clusterIP": "10.106.147.222", "ports": [{"port": 80, "nodePort": 30470}]},
                {"loadBalancer": {"ingress": [{"ip": "10.12.32.160"}]}})]
    sl = [eps("nginx", [ep("10.126.142.9", "worker")], 80)]
    cfg = ProxyConfig("worker", ("10.12.32.121",), "10.126.0.0/16",
                     interface_addresses=("172.17.0.1", "10.126.142.0", "10.12.32.121", "127.0.0.1"))
    ours = generate_ipvs(objs, sl, cfg).ipvsadm_save().splitlines()
    # Same lines; what the older kube-proxy of the dump had in addition is the NodePort on 127.0.0.1, which
    # 1.26+ no longer creates (loopback addresses are not valid for the node address set).
    assert set(ours) <= set(wild)
    assert sorted(set(wild) - set(ours)) == ["-A -t 127.0.0.1:30470 -s rr", "-a -t 127.0.0.1:30470 -r 10.126.142.9:80 -m -w 1"]


def _wild_rules(rel: str, strip_indent: bool = False) -> dict[str, list[str]]:
    """table -> `-A KUBE-*`/built-in jump lines of a wild dump (iptables-save or iptables -S per chain)."""
    need_corpus()
    out: dict[str, list[str]] = {}
    table = "nat"
    for raw in (WILD / rel).read_text().splitlines():
        m = re.match(r"\$ sudo iptables -t (\w+)", raw.strip())
        if m:
            table = m.group(1)
        line = raw.strip() if strip_indent else raw
        if line.startswith("*"):
            table = line[1:]
        if line.startswith("-A ") and "KUBE-" in line:
            out.setdefault(table, []).append(line)
    return out


def test_same_rules_as_wild_028() -> None:
    """iptables-save/028 (nat of a calico node switched to IPVS, iptables 1.8.4, 2022) with the cluster CIDR
    192.168.0.0/16, a NodePort Service and a local endpoint (KUBE-LOOP-BACK non-empty)."""
    objs = [svc("nginx-basic", {"type": "NodePort", "clusterIP": "10.100.49.21", "ports": [{"port": 80, "nodePort": 31195}]},
                ns="default")]
    sl = [eps("nginx-basic", [ep("192.168.1.5", "n1")], 80, ns="default")]
    ours = generate_ipvs(objs, sl, ProxyConfig("n1", ("10.0.0.5",), "192.168.0.0/16", kube_version="1.30"))
    mine = {line for line in ours.iptables_save().splitlines() if line.startswith("-A")}
    wild = _wild_rules("iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.txt")["nat"]
    # What the dump has that 1.30 does not write: KUBE-FIREWALL -> KUBE-MARK-DROP, the pre-1.25 nat layout of
    # loadBalancerSourceRanges (whose chain 1.30 no longer declares).
    older = {"-A KUBE-FIREWALL -j KUBE-MARK-DROP"}
    assert [w for w in wild if w not in mine] == sorted(older)
    # ... and what 1.30 writes there that the dump lacks: the loopback RETURN (1.26, PR #112950).
    nat_mine = [r.save_text() for c in ours.all_chains("nat") for r in ours.chain_rules("nat", c)]
    assert [m for m in nat_mine if m not in wild] == ["-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN"]


def test_same_rules_as_wild_iptables_s_004() -> None:
    """iptables-S/004: `iptables -S` per chain of an IPVS node without a cluster CIDR (KUBE-CLUSTER-IP src,dst),
    with a LoadBalancer Service with externalTrafficPolicy Local (KUBE-LOAD-BALANCER-LOCAL, NodePort Local, the
    health check node port)."""
    objs = [svc("lb", {"type": "LoadBalancer", "clusterIP": "10.96.5.5", "externalTrafficPolicy": "Local",
                       "healthCheckNodePort": 31999, "ports": [{"port": 80, "nodePort": 30500}]},
                {"loadBalancer": {"ingress": [{"ip": "10.12.32.160"}]}})]
    sl = [eps("lb", [ep("10.126.142.9", "n1")], 80)]
    ours = generate_ipvs(objs, sl, ProxyConfig("n1", ("10.12.32.121",), None))
    mine = {(t, r.save_text()) for t in ("nat", "filter") for c in ours.all_chains(t) for r in ours.chain_rules(t, c)}
    wild = _wild_rules("iptables-S/004-ipvs-mode-calico-companion-rules-per-chain-indented.txt", strip_indent=True)
    assert sum(len(v) for v in wild.values()) == 18
    missing = [(t, w) for t, lines in wild.items() for w in lines if (t, w) not in mine]
    assert missing == []
    # Chain names: the dump's KUBE-* chains are among ours.
    chains = {c for t in ("nat", "filter") for c in ours.all_chains(t)}
    assert {w.split()[1] for lines in wild.values() for w in lines if w.split()[1].startswith("KUBE-")} <= chains


def test_chain_names_of_wild_027() -> None:
    """iptables-save/027 (calico, IPVS, elided) declares the nat chains of IPVS mode; KUBE-FIREWALL and
    KUBE-MARK-DROP are the pre-1.25 layout (nat source-range chain, the kubelet's drop mark)."""
    need_corpus()
    text = (WILD / "iptables-save/027-calico-ipvs-mode-elided-double-comment.txt").read_text()
    nat = text[text.index("*nat"):]
    declared = set(re.findall(r"(?m)^:(KUBE-[A-Z-]+) ", nat))
    ours = {c for c in rules_on(NODE_A).all_chains("nat") if c.startswith("KUBE-")}
    assert declared - ours == {"KUBE-FIREWALL", "KUBE-MARK-DROP"}
    assert ours == declared - {"KUBE-FIREWALL", "KUBE-MARK-DROP"}
