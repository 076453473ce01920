"""Every packet flow of kube-proxy's own iptables proxier tests (tests/corpus/kube-proxy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import kube_proxy_flows, need_corpus

from svctrace.dataplane.iptables import load_ruleset
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

FLOWS = kube_proxy_flows()


def _check(case: Path, flow: dict, fname: str) -> None:
    meta = json.loads((case / "meta.json").read_text())
    rs = load_ruleset((case / fname).read_text(), fname)
    node = NodeFacts.make(local_ips=meta["local_ips"])
    proto = flow["protocol"].lower()
    pkt = Packet.make(src=flow["sourceIP"], dst=flow["destIP"], proto=proto,
                      dport=flow["destPort"] if proto != "icmp" else None, local_ips=node.local_ips)
    result = trace(rs, pkt, node)
    outs = [o for o in result.outcomes if o.probability > 0]
    assert outs
    assert abs(sum(o.probability for o in result.outcomes) - 1) < 1e-9
    expected = flow["output"]
    got = [(round(o.probability, 4), o.verdict, o.dnat, o.masquerade, o.reason) for o in outs]
    if expected in ("DROP", "REJECT"):
        assert all(o.verdict == expected.lower() for o in outs), got
    elif expected in ("", "ACCEPT"):
        # The README's mapping: no outcome is DNATed.
        assert all(o.dnat is None for o in outs), got
        if expected == "ACCEPT":
            assert all(o.verdict == "accept" for o in outs), got
    else:
        want = {x.strip() for x in expected.split(",")}
        assert {o.dnat for o in outs} == want, got
        assert all(o.verdict == "accept" for o in outs), got
        # kube-proxy writes 1/(n-i) probabilities: every endpoint of a plain random chain gets 1/n
        if not any("affinity" in flow["name"].lower() for _ in [0]):
            for o in outs:
                assert o.probability == pytest.approx(1 / len(want), abs=1e-6), got
    assert any(o.masquerade for o in outs) == flow["masq"], got
    assert all(o.certain for o in outs), got


@pytest.mark.parametrize(("case", "flow"), FLOWS, ids=[f"{c.name}:{f['name']}" for c, f in FLOWS])
@pytest.mark.parametrize("fname", ["rules.iptables-save", "rules.restore-input"])
def test_kube_proxy_flow(case: Path, flow: dict, fname: str) -> None:
    need_corpus()
    _check(case, flow, fname)


def test_corpus_is_complete() -> None:
    need_corpus()
    assert len(FLOWS) == 62  # the corpus README counts 62 flows in 19 cases
