"""kubeproxy/recover.py: Services and their rules from a node's parsed dataplane, without the cluster's objects."""

from __future__ import annotations

from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.ipvs import load_ipvs
from svctrace.dataplane.nftables import load_nft
from svctrace.kubeproxy.names import ext_chain, nft_chain_owner, svc_chain
from svctrace.kubeproxy.recover import (
    iptables_service_rules,
    ipvs_service_lines,
    nft_chain_label,
    nft_service_chain,
    nft_service_lines,
    per_service_chain,
    recover_iptables,
)
from svctrace.model.snapshot import load_snapshot

SNAP = load_snapshot("demo")


def _rules(node: str):  # type: ignore[no-untyped-def]
    nf = SNAP.nodes[node]
    return nf.parsed("iptables-save", load_ruleset)


def test_services_from_an_iptables_dump_agree_with_the_objects() -> None:
    got = recover_iptables(_rules("node01"))
    assert got.cluster_cidr == "10.244.0.0/16"
    cluster = SNAP.cluster.services
    # every Service kube-proxy programs (not headless, not ExternalName) is found, with its addresses and ports
    programmed = {k for k, s in cluster.items() if s.type != "ExternalName" and s.cluster_ips != ["None"]}
    assert set(got.services) == programmed
    for key, rs in got.services.items():
        svc = cluster[key]
        assert {(p.name, p.port, p.proto) for p in rs.ports} == {(p.name, p.port, p.protocol.lower())
                                                                 for p in svc.ports}
        for p in rs.ports:
            assert p.cluster_ip in svc.cluster_ips
            want = next(sp for sp in svc.ports if sp.name == p.name and sp.protocol.lower() == p.proto)
            assert p.node_port == want.node_port
            assert p.lb_ips == [ip for ip in svc.lb_ips]
            if p.chain is not None:
                assert p.chain == svc_chain(svc.namespace, svc.name, p.name, p.proto)
    web = got.services["default/web"].ports[0]
    assert web.endpoints == 3 and not web.no_endpoints
    assert [p.no_endpoints for p in got.services["default/payment"].ports] == [True]


def test_a_services_rules_follow_the_jump_graph() -> None:
    rs = _rules("node01")
    rules = iptables_service_rules(rs, "default/frontend", ("filter", "nat"))
    chains = {(r.table, r.chain) for r in rules}
    # the comment-named rules, and every rule of each per-Service chain reached from them
    assert ("nat", svc_chain("default", "frontend", "http", "tcp")) in chains
    assert ("nat", ext_chain("default", "frontend", "http", "tcp")) in chains
    assert any(c.startswith("KUBE-SEP-") for _, c in chains)
    for table, chain in chains:
        if per_service_chain(chain):
            assert len([r for r in rules if (r.table, r.chain) == (table, chain)]) == len(rs.chain(table, chain))
            # reached by a jump from a rule of the Service
            assert any(r.target is not None and r.target.name == chain for r in rules) or any(
                r.chain == chain and r.comment and r.comment.startswith("default/frontend") for r in rules)
    # tables in the order asked, each chain's rules in order
    tables = [r.table for r in rules]
    assert tables == sorted(tables, key=("filter", "nat").index)
    assert not iptables_service_rules(rs, "default/front", ("filter", "nat"))  # a prefix of a name is not it


def test_nft_service_chain_and_lines() -> None:
    nf = SNAP.nodes["node04"]
    rs = nf.parsed("nft.json", load_nft)
    tables = list(rs.tables)
    got = nft_service_chain(rs, tables, "default", "web", "TCP", "http")
    assert got is not None and nft_chain_owner(got[1]) is not None
    assert nft_chain_label(got[1]) == "service default/web/http"
    lines = nft_service_lines(rs, "default/web", tables)
    assert any(line.startswith(f"add rule {got[0]} {got[1]} ") for line in lines)
    assert any(line.startswith("add element ") and got[1] in line for line in lines)  # the map leads there
    assert all("default/web-nodeport" not in line for line in lines)


def test_ipvs_share_of_a_service() -> None:
    nf = SNAP.nodes["node03"]
    table = nf.parsed("ipvsadm", load_ipvs)
    sets, _ = nf.parsed("ipset", parse_ipset)
    svc = SNAP.cluster.services["default/web-nodeport"]
    lines = ipvs_service_lines(table, sets, svc)
    assert any(line.startswith("ipvs ") and "10.96.10.11:80" in line for line in lines)
    assert any(line.startswith("ipvs ") and ":30080" in line for line in lines)  # its node port's virtual servers
    assert any(line.startswith("ipset  add KUBE-CLUSTER-IP 10.96.10.11,tcp:80") for line in lines)
    assert not any("10.96.10.10" in line for line in lines)  # default/web is another Service


def test_ipset_listing_keeps_member_lines() -> None:
    text = "create S hash:ip,port family inet\nadd S 10.0.0.1,tcp:80\n\nadd S 10.0.0.2,udp:53\nadd T 1.2.3.4\n"
    sets, warns = parse_ipset(text)
    s = sets["S"]
    assert s.typed and s.line == 1 and s.members == [("10.0.0.1", "tcp:80"), ("10.0.0.2", "udp:53")]
    assert s.member_lines == [(2, "add S 10.0.0.1,tcp:80"), (4, "add S 10.0.0.2,udp:53")]
    assert not sets["T"].typed and [w.line for w in warns] == [5]  # members without a create line
    listed, warns = parse_ipset("Name:\nName: L\nType: bitmap:port\nHeader: range 0-65535\nMembers:\n30080\n...\n"
                                "30081\n")
    assert listed["L"].members == [("30080",), ("30081",)] and listed["L"].member_lines[1] == (8, "30081")
    assert {1, 7} <= {w.line for w in warns}  # a Name: without a name, and the elided members
