"""Session affinity as the kernel does it: a returning client's connections, sent into a network namespace with
kube-proxy's ClientIP rules (xt_recent), and svctrace's sticky answer given the endpoint the kernel picked.

The oracle ruleset's default/sticky:http (172.30.0.60:80, two endpoints, `--rcheck --seconds 10800 --reap`): the
first connection of a client goes to either endpoint (1/2 each); the kernel then sends every later connection of
that client to the same one, read back from conntrack. `--previous-endpoint` given that endpoint must predict it,
100%. With the timeout cut to 1 s and the client idle for longer, the kernel splits again, as svctrace predicts for
`--affinity-age` past the timeout.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from agreement import compare
from conftest import ORACLE
from kernellab import KernelLab, kernel_available

from svctrace.dataplane.iptables import load_ruleset
from svctrace.kubeproxy.walk import trace_iptables
from svctrace.model.packet import NodeFacts, Packet

_OK, _WHY = kernel_available()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not _OK, reason=_WHY or "no kernel lab")]

DUMP = (ORACLE / "kube-proxy-basic.iptables-save").read_text()
CLIENT, VIP, PORT = "10.0.0.2", "172.30.0.60", 80
ENDPOINTS = {"10.180.0.20:8080", "10.180.1.21:8080"}


def _lab(text: str) -> Any:
    lab = KernelLab(["192.168.0.2"], route_localnet=True)
    lab.open()
    lab.load(text)
    return lab


@pytest.fixture(scope="module")
def sticky_lab() -> Any:
    lab = _lab(DUMP)
    yield lab
    lab.close()


def _predict(text: str, **facts: Any) -> Any:
    node = NodeFacts.make(local_ips=["192.168.0.2"], **facts)
    pkt = Packet.make(src=CLIENT, dst=VIP, proto="tcp", dport=PORT, local_ips=node.local_ips)
    return trace_iptables(load_ruleset(text, "oracle"), pkt, node)


def _first(lab: KernelLab, want: str | None = None, tries: int = 40) -> str:
    """A new client's first connection (its entry cleared), until it lands on `want` (any, when None)."""
    for i in range(tries):
        lab.clear_recent()
        k = lab.probe(dst=VIP, proto="tcp", dport=PORT, src=CLIENT, samples=1, sport_base=20000 + i)
        got = next(iter(k.destinations))
        if want is None or got == want:
            return got
    raise AssertionError(f"{tries} first connections never went to {want}")


@pytest.mark.parametrize("previous", sorted(ENDPOINTS))
def test_a_returning_client_sticks_where_the_kernel_sent_it(sticky_lab: KernelLab, previous: str) -> None:
    assert _first(sticky_lab, previous) == previous
    # 100 more connections of the same client, its entry kept (no reset): the kernel sends all to `previous`
    k = sticky_lab.probe(
        dst=VIP, proto="tcp", dport=PORT, src=CLIENT, samples=100, sequential=True, sport_base=30000
    )
    assert dict(k.destinations) == {previous: 100}, k.destinations
    sticky = _predict(DUMP, previous_endpoint=previous)
    assert [(o.dnat, o.probability) for o in sticky.outcomes] == [(previous, 1.0)]
    compare(sticky, k, f"sticky to {previous}")
    assert any("Its previous connection went to" in n and "10800 s" in n for n in sticky.notes)
    # without the endpoint, the returning client is answered with the first connection's split (1/2 each)
    split = _predict(DUMP, returning_client=True)
    assert {o.dnat: round(o.probability, 9) for o in split.outcomes} == dict.fromkeys(ENDPOINTS, 0.5)


def test_past_the_timeout_the_kernel_and_svctrace_split_again() -> None:
    short = DUMP.replace("--seconds 10800", "--seconds 1")
    assert short != DUMP
    lab = _lab(short)
    try:
        seen: dict[str, int] = {}
        for i in range(12):
            _first(lab)
            time.sleep(1.2)  # idle past --seconds 1: the entry no longer matches
            k = lab.probe(dst=VIP, proto="tcp", dport=PORT, src=CLIENT, samples=1, sport_base=40000 + i)
            got = next(iter(k.destinations))
            seen[got] = seen.get(got, 0) + 1
        # after the timeout the next connection is not held: both endpoints appear (all 12 the same: p = 1/2048)
        assert set(seen) == ENDPOINTS, seen
        stale = _predict(short, previous_endpoint="10.180.0.20:8080", affinity_age=1.2)
        assert {o.dnat: round(o.probability, 9) for o in stale.outcomes} == dict.fromkeys(ENDPOINTS, 0.5)
        assert any("past the timeout" in n for n in stale.notes)
        fresh = _predict(short, previous_endpoint="10.180.0.20:8080", affinity_age=0.5)
        assert [(o.dnat, o.probability) for o in fresh.outcomes] == [("10.180.0.20:8080", 1.0)]
    finally:
        lab.close()
