"""kube-proxy's nftables mode: the parser, the walker, the corpora and the real kernel.

- every nft dump of tests/corpus loads (the two iptables-nft views of iptables-mode rules as partial,
  with warnings); the three forms of kube-proxy's `overall` ruleset give the same answers;
- the 17 flows the kernel ran through `overall` and the oracle's nft probes are predicted right;
- hand-checked walks through the wild dumps, parser and walker details, a numgen property test;
- kernel agreement: the same rules loaded with `nft -f` into a namespace, real packets, conntrack.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
from agreement import compare
from conftest import KP_NFT_OVERALL, ORACLE, WILD, corpus_files, kube_proxy_cases, need_corpus
from hypothesis import given, settings
from hypothesis import strategies as st
from kernellab import KernelLab, KernelResult, kernel_available

from svctrace.dataplane.contract import TraceResult
from svctrace.dataplane.detect import looks_like_nft
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.matches import kernel_probability
from svctrace.dataplane.nftables import NftRuleset, load_nft
from svctrace.dataplane.nftables.ir import Dynset, Match, Nat, Unknown, Vmap
from svctrace.dataplane.nftables.values import priority_value
from svctrace.errors import InputError
from svctrace.kubeproxy.walk import complete_nft
from svctrace.kubeproxy.walk import trace_iptables as iptables_trace
from svctrace.kubeproxy.walk import trace_nft as trace
from svctrace.model.packet import NodeFacts, Packet

OVERALL = KP_NFT_OVERALL
WILD_NFT = WILD / "nft"
FORMS = ("rules.nft-input", "ruleset.nft", "ruleset.json")
# nft views of iptables-mode rules (iptables-nft): partial by nature
IPTABLES_NFT = ("004-k3s-iptables-nft-ruleset-grep-xt-target-not-found.txt",
                "005-iptables-nft-chain-walk-weave-nodeport-kube-ext.txt")
WILD_DUMPS = corpus_files(WILD_NFT, "*.txt")
_RS_CACHE: dict[str, NftRuleset] = {}


def _load(path: Path) -> NftRuleset:
    key = str(path)
    if key not in _RS_CACHE:
        _RS_CACHE[key] = complete_nft(load_nft(path.read_text(), path.name))
    return _RS_CACHE[key]


def _overall_meta() -> dict[str, Any]:
    return json.loads((OVERALL / "meta.json").read_text())


def _overall_node() -> NodeFacts:
    return NodeFacts.make(local_ips=_overall_meta()["node_ips"])


def _flows() -> list[dict[str, Any]]:
    return json.loads((OVERALL / "kernel-flows.json").read_text())


def _probes() -> list[dict[str, Any]]:
    path = ORACLE / "probes-basic.nft.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]


def _pkt(node: NodeFacts, src: str, dst: str, proto: str = "tcp", dport: int | None = 80,
         from_node: bool = False) -> Packet:
    return Packet.make(src=src, dst=dst, proto=proto, dport=dport if proto not in ("icmp", "icmpv6") else None,
                       origin="local" if from_node else None, local_ips=node.local_ips)


def _summary(r: TraceResult) -> list[tuple[float, str, str | None, bool, str | None, bool]]:
    return sorted((round(o.probability, 12), o.verdict, o.dnat, o.masquerade, o.reject_with, o.certain)
                  for o in r.outcomes)


def _text(body: str) -> NftRuleset:
    return load_nft(body, "t.nft")


NODE = NodeFacts.make(local_ips=["192.168.0.2"])


# -- loading -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", WILD_DUMPS, ids=[p.name[:40] for p in WILD_DUMPS])
def test_wild_nft_dump_loads(path: Path) -> None:
    need_corpus()
    text = path.read_text()
    assert looks_like_nft(text)
    rs = _load(path)
    problems = rs.problems() + [(r, p) for r in rs.orphans for p in r.problems]
    if path.name in IPTABLES_NFT:
        assert rs.warnings, "a partial iptables-nft view must say what it lacks"
        return
    assert rs.rule_count > 0
    assert not problems, problems
    pkt = Packet.make(src="10.244.1.5", dst="10.96.0.10", proto="udp", dport=53)
    result = trace(rs, pkt, NODE)
    assert abs(sum(o.probability for o in result.outcomes) - 1) < 1e-12


@pytest.mark.parametrize("form", FORMS)
def test_overall_forms_load(form: str) -> None:
    need_corpus()
    assert looks_like_nft((OVERALL / form).read_text())
    rs = _load(OVERALL / form)
    assert not rs.problems() and not rs.warnings and not rs.orphans
    t = rs.tables["ip kube-proxy"]
    assert rs.rule_count == 57
    assert {c.name for c in t.chains.values() if c.is_base} == {
        "filter-prerouting-pre-dnat", "filter-output-pre-dnat", "filter-forward", "filter-input", "filter-output",
        "nat-output", "nat-postrouting", "nat-prerouting"}
    assert t.chains["filter-prerouting-pre-dnat"].priority == -110
    assert t.chains["nat-postrouting"].priority == 100
    assert len(t.sets["service-ips"].elements) == 9
    assert t.sets["affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"].dynamic


def test_overall_forms_give_the_same_answers() -> None:
    need_corpus()
    node = _overall_node()
    forms = [_load(OVERALL / f) for f in FORMS]
    packets = [(f["src"], f["dst"], f["proto"], f["dport"], f["from_node"]) for f in _flows()]
    packets += [("10.0.0.2", "172.30.0.45", "tcp", 80, False), ("192.168.0.2", "5.6.7.8", "tcp", 80, True),
                ("10.0.0.2", "192.168.0.2", "tcp", 3002, False), ("10.180.0.5", "172.30.0.44", "tcp", 80, False),
                ("10.0.0.2", "172.30.0.46", "udp", 80, False), ("192.168.0.2", "172.30.0.46", "tcp", 80, True)]
    for src, dst, proto, dport, from_node in packets:
        answers = [_summary(trace(rs, _pkt(node, src, dst, proto, dport, from_node), node)) for rs in forms]
        assert answers[0] == answers[1] == answers[2], (src, dst, dport, answers)


# -- what the kernel did with kube-proxy's overall ruleset ---------------------------------------------

@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("flow", _flows(), ids=[f["name"] for f in _flows()])
def test_overall_kernel_flow(flow: dict[str, Any], form: str) -> None:
    need_corpus()
    node = _overall_node()
    rs = _load(OVERALL / form)
    r = trace(rs, _pkt(node, flow["src"], flow["dst"], flow["proto"], flow["dport"], flow["from_node"]), node)
    outs = r.outcomes
    assert abs(sum(o.probability for o in outs) - 1) < 1e-12
    assert all(o.certain for o in outs)
    verdict = {"dnat": "accept"}.get(flow["verdict"], flow["verdict"])
    assert {o.verdict for o in outs} == {verdict}, _summary(r)
    if flow["verdict"] == "dnat":
        assert {o.dnat for o in outs} == set(flow["destinations"])
        for o in outs:
            assert o.probability == pytest.approx(1 / len(flow["destinations"]), abs=1e-12)
    assert any(o.masquerade for o in outs) == flow["masquerade"]


def test_overall_notes_explain_kube_proxy_behaviours() -> None:
    need_corpus()
    node = _overall_node()
    rs = _load(OVERALL / "ruleset.nft")
    ping = trace(rs, _pkt(node, "10.0.0.2", "172.30.0.41", "icmp"), node)
    assert ping.outcomes[0].reject_with == "icmp-port-unreachable"
    assert any("cluster-ips-check" in n and "v1.30" in n and "ping" in n for n in ping.notes)
    assert [s.chain for s in ping.outcomes[0].path][-1] == "cluster-ips-check"
    unalloc = trace(rs, _pkt(node, "10.0.0.2", "172.30.0.99"), node)
    assert any("172.30.0.0/16" in n and "unallocated" in n for n in unalloc.notes)
    noep = trace(rs, _pkt(node, "10.0.0.2", "172.30.0.46"), node)
    assert any("ns6/svc6:p80" in n for n in noep.notes)
    fw = trace(rs, _pkt(node, "203.0.113.200", "5.6.7.8"), node)
    assert any("loadBalancerSourceRanges" in n for n in fw.notes)
    etp = trace(rs, _pkt(node, "203.0.113.2", "192.168.0.2", dport=3001), node)
    assert any("externalTrafficPolicy: Local" in n for n in etp.notes)


def test_overall_path_names_tables_chains_and_rules() -> None:
    need_corpus()
    node = _overall_node()
    rs = _load(OVERALL / "ruleset.nft")
    r = trace(rs, _pkt(node, "203.0.113.2", "192.168.99.33"), node)
    assert len(r.outcomes) == 2
    o = next(x for x in r.outcomes if x.dnat == "10.180.0.5:80")
    steps = [(s.hook, s.table, s.chain, s.rule, s.action) for s in o.path]
    assert ("PREROUTING", "ip kube-proxy", "services", 1, "goto external-LAUZTJTB-ns4/svc4/tcp/p80") in steps
    pick = next(s for s in o.path if s.branch is not None)
    assert pick.chain == "service-LAUZTJTB-ns4/svc4/tcp/p80" and pick.rule == 2 and pick.branch == 0.5
    assert pick.action == "goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80"
    assert pick.text.startswith("numgen random mod 2 vmap {")
    dnat = next(s for s in o.path if s.action.startswith("DNAT"))
    assert dnat.action == "DNAT to 10.180.0.5:80" and dnat.text == "meta l4proto tcp dnat to 10.180.0.5:80"
    assert o.path[-1].action.startswith("MASQUERADE") and o.path[-1].hook == "POSTROUTING"
    vm = next(s for s in o.path if s.chain == "services")
    assert vm.note == "@service-ips: 192.168.99.33 . tcp . 80"


def test_overall_returning_client_sticks_to_its_first_endpoint() -> None:
    need_corpus()
    node = NodeFacts.make(local_ips=_overall_meta()["node_ips"], returning_client=True)
    rs = _load(OVERALL / "ruleset.nft")
    r = trace(rs, _pkt(node, "10.0.0.2", "172.30.0.45"), node)
    assert [(o.dnat, o.probability) for o in r.outcomes] == [("10.180.0.3:80", 1.0)]
    texts = [s.text for s in r.outcomes[0].path]
    assert any(t.startswith("ip saddr @affinity-GTK6MW7G") for t in texts)


# -- the kernel oracle's nft probes --------------------------------------------------------------------

@pytest.mark.parametrize("probe", _probes(), ids=[p["label"] for p in _probes()])
def test_oracle_nft_probe(probe: dict[str, Any]) -> None:
    need_corpus()
    rs = _load(ORACLE / "kube-proxy-basic.nft")
    assert not rs.warnings
    node = NodeFacts.make(local_ips=["192.168.0.2"])
    src = probe.get("src") or "192.168.0.2"
    r = trace(rs, _pkt(node, src, probe["dst"], probe["proto"], probe.get("dport"), bool(probe.get("from_node"))),
              node)
    outs = r.outcomes
    assert all(o.certain for o in outs)
    verdict = {"dnat": "accept"}.get(probe["expect_verdict"], probe["expect_verdict"])
    assert {o.verdict for o in outs} == {verdict}
    if "expect" in probe:
        got = {o.dnat: o.probability for o in outs}
        assert set(got) == set(probe["expect"])
        for d in got:  # exactly 1/n: kernel numgen is uniform
            assert got[d] == pytest.approx(1 / len(got), abs=1e-15)
            assert got[d] == pytest.approx(probe["expect"][d], abs=1e-9)
    if "expect_reject" in probe:
        assert {o.reject_with for o in outs} == {probe["expect_reject"]}
    masq = probe.get("expect_masquerade")
    if masq == "mixed":
        assert {o.dnat for o in outs if o.masquerade} == {probe["src"] + ":80"}
        assert any(not o.masquerade for o in outs)
    elif masq is not None:
        assert all(o.masquerade == masq for o in outs)


# -- hand-checked walks through the wild dumps ---------------------------------------------------------

def _wild(name: str, node_ips: list[str], src: str, dst: str, proto: str = "tcp", dport: int | None = 80,
          from_node: bool = False) -> TraceResult:
    need_corpus()
    node = NodeFacts.make(local_ips=node_ips)
    return trace(_load(WILD_NFT / name), _pkt(node, src, dst, proto, dport, from_node), node)


K3S = "001-k3s-kube-proxy-nftables-full-table.txt"


def test_wild_001_k3s_dns_from_a_pod() -> None:
    # services -> @service-ips 10.43.0.10 . udp . 53 -> service-FY5PMXPG (pod source: no mark) -> numgen mod 1
    # -> endpoint-S4FSIJI2 -> dnat to 10.42.0.171:53; forward checks pass; masquerading returns (no mark).
    r = _wild(K3S, ["10.34.4.246"], "10.42.1.5", "10.43.0.10", "udp", 53)
    assert _summary(r) == [(1.0, "accept", "10.42.0.171:53", False, None, True)]
    assert r.outcomes[0].delivery == "forward"


def test_wild_001_k3s_nodeport_spreads_over_nine_endpoints() -> None:
    # nodeport-ips {10.34.4.246} -> @service-nodeports tcp . 30000 -> external-P6J77WGM: mark, goto the
    # service chain (name ends in /tcp/: unnamed port) -> numgen random mod 9 over 9 endpoint chains.
    r = _wild(K3S, ["10.34.4.246"], "192.168.5.5", "10.34.4.246", dport=30000)
    assert len(r.outcomes) == 9
    assert {o.dnat for o in r.outcomes} == {f"10.42.4.{i}:8080" for i in range(201, 208)} | {
        "10.42.2.218:8080", "10.42.5.164:8080"}
    assert all(o.probability == pytest.approx(1 / 9, abs=1e-15) and o.masquerade and o.certain for o in r.outcomes)


def test_wild_001_k3s_no_endpoints_unallocated_ping_and_node_to_apiserver() -> None:
    noep = _wild(K3S, ["10.34.4.246"], "10.42.1.5", "10.43.21.102", dport=4317)
    assert _summary(noep) == [(1.0, "reject", None, False, "icmp-port-unreachable", True)]
    assert any("riset/otelcol-opentelemetry-collector:otlp" in n for n in noep.notes)
    ping = _wild(K3S, ["10.34.4.246"], "10.42.1.5", "10.43.0.10", "icmp")
    assert _summary(ping) == [(1.0, "reject", None, False, "icmp-port-unreachable", True)]
    assert _summary(_wild(K3S, ["10.34.4.246"], "10.42.1.5", "10.43.99.99")) == [
        (1.0, "drop", None, False, None, True)]
    # the node itself: nat-output -> service-2QRHZV4L (source 10.34.4.246 is outside 10.42/16: mark) ->
    # endpoint-MIBO4EMV -> dnat 10.34.4.142:6443; filter-output-post-dnat passes; masquerade.
    api = _wild(K3S, ["10.34.4.246"], "10.34.4.246", "10.43.0.1", dport=443, from_node=True)
    assert _summary(api) == [(1.0, "accept", "10.34.4.142:6443", True, None, True)]


def test_wild_002_nft_a_handles_and_endpoint_chains_cut_by_the_elision() -> None:
    # `nft -a`, cut at `....`: no base chains, no services chain, only one of four endpoint chains. kube-proxy's
    # skeleton is assumed; the three missing endpoint chains are named after their endpoints.
    name = "002-nft-a-handles-ingress-nginx-externalip.txt"
    rs = _load(WILD_NFT / name)
    svc = rs.chain("ip kube-proxy", "service-MJTK4JPM-home/http-server/tcp/mainhttp")
    assert svc is not None and [r.handle for r in svc.rules] == [136, 138]
    assert any(w.code == "elided" for w in rs.warnings) and any(w.code == "assumed-chains" for w in rs.warnings)
    r = _wild(name, ["10.128.0.25"], "10.244.0.5", "10.255.36.158", dport=8000)
    assert {o.dnat: o.probability for o in r.outcomes} == {
        "10.244.1.71:8000": 0.25, "10.244.1.72:8000": 0.25, "10.244.1.73:8000": 0.25, "10.244.1.76:8000": 0.25}
    assert not any(o.masquerade for o in r.outcomes)
    assert not any(o.certain for o in r.outcomes)  # through assumed chains
    named = next(o for o in r.outcomes if o.dnat == "10.244.1.72:8000")
    assert any("as its name says" in a for a in named.assumptions)


V136 = "003-v1.36-rpi-dnat-numgen-map-hairpin-trimmed.txt"


def test_wild_003_v136_dnat_numgen_map_and_hairpin_set() -> None:
    rs = _load(WILD_NFT / V136)
    svc = rs.chain("ip kube-proxy", "service-YVSKLJHA-kproxy-lab/backend-api/tcp/http")
    assert svc is not None and isinstance(svc.rules[0].stmts[1], Nat)
    # from endpoint 10.244.0.8: numgen picks .10 or .8 (1/2 each); the ct status dnat . hairpin-connections
    # rule masquerades only the connection that came back to its own source.
    r = _wild(V136, ["192.168.0.231"], "10.244.0.8", "10.100.192.23")
    assert [(o.dnat, o.probability, o.masquerade) for o in sorted(r.outcomes, key=lambda o: o.dnat or "")] == [
        ("10.244.0.10:9898", 0.5, False), ("10.244.0.8:9898", 0.5, True)]
    hp = next(o for o in r.outcomes if o.masquerade)
    assert hp.path[-1].chain == "masquerading" and hp.path[-1].rule == 2
    # from outside the pod CIDR: the services chain marks ClusterIP traffic, both endpoints masqueraded
    out = _wild(V136, ["192.168.0.231"], "192.168.0.50", "10.100.192.23")
    assert all(o.masquerade for o in out.outcomes) and len(out.outcomes) == 2
    # NodePorts: @service-nodeports is not in the trimmed dump: assumed no element, reported
    np = _wild(V136, ["192.168.0.231"], "192.168.0.50", "192.168.0.231", dport=30080)
    assert [(o.verdict, o.dnat, o.delivery, o.certain) for o in np.outcomes] == [("accept", None, "local", False)]
    assert any(w.code == "missing-set" for w in np.warnings)


def test_wild_004_iptables_nft_grep_and_redirect_wins_the_nat_core() -> None:
    # The user's own `inet traefik_wt0_redirect` (nat, dstnat - 1) redirects wt0 traffic to :32443. Whether the
    # packet came in on wt0 the dump cannot say (both cases); when it did, the redirect is the connection's
    # NAT and kube-proxy's nat chains never run for it: it stays on the node at port 32443.
    name = IPTABLES_NFT[0]
    rs = _load(WILD_NFT / name)
    assert rs.hidden == 18 and len(rs.orphans) == 33
    assert rs.orphans[0].table == "ip nat" and rs.orphans[-1].table == "ip filter"
    assert any(w.code == "hidden-rules" for w in rs.warnings)
    r = _wild(name, ["100.90.167.160"], "100.90.1.1", "100.90.167.160", dport=443)
    got = sorted((o.dnat or "", o.probability, o.delivery, o.certain) for o in r.outcomes)
    assert got == [("", 0.5, "local", False), ("100.90.167.160:32443", 0.5, "local", False)]
    on_wt0 = next(o for o in r.outcomes if o.dnat)
    assert on_wt0.assumptions == ["the packet goes in on interface wt0"]
    assert on_wt0.path[-1].action == "REDIRECT to 100.90.167.160:32443"


def test_wild_005_iptables_nft_chain_walk_nodeport() -> None:
    # `nft list chain nat X` for each hop of a NodePort: KUBE-SERVICES `fib daddr type local` -> KUBE-NODEPORTS
    # (31041) -> KUBE-EXT (mark or 0x4000) -> KUBE-SVC -> KUBE-SEP: dnat to 10.244.160.14:443; KUBE-POSTROUTING
    # masquerades. The base chains that jump to KUBE-SERVICES/KUBE-POSTROUTING are not pasted: assumed.
    name = IPTABLES_NFT[1]
    r = _wild(name, ["192.168.1.10"], "192.168.1.99", "192.168.1.10", dport=31041)
    assert [(o.dnat, o.probability, o.masquerade, o.certain) for o in r.outcomes] == [
        ("10.244.160.14:443", 1.0, True, False)]
    chains = [s.chain for s in r.outcomes[0].path]
    assert chains[:8] == ["PREROUTING", "KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-EXT-EDNDUDH2C75GIR6O",
                          "KUBE-MARK-MASQ", "KUBE-EXT-EDNDUDH2C75GIR6O", "KUBE-SVC-EDNDUDH2C75GIR6O",
                          "KUBE-SEP-4QEXFZIGX6GRNBQ6"]
    pod = _wild(name, ["192.168.1.10"], "10.244.1.5", "10.103.236.98", dport=443)
    assert [(o.dnat, o.masquerade) for o in pod.outcomes] == [("10.244.160.14:443", False)]
    missing = _wild(name, ["192.168.1.10"], "10.244.1.5", "10.96.0.10", "udp", 53)
    assert [(o.dnat, o.certain) for o in missing.outcomes] == [(None, False)]
    assert any(w.code == "missing-chain" and "KUBE-SVC-TCOU7JCQXEZGVUNU" in w.message for w in missing.warnings)


def test_wild_006_fragment_without_table() -> None:
    rs = _load(WILD_NFT / "006-etp-local-externalip-blackhole-fragment-2026.txt")
    t = rs.tables["ip kube-proxy"]
    assert t.guessed and t.chains["filter-prerouting-pre-dnat"].priority == -110
    stmts = t.chains["nodeport-endpoints-check"].rules[0].stmts
    assert isinstance(stmts[0], Match) and stmts[0].op == "!=" and isinstance(stmts[1], Vmap)


# -- parser details ------------------------------------------------------------------------------------

def test_priorities() -> None:
    assert priority_value("dstnat - 10") == -110
    assert priority_value("dstnat + 10") == -90
    assert priority_value("srcnat") == 100
    assert priority_value("-110") == -110
    assert priority_value("filter") == 0
    assert priority_value("mangle - 5") == -155
    assert priority_value("out", "bridge") == 100
    assert priority_value("bogus") is None


def test_command_syntax_and_block_syntax_agree() -> None:
    block = _text("""
table ip t {
    set s { type ipv4_addr ; flags interval ; elements = { 10.0.0.0/8, 192.168.1.1-192.168.1.9 } }
    chain pre { type nat hook prerouting priority dstnat ; policy accept ;
        ip saddr @s tcp dport { 80, 8000-8100 } dnat to 10.9.9.9:8080 comment "x y"
    }
}
""")
    cmds = _text("""
add table ip t
add chain ip t pre { type nat hook prerouting priority -100 ; policy accept ; }
add set ip t s { type ipv4_addr ; flags interval ; }
add element ip t s { 10.0.0.0/8, 192.168.1.1-192.168.1.9 }
add rule ip t pre ip saddr @s tcp dport { 80, 8000-8100 } dnat to 10.9.9.9:8080 comment "x y"
""")
    for rs in (block, cmds):
        rule = rs.tables["ip t"].chains["pre"].rules[0]
        assert rule.comment == "x y" and not rule.problems
        for src, dport, want in (("10.1.2.3", 8050, "10.9.9.9:8080"), ("192.168.1.5", 80, "10.9.9.9:8080"),
                                 ("192.168.1.10", 80, None), ("10.1.2.3", 8101, None)):
            r = trace(rs, Packet.make(src=src, dst="172.30.0.1", dport=dport), NODE)
            assert [o.dnat for o in r.outcomes] == [want], (src, dport)


def test_unknown_statements_are_kept_with_their_line_and_reported() -> None:
    rs = _text("table ip t {\n  chain c {\n    type filter hook forward priority 0; policy accept;\n"
               "    ip saddr 10.0.0.1 frobnicate 7 drop\n    xt target \"DNAT\"\n  }\n}\n")
    rules = rs.tables["ip t"].chains["c"].rules
    assert [r.line for r in rules] == [4, 5]
    assert isinstance(rules[0].stmts[1], Unknown) and rules[0].stmts[1].text == "frobnicate 7"
    assert isinstance(rules[1].stmts[0], Unknown) and rules[1].stmts[0].kind == "target"
    assert [(w.line, w.code) for w in rs.warnings] == [(4, "unknown-statement"), (5, "unknown-statement")]
    r = trace(rs, Packet.make(src="10.0.0.1", dst="172.30.0.1"), NODE)
    assert sorted((o.verdict, o.probability, o.certain) for o in r.outcomes) == [
        ("accept", 0.5, False), ("drop", 0.5, False)]


@pytest.mark.parametrize(("text", "line"), [
    ('table ip t {\n chain c {\n  ip saddr 1.2.3.4 comment "open\n }\n}\n', 3),
    ("table ip t {\n chain c {\n  type filter hook input priority sideways; policy accept;\n }\n}\n", 3),
    ("table ip t {\n chain c {\n  type filter hook input\n }\n}\n", 3),
    ('{"nftables": [{"table": {"family": "ip", "name": "t"}},', 1),
    ('{"something": []}', None),
    ("hello world\nthis is not a ruleset\n", 1),
])
def test_malformed_input_raises_input_error(text: str, line: int | None) -> None:
    with pytest.raises(InputError) as e:
        load_nft(text, "bad.nft")
    assert e.value.source == "bad.nft" and e.value.line == line


def test_cut_pastes_load_with_warnings() -> None:
    rs = _text("        chain services {\n          ip daddr . meta l4proto . th dport vmap @service-ips\n"
               "        }\n}\n")
    assert rs.tables["ip kube-proxy"].guessed
    assert {w.code for w in rs.warnings} >= {"fragment"}
    r = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.1", dport=80), NODE)
    assert [o.verdict for o in r.outcomes] == ["accept"]


def test_sniffer() -> None:
    assert looks_like_nft('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}')
    assert looks_like_nft("add table ip kube-proxy\nadd chain ip kube-proxy services\n")
    assert looks_like_nft("        chain x {\n          type filter hook input priority 0;\n        }\n")
    assert not looks_like_nft("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n")
    assert not looks_like_nft("Chain INPUT (policy ACCEPT)\ntarget     prot opt source               destination\n")


def test_sniffer_agrees_with_the_wild_index() -> None:
    need_corpus()
    index = {e["file"]: e["format"] for e in json.loads((WILD / "INDEX.json").read_text())}
    for p in sorted(WILD.glob("*/*.txt")):
        if p.name.endswith(".k8s.txt"):
            continue
        fmt = index[f"{p.parent.name}/{p.name}"]
        assert looks_like_nft(p.read_bytes().decode("utf-8", "replace")) == (fmt == "nft"), p.name


def test_json_elements_with_comments_intervals_and_dnat_maps() -> None:
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "k"}},
        {"chain": {"family": "ip", "table": "k", "name": "pre", "type": "nat", "hook": "prerouting", "prio": -100,
                   "policy": "accept"}},
        {"map": {"family": "ip", "table": "k", "name": "m", "type": ["ipv4_addr", "inet_service"], "map": "verdict",
                 "flags": ["interval"], "elem": [
                     [{"elem": {"val": {"concat": [{"prefix": {"addr": "172.30.0.0", "len": 24}},
                                                   {"range": [80, 90]}]}, "comment": "c"}}, {"goto": {"target": "s"}}]]}},
        {"chain": {"family": "ip", "table": "k", "name": "s"}},
        {"rule": {"family": "ip", "table": "k", "chain": "pre", "expr": [
            {"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}},
                                         {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@m"}}]}},
        {"rule": {"family": "ip", "table": "k", "chain": "s", "expr": [
            {"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}},
                                                       "data": {"set": [[0, {"concat": ["10.1.0.1", 8080]}],
                                                                        [1, {"concat": ["10.1.0.2", 8081]}]]}}}}}]}},
    ]}
    rs = load_nft(json.dumps(doc, indent=1), "j.json")
    assert rs.format == "nft-json" and not rs.problems()
    assert rs.tables["ip k"].chains["s"].rules[0].text == \
        "dnat ip to numgen random mod 2 map { 0 : 10.1.0.1 . 8080, 1 : 10.1.0.2 . 8081 }"
    assert rs.tables["ip k"].chains["pre"].rules[0].line is not None
    r = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.7", dport=85), NODE)
    assert {o.dnat: o.probability for o in r.outcomes} == {"10.1.0.1:8080": 0.5, "10.1.0.2:8081": 0.5}
    assert trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.7", dport=91), NODE).outcomes[0].dnat is None


# -- walker details ------------------------------------------------------------------------------------

def _walk(body: str, src: str = "10.0.0.2", dst: str = "172.30.0.1", proto: str = "tcp", dport: int | None = 80,
          node: NodeFacts = NODE, **kw: Any) -> TraceResult:
    return trace(_text(body), Packet.make(src=src, dst=dst, proto=proto, dport=dport, local_ips=node.local_ips,
                                          **kw), node)


def test_nat_chains_run_at_the_nat_core_and_the_first_translation_wins() -> None:
    # the same rulesets the kernel test below sends real packets through
    r = _walk(NAT_SEMANTICS["nat chain priority 50 still runs before a filter chain at 0"])
    assert [o.verdict for o in r.outcomes] == ["drop"]
    r = _walk(NAT_SEMANTICS["a redirect in one table wins over another table's dnat"], dst="192.168.0.2", dport=443)
    assert [(o.dnat, o.delivery) for o in r.outcomes] == [("192.168.0.2:32443", "local")]
    r = _walk(NAT_SEMANTICS["a nat chain that does not translate lets the next one"], dst="192.168.0.2", dport=443)
    assert [o.dnat for o in r.outcomes] == ["10.9.9.9:8443"]
    r = _walk(NAT_SEMANTICS["an accept in one table does not stop another table's drop"], dport=443)
    assert [o.verdict for o in r.outcomes] == ["drop"]


def test_goto_return_and_policies() -> None:
    body = """table inet f {
  chain fwd { type filter hook forward priority 0; policy drop;
    tcp dport 80 goto a
    tcp dport 81 jump a
    tcp dport 81 accept
  }
  chain a { ip saddr 10.0.0.2 return
    accept }
}"""
    assert [o.verdict for o in _walk(body, dport=80).outcomes] == ["drop"]  # goto a, return: policy of fwd
    assert [o.verdict for o in _walk(body, dport=81).outcomes] == ["accept"]
    assert [o.verdict for o in _walk(body, src="10.0.0.3", dport=80).outcomes] == ["accept"]
    last = _walk(body, dport=82).outcomes[0].path[-1]
    assert last.action == "policy DROP" and last.rule is None


def test_marks_ct_and_expressions_without_a_value() -> None:
    body = """table ip t {
  chain pre { type filter hook prerouting priority -150; policy accept;
    meta mark set 0x10 meta mark set meta mark | 0x4000
    ct state established,related accept
    udp dport 53 drop
  }
  chain fwd { type filter hook forward priority 0; policy accept;
    meta mark & 0x4010 != 0x4010 drop
    ct state new ct status dnat drop
    ct state new reject with tcp reset
  }
}"""
    r = _walk(body)
    assert [(o.verdict, o.reject_with, o.mark) for o in r.outcomes] == [("reject", "tcp-reset", 0x4010)]
    # `udp dport` of a TCP packet has no value: the rule does not match, whatever the operator
    icmp = _walk(body.replace("udp dport 53 drop", "udp dport != 53 drop"), proto="icmp", dport=None)
    assert [o.verdict for o in icmp.outcomes] == ["reject"]
    # the source port of a new connection is whatever the client picked: known when given, else both cases
    sport = body.replace("udp dport 53 drop", "tcp sport != 1 drop")
    assert [o.verdict for o in _walk(sport, sport=1).outcomes] == ["reject"]
    both = _walk(sport)
    assert sorted((o.verdict, o.probability, o.certain) for o in both.outcomes) == [
        ("drop", 0.5, False), ("reject", 0.5, False)]
    assert any(w.code == "unknown-match" for w in both.warnings)


def test_unknown_interface_is_one_consistent_unknown() -> None:
    body = """table ip t {
  chain fwd { type filter hook forward priority 0; policy accept;
    iifname "cali*" jump c
    drop
  }
  chain c { iifname "caliabc" drop
    iifname "eth0" drop
    accept }
}"""
    r = _walk(body)
    got = sorted((o.verdict, o.probability, tuple(o.assumptions)) for o in r.outcomes)
    assert got == [("accept", 0.25, ("the packet goes in on interface cali+", "not: the packet goes in on interface "
                                                                           "caliabc")),
                   ("drop", 0.75, ("not: the packet goes in on interface cali+", "the packet goes in on interface cali+",
                                   "the packet goes in on interface caliabc"))]
    known = trace(_text(body), Packet.make(src="10.0.0.2", dst="172.30.0.1", iif="calixyz"), NODE)
    assert [(o.verdict, o.certain) for o in known.outcomes] == [("accept", True)]


def test_iifname_has_no_value_at_output() -> None:
    body = """table ip t { chain out { type filter hook output priority 0; policy accept;
    iifname != "lo" drop
  } }"""
    r = _walk(body, src="192.168.0.2", dst="10.1.1.1", origin="local")
    assert [(o.verdict, o.certain) for o in r.outcomes] == [("accept", True)]


def test_ip6_tables_and_family_checks() -> None:
    body = """table ip6 k {
  map service-ips { type ipv6_addr . inet_proto . inet_service : verdict
    elements = { fd00::10 . tcp . 80 : goto svc } }
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr . meta l4proto . th dport vmap @service-ips }
  chain svc { numgen random mod 2 vmap { 0 : goto e1, 1 : goto e2 } }
  chain e1 { meta l4proto tcp dnat to [fd00::1]:8080 }
  chain e2 { meta l4proto tcp dnat ip6 to fd00::2 }
}"""
    rs = _text(body)
    r = trace(rs, Packet.make(src="fd00::99", dst="fd00::10", dport=80), NODE)
    assert {o.dnat: o.probability for o in r.outcomes} == {"[fd00::1]:8080": 0.5, "[fd00::2]:80": 0.5}
    with pytest.raises(InputError):
        trace(rs, Packet.make(src="10.0.0.1", dst="10.0.0.2"), NODE)


def test_missing_set_in_a_match_is_both_cases() -> None:
    body = """table ip t { chain fwd { type filter hook forward priority 0; policy accept;
    ip saddr @elsewhere drop } }"""
    r = _walk(body)
    assert sorted((o.verdict, o.probability, o.certain) for o in r.outcomes) == [
        ("accept", 0.5, False), ("drop", 0.5, False)]


AFFINITY = """table ip kube-proxy {
  set affinity-A { type ipv4_addr; flags dynamic,timeout; timeout 3h; }
  set affinity-B { type ipv4_addr; flags dynamic,timeout; timeout 3h; }
  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict
    elements = { 172.30.0.60 . tcp . 80 : goto svc } }
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept;
    ip daddr . meta l4proto . th dport vmap @service-ips
  }
  chain svc {
    ip saddr @affinity-A goto ep-A
    ip saddr @affinity-B goto ep-B
    numgen random mod 2 vmap { 0 : goto ep-A, 1 : goto ep-B }
  }
  chain ep-A { update @affinity-A { ip saddr }
    meta l4proto tcp dnat to 10.180.0.1:80
  }
  chain ep-B { update @affinity-B { ip saddr }
    meta l4proto tcp dnat to 10.180.0.2:80
  }
}
"""


def test_affinity_new_and_returning_clients() -> None:
    rs = _text(AFFINITY)
    assert rs.tables["ip kube-proxy"].sets["affinity-A"].dynamic
    new = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.60", dport=80), NODE)
    assert {o.dnat: o.probability for o in new.outcomes} == {"10.180.0.1:80": 0.5, "10.180.0.2:80": 0.5}
    node = NodeFacts.make(local_ips=["192.168.0.2"], returning_client=True)
    back = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.60", dport=80), node)
    assert {o.dnat: o.probability for o in back.outcomes} == {"10.180.0.1:80": 0.5, "10.180.0.2:80": 0.5}
    for o in back.outcomes:  # taken through the affinity rule, not numgen
        svc_steps = [s for s in o.path if s.chain == "svc"]
        assert len(svc_steps) == 1 and svc_steps[0].text.startswith("ip saddr @affinity-")
    stmt = rs.tables["ip kube-proxy"].chains["ep-A"].rules[0].stmts[0]
    assert isinstance(stmt, Dynset) and stmt.set == "affinity-A"


def test_meta_random_is_iptables_statistic() -> None:
    # what `nft list ruleset` shows for iptables-nft's `-m statistic --mode random --probability 0.33333333349`
    body = """table ip nat {
  chain PREROUTING { type nat hook prerouting priority dstnat; policy accept;
    ip daddr 172.30.0.1 tcp dport 80 counter packets 0 bytes 0 jump KUBE-SVC-X
  }
  chain KUBE-SVC-X {
    meta random & 2147483647 < 715827883 counter packets 0 bytes 0 jump KUBE-SEP-A
    meta random & 2147483647 < 1073741824 counter packets 0 bytes 0 jump KUBE-SEP-B
    counter packets 0 bytes 0 jump KUBE-SEP-C
  }
  chain KUBE-SEP-A { meta l4proto tcp counter packets 0 bytes 0 dnat to 10.1.0.1:80
  }
  chain KUBE-SEP-B { meta l4proto tcp counter packets 0 bytes 0 dnat to 10.1.0.2:80
  }
  chain KUBE-SEP-C { meta l4proto tcp counter packets 0 bytes 0 dnat to 10.1.0.3:80
  }
}"""
    r = _walk(body)
    p1 = kernel_probability(1 / 3)
    assert {o.dnat: o.probability for o in r.outcomes} == pytest.approx(
        {"10.1.0.1:80": p1, "10.1.0.2:80": (1 - p1) / 2, "10.1.0.3:80": (1 - p1) / 2}, abs=1e-15)
    step = next(s for s in next(o for o in r.outcomes if o.dnat == "10.1.0.1:80").path if s.branch is not None)
    assert step.probability == "0.33333333349" and step.chain == "KUBE-SVC-X" and step.rule == 1
    assert all(o.certain for o in r.outcomes)


def test_iptables_nft_ct_status_rendering() -> None:
    # nft shows `-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT` as `ct status dnat`: kube-proxy's localnet
    # rule is read as what the kernel runs; an unexplained `ct status` in an iptables-nft table is both ways.
    body = """table ip filter {
  chain INPUT { type filter hook input priority filter; policy accept;
    counter packets 0 bytes 0 jump KUBE-FIREWALL
    ct status dnat counter packets 0 bytes 0 drop
  }
  chain KUBE-FIREWALL {
    ip saddr != 127.0.0.0/8 ip daddr 127.0.0.0/8 ct status dnat counter packets 0 bytes 0 drop
  }
}"""
    node = NodeFacts.make(local_ips=["192.168.0.2"], route_localnet=True)
    r = _walk(body, src="10.0.0.2", dst="127.0.0.1", node=node)
    assert [o.verdict for o in r.outcomes] == ["drop"]  # not DNATed, so `! --ctstate ...DNAT` matches
    assert r.outcomes[0].path[-1].chain == "KUBE-FIREWALL"
    r = _walk(body, src="10.0.0.2", dst="192.168.0.2", node=node)
    assert sorted((o.verdict, o.probability, o.certain) for o in r.outcomes) == [
        ("accept", 0.5, False), ("drop", 0.5, False)]
    assert any(w.code == "xt" for w in r.warnings)
    assert trace(_text(body), Packet.make(src="10.0.0.2", dst="127.0.0.1"), NODE).outcomes[0].verdict == "drop"


def test_ct_state_negation_and_lists() -> None:
    body = """table inet t { chain fwd { type filter hook forward priority 0; policy accept;
    ct state ! new drop
    ct state != established,related accept
  }
}"""
    r = _walk(body)
    assert [(o.verdict, o.path[-1].rule) for o in r.outcomes] == [("accept", 2)]


def test_json_iptables_nft_rules_keep_their_xt_statements() -> None:
    # `nft -j` does not translate iptables-nft's xtables parts: comments match, MASQUERADE is known, a DNAT's
    # address is lost (uncertain).
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "nat"}},
        {"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "type": "nat", "hook": "prerouting",
                   "prio": -100, "policy": "accept"}},
        {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "type": "nat", "hook": "postrouting",
                   "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "nat", "chain": "PREROUTING", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
            {"xt": {"type": "match", "name": "comment"}}, {"counter": {"packets": 0, "bytes": 0}},
            {"xt": {"type": "target", "name": "DNAT"}}]}},
        {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING", "expr": [
            {"xt": {"type": "target", "name": "MASQUERADE"}}]}},
    ]}
    rs = load_nft(json.dumps(doc), "ipt.json")
    assert [p for _, p in rs.problems()] == ["not understood: 'xt target \"DNAT\"'",
                                             "not understood: 'xt target \"MASQUERADE\"'"]
    r = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.1"), NODE)
    [o] = r.outcomes
    assert (o.dnat, o.masquerade, o.certain) == ("(unknown: iptables-nft DNAT)", True, False)


def test_big_dumps_parse_rules_as_the_walk_reaches_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import svctrace.dataplane.nftables.text as text_mod

    monkeypatch.setattr(text_mod, "EAGER_RULES", 2)
    body = """table ip t {
  chain fwd { type filter hook forward priority 0; policy accept;
    tcp dport 80 jump a
    tcp dport 81 jump b
  }
  chain a { ip saddr 10.0.0.2 frobnicate drop
  }
  chain b { frobnicate2 accept
  }
}"""
    rs = _text(body)
    assert rs.lazy and not rs.warnings
    b = rs.tables["ip t"].chains["b"].rules[0]
    r = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.1", dport=80), NODE)
    assert [w.line for w in r.warnings if w.code == "unknown-statement"] == [6]
    assert not b.parsed  # chain b was never reached
    assert sorted((o.verdict, o.probability) for o in r.outcomes) == [("accept", 0.5), ("drop", 0.5)]


def test_a_big_text_reads_the_same_as_it_streams() -> None:
    # the text reader tokenizes a line at a time and drops what it has read; a rule that is its whole line is
    # kept as that line. Rules sharing a line, spanning lines or in command syntax read as before, far past the
    # point where the reader first drops tokens; what the lexer warns comes first, and its errors win.
    filler = "\n".join(f"    ip daddr 10.1.{k // 250}.{k % 250} tcp dport {{ 80, 443 }} accept" for k in range(3000))
    body = f"""table ip t {{
  chain fwd {{ type filter hook forward priority 0; policy accept;
{filler}
    ip saddr 10.0.0.9 drop; ip saddr 10.0.0.8 counter drop
    ip saddr {{ 10.0.0.7,
                10.0.0.6 }} drop
    ip saddr 10.0.0.5 frobnicate drop  # handle 7
  }}
}}
...
add rule ip t fwd ip saddr 10.0.0.4 drop
"""
    rs = _text(body)
    rules = rs.tables["ip t"].chains["fwd"].rules
    assert len(rules) == 3005
    assert [r.text for r in rules[3000:]] == [
        "ip saddr 10.0.0.9 drop", "ip saddr 10.0.0.8 counter drop", "ip saddr { 10.0.0.7, 10.0.0.6 } drop",
        "ip saddr 10.0.0.5 frobnicate drop", "ip saddr 10.0.0.4 drop"]
    assert (rules[3003].handle, rules[3003].line) == (7, 3006)
    assert rules[2999].text == "ip daddr 10.1.11.249 tcp dport { 80, 443 } accept" and rules[2999].line == 3002
    assert [w.code for w in rs.warnings][:1] == ["elided"]
    for src, dport, verdict in (("10.0.0.6", 22, "drop"), ("10.0.0.4", 22, "drop"), ("10.0.0.3", 443, "accept")):
        r = trace(rs, Packet.make(src=src, dst="10.1.11.249", dport=dport), NODE)
        assert {o.verdict for o in r.outcomes} == {verdict}
    with pytest.raises(InputError, match="unterminated quoted string"):
        _text(body.replace("table ip t {", "table ip t {\n  chain bad { type filter hook input; }", 1) + 'add rule ip t fwd comment "x\n')


def test_endpoint_chains_missing_from_a_paste_are_named_after_their_endpoint() -> None:
    # kube-proxy names endpoint chains `endpoint-HASH-ns/svc/proto/port__IP/PORT`, IPv6 colons written as dots
    body = """table ip6 kube-proxy {
  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr fd00::10 tcp dport 80 goto service-AAAAAAAA-ns/svc/tcp/http
  }
  chain service-AAAAAAAA-ns/svc/tcp/http {
    numgen random mod 2 vmap { 0 : goto endpoint-BBBBBBBB-ns/svc/tcp/http__fd00.1..5/8080, 1 : goto endpoint-CCCCCCCC-ns/svc/tcp/http__fd00.1..6/8080 }
  }
}"""
    r = trace(_text(body), Packet.make(src="fd00::99", dst="fd00::10", dport=80), NODE)
    assert {o.dnat: o.probability for o in r.outcomes} == {"[fd00:1::5]:8080": 0.5, "[fd00:1::6]:8080": 0.5}
    assert not any(o.certain for o in r.outcomes)
    assert any(w.code == "missing-chain" for w in r.warnings)


# -- property ------------------------------------------------------------------------------------------

def test_numgen_values_without_an_element_end_the_rule_together() -> None:
    body = """table ip k {
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    jhash ip saddr mod 65536 vmap { 0 : goto a, 1 : goto b }
    numgen random mod 4 offset 10 vmap { 10 : goto a, 12 : goto b }
  }
  chain a { meta l4proto tcp dnat to 10.1.0.1:80
  }
  chain b { meta l4proto tcp dnat to 10.1.0.2:80
  }
}"""
    r = _walk(body)
    a = 1 / 65536 + (65534 / 65536) / 4
    assert {o.dnat: o.probability for o in r.outcomes} == pytest.approx(
        {"10.1.0.1:80": a, "10.1.0.2:80": a, None: (65534 / 65536) / 2}, abs=1e-15)
    assert not any(o.certain for o in r.outcomes)  # jhash buckets are taken as even


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=5), st.booleans())
def test_numgen_splits_into_equal_shares(n: int, offset: int, dnat_map: bool) -> None:
    keys = list(range(offset, offset + n))
    if dnat_map:
        elements = ", ".join(f"{k} : 10.1.{i // 200}.{i % 200 + 1} . 80" for i, k in enumerate(keys))
        svc = f"meta l4proto tcp dnat ip to numgen random mod {n} offset {offset} map {{ {elements} }}"
        eps = ""
    else:
        elements = ", ".join(f"{k} : goto ep{i}" for i, k in enumerate(keys))
        svc = f"numgen random mod {n} offset {offset} vmap {{ {elements} }}"
        eps = "\n".join(f"  chain ep{i} {{ meta l4proto tcp dnat to 10.1.{i // 200}.{i % 200 + 1}:80 }}"
                        for i in range(n))
    body = (f"table ip k {{\n  chain pre {{ type nat hook prerouting priority dstnat; policy accept; jump svc }}\n"
            f"  chain svc {{ {svc} }}\n{eps}\n}}\n")
    r = trace(_text(body), Packet.make(src="10.0.0.2", dst="172.30.0.1", dport=80), NODE)
    assert len(r.outcomes) == n
    assert all(o.probability == 1 / n and o.certain for o in r.outcomes)
    assert sum(o.probability for o in r.outcomes) == pytest.approx(1.0, abs=1e-12)


# -- kernel agreement ----------------------------------------------------------------------------------

SAMPLES = 600
_OK, _WHY = kernel_available()
kernel = pytest.mark.skipif(not _OK, reason=_WHY or "no kernel lab")

NAT_SEMANTICS = {
    "nat chain priority 50 still runs before a filter chain at 0": """
table ip f {
  chain c { type filter hook prerouting priority 0; policy accept; ip daddr 10.9.9.9 drop; }
}
table ip n {
  chain c { type nat hook prerouting priority 50; policy accept; tcp dport 80 dnat to 10.9.9.9; }
}
""",
    "a redirect in one table wins over another table's dnat": """
table inet r {
  chain c { type nat hook prerouting priority dstnat - 1; policy accept; tcp dport 443 redirect to :32443; }
}
table ip k {
  chain c { type nat hook prerouting priority dstnat; policy accept; tcp dport 443 dnat to 10.9.9.9:8443; }
}
""",
    "a nat chain that does not translate lets the next one": """
table inet r {
  chain c { type nat hook prerouting priority dstnat - 1; policy accept; tcp dport 444 redirect to :32443; }
}
table ip k {
  chain c { type nat hook prerouting priority dstnat; policy accept; tcp dport 443 dnat to 10.9.9.9:8443; }
}
""",
    "an accept in one table does not stop another table's drop": """
table ip a {
  chain c { type filter hook forward priority -5; policy accept; tcp dport 443 accept; }
}
table ip b {
  chain c { type filter hook forward priority 0; policy accept; tcp dport 443 drop; }
}
""",
}


def declare_first(text: str) -> str:
    """kube-proxy's unit-test dump is sorted, so rules refer to chains declared further down; one `nft -f`
    batch refuses that. The same commands with tables, sets and chains first."""
    def rank(line: str) -> int:
        if line.startswith("add table"):
            return 0
        if line.startswith(("add set", "add map")):
            return 1
        return 2 if line.startswith("add chain") else 3
    return "\n".join(sorted(text.splitlines(), key=rank)) + "\n"


def numeric_priorities(text: str) -> str:
    """nft 1.0.6 accepts `priority dstnat` only at the hooks the name is meant for (the oracle's
    `type filter hook output priority dstnat - 10` is refused there); the same ruleset with numbers."""
    def repl(m: re.Match[str]) -> str:
        value = priority_value(m.group(1))
        return m.group(0) if value is None else f"priority {value}"
    return re.sub(r"priority\s+([a-z]+(?:\s*[+-]\s*\d+)?)", repl, text)


def _dynamic_sets(rs: NftRuleset) -> list[tuple[str, str]]:
    return [(t.key, s.name) for t in rs.tables.values() for s in t.sets.values() if s.dynamic]


def _flush_dynamic(lab: KernelLab, rs: NftRuleset) -> None:
    cmds = "; ".join(f"flush set {table} {name}" for table, name in _dynamic_sets(rs))
    if cmds:
        lab.exec_node("nft", cmds)


def _probe(lab: KernelLab, rs: NftRuleset, result: TraceResult, *, src: str | None, from_node: bool,
           samples: int) -> KernelResult:
    """Send the probe; with session affinity on the path every sample is a new client (sets flushed)."""
    pkt = result.packet
    dport = pkt.dport if pkt.has_ports else None
    _flush_dynamic(lab, rs)
    affinity = any(s.action.startswith("update @") for o in result.outcomes for s in o.path)
    if not affinity or len(result.outcomes) == 1:
        return lab.probe(dst=str(pkt.dst), proto=pkt.proto, dport=dport, src=src, from_node=from_node,
                         samples=samples)
    total = KernelResult(samples=0)
    for i in range(min(samples, 200)):
        _flush_dynamic(lab, rs)
        k = lab.probe(dst=str(pkt.dst), proto=pkt.proto, dport=dport, src=src, from_node=from_node, samples=1,
                      sport_base=21000 + i)
        total.samples += 1
        total.verdicts.update(k.verdicts)
        total.destinations.update(k.destinations)
        total.masquerade_destinations.update(k.masquerade_destinations)
        total.reject_kinds.update(k.reject_kinds)
    return total


@pytest.fixture(scope="module")
def overall_lab() -> Any:
    need_corpus()
    ips = [i for i in _overall_meta()["node_ips"] if ipaddress.ip_address(i).version == 4]
    lab = KernelLab(ips, route_localnet=True)
    lab.open()
    lab.load_nft(declare_first((OVERALL / "rules.nft-input").read_text()))
    yield lab
    lab.close()


@pytest.mark.kernel
@kernel
@pytest.mark.parametrize("flow", _flows(), ids=[f["name"] for f in _flows()])
def test_overall_flow_agrees_with_the_kernel(overall_lab: KernelLab, flow: dict[str, Any]) -> None:
    node = _overall_node()
    rs = _load(OVERALL / "rules.nft-input")
    result = trace(rs, _pkt(node, flow["src"], flow["dst"], flow["proto"], flow["dport"], flow["from_node"]), node)
    several = len(result.outcomes) > 1
    k = _probe(overall_lab, rs, result, src=flow["src"], from_node=flow["from_node"],
               samples=SAMPLES if several else 3)
    compare(result, k, flow["name"])


@pytest.fixture(scope="module")
def oracle_lab() -> Any:
    need_corpus()
    lab = KernelLab(["192.168.0.2"], route_localnet=True)
    lab.open()
    lab.load_nft(numeric_priorities((ORACLE / "kube-proxy-basic.nft").read_text()))
    yield lab
    lab.close()


@pytest.mark.kernel
@kernel
@pytest.mark.parametrize("probe", _probes(), ids=[p["label"] for p in _probes()])
def test_oracle_nft_probe_agrees_with_the_kernel(oracle_lab: KernelLab, probe: dict[str, Any]) -> None:
    node = NodeFacts.make(local_ips=["192.168.0.2"])
    rs = _load(ORACLE / "kube-proxy-basic.nft")
    from_node = bool(probe.get("from_node"))
    src = probe.get("src") or "192.168.0.2"
    result = trace(rs, _pkt(node, src, probe["dst"], probe["proto"], probe.get("dport"), from_node), node)
    k = _probe(oracle_lab, rs, result, src=None if from_node else src, from_node=from_node,
               samples=min(probe.get("samples", 20), SAMPLES) if len(result.outcomes) > 1 else 3)
    compare(result, k, probe["label"])


@pytest.mark.kernel
@kernel
@pytest.mark.parametrize("label", list(NAT_SEMANTICS))
def test_hook_and_nat_core_semantics_agree_with_the_kernel(label: str) -> None:
    text = NAT_SEMANTICS[label]
    dst, dport = ("192.168.0.2", 443) if "redirect" in label or "translate" in label else ("172.30.0.1", 80)
    if "accept" in label:
        dport = 443
    rs = load_nft(text, label)
    result = trace(rs, Packet.make(src="10.0.0.2", dst=dst, dport=dport, local_ips=NODE.local_ips), NODE)
    with KernelLab(["192.168.0.2"], route_localnet=True) as lab:
        lab.load_nft(text)
        k = lab.probe(dst=dst, proto="tcp", dport=dport, src="10.0.0.2", samples=3)
    compare(result, k, label)


@pytest.mark.kernel
@kernel
def test_affinity_agrees_with_the_kernel() -> None:
    rs = _text(AFFINITY)
    new = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.60", dport=80), NODE)
    returning = trace(rs, Packet.make(src="10.0.0.2", dst="172.30.0.60", dport=80),
                      NodeFacts.make(local_ips=["192.168.0.2"], returning_client=True))
    with KernelLab(["192.168.0.2"], route_localnet=True) as lab:
        lab.load_nft(AFFINITY)
        # a new client every sample (affinity sets flushed): numgen's 1/2 each
        compare(new, _probe(lab, rs, new, src="10.0.0.2", from_node=False, samples=24), "affinity, new clients")
        # one client, sets kept: every connection follows the first one, which is one of the predicted choices
        _flush_dynamic(lab, rs)
        k = lab.probe(dst="172.30.0.60", proto="tcp", dport=80, src="10.0.0.2", samples=20, sequential=True)
    assert len(k.destinations) == 1 and set(k.destinations) <= {o.dnat for o in returning.outcomes}


@pytest.fixture(scope="module")
def iptables_nft_renderings() -> Any:
    """Each kube-proxy iptables corpus case restored with iptables-nft, then listed with `nft list ruleset`."""
    need_corpus()
    out: dict[str, str] = {}
    with KernelLab(["192.168.0.2"], route_localnet=True) as lab:
        for case in kube_proxy_cases():
            lab.exec_node("nft", "flush", "ruleset")
            lab.load_nft("")  # the lab's own conntrack table back
            lab.load((case / "rules.restore-input").read_text())
            text = lab.exec_node("nft", "list", "ruleset")
            if "table ip nat" not in text:
                pytest.skip("iptables-restore here is not the nf_tables backend")
            out[case.name] = text
    return out


@pytest.mark.kernel
@kernel
def test_iptables_nft_renderings_walk_like_iptables_save(iptables_nft_renderings: dict[str, str]) -> None:
    """nft's text view of iptables-nft rules (translated matches, `meta random`, `xt match recent`, no comments)
    gives the iptables walker's answer for every flow of the corpus, new and returning clients."""
    assert len(iptables_nft_renderings) == 19
    walks = 0
    for case in kube_proxy_cases():
        meta = json.loads((case / "meta.json").read_text())
        rs = load_nft(iptables_nft_renderings[case.name], case.name)
        assert rs.tables["ip nat"].looks_iptables_nft()  # the warning lines went to stderr
        irs = load_ruleset((case / "rules.iptables-save").read_text(), "rules.iptables-save")
        for flow in json.loads((case / "flows.json").read_text()):
            proto = flow["protocol"].lower()
            for returning in (False, True):
                node = NodeFacts.make(local_ips=meta["local_ips"], returning_client=returning)
                pkt = Packet.make(src=flow["sourceIP"], dst=flow["destIP"], proto=proto,
                                  dport=flow["destPort"] if proto != "icmp" else None, local_ips=node.local_ips)
                got = _summary(trace(rs, pkt, node))
                assert got == _summary(iptables_trace(irs, pkt, node)), (case.name, flow["name"], returning)
                walks += 1
    assert walks == 124


# -- set and map index: the indexed answer equals the walk of every element -------------------------------------------

def _naive_get(idx: Any, vals: tuple[Any, ...]) -> Any:
    """SetIndex.get as the walk of every element: the first exact one equal to the key, else the first that holds it."""
    from svctrace.dataplane.nftables.values import BadValue, matcher

    parsed = []
    for el in idx._elements:
        comps = idx.components(el)
        try:
            if len(idx.types) == 1 and len(comps) > 1:
                continue
            parsed.append((tuple(matcher(idx.type(k), c) for k, c in enumerate(comps)), el))
        except BadValue:
            continue
    for ms, el in parsed:
        if all(m.exact for m in ms) and tuple(m.lo for m in ms) == vals:
            return el
    for ms, el in parsed:
        if not all(m.exact for m in ms) and all(m.hit(v) for m, v in zip(ms, vals, strict=False)):
            return el
    return None


def test_set_index_answers_as_the_walk_of_every_element() -> None:
    from svctrace.dataplane.nftables.setindex import SetIndex

    rs = _text("""table ip t {
        set mixed {
            type ipv4_addr . inet_proto . inet_service
            flags interval
            elements = { 10.0.0.1 . tcp . 80, 10.0.0.1 . 6 . 0x50, 010.0.0.2 . udp . 53, 10.0.0.3 . tcp . http,
                         10.0.0.0/24 . tcp . 8000-8100, 10.0.0.4-10.0.0.9 . udp . 53, 10.0.0.3 . tcp . 443,
                         10.0.0.5 . 17 . domain, 10.0.1.1 . sctp . 0 }
        }
        map m {
            type inet_proto . inet_service : verdict
            elements = { tcp . 80 : accept, 6 . 81 : drop, udp . 1-1024 : accept, icmp . 0 : drop }
        }
        chain c { ip daddr . meta l4proto . th dport @mixed accept }
    }""")
    t = rs.tables["ip t"]
    addrs = [ipaddress.ip_address(f"10.0.{a}.{b}") for a in (0, 1) for b in range(0, 11)]
    for name in ("mixed", "m"):
        s = t.sets[name]
        idx = SetIndex(s.elements, s.key_types, lambda el, ex: None)
        keys: list[tuple[Any, ...]] = (
            [(a, p, port) for a in addrs for p in (6, 17, 132) for port in (0, 53, 80, 81, 443, 8050, 9000)]
            if name == "mixed" else [(p, port) for p in (1, 6, 17) for port in (0, 53, 80, 81, 2000)])
        found = set()
        for key in keys:
            el = idx.get(key)
            assert el is _naive_get(idx, key), (name, key)
            found.add(None if el is None else id(el))
        assert len(found) >= (7 if name == "mixed" else 4)  # plain, hex, named, prefix and range elements are hit


@pytest.mark.slow
def test_generated_maps_indexed_answer_as_the_walk_of_every_element() -> None:
    import random

    from svctrace.dataplane.nftables.setindex import SetIndex
    from svctrace.kubeproxy.simulate import simulate

    objs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                                   "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]}}]
    for i in range(80):
        ports: list[dict[str, Any]] = [{"name": "a", "port": 80 + i % 3, "targetPort": 8080,
                                        "protocol": "UDP" if i % 6 == 1 else "TCP"}]
        spec: dict[str, Any] = {"clusterIP": f"10.96.0.{i + 10}", "ports": ports,
                                "type": "NodePort" if i % 3 == 0 else "ClusterIP"}
        if i % 3 == 0:
            ports[0]["nodePort"] = 30000 + i
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "ns"},
                     "spec": spec})
        objs.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                     "metadata": {"name": f"s{i}-x", "namespace": "ns",
                                  "labels": {"kubernetes.io/service-name": f"s{i}"}},
                     "endpoints": [] if i % 10 == 7 else [{"addresses": [f"10.244.0.{i + 2}"],
                                                           "conditions": {"ready": True}}],
                     "ports": [{"name": "a", "port": 8080, "protocol": ports[0]["protocol"]}]})
    sim = simulate(objs, nodes=["n1"], mode="nftables", kube_version="1.31")
    for fname in ("nft", "nft.json"):
        rs = load_nft(sim.files["n1"][fname], fname)
        t = rs.tables["ip kube-proxy"]
        rng = random.Random(1)
        for s in t.sets.values():
            idx = SetIndex(s.elements, s.key_types, lambda el, ex: None)
            for _ in range(300):
                key = tuple(ipaddress.ip_address(f"10.96.0.{rng.randrange(100)}") if typ == "ipv4_addr"
                            else rng.choice([6, 17, 132]) if typ == "inet_proto"
                            else rng.choice([80, 81, 82, 83, *range(30000, 30080, 3)]) for typ in idx.types)
                assert idx.get(key) is _naive_get(idx, key), (s.name, key)
        # whole walks: every Service's first question answers as with every lookup walking every element
        answers = [trace(rs, _pkt(NODE, "10.244.0.99", f"10.96.0.{i + 10}", "udp" if i % 6 == 1 else "tcp",
                                  80 + i % 3), NODE).to_json() for i in range(0, 80, 3)]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SetIndex, "get", _naive_get)
            fresh = load_nft(sim.files["n1"][fname], fname)
            assert [trace(fresh, _pkt(NODE, "10.244.0.99", f"10.96.0.{i + 10}", "udp" if i % 6 == 1 else "tcp",
                                      80 + i % 3), NODE).to_json() for i in range(0, 80, 3)] == answers


def test_equal_priority_base_chains_run_the_one_listed_last_first() -> None:
    # nf_hook_entries_grow puts a new hook before existing ones of the same priority: the chain created (listed)
    # last runs first. The kernel lab agrees (tests/test_conformance.py, FORWARD policy drop beside kube-proxy).
    first = "table ip a {\n chain f {\n  type filter hook forward priority 0; policy accept;\n  reject\n }\n}\n"
    last = "table ip b {\n chain f {\n  type filter hook forward priority 0; policy drop;\n }\n}\n"
    node = NodeFacts.make(local_ips=["192.168.0.2"])
    pkt = Packet.make(src="10.0.0.9", dst="10.0.0.10", proto="tcp", dport=80, local_ips=node.local_ips)
    r = trace(load_nft(first + last, "t"), pkt, node)
    assert [o.verdict for o in r.outcomes] == ["drop"]
    assert any(w.code == "priority-tie" and "ip b f before ip a f" in w.message for w in r.warnings)
    r2 = trace(load_nft(last + first, "t"), pkt, node)
    assert [o.verdict for o in r2.outcomes] == ["reject"]
