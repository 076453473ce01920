"""Self-test of the kernel lab (tests/kernellab.py) against the kernel-measured oracle.

The oracle (``tests/corpus/oracle``) is a hand-written kube-proxy ruleset and the packets that
were sent through it in a real kernel, with what happened to them.  Every probe of
``probes-basic.iptables.jsonl`` is replayed here and must come out the same: verdict, destination
set, masquerade, number of distinct destinations and, where there are several destinations, the
distribution (chi-square test at ALPHA, so a correct kernel fails it about once in 1/ALPHA runs).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ORACLE, need_corpus
from kernellab import KernelLab, KernelResult, chi2_sf, kernel_available

RULES = ORACLE / "kube-proxy-basic.iptables-save"
PROBES = ORACLE / "probes-basic.iptables.jsonl"
MEASURED = ORACLE / "measured-results.jsonl"

MAX_SAMPLES = 3000  # per probe; the whole oracle file then runs in a few seconds
ALPHA = 1e-5  # chi-square false-failure rate per distribution test

_KERNEL_OK, _KERNEL_WHY = kernel_available()
needs_kernel = pytest.mark.skipif(not _KERNEL_OK, reason=_KERNEL_WHY or "kernel lab unavailable")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _oracle_probes() -> list[Any]:
    return [pytest.param(p, id=p["label"]) for p in _jsonl(PROBES)]


def _node_ips() -> list[str]:
    """The node IPs of the oracle's topology (measured-results.jsonl), else the probes' 192.168.0.2."""
    if MEASURED.exists():
        for rec in _jsonl(MEASURED):
            ips = rec.get("topology", {}).get("node_ips")
            if ips:
                return list(ips)
    return ["192.168.0.2"]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _distribution_p_value(observed: Counter[str], expected: dict[str, float]) -> float:
    n = sum(observed.values())
    chi2 = sum((observed.get(k, 0) - n * p) ** 2 / (n * p) for k, p in expected.items())
    return chi2_sf(chi2, len(expected) - 1)


def _sigmas(observed: Counter[str], expected: dict[str, float]) -> dict[str, float]:
    n = sum(observed.values())
    return {
        k: round((observed.get(k, 0) - n * p) / math.sqrt(n * p * (1 - p)), 2) if 0 < p < 1 else 0.0
        for k, p in expected.items()
    }


def _describe(r: KernelResult) -> str:
    return (
        f"verdicts={dict(r.verdicts)} destinations={dict(r.destinations)} dnat={r.dnat} "
        f"masquerade={r.masquerade} snat_to={dict(r.snat_to)} delivery={dict(r.delivery)} "
        f"reject_kinds={dict(r.reject_kinds)} send_errors={dict(r.send_errors)}"
    )


@pytest.fixture(scope="module")
def oracle_lab() -> Iterator[KernelLab]:
    if not _KERNEL_OK:
        pytest.skip(_KERNEL_WHY)
    need_corpus()
    with KernelLab(_node_ips()) as lab:
        lab.load(RULES.read_text())
        yield lab


# --------------------------------------------------------------------------------------------------
# the oracle, probe by probe


@pytest.mark.kernel
@needs_kernel
@pytest.mark.parametrize("probe", _oracle_probes())
def test_oracle_probe(oracle_lab: KernelLab, probe: dict[str, Any]) -> None:
    n = min(int(probe.get("samples", 1)), MAX_SAMPLES)
    oracle_lab.clear_recent()  # every probe starts as a new client, whatever ran before
    r = oracle_lab.probe(
        src=probe.get("src"),
        dst=probe["dst"],
        proto=probe["proto"],
        dport=probe.get("dport"),
        from_node=bool(probe.get("from_node", False)),
        samples=n,
        reset_recent=bool(probe.get("reset_recent", False)),
        sequential=probe.get("mode") == "sequential",
    )
    info = _describe(r)
    assert r.samples == n
    assert not r.notes, r.notes
    verdict = probe["expect_verdict"]

    if verdict in ("dnat", "accept-no-nat"):
        assert r.verdicts == Counter(accept=n), info
        assert r.dnat == (n if verdict == "dnat" else 0), info
        # the oracle's topology routes everything but the node's own addresses to the sink
        node_ips = set(oracle_lab.node_ips)
        local = sum(c for d, c in r.destinations.items() if d.rsplit(":", 1)[0] in node_ips)
        assert r.delivery == Counter({k: v for k, v in (("local", local), ("forward", n - local)) if v}), info
    elif verdict == "reject":
        assert r.verdicts == Counter(reject=n), info
        if "expect_reject" in probe:
            assert r.reject_kinds == Counter({probe["expect_reject"]: n}), info
    elif verdict == "drop":
        assert r.verdicts == Counter(drop=n), info
    else:
        pytest.fail(f"unknown expect_verdict {verdict!r}")

    expect: dict[str, float] = {k: p for k, p in probe.get("expect", {}).items() if p > 0}
    if expect:
        assert set(r.destinations) <= set(expect), info
        # a destination may be missed by chance only when that is less likely than ALPHA
        if sum((1 - p) ** n for p in expect.values()) < ALPHA:
            assert set(r.destinations) == set(expect), info
        if len(expect) > 1:
            total = sum(expect.values())
            expected = {k: p / total for k, p in expect.items()}
            p_value = _distribution_p_value(r.destinations, expected)
            assert p_value >= ALPHA, (
                f"distribution off: p={p_value:.3g} sigmas={_sigmas(r.destinations, expected)}; {info}"
            )

    masq = probe.get("expect_masquerade")
    accepted = r.verdicts["accept"]
    if masq is True:
        assert r.masquerade == accepted, info
    elif masq is False:
        assert r.masquerade == 0, info
    elif masq == "mixed":
        assert 0 < r.masquerade < accepted, info
        src = probe.get("src")
        hairpin = {d for d in r.destinations if d.rsplit(":", 1)[0] == src}
        if hairpin:  # the KUBE-SEP "-s <endpoint>" rule masquerades exactly the hairpinned ones
            assert r.masquerade_destinations == Counter({d: r.destinations[d] for d in hairpin}), info

    if "expect_distinct" in probe:
        assert len(r.destinations) == probe["expect_distinct"], info


# --------------------------------------------------------------------------------------------------
# the lab's topology, as the oracle's measurements saw it


@pytest.mark.kernel
@needs_kernel
def test_snat_addresses_match_oracle_topology(oracle_lab: KernelLab) -> None:
    """measured-results.jsonl: forwarded masquerade rewrites to the node IP (M3, M5); from the node
    the rewrite is made visible through the witness address 192.0.2.1 on the outgoing side (T8)."""
    node_ip = oracle_lab.node_ips[0]
    r = oracle_lab.probe(src="192.168.0.100", dst=node_ip, proto="tcp", dport=30080, samples=50)
    assert r.snat_to == Counter({node_ip: 50}), _describe(r)
    r = oracle_lab.probe(src="10.180.0.1", dst="172.30.0.41", proto="tcp", dport=80, samples=100)
    assert r.snat_to == Counter({node_ip: r.masquerade}) and r.masquerade > 0, _describe(r)
    r = oracle_lab.probe(from_node=True, dst="172.30.0.41", proto="tcp", dport=80, samples=50)
    assert r.snat_to == Counter({KernelLab.WITNESS4: 50}), _describe(r)
    # back to a client source: the witness is gone again
    r = oracle_lab.probe(src="192.168.0.100", dst="172.30.0.41", proto="tcp", dport=80, samples=20)
    assert r.snat_to == Counter({node_ip: 20}), _describe(r)


@pytest.mark.kernel
@needs_kernel
def test_sink_never_answers(oracle_lab: KernelLab) -> None:
    oracle_lab.probe(src="10.0.0.2", dst="172.30.0.41", proto="tcp", dport=80, samples=200)
    oracle_lab.probe(src="10.0.0.2", dst="172.30.0.10", proto="udp", dport=53, samples=200)
    out = subprocess.run(
        ["ip", "-n", oracle_lab.sink_ns, "-s", "-j", "link", "show", "s"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats = json.loads(out)[0]["stats64"]
    assert stats["rx"]["packets"] >= 400
    assert stats["tx"]["packets"] == 0


@pytest.mark.kernel
@needs_kernel
def test_route_localnet() -> None:
    """A localhost NodePort from the node itself needs route_localnet=1 (corpus case 003)."""
    need_corpus()
    for route_localnet, verdict in ((True, "accept"), (False, "drop")):
        with KernelLab(_node_ips(), route_localnet=route_localnet) as lab:
            lab.load(RULES.read_text())
            r = lab.probe(from_node=True, dst="127.0.0.1", proto="tcp", dport=30080, samples=10)
            assert r.verdicts == Counter({verdict: 10}), _describe(r)
            if verdict == "accept":
                assert r.dnat == 10 and r.masquerade == 10, _describe(r)


# --------------------------------------------------------------------------------------------------
# verdict detection beyond the oracle


_EXTRA_RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d 10.9.0.1/32 -p tcp -j REJECT --reject-with tcp-reset
-A FORWARD -d 10.9.0.2/32 -p tcp -j REJECT --reject-with icmp-admin-prohibited
-A FORWARD -d 10.9.0.3/32 -p udp -j REJECT --reject-with icmp-host-unreachable
-A FORWARD -d 10.9.0.4/32 -p icmp -j REJECT
-A FORWARD -d 10.9.0.5/32 -j DROP
-A OUTPUT -d 10.9.0.6/32 -p udp -j DROP
-A OUTPUT -d 10.9.0.7/32 -p tcp -j REJECT --reject-with tcp-reset
COMMIT
"""


@pytest.mark.kernel
@needs_kernel
@pytest.mark.parametrize("legacy", [False, True], ids=["nft", "legacy"])
def test_verdict_kinds(legacy: bool) -> None:
    if legacy and not _has("iptables-legacy-restore"):
        pytest.skip("iptables-legacy-restore not installed")
    with KernelLab(["192.168.0.2"]) as lab:
        lab.load(_EXTRA_RULES, legacy=legacy)
        cases: list[tuple[dict[str, Any], str, str | None]] = [
            ({"dst": "10.9.0.1", "proto": "tcp", "dport": 80}, "reject", "tcp-reset"),
            ({"dst": "10.9.0.2", "proto": "tcp", "dport": 80}, "reject", "icmp-admin-prohibited"),
            ({"dst": "10.9.0.3", "proto": "udp", "dport": 53}, "reject", "icmp-host-unreachable"),
            ({"dst": "10.9.0.4", "proto": "icmp"}, "reject", "icmp-port-unreachable"),
            ({"dst": "10.9.0.5", "proto": "udp", "dport": 53}, "drop", None),
            ({"dst": "10.9.0.5", "proto": "tcp", "dport": 80}, "drop", None),
            ({"dst": "10.9.0.6", "proto": "udp", "dport": 53, "from_node": True}, "drop", None),
            ({"dst": "10.9.0.7", "proto": "tcp", "dport": 80, "from_node": True}, "reject", "tcp-reset"),
            # delivered locally: the node's stack answers (RST / port unreachable / echo reply),
            # but the packet passed the rules
            ({"dst": "192.168.0.2", "proto": "tcp", "dport": 22}, "accept", None),
            ({"dst": "192.168.0.2", "proto": "udp", "dport": 9}, "accept", None),
            ({"dst": "192.168.0.2", "proto": "icmp"}, "accept", None),
            ({"dst": "192.168.0.2", "proto": "tcp", "dport": 22, "from_node": True}, "accept", None),
            ({"dst": "10.9.0.9", "proto": "icmp"}, "accept", None),
        ]
        for kwargs, verdict, kind in cases:
            if not kwargs.get("from_node"):
                kwargs["src"] = "10.0.0.2"
            r = lab.probe(samples=8, **kwargs)
            info = f"{kwargs}: {_describe(r)}"
            assert r.verdicts == Counter({verdict: 8}), info
            if kind:
                assert r.reject_kinds == Counter({kind: 8}), info
            if verdict == "accept":
                local = kwargs["dst"] == "192.168.0.2"
                assert r.delivery == Counter({"local" if local else "forward": 8}), info
                assert r.dnat == 0 and r.masquerade == 0, info


@pytest.mark.kernel
@needs_kernel
def test_ipv6() -> None:
    if not _has("ip6tables-restore"):
        pytest.skip("ip6tables-restore not installed")
    rules = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d fd00:30::41/128 -p tcp --dport 80 -m statistic --mode random --probability 0.5 -j DNAT --to-destination [fd00:180::1]:8080
-A PREROUTING -d fd00:30::41/128 -p tcp --dport 80 -j DNAT --to-destination [fd00:180::2]:8080
-A OUTPUT -d fd00:30::41/128 -p tcp --dport 80 -j DNAT --to-destination [fd00:180::1]:8080
-A POSTROUTING -d fd00:180::/64 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -d fd00:30::50/128 -p udp -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
"""
    with KernelLab(["192.168.0.2", "fd00:1::2"], ipv6=True) as lab:
        lab.load(rules, ip6=True)
        r = lab.probe(src="fd00:10::2", dst="fd00:30::41", proto="tcp", dport=80, samples=400)
        assert set(r.destinations) == {"[fd00:180::1]:8080", "[fd00:180::2]:8080"}, _describe(r)
        assert r.dnat == 400 and r.snat_to == Counter({"fd00:1::2": 400}), _describe(r)
        assert _distribution_p_value(r.destinations, dict.fromkeys(r.destinations, 0.5)) >= ALPHA
        r = lab.probe(from_node=True, dst="fd00:30::41", proto="tcp", dport=80, samples=10)
        assert r.destinations == Counter({"[fd00:180::1]:8080": 10}), _describe(r)
        assert r.snat_to == Counter({KernelLab.WITNESS6: 10}), _describe(r)
        r = lab.probe(src="fd00:10::2", dst="fd00:30::50", proto="udp", dport=53, samples=5)
        assert r.reject_kinds == Counter({"icmp6-adm-prohibited": 5}), _describe(r)
        r = lab.probe(src="fd00:10::2", dst="fd00:1::2", proto="icmp", samples=5)
        assert r.destinations == Counter({"fd00:1::2": 5}) and r.delivery == Counter(local=5), _describe(r)


# --------------------------------------------------------------------------------------------------
# lifecycle


@pytest.mark.kernel
@needs_kernel
def test_namespaces_are_removed_even_on_errors() -> None:
    lab = KernelLab(["192.168.0.2"])
    names = {lab.node_ns, lab.client_ns, lab.sink_ns}
    assert all(str(os.getpid()) in name for name in names)
    with pytest.raises(RuntimeError, match="iptables-restore failed") as excinfo, lab:
        assert names <= _namespaces()
        lab.load("*filter\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n")
    assert "NO-SUCH-CHAIN" in str(excinfo.value) or "line" in str(excinfo.value)
    assert not names & _namespaces()
    with pytest.raises(RuntimeError, match="not open"):
        lab.probe(dst="10.1.1.1", proto="tcp", dport=80)


@pytest.mark.kernel
@needs_kernel
def test_probe_argument_checks(oracle_lab: KernelLab) -> None:
    with pytest.raises(ValueError, match="never leaves the client"):
        oracle_lab.probe(src="10.0.0.2", dst="127.0.0.1", proto="tcp", dport=80)
    with pytest.raises(ValueError, match="address of the node"):
        oracle_lab.probe(src=oracle_lab.node_ips[0], dst="172.30.0.41", proto="tcp", dport=80)
    with pytest.raises(ValueError, match="dport"):
        oracle_lab.probe(src="10.0.0.2", dst="172.30.0.41", proto="tcp")
    with pytest.raises(ValueError, match="ipv6=True"):
        oracle_lab.probe(src="fd00::2", dst="fd00::1", proto="udp", dport=53)


# --------------------------------------------------------------------------------------------------
# statistics helper (no kernel needed)


def test_chi2_sf_matches_known_values() -> None:
    # 5 % critical values, and the oracle's own p-values (measured-results.jsonl M6, N1)
    for x, dof in ((3.841459, 1), (5.991465, 2), (7.814728, 3), (9.487729, 4), (11.070498, 5)):
        assert chi2_sf(x, dof) == pytest.approx(0.05, abs=1e-6)
    assert chi2_sf(2.738, 1) == pytest.approx(0.097987, abs=1e-5)
    assert chi2_sf(4.4928, 2) == pytest.approx(0.105779, abs=1e-5)
    assert chi2_sf(0.0, 3) == 1.0


def _has(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None
