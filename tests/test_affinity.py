"""Session affinity for a returning client: the sticky answer given its previous endpoint, the normal split when
that endpoint is gone or the entry is past the timeout (read from the rules), in iptables and nftables mode. The
kernel agrees: tests/test_kernel_affinity.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from svctrace.data import build_demo
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.nftables import load_nft
from svctrace.kubeproxy.walk import trace_iptables, trace_nft
from svctrace.model.packet import NodeFacts, Packet

EXAMPLE = (Path(build_demo.__file__).parent / "examples" / "kube-proxy-basic.iptables-save").read_text()
NFT = (Path(__file__).parent / "corpus" / "kube-proxy" / "nftables" / "overall" / "ruleset.nft").read_text()


def _ipt(**facts: Any) -> Any:
    node = NodeFacts.make(local_ips=["192.168.0.2"], **facts)
    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.60", proto="tcp", dport=80, local_ips=node.local_ips)
    return trace_iptables(load_ruleset(EXAMPLE, "x"), pkt, node)


def _shares(r: Any) -> dict[str, float]:
    return {str(o.dnat): round(o.probability, 9) for o in r.outcomes}


def test_previous_endpoint_gives_the_sticky_answer() -> None:
    for ep in ("10.180.0.20:8080", "10.180.1.21:8080"):
        r = _ipt(previous_endpoint=ep)
        assert _shares(r) == {ep: 1.0} and all(o.certain for o in r.outcomes)
        assert any(
            s.chain == "KUBE-SVC-STICKYHQ5W3YVFPM" and "--rcheck" in s.text for s in r.outcomes[0].path
        )
        assert any("10800 s (3 h)" in n and f"went to {ep}" in n for n in r.notes)


def test_a_gone_endpoint_or_a_stale_entry_gets_the_normal_split_and_says_why() -> None:
    gone = _ipt(previous_endpoint="10.180.9.9:8080")
    assert _shares(gone) == {"10.180.0.20:8080": 0.5, "10.180.1.21:8080": 0.5}
    assert any(w.code == "affinity" and "10.180.9.9:8080" in w.message for w in gone.warnings)
    assert any("not one these rules send this packet to" in n for n in gone.notes)
    stale = _ipt(previous_endpoint="10.180.0.20:8080", affinity_age=10800)
    assert _shares(stale) == {"10.180.0.20:8080": 0.5, "10.180.1.21:8080": 0.5}
    assert any("10800 s old, past the timeout" in n for n in stale.notes)
    assert _shares(_ipt(previous_endpoint="10.180.0.20:8080", affinity_age=10799)) == {
        "10.180.0.20:8080": 1.0
    }


def test_returning_client_without_the_endpoint_keeps_the_first_split_and_explains_the_timeout() -> None:
    r = _ipt(returning_client=True)
    assert _shares(r) == {"10.180.0.20:8080": 0.5, "10.180.1.21:8080": 0.5}
    assert any("--previous-endpoint" in n for n in r.notes)
    assert _ipt().notes == []  # a new client: no affinity note


def test_nftables_affinity_set_timeout() -> None:
    node = NodeFacts.make(local_ips=["192.168.0.2"], previous_endpoint="10.180.0.3:80")
    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.45", proto="tcp", dport=80, local_ips=node.local_ips)
    r = trace_nft(load_nft(NFT, "x"), pkt, node)
    assert _shares(r) == {"10.180.0.3:80": 1.0}
    assert any(s.text.startswith("ip saddr @affinity-") for s in r.outcomes[0].path)
    assert any("timeout 3h" in n and "10800 s" in n for n in r.notes)


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.1:0", "nope:80", "10.0.0.1:http"])
def test_previous_endpoint_must_be_ip_port(bad: str) -> None:
    with pytest.raises(ValueError, match="IP:PORT"):
        NodeFacts.make(previous_endpoint=bad)
    assert NodeFacts.make(previous_endpoint="[fd00::5]:8080").previous_endpoint == "[fd00::5]:8080"
