"""kube-proxy's nftables mode, generated from objects (svctrace.kubeproxy.render.nft).

- exact equality with kube-proxy's own expected ruleset (``TestOverallNFTablesRules`` at the corpus commit),
  compared the way kube-proxy's test compares it (``sortNFTablesTransaction``);
- the generated input loads with the real ``nft -f`` in a namespace made here, and ``nft list ruleset`` /
  ``nft -j list ruleset`` print what ``ruleset_text()`` / ``ruleset_json()`` predict;
- svctrace's own parser and walker on generated rulesets give the answers kube-proxy's code implies;
- the kernel, with real packets, agrees with the walker on one generated ruleset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
from agreement import compare
from conftest import KP_NFT_OVERALL, need_corpus
from kernellab import KernelLab, KernelResult, kernel_available

from svctrace.dataplane.contract import TraceResult
from svctrace.dataplane.nftables import NftRuleset, load_nft
from svctrace.kubeproxy.config import ProxyConfig
from svctrace.kubeproxy.names import endpoint_chain_name_base, service_chain_name_base
from svctrace.kubeproxy.render.nft import NftRules, generate_nft
from svctrace.kubeproxy.walk import trace_nft as trace
from svctrace.model.packet import NodeFacts, Packet

OVERALL = KP_NFT_OVERALL


def _need_overall() -> None:
    need_corpus()


# --------------------------------------------------------------------------- objects


def svc(ns: str, name: str, spec: dict[str, Any], lb: list[str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"namespace": ns, "name": name}, "spec": spec}
    if lb:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in lb]}}
    return obj


def eps(ns: str, name: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]],
        family: str = "IPv4") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": family, "endpoints": endpoints, "ports": ports}


def ep(ip: str, node: str | None = None) -> dict[str, Any]:
    return {"addresses": [ip]} | ({"nodeName": node} if node else {})


# TestOverallNFTablesRules (pkg/proxy/nftables/proxier_test.go at the corpus commit), transcribed: makeTestService
# leaves Type empty unless set; makeTestEndpointSlice names the slice "<svc>-1"; an endpoint without NodeName is
# not local.
P80 = {"name": "p80", "port": 80, "protocol": "TCP"}
OVERALL_SERVICES = [
    svc("ns1", "svc1", {"clusterIP": "172.30.0.41", "ports": [P80]}),
    svc("ns2", "svc2", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "172.30.0.42",
                        "ports": [P80 | {"nodePort": 3001}], "externalIPs": ["192.168.99.22"],
                        "healthCheckNodePort": 30000}, lb=["1.2.3.4"]),
    svc("ns3", "svc3", {"type": "NodePort", "clusterIP": "172.30.0.43", "ports": [P80 | {"nodePort": 3003}]}),
    svc("ns4", "svc4", {"type": "NodePort", "clusterIP": "172.30.0.44", "externalIPs": ["192.168.99.33"],
                        "ports": [P80 | {"targetPort": 80}]}),
    svc("ns5", "svc5", {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "clusterIP": "172.30.0.45",
                        "ports": [P80 | {"nodePort": 3002}], "healthCheckNodePort": 30000,
                        "loadBalancerSourceRanges": [" 203.0.113.0/25"], "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}, lb=["5.6.7.8"]),
    svc("ns6", "svc6", {"type": "ClusterIP", "clusterIP": "172.30.0.46", "ports": [P80 | {"targetPort": 80}]}),
]
SLICE_P80 = [{"name": "p80", "port": 80, "protocol": "TCP"}]
OVERALL_SLICES = [
    eps("ns1", "svc1", [ep("10.180.0.1")], SLICE_P80),
    eps("ns2", "svc2", [ep("10.180.0.2")], SLICE_P80),
    eps("ns3", "svc3", [ep("10.180.0.3")], SLICE_P80),
    eps("ns4", "svc4", [ep("10.180.0.4"), ep("10.180.0.5", "test-node")], SLICE_P80),
    eps("ns5", "svc5", [ep("10.180.0.3")], SLICE_P80),
]
# NewFakeProxier: testNodeIPs on eth0, nodeIP 192.168.0.2, pod CIDR 10.0.0.0/8, service CIDR 172.30.0.0/16,
# nodePortAddresses 192.168.0.2/32 and 2001:db8::1/128, masqueradeMark "0x4000".
OVERALL_CONFIG = ProxyConfig("test-node", ("192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"),
                           "10.0.0.0/8", kube_version="1.34",
                           nodeport_addresses=("192.168.0.2/32", "2001:db8::1/128"),
                           service_cidrs=("172.30.0.0/16",), masquerade_mark="0x4000")


def overall() -> NftRules:
    return generate_nft(OVERALL_SERVICES, OVERALL_SLICES, OVERALL_CONFIG)


# A richer node: the cases the walker and the kernel are asked about.
NODE = "node-a"
NODE_IP = "192.168.0.2"
HTTP = {"name": "http", "port": 8080, "protocol": "TCP"}
RICH_SERVICES = [
    # ClusterIP + NodePort, three endpoints, eTP Cluster
    svc("default", "web", {"type": "NodePort", "clusterIP": "172.30.0.10",
                           "ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080}]}),
    # UDP and TCP on one port number
    svc("kube-system", "dns", {"clusterIP": "172.30.0.11", "ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}),
    # LoadBalancer with source ranges; the node IP is inside one, so the LB IP itself is allowed too
    svc("default", "lb", {"type": "LoadBalancer", "clusterIP": "172.30.0.12",
                          "ports": [{"name": "https", "port": 443, "nodePort": 30443, "targetPort": 8080}],
                          "loadBalancerSourceRanges": ["203.0.113.0/25", "192.168.0.0/24"]}, lb=["198.51.100.10"]),
    # eTP Local with a local endpoint
    svc("default", "local", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "172.30.0.13",
                             "externalIPs": ["192.168.99.13"],
                             "ports": [{"name": "http", "port": 80, "nodePort": 30013, "targetPort": 8080}]},
        lb=["198.51.100.11"]),
    # eTP Local without a local endpoint
    svc("default", "remote", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "172.30.0.14",
                              "ports": [{"name": "http", "port": 80, "nodePort": 30014, "targetPort": 8080}]},
        lb=["198.51.100.12"]),
    # ClientIP affinity
    svc("default", "sticky", {"clusterIP": "172.30.0.15", "sessionAffinity": "ClientIP",
                              "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                              "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    # no endpoints
    svc("default", "noep", {"type": "NodePort", "clusterIP": "172.30.0.16",
                            "ports": [{"name": "http", "port": 80, "nodePort": 30016}]}),
    # internalTrafficPolicy Local without a local endpoint
    svc("default", "itp", {"clusterIP": "172.30.0.17", "internalTrafficPolicy": "Local",
                           "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
    # an unnamed port
    svc("default", "plain", {"clusterIP": "172.30.0.18", "ports": [{"port": 8080}]}),
]
RICH_SLICES = [
    eps("default", "web", [ep("10.180.0.1", NODE), ep("10.180.1.2", "node-b"), ep("10.180.2.3", "node-c")], [HTTP]),
    eps("kube-system", "dns", [ep("10.180.0.10", NODE), ep("10.180.1.11", "node-b")],
        [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
    eps("default", "lb", [ep("10.180.1.30", "node-b"), ep("10.180.2.31", "node-c")],
        [{"name": "https", "port": 8080, "protocol": "TCP"}]),
    eps("default", "local", [ep("10.180.0.20", NODE), ep("10.180.1.21", "node-b")], [HTTP]),
    eps("default", "remote", [ep("10.180.1.40", "node-b")], [HTTP]),
    eps("default", "sticky", [ep("10.180.1.50", "node-b"), ep("10.180.2.51", "node-c")], [HTTP]),
    eps("default", "itp", [ep("10.180.1.60", "node-b")], [HTTP]),
    eps("default", "plain", [ep("10.180.2.70", "node-c")], [{"name": "", "port": 8080, "protocol": "TCP"}]),
]


def rich(version: str = "1.34", **kw: Any) -> NftRules:
    cfg = ProxyConfig(NODE, (NODE_IP,), "10.0.0.0/8", kube_version=version, service_cidrs=("172.30.0.0/16",), **kw)
    return generate_nft(RICH_SERVICES, RICH_SLICES, cfg)


RICH6_SERVICES = [
    svc("default", "web6", {"type": "LoadBalancer", "clusterIP": "fd00:30::10", "ipFamilies": ["IPv6"],
                            "clusterIPs": ["fd00:30::10"], "externalIPs": ["2001:db8:99::10"],
                            "loadBalancerSourceRanges": ["2001:db8:5::/64", "2001:db8:5::7/128", "2001:db8:6::/64"],
                            "sessionAffinity": "ClientIP",
                            "ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": 8080},
                                      {"name": "dns", "port": 53, "protocol": "UDP"}]}, lb=["2001:db8:100::1"]),
    svc("default", "empty6", {"clusterIP": "fd00:30::11", "ipFamilies": ["IPv6"], "clusterIPs": ["fd00:30::11"],
                              "ports": [{"name": "sctp", "port": 9, "protocol": "SCTP"}]}),
]
RICH6_SLICES = [
    eps("default", "web6", [ep("fd00:10::1", NODE), ep("fd00:10::1:2", "node-b")],
        [HTTP, {"name": "dns", "port": 53, "protocol": "UDP"}], family="IPv6"),
]


def rich6(**kw: Any) -> NftRules:
    cfg = ProxyConfig(NODE, ("192.168.0.2", "2001:db8::2", "2001:db8:1::3"), "fd00:10::/64", ip_family="IPv6",
                    kube_version="1.34", service_cidrs=("fd00:30::/112", "fd00:31::/112"), **kw)
    return generate_nft(RICH6_SERVICES, RICH6_SLICES, cfg)


# --------------------------------------------------------------------------- exact equality


_OBJECT_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}


def sort_nftables_transaction(tx: str) -> list[str]:
    """kube-proxy's ``sortNFTablesTransaction`` (pkg/proxy/nftables/helpers_test.go): blank and ``#`` lines
    dropped, then a stable sort by object type (table, chain, rule, set, map, element), then by object name
    (the fifth word); rules keep the order they were added in, other lines sort by the whole line."""
    lines = [line for line in tx.split("\n") if line and not line.startswith("#")]
    assert all(len(line.split(" ")) >= 5 for line in lines)

    def key(line: str) -> tuple[int, str, str]:
        words = line.split(" ")
        return (-_OBJECT_ORDER.get(words[1], 0), words[4], "" if words[1] == "rule" else line)

    return sorted(lines, key=key)


def test_overall_equals_kube_proxys_expected_ruleset() -> None:
    _need_overall()
    expected = sort_nftables_transaction((OVERALL / "rules.nft-input").read_text())
    got = sort_nftables_transaction(overall().nft_input())
    assert got == expected
    assert len(got) == 122
    meta = json.loads((OVERALL / "meta.json").read_text())
    assert meta["source"]["commit"] == "81810de635aa13aa0a32992f6def3aa9d6025ebc"


def test_overall_transaction_declares_before_use() -> None:
    """Not sorted like the test's dump: kube-proxy's own order, the table first and every chain and set before
    the rules and elements naming it, so plain ``nft -f`` takes it."""
    text = overall().nft_input()
    lines = text.splitlines()
    assert lines[0] == 'add table ip kube-proxy { comment "rules for kube-proxy" ; }'
    declared: set[str] = set()
    for line in lines[1:]:
        words = line.split(" ")
        if words[1] in ("chain", "set", "map"):
            declared.add(words[4])
            continue
        for ref in [*re.findall(r"(?:@|goto |jump )([\w./-]+)", line), words[4]]:
            assert ref in declared, (ref, line)
    full = overall().nft_input(full=True)
    assert full.count("\ndelete chain ") == 8 and "flush chain ip kube-proxy reject-chain" in full


def test_chain_names_hash_like_kube_proxy() -> None:
    assert service_chain_name_base("ns1", "svc1", "p80", "TCP") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert endpoint_chain_name_base("ns1", "svc1", "p80", "tcp", "10.180.0.1", 80) == (
        "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80")
    # IPv6 endpoints: colons become dots (kube-proxy's IPv6 test: endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80)
    assert endpoint_chain_name_base("ns1", "svc1", "p80", "tcp", "fd00:10:180::1", 80) == (
        "ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80")
    text = rich().nft_input()
    assert "add chain ip kube-proxy service-" in text and "/default/plain/tcp/\n" not in text
    assert re.search(r"add chain ip kube-proxy service-\w{8}-default/plain/tcp/\n", text)


def test_versions_and_inputs() -> None:
    with pytest.raises(ValueError, match=r"1\.29 and 1\.30"):
        generate_nft([], None, ProxyConfig("n", kube_version="1.30"))
    with pytest.raises(ValueError, match=r"1\.36"):
        generate_nft([], None, ProxyConfig("n", kube_version="1.36"))
    # no version: the default, the newest modelled (1.35), which filters after DNAT; 1.33 before it
    assert generate_nft([], None, ProxyConfig("n")).layout == "post-dnat-filter" and generate_nft(
        [], None, ProxyConfig("n", kube_version="v1.33.1")).layout == "pre-dnat-filter"
    # kube-proxy's own mark: fmt.Sprintf("%#08x", 1<<14)
    assert "mark set mark or 0x00004000" in rich().nft_input()
    old = rich("1.31").nft_input()
    for line in ("add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }",
                 "add chain ip kube-proxy filter-output-post-dnat { type filter hook output priority -90 ; }",
                 "add rule ip kube-proxy filter-output ct state new jump firewall-check",
                 "add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check"):
        assert line in old.splitlines()
    # nodePortAddresses: empty is "primary" (the node IP); a zero CIDR matches every local address
    assert rich().node_port_ips == (NODE_IP,)
    every = rich(nodeport_addresses=("0.0.0.0/0",))
    assert every.node_ports_match_all and "nodeport-ips" not in every.nft_input()
    assert ("add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
            "vmap @service-nodeports") in every.nft_input().splitlines()
    assert "add set ip kube-proxy nodeport-ips" in every.nft_input(full=True)
    # no local-traffic detector: no ClusterIP masquerade rule, no pod short-circuit
    bare = generate_nft(RICH_SERVICES, RICH_SLICES, ProxyConfig(NODE, (NODE_IP,), None, kube_version="1.34"))
    assert "10.0.0.0/8" not in bare.nft_input() and "Drop traffic to unallocated" not in bare.nft_input()
    masq_all = rich(masquerade_all=True).nft_input()
    assert "ip daddr 172.30.0.10 jump mark-for-masquerade" in masq_all


def test_shared_keys_follow_ensure_elem() -> None:
    """nftElementStorage.ensureElem: one element per key. The same value again (comments not compared) is left
    alone; another value replaces it (the later Service port wins, with a note)."""
    objs = [svc("a", "one", {"clusterIP": "172.30.0.30", "externalIPs": ["192.168.99.50"],
                             "ports": [{"name": "http", "port": 80}, {"name": "alt", "port": 81}]}),
            svc("b", "two", {"clusterIP": "172.30.0.31", "externalIPs": ["192.168.99.50"],
                             "ports": [{"name": "http", "port": 80}]})]
    cfg = ProxyConfig(NODE, (NODE_IP,), "10.0.0.0/8", kube_version="1.34")
    lines = generate_nft(objs, [], cfg).nft_input().splitlines()
    assert lines.count("add element ip kube-proxy cluster-ips { 172.30.0.30 }") == 1
    shared = [x for x in lines if "192.168.99.50 . tcp . 80" in x]
    assert shared == ['add element ip kube-proxy no-endpoint-services { 192.168.99.50 . tcp . 80 comment "a/one:http" '
                      ": goto reject-chain }"]
    sl = [eps(ns, name, [ep(ip)], [{"name": "http", "port": 80, "protocol": "TCP"}])
          for ns, name, ip in (("a", "one", "10.180.0.1"), ("b", "two", "10.180.0.2"))]
    r = generate_nft(objs, sl, cfg)
    shared = [x for x in r.nft_input().splitlines() if "192.168.99.50 . tcp . 80" in x]
    assert len(shared) == 1 and "goto external-" in shared[0] and "b/two" in shared[0]
    assert r.notes and "b/two:http" in r.notes[0]


def test_snapshot_files_and_node_addresses() -> None:
    r = rich()
    files = r.snapshot_files()
    assert set(files) == {"proxy-mode", "nft", "nft.json", "ip-addr.json"}
    assert files["proxy-mode"] == "nftables\n" and files["nft"] == r.ruleset_text()
    table = json.loads(files["nft.json"])["nftables"][1]
    assert table == {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}}
    links = json.loads(files["ip-addr.json"])
    assert [link["ifname"] for link in links] == ["lo", "eth0"]
    assert [a["local"] for a in links[1]["addr_info"]] == [NODE_IP]
    # the no-endpoint maps name the Service port in each element's comment
    assert 'add element ip kube-proxy no-endpoint-services { 172.30.0.16 . tcp . 80 comment "default/noep:http" : ' \
           "goto reject-chain }" in r.nft_input().splitlines()


# --------------------------------------------------------------------------- the real nft


_NFT_OK = os.geteuid() == 0 and shutil.which("nft") is not None and shutil.which("ip") is not None
nft_only = pytest.mark.skipif(not _NFT_OK, reason="needs root and nft/ip to load rules into a network namespace")


def _nft_load_and_list(text: str) -> tuple[str, str]:
    """Load ``text`` with ``nft -f`` into a fresh namespace made here; return ``nft list ruleset`` and
    ``nft -j list ruleset``."""
    ns = f"svtgen-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        run = ["ip", "netns", "exec", ns, "nft"]
        res = subprocess.run([*run, "-f", "-"], input=text, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        listed = subprocess.run([*run, "list", "ruleset"], check=True, capture_output=True, text=True).stdout
        listed_json = subprocess.run([*run, "-j", "list", "ruleset"], check=True, capture_output=True, text=True).stdout
        return listed, listed_json
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _no_handles(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: 0 if k == "handle" else _no_handles(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_no_handles(v) for v in doc]
    return doc


CASES = {
    "overall": overall,
    "rich-1.34": lambda: rich("1.34"),
    "rich-1.31": lambda: rich("1.31"),
    "rich-match-all-masquerade-all": lambda: rich("1.33", nodeport_addresses=("0.0.0.0/0",), masquerade_all=True),
    "rich-ipv6": rich6,
    "rich-ipv6-match-all": lambda: rich6(nodeport_addresses=("::/0",)),
}


@nft_only
@pytest.mark.parametrize("full", [False, True], ids=["transaction", "full-transaction"])
@pytest.mark.parametrize("case", list(CASES))
def test_real_nft_lists_what_is_predicted(case: str, full: bool) -> None:
    if case == "overall":
        _need_overall()
    r = CASES[case]()
    listed, listed_json = _nft_load_and_list(r.nft_input(full=full))
    assert listed == r.ruleset_text(full=full)
    got = json.loads(listed_json)
    assert got["nftables"][0]["metainfo"]["json_schema_version"] == 1
    got["nftables"][0] = r.ruleset_data()["nftables"][0]  # the nft version
    assert _no_handles(got) == _no_handles(r.ruleset_data(full=full))
    # with a fresh namespace the handles are predicted too
    assert got == r.ruleset_data(full=full)


def test_overall_lists_like_the_corpus_listing() -> None:
    """The corpus listing was made from kube-proxy's sorted dump (other creation order), so compare as sets of
    lines, and the JSON without handles, object for object."""
    _need_overall()
    r = overall()
    assert sorted(r.ruleset_text().splitlines()) == sorted((OVERALL / "ruleset.nft").read_text().splitlines())
    ours = _no_handles(r.ruleset_data())["nftables"]
    theirs = _no_handles(json.loads((OVERALL / "ruleset.json").read_text()))["nftables"]
    key = json.dumps
    assert sorted(map(key, ours)) == sorted(map(key, theirs))


# --------------------------------------------------------------------------- svctrace's walker


def _rs(r: NftRules, form: str = "text") -> NftRuleset:
    text = {"text": r.ruleset_text, "json": r.ruleset_json, "input": r.nft_input}[form]()
    rs = load_nft(text, form)
    assert not rs.problems() and not rs.warnings and not rs.orphans
    return rs


def _walk(rs: NftRuleset, src: str, dst: str, dport: int | None = 80, proto: str = "tcp",
          from_node: bool = False, returning: bool = False) -> TraceResult:
    node = NodeFacts.make(local_ips=[NODE_IP], returning_client=returning)
    pkt = Packet.make(src=src, dst=dst, proto=proto, dport=dport, origin="local" if from_node else None,
                      local_ips=node.local_ips)
    return trace(rs, pkt, node)


def _answer(r: TraceResult) -> tuple[set[str], dict[str | None, float], bool]:
    """(verdicts, DNAT destination -> probability, masquerade anywhere)."""
    dests: dict[str | None, float] = {}
    for o in r.outcomes:
        dests[o.dnat] = dests.get(o.dnat, 0.0) + o.probability
    assert all(o.certain for o in r.outcomes)
    assert abs(sum(dests.values()) - 1) < 1e-9
    return {o.verdict for o in r.outcomes}, {d: round(p, 9) for d, p in dests.items()}, any(
        o.masquerade for o in r.outcomes)


THIRD = round(1 / 3, 9)
WEB = {"10.180.0.1:8080": THIRD, "10.180.1.2:8080": THIRD, "10.180.2.3:8080": THIRD}
POD, OUTSIDE, BLOCKED = "10.0.0.2", "203.0.113.2", "203.0.113.200"


@pytest.mark.parametrize("version", ["1.31", "1.34"])
@pytest.mark.parametrize("form", ["text", "json", "input"])
def test_walker_answers_follow_kube_proxys_code(version: str, form: str) -> None:
    rs = _rs(rich(version), form)
    # ClusterIP, 3 endpoints: numgen random mod 3, a third each; pod traffic keeps its source, traffic from outside
    # the cluster CIDR is masqueraded ("ip daddr CIP ip saddr != 10.0.0.0/8 jump mark-for-masquerade").
    assert _answer(_walk(rs, POD, "172.30.0.10")) == ({"accept"}, WEB, False)
    assert _answer(_walk(rs, OUTSIDE, "172.30.0.10")) == ({"accept"}, WEB, True)
    assert _answer(_walk(rs, POD, "172.30.0.11", dport=53, proto="udp")) == (
        {"accept"}, {"10.180.0.10:53": 0.5, "10.180.1.11:53": 0.5}, False)
    # A port the ClusterIP does not serve, and a ping: cluster-ips-check rejects ("ip daddr @cluster-ips reject");
    # an address of the service CIDR no Service has is dropped.
    wrong = _walk(rs, POD, "172.30.0.10", dport=81)
    assert _answer(wrong)[0] == {"reject"} and wrong.outcomes[0].reject_with == "icmp-port-unreachable"
    assert _answer(_walk(rs, POD, "172.30.0.10", dport=None, proto="icmp"))[0] == {"reject"}
    assert _answer(_walk(rs, POD, "172.30.0.99"))[0] == {"drop"}
    # NodePort from outside, eTP Cluster: the external chain marks for masquerade, then the service chain.
    assert _answer(_walk(rs, OUTSIDE, NODE_IP, dport=30080)) == ({"accept"}, WEB, True)
    # LoadBalancer with source ranges: firewall-check sends the LB IP to "ip saddr != { ... } drop".
    lb = {"10.180.1.30:8080": 0.5, "10.180.2.31:8080": 0.5}
    assert _answer(_walk(rs, OUTSIDE, "198.51.100.10", dport=443)) == ({"accept"}, lb, True)
    assert _answer(_walk(rs, BLOCKED, "198.51.100.10", dport=443))[0] == {"drop"}
    assert _answer(_walk(rs, NODE_IP, "198.51.100.10", dport=443, from_node=True)) == ({"accept"}, lb, True)
    # ...and NodePorts are not subject to loadBalancerSourceRanges.
    assert _answer(_walk(rs, BLOCKED, NODE_IP, dport=30443)) == ({"accept"}, lb, True)
    # eTP Local with a local endpoint: outside traffic goes to it alone and keeps its source; a pod and the node
    # short-circuit to every endpoint, the node masqueraded ("masquerade local traffic").
    local_only = {"10.180.0.20:8080": 1.0}
    both = {"10.180.0.20:8080": 0.5, "10.180.1.21:8080": 0.5}
    for dst, port in (("198.51.100.11", 80), ("192.168.99.13", 80), (NODE_IP, 30013)):
        assert _answer(_walk(rs, OUTSIDE, dst, dport=port)) == ({"accept"}, local_only, False), dst
    assert _answer(_walk(rs, POD, "198.51.100.11")) == ({"accept"}, both, False)
    assert _answer(_walk(rs, NODE_IP, "198.51.100.11", from_node=True)) == ({"accept"}, both, True)
    # eTP Local without a local endpoint: outside traffic is dropped (no-endpoint-services / -nodeports "drop")...
    assert _answer(_walk(rs, OUTSIDE, "198.51.100.12"))[0] == {"drop"}
    assert _answer(_walk(rs, OUTSIDE, NODE_IP, dport=30014))[0] == {"drop"}
    # ...a pod short-circuits (the forward hook sees the DNATed destination in both layouts)...
    assert _answer(_walk(rs, POD, "198.51.100.12")) == ({"accept"}, {"10.180.1.40:8080": 1.0}, False)
    # ...and the node itself: 1.31-1.33 check no-endpoint-services in filter-output at -110, before nat-output's
    # DNAT, and drop; 1.34 moved filter-output to priority 0, after it (PR #132456).
    node_to_remote = _answer(_walk(rs, NODE_IP, "198.51.100.12", from_node=True))
    if version == "1.31":
        assert node_to_remote[0] == {"drop"}
    else:
        assert node_to_remote == ({"accept"}, {"10.180.1.40:8080": 1.0}, True)
    # ClientIP affinity: a new client gets numgen's choice and is recorded ("update @affinity-..."); a returning
    # one is sent to the endpoint its set names, which is one of those choices.
    sticky = {"10.180.1.50:8080": 0.5, "10.180.2.51:8080": 0.5}
    new = _walk(rs, POD, "172.30.0.15")
    assert _answer(new) == ({"accept"}, sticky, False)
    assert all(any(s.action.startswith("update @affinity-") for s in o.path) for o in new.outcomes)
    back = _walk(rs, POD, "172.30.0.15", returning=True)
    assert set(_answer(back)[1]) <= set(sticky)
    assert any(s.text.startswith("ip saddr @affinity-") for o in back.outcomes for s in o.path)
    # No endpoints: the ClusterIP and the NodePort reject (goto reject-chain).
    for dst, port in (("172.30.0.16", 80), (NODE_IP, 30016)):
        noep = _walk(rs, POD, dst, dport=port)
        assert _answer(noep)[0] == {"reject"}, dst
    assert _answer(_walk(rs, OUTSIDE, NODE_IP, dport=30016))[0] == {"reject"}
    # iTP Local without a local endpoint: ClusterIP traffic is dropped.
    assert _answer(_walk(rs, POD, "172.30.0.17"))[0] == {"drop"}
    # an unnamed port
    assert _answer(_walk(rs, POD, "172.30.0.18", dport=8080)) == ({"accept"}, {"10.180.2.70:8080": 1.0}, False)
    # a NodePort on an address that is not in nodeport-ips: nothing (the node's own socket, if any)
    assert _answer(_walk(rs, OUTSIDE, "192.168.99.13", dport=30080))[1] == {None: 1.0}


def test_walker_on_the_overall_ruleset_matches_the_corpus_kernel_flows() -> None:
    """The 17 packets the kernel ran through kube-proxy's own ruleset, walked through the generated one."""
    _need_overall()
    rs = _rs(overall())
    node = NodeFacts.make(local_ips=list(OVERALL_CONFIG.node_ips))
    for flow in json.loads((OVERALL / "kernel-flows.json").read_text()):
        pkt = Packet.make(src=flow["src"], dst=flow["dst"], proto=flow["proto"], dport=flow["dport"],
                          origin="local" if flow["from_node"] else None, local_ips=node.local_ips)
        verdicts, dests, masq = _answer(trace(rs, pkt, node))
        assert verdicts == {{"dnat": "accept"}.get(flow["verdict"], flow["verdict"])}, flow["name"]
        if flow["verdict"] == "dnat":
            assert set(dests) == set(flow["destinations"]), flow["name"]
        assert masq == flow["masquerade"], flow["name"]


# --------------------------------------------------------------------------- the kernel

_KOK, _KWHY = kernel_available()
KERNEL_PROBES = [
    # (label, src, dst, proto, dport, from_node)
    ("pod to ClusterIP, 3 endpoints", POD, "172.30.0.10", "tcp", 80, False),
    ("outside to ClusterIP (masquerade)", OUTSIDE, "172.30.0.10", "tcp", 80, False),
    ("pod to ClusterIP, UDP", POD, "172.30.0.11", "udp", 53, False),
    ("pod to a port the ClusterIP does not serve", POD, "172.30.0.10", "tcp", 81, False),
    ("pod pings a ClusterIP", POD, "172.30.0.10", "icmp", None, False),
    ("pod to an unallocated service IP", POD, "172.30.0.99", "tcp", 80, False),
    ("outside to NodePort", OUTSIDE, NODE_IP, "tcp", 30080, False),
    ("allowed source to LB IP", OUTSIDE, "198.51.100.10", "tcp", 443, False),
    ("blocked source to LB IP", BLOCKED, "198.51.100.10", "tcp", 443, False),
    ("blocked source to its NodePort", BLOCKED, NODE_IP, "tcp", 30443, False),
    ("outside to eTP Local LB IP, local endpoint", OUTSIDE, "198.51.100.11", "tcp", 80, False),
    ("outside to eTP Local NodePort, local endpoint", OUTSIDE, NODE_IP, "tcp", 30013, False),
    ("pod to eTP Local LB IP (short-circuit)", POD, "198.51.100.11", "tcp", 80, False),
    ("node to eTP Local external IP", NODE_IP, "192.168.99.13", "tcp", 80, True),
    ("outside to eTP Local LB IP, no local endpoint", OUTSIDE, "198.51.100.12", "tcp", 80, False),
    ("outside to eTP Local NodePort, no local endpoint", OUTSIDE, NODE_IP, "tcp", 30014, False),
    ("pod to eTP Local LB IP, no local endpoint", POD, "198.51.100.12", "tcp", 80, False),
    ("node to eTP Local LB IP, no local endpoint", NODE_IP, "198.51.100.12", "tcp", 80, True),
    ("pod to ClientIP-affinity ClusterIP", POD, "172.30.0.15", "tcp", 80, False),
    ("pod to a Service without endpoints", POD, "172.30.0.16", "tcp", 80, False),
    ("outside to a NodePort without endpoints", OUTSIDE, NODE_IP, "tcp", 30016, False),
    ("pod to iTP Local ClusterIP, no local endpoint", POD, "172.30.0.17", "tcp", 80, False),
]


@pytest.fixture(scope="module", params=["1.31", "1.34"])
def kernel_rich(request: pytest.FixtureRequest) -> Any:
    r = rich(request.param)
    lab = KernelLab([NODE_IP], route_localnet=True)
    lab.open()
    lab.load_nft(r.nft_input())
    yield r, _rs(r), lab
    lab.close()


def _flush_affinity(lab: KernelLab, rs: NftRuleset) -> None:
    sets = [s.name for t in rs.tables.values() for s in t.sets.values() if s.dynamic]
    if sets:
        lab.exec_node("nft", "; ".join(f"flush set ip kube-proxy {name}" for name in sets))


@pytest.mark.kernel
@pytest.mark.skipif(not _KOK, reason=_KWHY or "no kernel lab")
def test_generated_ruleset_agrees_with_the_kernel(kernel_rich: Any) -> None:
    r, rs, lab = kernel_rich
    for label, src, dst, proto, dport, from_node in KERNEL_PROBES:
        result = _walk(rs, src, dst, dport=dport, proto=proto, from_node=from_node)
        several = len(result.outcomes) > 1
        sticky = any(s.action.startswith("update @") for o in result.outcomes for s in o.path)
        if sticky and several:
            # every sample a new client: the affinity sets emptied before each
            k = KernelResult(samples=0)
            for i in range(40):
                _flush_affinity(lab, rs)
                one = lab.probe(dst=dst, proto=proto, dport=dport, src=None if from_node else src,
                                from_node=from_node, samples=1, sport_base=21000 + i)
                k.samples += 1
                k.verdicts.update(one.verdicts)
                k.destinations.update(one.destinations)
                k.masquerade_destinations.update(one.masquerade_destinations)
        else:
            k = lab.probe(dst=dst, proto=proto, dport=dport, src=None if from_node else src, from_node=from_node,
                          samples=200 if several else 3)
        compare(result, k, f"{r.config.kube_version}: {label}")
