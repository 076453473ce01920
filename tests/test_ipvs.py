"""kube-proxy's IPVS mode: ipvsadm parsing, scheduler shares, and walks checked by hand against the
wild dumps in tests/corpus/wild (ipvsadm/ and the IPVS-mode iptables dumps)."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WILD, corpus_files, need_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from svctrace.dataplane.contract import Outcome, TraceResult
from svctrace.dataplane.detect import sniff_format
from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.ipvs import load_ipvs, looks_like_ipvsadm, schedule
from svctrace.dataplane.ipvs.model import IPVSTable
from svctrace.errors import InputError
from svctrace.kubeproxy.ipvs_sets import infer_kube_ipsets, layout
from svctrace.kubeproxy.walk import trace_ipvs as trace
from svctrace.model.packet import IPSetDef, NodeFacts, Packet

IPVSADM = WILD / "ipvsadm"
DUMPS = corpus_files(IPVSADM, "*.txt")
NOT_IPVS = [p for p in corpus_files(WILD, "*/*.txt", exclude_k8s=False) if p.parent.name != "ipvsadm"]

# Hand-counted: `TCP|UDP ...` / `-A` lines and `->` / `-a` lines of each dump.
COUNTS = {"001": (34, 47), "002": (9, 14), "003": (8, 14), "004": (3, 10), "005": (3, 4), "006": (1, 3),
          "007": (1, 3), "008": (6, 6), "009": (10, 22)}
FORMATS = {"001": "ipvsadm -Ln", "003": "ipvsadm -L", "004": "ipvsadm -Ln --stats", "008": "ipvsadm -Sn",
           "009": "ipvsadm -Ln"}


def _text(p: Path) -> str:
    return p.read_bytes().decode("utf-8", errors="replace")


def _dump(prefix: str) -> IPVSTable:
    need_corpus()
    (p,) = [d for d in DUMPS if d.name.startswith(prefix)]
    return load_ipvs(_text(p), p.name)


def _rules(rel: str):  # type: ignore[no-untyped-def]
    need_corpus()
    return load_ruleset(_text(WILD / rel), Path(rel).name)


def _by_dnat(r: TraceResult) -> dict[str | None, Outcome]:
    out: dict[str | None, Outcome] = {}
    for o in r.outcomes:
        assert o.dnat not in out, f"two outcomes for {o.dnat}"
        out[o.dnat] = o
    return out


def _total(r: TraceResult) -> float:
    return sum(o.probability for o in r.outcomes)


def _ipvs_steps(o: Outcome) -> list:  # type: ignore[type-arg]
    return [s for s in o.path if s.table == "ipvs"]


# -- every dump loads ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", DUMPS, ids=[p.name[:40] for p in DUMPS])
def test_every_wild_ipvsadm_dump_loads(path: Path) -> None:
    need_corpus()
    t = load_ipvs(_text(path), path.name)
    vs, rs = COUNTS[path.name[:3]]
    assert (len(t), t.real_server_count) == (vs, rs)
    if path.name[:3] in FORMATS:
        assert t.format == FORMATS[path.name[:3]]
    for w in t.warnings:
        assert w.source == path.name


def test_sniffer_tells_ipvsadm_from_everything_else() -> None:
    need_corpus()
    assert DUMPS and NOT_IPVS
    assert all(looks_like_ipvsadm(_text(p)) for p in DUMPS)
    assert not [p.name for p in NOT_IPVS if looks_like_ipvsadm(_text(p))]
    assert all(sniff_format(_text(p)) == "ipvsadm" for p in DUMPS)  # the netfilter sniffer agrees


def test_partial_dumps_say_what_they_lost() -> None:
    # 006: the author's `...` lines (5 and 10) make the table partial.
    t = _dump("006")
    assert t.partial
    assert [w.line for w in t.warnings if w.code == "elided"] == [5, 10]
    # 003 (-L without -n): every virtual service lost its port to the 28-character column; the EC2
    # host name still spells the address. The real server at line 7 kept only the first digit.
    t = _dump("003")
    assert t.numeric is False
    assert {str(s.ip) for s in t} == {"10.0.62.121"} and all(s.port is None for s in t)
    assert sorted(w.line for w in t.warnings if w.code == "truncated") == [4, 6, 7, 8, 10, 13, 18, 21, 23]
    cut = t.services[1].reals[0]
    assert (str(cut.ip), cut.port, cut.port_text, cut.endpoint) == ("10.0.62.92", None, "9", "10.0.62.92:?")
    named = {r.endpoint for s in t for r in s.reals}
    assert {"100.98.125.10:80", "100.99.43.2:9102"} <= named  # `http`, `bacula-fd`
    # 002: redacted load-balancer addresses are kept, without an address.
    t = _dump("002")
    red = [s for s in t if s.ip is None]
    assert [(s.host, s.port) for s in red] == [("<ipv4-public-prefix>.20", 3129), ("<ipv4-public-prefix>.23", 80),
                                              ("<ipv4-public-prefix>.23", 443)]
    assert [w.line for w in t.warnings if w.code == "redacted"] == [5, 7]
    # 004 (--stats): no scheduler, no weights, but the counters.
    t = _dump("004")
    assert all(s.scheduler is None for s in t) and all(r.weight is None for s in t for r in s.reals)
    assert t.services[2].stats["conns"] == 14209 and t.services[2].reals[3].stats["inbytes"] == 1161


# -- walks checked by hand ----------------------------------------------------------------------

def test_007_apiserver_round_robin_over_three_masters() -> None:
    t = _dump("007")
    r = trace(t, None, Packet.make(src="10.233.64.5", dst="10.233.0.1", dport=443))
    got = _by_dnat(r)
    assert set(got) == {"10.0.55.68:6443", "10.0.55.69:6443", "10.0.55.70:6443"}
    for pos, ep in enumerate(["10.0.55.68:6443", "10.0.55.69:6443", "10.0.55.70:6443"], 1):
        o = got[ep]
        assert o.probability == pytest.approx(1 / 3)
        assert (o.verdict, o.delivery) == ("accept", "forward")
        assert not o.certain  # no iptables rules: the masquerade is not known
        (step,) = _ipvs_steps(o)
        assert (step.hook, step.chain, step.rule, step.line) == ("INPUT", "TCP 10.233.0.1:443 rr", pos, 5 + pos)
        assert step.action == f"IPVS rr → {ep} (weight 1)"
        assert step.text.startswith(f"-> {ep.split(':')[0]}:6443")
    assert any("Only the IPVS table was given" in n for n in r.notes)
    json.dumps(r.to_json())


def test_006_apiserver_intermittent_only_the_local_master_answers() -> None:
    """kubernetes#77077 / calico#9045: rr over the three masters; from master .21 only 1 in 3
    connections stays on the node."""
    t = _dump("006")
    pair = _text(IPVSADM / "006-apiserver-svc-intermittent-elided.k8s.txt")
    eps = re.search(r"^kubernetes\s+(\S+)", pair.split("kubectl get ep", 1)[1], re.M)
    assert eps is not None
    (vs,) = t.services
    assert {r.endpoint for r in vs.reals} == set(eps.group(1).split(","))
    assert vs.address == "10.233.0.1:443"
    node = NodeFacts.make(local_ips=["172.31.35.21"])
    for pkt in (Packet.make(src="10.233.64.5", dst="10.233.0.1", dport=443),  # a pod
                Packet.make(src="172.31.35.21", dst="10.233.0.1", dport=443, origin="local")):  # the kubelet
        got = _by_dnat(trace(t, None, pkt, node))
        assert {k: round(o.probability, 9) for k, o in got.items()} == {
            "172.31.35.21:6443": round(1 / 3, 9), "172.31.35.37:6443": round(1 / 3, 9),
            "172.31.35.38:6443": round(1 / 3, 9)}
        assert got["172.31.35.21:6443"].delivery == "local"
        assert got["172.31.35.37:6443"].delivery == got["172.31.35.38:6443"].delivery == "forward"
        assert _ipvs_steps(got["172.31.35.21:6443"])[0].hook == ("INPUT" if pkt.origin == "forwarded" else "OUTPUT")
    # Something the elided part may hold: routed away, uncertain.
    r = trace(t, None, Packet.make(src="10.233.64.5", dst="10.233.0.3", proto="udp", dport=53), node)
    (o,) = r.outcomes
    assert (o.verdict, o.delivery, o.dnat, o.certain) == ("accept", "forward", None, False)
    assert any("partial" in a for a in o.assumptions)


def test_001_loopback_nodeport_hangs_and_dns_splits() -> None:
    t = _dump("001")
    # kubernetes#96879: `curl 127.0.0.1:31356` on the node: IPVS will not send a loopback source away.
    r = trace(t, None, Packet.make(src="127.0.0.1", dst="127.0.0.1", dport=31356, origin="local"))
    (o,) = r.outcomes
    assert (o.verdict, o.probability) == ("drop", 1.0)
    assert "loopback" in o.reason and "96879" in o.reason
    # A pod asks kube-dns over UDP: two CoreDNS pods, one half each.
    r = trace(t, None, Packet.make(src="10.244.169.139", dst="10.96.0.10", proto="udp", dport=53))
    assert {k: o.probability for k, o in _by_dnat(r).items()} == {"10.244.36.125:53": 0.5, "10.244.36.126:53": 0.5}
    assert all(_ipvs_steps(o)[0].chain == "UDP 10.96.0.10:53 rr" for o in r.outcomes)
    # The node talks to the apiserver through the ClusterIP: the only real server is the node itself.
    r = trace(t, None, Packet.make(src="192.168.188.61", dst="10.96.0.1", dport=443, origin="local"),
              NodeFacts.make(local_ips=["192.168.188.61"]))
    (o,) = r.outcomes
    assert (o.dnat, o.delivery, o.probability) == ("192.168.188.61:6443", "local", 1.0)
    # NodePorts are recognised on the four node addresses; ClusterIPs are the rest.
    lay = layout(t)
    assert {str(a) for a in lay.node_addresses} == {"127.0.0.1", "172.17.0.1", "192.168.188.61", "10.244.235.192"}
    assert lay.node_ports == {"tcp": {30001, 30355, 30577, 31356}}
    assert {str(a) for a in lay.vips} >= {"10.96.0.1", "10.96.0.10", "10.104.67.53"}


def _ipsets_028(with_kube: bool = True) -> dict[str, IPSetDef]:
    """KUBE-CLUSTER-IP from the pair file (`ipset -L`), rewritten as `ipset save`; the others by hand
    from what the node runs (NodePort 31195, local endpoints .13-.15 and the calico pools)."""
    pair = _text(WILD / "iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.k8s.txt")
    members = re.findall(r"(?m)^(\d+\.\d+\.\d+\.\d+,(?:tcp|udp):\d+)$", pair)
    assert len(members) == 7
    lines = ["create cali40masq-ipam-pools hash:net family inet", "add cali40masq-ipam-pools 192.168.0.0/16",
             "create cali40all-ipam-pools hash:net family inet", "add cali40all-ipam-pools 192.168.0.0/16"]
    if with_kube:
        lines += ["create KUBE-CLUSTER-IP hash:ip,port family inet"] + [f"add KUBE-CLUSTER-IP {m}" for m in members]
        lines += ["create KUBE-NODE-PORT-TCP bitmap:port range 0-65535", "add KUBE-NODE-PORT-TCP 31195",
                  "create KUBE-LOOP-BACK hash:ip,port,ip family inet"]
        lines += [f"add KUBE-LOOP-BACK 192.168.185.{i},tcp:80,192.168.185.{i}" for i in (13, 14, 15)]
    sets, warns = parse_ipset("\n".join(lines) + "\n", "ipset")
    assert not warns
    return sets


def test_009_with_028_rules_nodeport_masquerades() -> None:
    t = _dump("009")
    rs = _rules("iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.txt")
    node = NodeFacts.make(local_ips=["192.168.191.153"], ipsets=_ipsets_028())
    # From outside to the NodePort: KUBE-NODE-PORT marks it, IPVS balances over three pods,
    # KUBE-POSTROUTING masquerades. Every set is given, the output interface too: certain.
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="192.168.191.153", dport=31195, oif="cali1"), node)
    got = _by_dnat(r)
    assert set(got) == {"192.168.185.13:80", "192.168.185.14:80", "192.168.185.15:80"}
    for o in got.values():
        assert o.probability == pytest.approx(1 / 3)
        assert (o.verdict, o.delivery, o.masquerade, o.certain) == ("accept", "forward", True, True)
        chains = [(s.table, s.chain) for s in o.path]
        assert chains.index(("nat", "KUBE-NODE-PORT")) < chains.index(("ipvs", "TCP 192.168.191.153:31195 rr"))
        assert chains.index(("ipvs", "TCP 192.168.191.153:31195 rr")) < chains.index(("nat", "KUBE-POSTROUTING"))
        assert not any(s.hook == "FORWARD" for s in o.path)  # IPVS output never traverses FORWARD
    # A pod to its own Service lands on itself 1 time in 3: KUBE-LOOP-BACK masquerades that one only.
    r = trace(t, rs, Packet.make(src="192.168.185.13", dst="10.100.49.21", dport=80, oif="cali1"), node)
    assert {k: (round(o.probability, 9), o.masquerade, o.certain) for k, o in _by_dnat(r).items()} == {
        "192.168.185.13:80": (round(1 / 3, 9), True, True),
        "192.168.185.14:80": (round(1 / 3, 9), False, True),
        "192.168.185.15:80": (round(1 / 3, 9), False, True)}


def test_009_with_028_rules_and_no_ipset_infers_the_sets() -> None:
    t = _dump("009")
    rs = _rules("iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.txt")
    node = NodeFacts.make(local_ips=["192.168.191.153"], ipsets=_ipsets_028(with_kube=False))
    sets = infer_kube_ipsets(t, node.local_ips)
    assert sorted(sets["KUBE-CLUSTER-IP"].members) == sorted(
        [("10.96.0.1", "tcp:443"), ("10.96.0.10", "tcp:53"), ("10.96.0.10", "tcp:9153"), ("10.99.180.41", "tcp:5473"),
         ("10.100.49.21", "tcp:80"), ("10.101.177.188", "tcp:443"), ("10.96.0.10", "udp:53")])  # = the pair's ipset
    assert sets["KUBE-NODE-PORT-TCP"].members == [("tcp:31195",)]
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="192.168.191.153", dport=31195, oif="cali1"), node)
    assert len(r.outcomes) == 3 and all(o.masquerade and not o.certain for o in r.outcomes)
    assert all(any("ipsets hold what the IPVS table implies" in a for a in o.assumptions) for o in r.outcomes)
    assert any(w.code == "ipset-inferred" for w in r.warnings)


def test_ping_a_clusterip_before_and_after_1_26() -> None:
    """The 'why can I ping the ClusterIP in IPVS mode' question (iptables-save/028's notes)."""
    t = _dump("009")
    rs = _rules("iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.txt")  # nat only
    node = NodeFacts.make(local_ips=["192.168.191.153"], ipsets=_ipsets_028())
    ping = Packet.make(src="192.168.185.13", dst="10.96.0.10", proto="icmp")
    old = trace(t, rs, ping, node, kube_version="v1.23.6")
    (o,) = old.outcomes
    assert (o.verdict, o.delivery, o.dnat, o.certain) == ("accept", "local", None, True)
    assert "kube-ipvs0" in o.reason
    assert any("node itself answers ping" in n for n in old.notes)
    new = trace(t, rs, ping, node, kube_version="1.26")
    (o,) = new.outcomes
    assert (o.verdict, o.reject_with) == ("reject", "icmp-port-unreachable")
    assert o.path[-1].chain == "KUBE-IPVS-FILTER" and not o.certain  # the filter table was not in the dump
    assert any("KUBE-IPVS-FILTER" in n and "72236" in n for n in new.notes)
    unknown = trace(t, rs, ping, node)
    assert sorted((o.verdict, o.probability) for o in unknown.outcomes) == [("accept", 0.5), ("reject", 0.5)]
    # The same from the node itself, with only the IPVS table.
    for v, verdict in (("1.25", "accept"), ("1.27", "reject")):
        r = trace(t, None, Packet.make(src="192.168.191.153", dst="10.96.0.1", proto="icmp", origin="local"),
                  NodeFacts.make(local_ips=["192.168.191.153"]), kube_version=v)
        assert [o.verdict for o in r.outcomes] == [verdict]


def test_a_port_the_service_does_not_serve() -> None:
    t = _dump("009")
    pkt = Packet.make(src="192.168.185.13", dst="10.96.0.1", dport=22)
    r = trace(t, None, pkt, kube_version="1.24")
    (o,) = r.outcomes
    assert (o.verdict, o.delivery, o.dnat) == ("accept", "local", None)
    assert r.nowhere and r.exit_code == 1
    assert any("72236" in n and "tcp/443" in n for n in r.notes)
    r = trace(t, None, pkt, kube_version="1.28")
    assert [o.verdict for o in r.outcomes] == ["reject"]


def test_kube_ipvs_filter_from_the_dump() -> None:
    """The filter rules kube-proxy 1.28 writes (proxier.go writeIptablesRules), walked as rules."""
    t = _dump("009")
    rs = load_ruleset("\n".join([
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":KUBE-IPVS-FILTER - [0:0]",
        '-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER',
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        "COMMIT", ""]), "filter.rules")
    ping = trace(t, rs, Packet.make(src="192.168.185.13", dst="10.96.0.10", proto="icmp"), kube_version="1.23")
    (o,) = ping.outcomes
    assert (o.verdict, o.path[-1].chain, o.path[-1].rule) == ("reject", "KUBE-IPVS-FILTER", 5)
    assert any(w.code == "version" for w in ping.warnings)  # 1.23 does not write this chain
    dns = trace(t, rs, Packet.make(src="192.168.185.13", dst="10.96.0.10", proto="udp", dport=53))
    assert {k: o.probability for k, o in _by_dnat(dns).items()} == {"192.168.185.1:53": 0.5, "192.168.185.3:53": 0.5}


def test_005_ipv6_nodeport_missing() -> None:
    """kubernetes#87604: IPv6-only, the elasticsearch NodePort has no virtual server."""
    t = _dump("005")
    pair = _text(IPVSADM / "005-ipv6-only-nodeport-missing.k8s.txt")
    m = re.search(r"^elasticsearch\s+NodePort\s+(\S+)\s+\S+\s+9200:(\d+)/TCP", pair, re.M)
    assert m is not None
    cluster_ip, node_port = m.group(1), int(m.group(2))
    node = NodeFacts.make(local_ips=["2001:db8:0:f101::2"])
    r = trace(t, None, Packet.make(src="2001:db8:0:f101::99", dst="2001:db8:0:f101::2", dport=node_port), node)
    (o,) = r.outcomes
    assert (o.verdict, o.delivery, o.dnat) == ("accept", "local", None)
    assert any(f"tcp/{node_port}" in n and "NodePort" in n for n in r.notes)
    r = trace(t, None, Packet.make(src="fd20::7041", dst=cluster_ip, dport=9200), node)
    (o,) = r.outcomes
    assert (o.verdict, o.delivery, o.dnat) == ("accept", "forward", None)
    assert any(f"no virtual server on {cluster_ip}" in n for n in r.notes)
    r = trace(t, None, Packet.make(src="fd20::7041", dst="fd20::1", dport=443), node)
    (o,) = r.outcomes
    assert (o.dnat, o.delivery) == ("[2001:db8:0:f101::2]:6443", "local")


def test_008_save_format_nodeport_and_load_balancer() -> None:
    t = _dump("008")
    node = NodeFacts.make(local_ips=["10.12.32.121"])
    for dst, port in (("10.12.32.121", 30470), ("10.12.32.160", 80), ("10.106.147.222", 80)):
        r = trace(t, None, Packet.make(src="10.12.32.50", dst=dst, dport=port), node)
        (o,) = r.outcomes
        assert (o.dnat, o.probability, o.delivery) == ("10.126.142.9:80", 1.0, "forward")
        assert _ipvs_steps(o)[0].text == f"-a -t {dst}:{port} -r 10.126.142.9:80 -m -w 1"
    lay = layout(t, node.local_ips)
    assert {str(a) for a in lay.vips} == {"10.12.32.160", "10.106.147.222"}


def test_002_nodeport_and_003_lost_ports() -> None:
    r = trace(_dump("002"), None, Packet.make(src="10.8.50.1", dst="10.8.9.0", dport=31662))
    assert {k: o.probability for k, o in _by_dnat(r).items()} == {"10.8.3.199:80": 0.5, "10.8.19.9:80": 0.5}
    # 003: eight virtual services on 10.0.62.121 whose ports were cut off: any could be :9090.
    r = trace(_dump("003"), None, Packet.make(src="10.0.1.1", dst="10.0.62.121", dport=9090))
    assert _total(r) == pytest.approx(1)
    assert not any(o.certain for o in r.outcomes)
    none = [o for o in r.outcomes if o.dnat is None]
    assert len(none) == 1 and none[0].probability == pytest.approx(0.5)
    assert _by_dnat(r)["100.96.5.4:9090"].probability == pytest.approx(0.5 / 8)


def test_004_stats_listing_assumes_equal_weights() -> None:
    r = trace(_dump("004"), None, Packet.make(src="10.2.1.99", dst="10.3.0.42", dport=80))
    assert len(r.outcomes) == 8 and all(o.probability == pytest.approx(1 / 8) for o in r.outcomes)
    assert all(any("does not show weights" in a for a in o.assumptions) for o in r.outcomes)


# -- the IPVS-mode iptables dumps of the corpus, with an IPVS table -------------------------------

IPVS_016 = """-A -u 192.168.0.2:53 -s rr
-a -u 192.168.0.2:53 -r 20.225.0.9:53 -m -w 1
-A -t 192.168.0.1:443 -s rr
-a -t 192.168.0.1:443 -r 10.208.40.179:6443 -m -w 1
-A -t 192.168.26.207:80 -s rr
"""


def test_016_cilium_rancher_ipvs_rules() -> None:
    rs = _rules("iptables-save/016-cilium-ipvs-leftovers-corrupt-dnat-rancher.txt")
    t = load_ipvs(IPVS_016, "ipvs-016")
    node = NodeFacts.make(local_ips=["10.208.40.179"])
    # nginx-demo has no endpoints: the stale filter KUBE-SERVICES REJECT answers first at INPUT.
    r = trace(t, rs, Packet.make(src="20.225.0.20", dst="192.168.26.207", dport=80), node)
    (o,) = r.outcomes
    assert (o.verdict, o.reject_with) == ("reject", "icmp-port-unreachable")
    assert (o.path[-1].table, o.path[-1].chain, o.path[-1].rule) == ("filter", "KUBE-SERVICES", 1)
    # DNS from a Cilium pod (outside kube-proxy's 10.42.0.0/16 cluster CIDR): marked, balanced, masqueraded.
    r = trace(t, rs, Packet.make(src="20.225.0.20", dst="192.168.0.2", proto="udp", dport=53), node)
    (o,) = r.outcomes
    assert (o.dnat, o.masquerade, o.delivery, o.probability) == ("20.225.0.9:53", True, "forward", 1.0)
    hooks = [s.hook for s in o.path]
    assert "FORWARD" not in hooks and hooks.index("INPUT") < hooks.index("OUTPUT") < hooks.index("POSTROUTING")
    # Without endpoints and without that stale rule, IPVS itself refuses the connection.
    r = trace(t, None, Packet.make(src="20.225.0.20", dst="192.168.26.207", dport=80), node)
    (o,) = r.outcomes
    assert (o.verdict, o.reject_with) == ("reject", "icmp-port-unreachable")
    assert "no real server" in o.reason
    assert any("connection refused" in n for n in r.notes)


IPVS_S004 = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.168.10.11:6443           Masq    1      0          0
TCP  127.0.0.1:30080 rr
  -> 10.244.1.5:80                Masq    1      0          0
  -> 10.244.2.6:80                Masq    1      0          0
TCP  192.168.10.11:30080 rr
  -> 10.244.1.5:80                Masq    1      0          0
  -> 10.244.2.6:80                Masq    1      0          0
"""


def test_iptables_S_004_and_L_011_companion_rules() -> None:
    t = load_ipvs(IPVS_S004, "ipvs-s004")
    node = NodeFacts.make(local_ips=["192.168.10.11"])
    # S/004 (indented -S paste): a NodePort from outside is marked via KUBE-NODE-PORT-TCP and masqueraded.
    rs = _rules("iptables-S/004-ipvs-mode-calico-companion-rules-per-chain-indented.txt")
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="192.168.10.11", dport=30080), node)
    assert {k: (o.probability, o.masquerade) for k, o in _by_dnat(r).items()} == {
        "10.244.1.5:80": (0.5, True), "10.244.2.6:80": (0.5, True)}
    # Its KUBE-CLUSTER-IP rule matches src,dst (no cluster CIDR): an outside client is not masqueraded.
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="10.96.0.1", dport=443), node)
    (o,) = r.outcomes
    assert (o.dnat, o.delivery, o.masquerade) == ("192.168.10.11:6443", "local", False)
    # L/011 lists two nat chains only: kube-proxy's PREROUTING jump is assumed, and said so.
    rs = _rules("iptables-L/011-ipvs-mode-kube-fire-wall-lb-source-ranges-2018.txt")
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="10.96.0.1", dport=443), node)
    (o,) = r.outcomes
    assert o.dnat == "192.168.10.11:6443" and not o.certain
    assert any("assumed kube-proxy's `-A PREROUTING -j KUBE-SERVICES`" in a for a in o.assumptions)
    assert any(s.chain == "KUBE-SERVICES" for s in o.path)


def test_027_calico_elided_rules_still_reach_ipvs() -> None:
    t = load_ipvs(IPVS_S004, "ipvs")
    rs = _rules("iptables-save/027-calico-ipvs-mode-elided-double-comment.txt")
    r = trace(t, rs, Packet.make(src="10.0.0.5", dst="10.96.0.1", dport=443), NodeFacts.make(local_ips=["192.168.10.11"]))
    assert _total(r) == pytest.approx(1)
    assert all(o.dnat == "192.168.10.11:6443" for o in r.outcomes if o.verdict == "accept")


# -- scheduler semantics ------------------------------------------------------------------------

def _vs(sched: str, weights: list[int], extra: str = "") -> IPVSTable:
    lines = [f"TCP  10.96.0.50:80 {sched}{extra}"]
    lines += [f"  -> 10.244.0.{i + 1}:8080            Masq    {w}      {i}          {2 * i}"
              for i, w in enumerate(weights)]
    return load_ipvs("\n".join(lines) + "\n", "hand")


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "mh", "dh", "fo", "ovf", "lblc"]),
       st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8))
def test_scheduler_shares_are_a_distribution(sched: str, weights: list[int]) -> None:
    t = _vs(sched, weights)
    sch = schedule(t.services[0])
    if not any(weights):
        assert sch.picks == []
        return
    # sh alone refuses the clients whose hash bucket a weight-0 server holds (one bucket per round of the deal).
    assert sum(p.share for p in sch.picks) + sch.refused == pytest.approx(1)
    want_refused = weights.count(0) / sum(max(w, 1) for w in weights) if sched == "sh" else 0
    assert sch.refused == pytest.approx(want_refused)
    assert all(p.real.weight for p in sch.picks)  # weight 0 is never picked
    assert len(sch.excluded) == weights.count(0)
    usable = [w for w in weights if w]
    shares = [p.share for p in sch.picks]
    if sched == "rr":
        assert shares == pytest.approx([1 / len(usable)] * len(usable)) and sch.certain
    if sched == "wrr":
        assert shares == pytest.approx([w / sum(usable) for w in usable]) and sch.certain
    if sched in ("lc", "wlc", "sed", "nq", "sh", "mh", "dh", "ovf", "lblc"):
        assert not sch.certain and sch.assumption


def test_scheduler_walks() -> None:
    # weight 0: a terminating endpoint gets nothing new; the note says why.
    r = trace(_vs("rr", [0, 1, 1]), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert {k: o.probability for k, o in _by_dnat(r).items()} == {"10.244.0.2:8080": 0.5, "10.244.0.3:8080": 0.5}
    assert any("weight 0" in n and "10.244.0.1:8080" in n for n in r.notes)
    # all weights 0: no destination available -> ICMP port unreachable
    r = trace(_vs("rr", [0, 0]), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert [(o.verdict, o.reject_with) for o in r.outcomes] == [("reject", "icmp-port-unreachable")]
    # wrr 1:3
    r = trace(_vs("wrr", [1, 3]), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert {k: o.probability for k, o in _by_dnat(r).items()} == {"10.244.0.1:8080": 0.25, "10.244.0.2:8080": 0.75}
    # lc: equal shares, uncertain; the counts of the listing name the next pick (0 active, 0 inactive)
    r = trace(_vs("lc", [1, 1, 1]), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert all(o.probability == pytest.approx(1 / 3) and not o.certain for o in r.outcomes)
    assert any("lc would send the next new connection to 10.244.0.1:8080" in n for n in r.notes)
    # sh: one backend per client address
    r = trace(_vs("sh", [1, 1]), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert all("one real server per client address" in " ".join(o.assumptions) for o in r.outcomes)
    # persistence: session affinity, said on the step and in the notes
    r = trace(_vs("rr", [1, 1], " persistent 10800"), None, Packet.make(src="10.244.9.9", dst="10.96.0.50", dport=80))
    assert all(_ipvs_steps(o)[0].note and "same server" in (_ipvs_steps(o)[0].note or "") for o in r.outcomes)
    assert any("persistent" in n and "10800" in n for n in r.notes)
    assert _ipvs_steps(r.outcomes[0])[0].chain == "TCP 10.96.0.50:80 rr persistent 10800"


# -- parsing details ------------------------------------------------------------------------------

def test_listing_variants() -> None:
    t = load_ipvs("""IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  [fd00::10]:443 sh (sh-port)
  -> [fd00:10:244::5]:8443        Masq    1      3          1
UDP  10.96.0.10:53 rr persistent 60 mask 255.255.255.0
  -> 10.244.1.2:53                Masq    2      0          7
FWM  5 wlc
  -> 10.244.1.3:0                 Route   1      0          0
""", "variants")
    v6, udp, fwm = t.services
    assert (v6.family, str(v6.ip), v6.port, v6.scheduler, v6.flags) == (6, "fd00::10", 443, "sh", ("sh-port",))
    assert (v6.reals[0].endpoint, v6.reals[0].active, v6.reals[0].inactive) == ("[fd00:10:244::5]:8443", 3, 1)
    assert (udp.persistent, udp.netmask, udp.reals[0].weight) == (60, "255.255.255.0", 2)
    assert (fwm.fwmark, fwm.protocol, fwm.label) == (5, "fwm", "FWM 5 wlc")
    # A firewall-mark service sees only packets routed to the node (IPVS sits at LOCAL_IN).
    pkt = Packet.make(src="10.0.0.1", dst="10.0.0.99", dport=1234, mark=5)
    (o,) = trace(t, None, pkt).outcomes
    assert (o.delivery, o.dnat) == ("forward", None)
    (o,) = trace(t, None, pkt, NodeFacts.make(local_ips=["10.0.0.99"])).outcomes
    assert _ipvs_steps(o)[0].chain == "FWM 5 wlc"
    assert o.dnat == "10.244.1.3:0 (direct routing)" and o.delivery == "forward"
    rate = load_ipvs("""Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.96.0.1:443                        1       10        9     1000     2000
  -> 10.0.0.1:6443                        1       10        9     1000     2000
""", "rate")
    assert rate.format == "ipvsadm -Ln --rate" and rate.services[0].stats["outbps"] == 2000
    save = load_ipvs("-A -u 10.96.0.10:53 -s wrr -p 300\n-a -u 10.96.0.10:53 -r 10.244.0.9 -m -w 3\n", "save")
    (s,) = save.services
    assert (s.protocol, s.scheduler, s.persistent, s.reals[0].endpoint, s.reals[0].weight) == (
        "udp", "wrr", 300, "10.244.0.9:53", 3)


def test_empty_table_and_bad_input() -> None:
    empty = load_ipvs("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n"
                      "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n", "empty")
    assert len(empty) == 0 and any(w.code == "empty" for w in empty.warnings)
    with pytest.raises(InputError) as e:
        load_ipvs("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n", "rules.txt")
    assert e.value.source == "rules.txt" and e.value.line == 1
    with pytest.raises(InputError) as e:
        load_ipvs("IPVS connection entries\npro expire state       source             virtual            destination\n"
                  "TCP 14:58  ESTABLISHED 10.244.1.1:53484   10.96.0.1:443      192.168.0.10:6443\n", "conns")
    assert "-Lc" in str(e.value)
    with pytest.raises(InputError) as e:
        load_ipvs("TCP  10.96.0.1:443 rr\n  -> 10.0.0.1:70000   Masq 1 0 0\n", "bad")
    assert e.value.line == 2
    with pytest.raises(InputError) as e:
        load_ipvs("-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r 10.0.0.1:6443 -m -w -1\n", "bad")
    assert e.value.line == 2
    with pytest.raises(InputError):
        load_ipvs("TCP  10.96.0.1:443 rr\x00", "bin")
    odd = load_ipvs("TCP  10.96.0.1:443 rr\nsomething else entirely\n  -> 10.0.0.1:6443   Masq 1 0 0\n", "odd")
    assert [(w.line, w.code) for w in odd.warnings] == [(2, "unknown-line")]
    assert odd.real_server_count == 1


def test_version_and_family_errors() -> None:
    t = load_ipvs("TCP  10.96.0.1:443 rr\n  -> 10.0.0.1:6443   Masq 1 0 0\n", "t")
    with pytest.raises(InputError):
        trace(t, None, Packet.make(src="10.0.0.9", dst="10.96.0.1", dport=443), kube_version="latest")
    rs = load_ruleset("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -s fd00::/8 -j RETURN\nCOMMIT\n", "v6")
    assert rs.family == 6
    with pytest.raises(InputError):
        trace(t, rs, Packet.make(src="10.0.0.9", dst="10.96.0.1", dport=443))


def test_ipvs_core_imports_no_ui_or_network_client() -> None:
    code = ("import sys, svctrace.dataplane.ipvs, svctrace.dataplane.ipvs.walker\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rich', 'textual', 'typer', 'click', 'kubernetes', 'paramiko'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", DUMPS, ids=[p.name[:40] for p in DUMPS])
def test_every_virtual_service_answers(path: Path) -> None:
    """Each virtual service of each dump, from a Pod and from the node, with and without the 028 rules:
    probabilities sum to 1 and an accepted packet that IPVS took names a real server."""
    need_corpus()
    t = load_ipvs(_text(path), path.name)
    rs = _rules("iptables-save/028-ipvs-switch-calico-vxlan-stale-declared-chains.txt")
    checked = 0
    for vs in t.services[:12]:
        if vs.ip is None or vs.port is None:
            continue
        checked += 1
        src = "10.244.250.7" if vs.ip.version == 4 else "fd00:250::7"
        for rules in (None, rs if vs.ip.version == 4 else None):
            for origin in ("forwarded", "local"):
                pkt = Packet.make(src=src, dst=str(vs.ip), proto=vs.protocol, dport=vs.port, origin=origin)  # type: ignore[arg-type]
                r = trace(t, rules, pkt, NodeFacts.make(local_ips=[src] if origin == "local" else []))
                assert _total(r) == pytest.approx(1)
                reals = {x.endpoint for x in vs.reals}
                for o in r.outcomes:
                    if o.verdict == "accept" and _ipvs_steps(o):
                        assert o.dnat is not None and o.dnat.split(" ")[0] in reals
    # 003 names its virtual services by host name (ipvsadm without -n): no address to send to
    assert checked or path.name.startswith("003-"), "no virtual service was checked"


# -- indexes: the indexed answer equals the walk of every entry (generated nodes) ------------------------------------

def _cluster(n: int, seed: int = 3) -> list[dict[str, object]]:
    """n Services (some NodePort, some with two ports, some UDP, some without endpoints) and their slices."""
    import random

    rng = random.Random(seed)
    objs: list[dict[str, object]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
                                      "spec": {"podCIDR": "10.244.0.0/24"},
                                      "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}}]
    for i in range(n):
        proto = "UDP" if i % 7 == 3 else "TCP"
        ports: list[dict[str, object]] = [{"name": "a", "port": 80, "targetPort": 8080, "protocol": proto}]
        if i % 5 == 1:
            ports.append({"name": "b", "port": 443, "targetPort": 8443, "protocol": proto})
        spec: dict[str, object] = {"clusterIP": f"10.96.{i // 250}.{i % 250 + 2}", "ports": ports, "type": "ClusterIP"}
        if i % 4 == 0:
            spec["type"] = "NodePort"
            for k, p in enumerate(ports):
                p["nodePort"] = 30000 + 2 * i + k
        if i % 9 == 2:
            spec["sessionAffinity"] = "ClientIP"
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "ns"},
                     "spec": spec})
        eps = [] if i % 11 == 5 else [{"addresses": [f"10.244.{(i + k) % 3}.{(i * 3 + k) % 250 + 2}"],
                                       "conditions": {"ready": True}, "nodeName": "node-1"}
                                      for k in range(rng.randint(1, 3))]
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                     "metadata": {"name": f"s{i}-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": f"s{i}"}},
                     "endpoints": eps,
                     "ports": [{"name": p["name"], "port": p["targetPort"], "protocol": proto} for p in ports]})
    return objs


def _naive_find(t: IPVSTable, proto: str, ip: ipaddress.IPv4Address, port: int | None, mark: int = 0) -> object:
    """IPVSTable.find as a walk over every service (what the index must answer)."""
    if mark:
        for s in t.services:
            if s.fwmark == mark and s.family == ip.version:
                return s
    for s in t.services:
        if s.fwmark is None and s.protocol == proto and s.ip == ip and s.port == port:
            return s
    for s in t.services:
        if s.fwmark is None and s.protocol == proto and s.ip == ip and s.port == 0:
            return s
    return None


def _naive_member(s: IPSetDef, pkt: Packet, flags: list[str]) -> bool | None:
    """ipset.member_of as a walk over every member."""
    from svctrace.dataplane.ipset import _dim_value, _member_dim_ok

    kinds = (s.type.split(":", 1)[1] if ":" in s.type else s.type).split(",")
    flags = flags + [flags[-1]] * (len(kinds) - len(flags))
    values = [_dim_value(pkt, f, k) for f, k in zip(flags, kinds, strict=False)]
    if any(v is None for v in values):
        return None
    return any(len(m) >= len(kinds) and all(_member_dim_ok(m[i], str(values[i]), kinds[i], s.type.startswith("bitmap:"))
                                            for i in range(len(kinds))) for m in s.members)


@pytest.mark.slow
def test_ipvs_indexes_answer_as_the_walk_of_every_entry() -> None:
    from svctrace.dataplane.ipset import member_of, parse_ipset
    from svctrace.kubeproxy.simulate import simulate

    files = simulate(_cluster(60), nodes=["node-1"], mode="ipvs").files["node-1"]
    t = load_ipvs(files["ipvsadm"], "ipvsadm")
    # a duplicate listing and a fwmark service: the first listed is the one found
    dup = load_ipvs(files["ipvsadm"] + "\n" + files["ipvsadm"].split("\n", 3)[-1], "dup")
    assert any("listed twice" in w.message for w in dup.warnings)
    sets, _ = parse_ipset(files["ipset"] + "\nadd KUBE-CLUSTER-IP 10.96.9.0/24,tcp:1-100\n"
                          "add KUBE-NODE-PORT-TCP 31000-31010\n")
    addrs = [*sorted({s.ip for s in t.services if s.ip is not None}), ipaddress.ip_address("10.96.9.7")]
    for table in (t, dup):
        for ip in addrs:
            for proto in ("tcp", "udp", "sctp"):
                for port in (80, 443, 81, 0, None, 30000, 30001):
                    assert table.find(proto, ip, port).service is _naive_find(table, proto, ip, port)
    for ip in addrs[::3]:
        for port in (80, 443, 30000, 31005):
            for src in ("10.244.0.2", ip):
                pkt = Packet(4, "tcp", ipaddress.ip_address(src), ip, 40000, port)
                for s in sets.values():
                    for flags in (["dst"], ["dst", "dst"], ["dst", "dst", "src"], ["src"]):
                        assert member_of(s, pkt, flags) == _naive_member(s, pkt, flags), (s.name, pkt, flags)
    # whole walks: the same answers with every lookup walking every entry
    import svctrace.dataplane.ipset as ipset_module
    import svctrace.dataplane.ipvs.walker as ipvs_walker
    from svctrace.dataplane.ipvs.model import Lookup

    def walks(table: IPVSTable) -> list[object]:
        facts = NodeFacts(local_ips=frozenset({ipaddress.ip_address("192.168.0.10")}), ipsets=dict(sets))
        rs = load_ruleset(files["iptables-save"], "iptables-save")
        return [trace(table, rs, Packet(4, proto, ipaddress.ip_address(src), ip, 40000, port), facts).to_json()
                for ip in [*addrs[:14], ipaddress.ip_address("192.168.0.10")] for port in (80, 30000)
                for proto in ("tcp", "udp") for src in ("10.244.0.2", "192.168.0.10")]

    indexed = walks(load_ipvs(files["ipvsadm"], "ipvsadm"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(IPVSTable, "find", lambda self, proto, ip, port, mark=0: Lookup(
            _naive_find(self, proto, ip, port, mark), []))  # type: ignore[arg-type]
        mp.setattr(ipset_module, "member_of", _naive_member)
        mp.setattr(ipvs_walker, "member_of", _naive_member)
        assert walks(load_ipvs(files["ipvsadm"], "ipvsadm")) == indexed


def test_sh_keeps_the_buckets_of_a_weight_0_server() -> None:
    # ip_vs_sh_reassign deals the 256 buckets to every real server in turn (weight buckets each, one to a weight-0
    # server) and ip_vs_sh_get answers NULL for a weight-0 server's bucket: those clients are refused. Seen in the
    # VM lab (tests/test_vm_ipvs.py): 16 of 48 connections from 12 clients refused with 2 + 1 terminating servers.
    text = ("-A -t 10.96.0.26:80 -s sh\n-a -t 10.96.0.26:80 -r 10.244.1.63:80 -m -w 0\n"
            "-a -t 10.96.0.26:80 -r 10.244.2.61:80 -m -w 1\n-a -t 10.96.0.26:80 -r 10.244.3.62:80 -m -w 2\n")
    (vs,) = load_ipvs(text, "ipvsadm").services
    sch = schedule(vs)
    assert sch.refused == pytest.approx(1 / 4)
    assert {p.real.endpoint: p.share for p in sch.picks} == pytest.approx({"10.244.2.61:80": 1 / 4,
                                                                        "10.244.3.62:80": 2 / 4})
    assert not sch.certain and "connection refused" in " ".join(sch.notes)
    # With sh-fallback the kernel looks past the weight-0 server; mh leaves it out of its table; rr never picks it.
    for variant in ("-s sh -b sh-fallback", "-s mh", "-s rr"):
        (vs,) = load_ipvs(text.replace("-s sh", variant, 1), "ipvsadm").services
        assert schedule(vs).refused == 0, variant
    r = trace(load_ipvs(text, "ipvsadm"), None, Packet.make(src="10.244.9.9", dst="10.96.0.26", dport=80,
                                                             proto="tcp"))
    verdicts = sorted((o.verdict, round(o.probability, 9)) for o in r.outcomes)
    assert verdicts == [("accept", 0.25), ("accept", 0.5), ("reject", 0.25)], verdicts


def test_kube_proxy_save_lines_read_fast_as_the_general_path_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-A -t VIP -s S [-p N]` and `-a -t VIP -r RIP:PORT -m -w N` skip the option scanner: the same table and
    warnings as the general path, odd values included (they fall back to it)."""
    import re as _re

    from svctrace.dataplane.ipvs import parser as p

    text = "\n".join([
        "-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.244.1.6:8080 -g -w 0", "-A -u 10.96.0.11:53 -s wrr -p 10800",
        "-a -u 10.96.0.11:53 -r 10.244.1.7:53 -i -w 65535", "-A -t 10.96.0.12:443 -s bogus",
        "-a -t 10.96.0.12:443 -r 010.244.1.8:443 -m -w 1", "-a -t 10.96.0.12:443 -r 10.244.1.9:443 -m -w 1",
        "-a -t 10.96.0.99:80 -r 10.244.1.10:80 -m -w 1",
        "-A -t 10.96.0.10:80 -s rr", "-A -t 010.96.0.13:80 -s rr",
    ]) + "\n"
    refused = ["-A -t 10.96.0.14:80 -s rr -p 99999999999\n", "-A -t 10.96.0.12:443 -s rr\n"
               "-a -t 10.96.0.12:443 -r 10.244.1.9:99999 -m -w 1\n", "-A -t 10.96.0.12:443 -s rr\n"
               "-a -t 10.96.0.12:443 -r 10.244.1.9:443 -m -w 70000\n"]

    def read(t: str) -> tuple[str, list[str]]:
        try:
            table = load_ipvs(t, "x")
        except Exception as e:  # the general path refuses this: so must the fast one
            return f"error {e}", []
        return repr(table.services), [str(w) for w in table.warnings]

    fast, fast_refused = read(text), [read(r) for r in refused]
    assert len(fast[1]) >= 4 and "10.244.1.9" in fast[0]  # the odd lines were read (with warnings), not refused
    monkeypatch.setattr(p, "_SAVE_REAL", _re.compile(r"(?!)"))
    monkeypatch.setattr(p, "_SAVE_SERVICE", _re.compile(r"(?!)"))
    assert read(text) == fast
    assert [read(r) for r in refused] == fast_refused
    assert all(r[0].startswith("error") for r in fast_refused)


def test_a_whole_kube_proxy_save_reads_as_the_line_reader_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """kube-proxy's `ipvsadm -Sn` read in one pass (`_KUBE_SAVE`, real servers parsed when first asked for) gives the
    table and warnings the line reader gives: persistence, UDP, a service without real servers, an unknown
    scheduler, a service listed twice; any other line sends the whole text to the line reader."""
    import re as _re

    from svctrace.dataplane.ipvs import parser as p

    text = "\n".join([
        "-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 1",
        "-a -t 10.96.0.10:80 -r 10.244.1.6:8080 -g -w 0", "-A -u 10.96.0.11:53 -s wrr -p 10800",
        "-a -u 10.96.0.11:53 -r 10.244.1.7:53 -i -w 65535", "-A -t 10.96.0.12:443 -s bogus",
        "-A -t 192.168.0.10:30080 -s rr", "-a -t 192.168.0.10:30080 -r 10.244.1.5:8080 -m -w 1",
        "-A -t 10.96.0.10:80 -s rr", "-a -t 10.96.0.10:80 -r 10.244.1.9:8080 -m -w 1",
    ])
    odd = [text + "\n\n", text.replace("10.244.1.6", "010.244.1.6"), text.replace("-w 0", "-w 65536"),
           text + "\n-a -t 10.96.0.11:80 -r 10.244.1.9:80 -m -w 1", "# a comment\n" + text]

    def read(t: str) -> tuple[str, list[str], str, bool | None]:
        try:
            table = load_ipvs(t, "x")
        except Exception as e:
            return f"error {e}", [], "", None
        return repr(table.services), [str(w) for w in table.warnings], table.format, table.numeric

    fast = read(text)
    assert p._KUBE_SAVE.match(text + "\n") is not None and "10.244.1.9" in fast[0] and len(fast[1]) == 2
    table = load_ipvs(text, "x")
    assert table.services[0]._pending is not None  # not read until asked for
    assert [(r.position, r.line, r.weight, r.forward) for r in table.services[0].reals] == [
        (1, 2, 1, "Masq"), (2, 3, 0, "Route")]
    odd_read = [read(t) for t in odd]
    monkeypatch.setattr(p, "_KUBE_SAVE", _re.compile(r"(?!)"))
    assert read(text) == fast
    assert [read(t) for t in odd] == odd_read


def test_kube_ipvs0_addresses_are_not_the_node_s_own() -> None:
    """An IPVS node's `ip addr` lists every Service address on kube-ipvs0. kube-proxy counts the node's own addresses
    without that interface (GetAllLocalAddressesExcept(defaultDummyDevice)), and so must the layout: counted as the
    node's, a cluster IP on a port IPVS does not serve looked like a node address, and the kube-ipvs0 note was lost."""
    from svctrace.cli.trace import read_inputs
    from svctrace.dataplane.host import parse_ip_addr_json
    from svctrace.kubeproxy.ipvs_sets import node_layout

    node_dir = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "nodes" / "node03"
    addrs, _ = parse_ip_addr_json((node_dir / "ip-addr.json").read_text())
    on_dummy = {str(a.ip) for a in addrs if a.ifname == "kube-ipvs0"}
    assert len(on_dummy) >= 9  # the file as collected: every Service address bound to the dummy interface
    table = load_ipvs((node_dir / "ipvsadm").read_text(), "ipvsadm")
    facts = NodeFacts.make(local_ips=[a.ip for a in addrs], addresses=addrs)
    lay = node_layout(table, facts)
    assert {str(a) for a in lay.vips} == on_dummy & {str(a) for a in table.addresses()}
    assert {str(a) for a in lay.node_addresses} <= {"192.168.56.13", "127.0.0.1"}
    # An address on kube-ipvs0 and on another interface too stays the node's (kube-proxy excludes the interface,
    # not the address).
    from dataclasses import replace
    twice = [*addrs, replace(next(a for a in addrs if a.ifname == "kube-ipvs0"), ifname="eth1")]
    assert len(node_layout(table, NodeFacts.make(local_ips=[a.ip for a in twice], addresses=twice)).vips) == \
        len(lay.vips) - 1

    # The command, as a user runs it on the node's directory: a cluster IP on a port IPVS does not serve.
    from svctrace.cli.trace import trace_inputs
    from svctrace.dataplane.node import NodeFiles

    inputs = read_inputs(str(node_dir))
    files = NodeFiles("node03", {Path(n).name: t for t, n in inputs})
    sets, _ = parse_ipset(files.get("ipset") or "", "ipset")
    facts = NodeFacts.make(local_ips=[a.ip for a in addrs], addresses=addrs, ipsets=sets)
    dumps = [(t, n) for t, n in inputs if not n.endswith(("ipset", "ip-addr.json"))]
    r = trace_inputs(dumps, Packet.make(src="10.244.3.5", dst="10.96.10.10", dport=81), facts)
    assert any("10.96.10.10 is a Service address on kube-ipvs0" in n and "no virtual server for tcp/81" in n
               for n in r.notes), r.notes
