"""Every real dump in tests/corpus/wild loads without an exception and still answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import WILD, corpus_files, need_corpus

from svctrace.dataplane.detect import sniff_format
from svctrace.dataplane.iptables import load_ruleset
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

DUMPS = corpus_files(WILD, "*/*.txt")
INDEX = {e["file"]: e for e in json.loads((WILD / "INDEX.json").read_text())}


def _read(p: Path) -> str:
    return p.read_bytes().decode("utf-8", errors="replace")


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name[:40]}" for p in DUMPS])
def test_wild_dump_loads_and_answers(path: Path) -> None:
    need_corpus()
    entry = INDEX[f"{path.parent.name}/{path.name}"]
    text = _read(path)
    if entry["format"] == "nft":
        from svctrace.dataplane.nftables import load_nft
        from svctrace.kubeproxy.walk import trace_nft as nft_trace

        nrs = load_nft(text, path.name)
        pkt = Packet.make(src="10.244.1.5", dst="10.96.0.10", proto="udp", dport=53)
        result = nft_trace(nrs, pkt, NodeFacts.make(local_ips=["192.168.0.2"]))
        assert result.outcomes and abs(sum(o.probability for o in result.outcomes) - 1) < 1e-9
        return
    if entry["format"] == "ipvsadm":
        from svctrace.dataplane.ipvs import load_ipvs
        from svctrace.kubeproxy.walk import trace_ipvs as ipvs_trace

        table = load_ipvs(text, path.name)
        assert table.services
        svc = next((v for v in table.services if v.ip is not None and v.port), None)
        if svc is None:  # a listing whose addresses were all resolved or redacted: it still loaded
            return
        assert svc.ip is not None and svc.port is not None
        src = "fd00::5" if svc.ip.version == 6 else "10.244.1.5"
        pkt = Packet.make(src=src, dst=str(svc.ip), proto="udp" if svc.protocol == "udp" else "tcp", dport=svc.port)
        result = ipvs_trace(table, None, pkt, NodeFacts.make(local_ips=["192.168.0.2"]))
        assert result.outcomes and abs(sum(o.probability for o in result.outcomes) - 1) < 1e-9
        return
    rs = load_ruleset(text, path.name)
    rules = list(rs.iter_rules())
    assert rules, "no rule was read"
    if entry.get("truncated"):
        # A cut-off paste must say so somewhere, or at least still answer.
        pass
    family = rs.family
    pkt = (Packet.make(src="10.244.1.5", dst="10.96.0.10", proto="udp", dport=53) if family == 4
           else Packet.make(src="fd00::5", dst="fd00::10", proto="udp", dport=53))
    result = trace(rs, pkt, NodeFacts.make(local_ips=["192.168.0.2"]))
    assert result.outcomes
    assert abs(sum(o.probability for o in result.outcomes) - 1) < 1e-9


def test_sniffing_matches_the_index() -> None:
    need_corpus()
    mismatches = []
    for p in DUMPS:
        entry = INDEX[f"{p.parent.name}/{p.name}"]
        fmt = sniff_format(_read(p))
        want = {"iptables-save": "iptables-save", "iptables-S": "iptables-save", "other": "iptables-save",
                "iptables-L": "iptables-L", "ipvsadm": "ipvsadm", "nft": "nft"}[entry["format"]]
        if fmt != want:
            mismatches.append((p.name, fmt, want))
    assert not mismatches


def _rule_texts(name: str) -> list[str]:
    rs = load_ruleset(_read(WILD / name), name)
    return [r.save_text() for r in rs.iter_rules()]


def test_escaped_single_quote_in_comment() -> None:
    need_corpus()
    rs = load_ruleset(_read(WILD / "iptables-save/005-weave-npc-v1.11-2018.txt"), "005")
    comments = [r.comment for r in rs.iter_rules() if r.comment and "'-j KUBE-FORWARD'" in r.comment]
    assert set(comments) == {"NOTE: this must go before '-j KUBE-FORWARD'"}


def test_journald_prefix_and_recent_180s() -> None:
    need_corpus()
    rs = load_ruleset(_read(WILD / "other/002-journald-kube-proxy-restore-failure-recent-180s.txt"), "002")
    rules = list(rs.iter_rules())
    assert rules and all(r.text.startswith("-A ") for r in rules)
    recent = [m for r in rules for m in r.matches if m.module == "recent"]
    assert recent and any(o.name == "--seconds" and o.arg == "180" for m in recent for o in m.opts)


def test_counters_are_read() -> None:
    need_corpus()
    rs = load_ruleset(_read(WILD / "iptables-save/002-k3s-counters-c-no-endpoints.txt"), "002")
    assert rs.has_counters
    assert any(r.counters and r.counters[0] > 0 for r in rs.iter_rules())


def test_corrupt_dnat_is_reported_not_crashed() -> None:
    need_corpus()
    rs = load_ruleset(_read(WILD / "iptables-save/016-cilium-ipvs-leftovers-corrupt-dnat-rancher.txt"), "016")
    bad = [r for r in rs.iter_rules() if any("DNAT without a usable" in p for p in r.problems)]
    assert bad, "the garbled --to-destination rules must be flagged"
    assert any("rule not fully understood" in w.message for w in rs.warnings)
