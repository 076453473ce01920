"""The kernel is the judge: svctrace's prediction against real packets in a network namespace.

For each case, the same rules are loaded with the real `iptables-restore` into a namespace made
by the test (tests/kernellab.py), real TCP/UDP/ICMP packets are sent from a client namespace or
from the node itself, conntrack says where they went, and that must equal what svctrace predicted:
verdicts, DNAT destinations, masquerade per destination and, where svctrace predicts several
destinations, their distribution (tests/agreement.py).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from agreement import compare
from conftest import ORACLE, kube_proxy_cases
from kernellab import KernelLab, kernel_available

from svctrace.dataplane.iptables import load_ruleset
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

SAMPLES = 600
_OK, _WHY = kernel_available()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not _OK, reason=_WHY or "no kernel lab")]



def _v4(ips: list[str]) -> list[str]:
    return [i for i in ips if ipaddress.ip_address(i).version == 4]


def _kp_flows() -> list[Any]:
    out = []
    for case in kube_proxy_cases():
        for flow in json.loads((case / "flows.json").read_text()):
            if flow["sourceIP"] == flow["destIP"]:
                continue  # the corpus README: sent from an address equal to the destination, not probeable
            if ipaddress.ip_address(flow["destIP"]).version != 4:
                continue
            if ipaddress.ip_address(flow["destIP"]).is_loopback and flow["sourceIP"] not in json.loads(
                    (case / "meta.json").read_text())["local_ips"]:
                continue  # a pod's own loopback answers these (corpus README)
            out.append(pytest.param(case, flow, id=f"{case.name}:{flow['name']}"))
    return out


@pytest.fixture(scope="module")
def labs() -> Any:
    cache: dict[Path, KernelLab] = {}
    yield cache
    for lab in cache.values():
        lab.close()


def _lab_for(labs: dict[Path, KernelLab], case: Path) -> tuple[KernelLab, dict[str, Any]]:
    meta = json.loads((case / "meta.json").read_text())
    if case not in labs:
        lab = KernelLab(_v4(meta["node_ips"]), route_localnet=True)
        lab.open()
        lab.load((case / "rules.restore-input").read_text())
        labs[case] = lab
    return labs[case], meta


@pytest.mark.parametrize(("case", "flow"), _kp_flows())
def test_kube_proxy_corpus_flow_agrees_with_the_kernel(labs: dict[Path, KernelLab], case: Path, flow: dict) -> None:
    lab, meta = _lab_for(labs, case)
    node = NodeFacts.make(local_ips=meta["local_ips"], route_localnet=True)
    proto = flow["protocol"].lower()
    dport = flow["destPort"] if proto != "icmp" else None
    rs = load_ruleset((case / "rules.iptables-save").read_text(), "rules.iptables-save")
    pkt = Packet.make(src=flow["sourceIP"], dst=flow["destIP"], proto=proto, dport=dport, local_ips=node.local_ips)
    result = trace(rs, pkt, node)
    from_node = pkt.origin == "local"
    several = len(result.outcomes) > 1
    # svctrace answers for a new client; with ClientIP affinity every sample must be one (fresh xt_recent lists)
    affinity = any("-m recent" in s.text for o in result.outcomes for s in o.path)
    lab.clear_recent()
    k = lab.probe(dst=flow["destIP"], proto=proto, dport=dport, src=flow["sourceIP"], from_node=from_node,
                  samples=(300 if affinity else SAMPLES) if several else 3, reset_recent=affinity,
                  sequential=affinity)
    compare(result, k, f"{case.name}:{flow['name']}")


def _oracle_probes() -> list[Any]:
    path = ORACLE / "probes-basic.iptables.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip() and not x.startswith("#")]
    return [pytest.param(r, id=r["label"]) for r in rows if "expect_distinct" not in r]


@pytest.fixture(scope="module")
def oracle_lab() -> Any:
    lab = KernelLab(["192.168.0.2"], route_localnet=True)
    lab.open()
    lab.load((ORACLE / "kube-proxy-basic.iptables-save").read_text())
    yield lab
    lab.close()


@pytest.mark.parametrize("probe", _oracle_probes())
def test_oracle_probe_agrees_with_the_kernel(oracle_lab: KernelLab, probe: dict) -> None:
    node = NodeFacts.make(local_ips=["192.168.0.2"], route_localnet=True)
    src = probe.get("src") or "192.168.0.2"
    rs = load_ruleset((ORACLE / "kube-proxy-basic.iptables-save").read_text(), "oracle")
    pkt = Packet.make(src=src, dst=probe["dst"], proto=probe["proto"], dport=probe.get("dport"),
                      origin="local" if probe.get("from_node") else None, local_ips=node.local_ips)
    result = trace(rs, pkt, node)
    oracle_lab.clear_recent()
    k = oracle_lab.probe(dst=probe["dst"], proto=probe["proto"], dport=probe.get("dport"),
                         src=None if probe.get("from_node") else src, from_node=bool(probe.get("from_node")),
                         samples=min(probe.get("samples", 20), 3000), reset_recent=bool(probe.get("reset_recent")),
                         sequential=bool(probe.get("reset_recent")))
    compare(result, k, probe["label"])


GENERATOR = Path(__file__).resolve().parents[1] / "bench" / "gen_kube_proxy_dump.py"


@pytest.fixture(scope="module", params=[3, 17])
def generated(request: pytest.FixtureRequest) -> Any:
    """A generated kube-proxy dump (several endpoints, NodePorts, LBs, Local policies, affinity, no-endpoint
    REJECTs) with the probes its generator finds interesting, loaded into a lab."""
    import subprocess
    import sys

    seed = request.param
    base = [sys.executable, str(GENERATOR), "--services", "60", "--seed", str(seed)]
    dump = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    probes = json.loads(subprocess.run([*base, "--print-probe", "--probes", "12"], capture_output=True, text=True,
                                       check=True).stdout)
    lab = KernelLab(["192.168.0.2"], route_localnet=True)
    lab.open()
    lab.load(dump)
    yield dump, probes, lab
    lab.close()


def test_generated_rulesets_agree_with_the_kernel(generated: Any) -> None:
    dump, probes, lab = generated
    rs = load_ruleset(dump, "generated")
    node = NodeFacts.make(local_ips=["192.168.0.2"], route_localnet=True)
    assert len(probes) >= 6
    for p in probes:
        pkt = Packet.make(src=p["src"], dst=p["dst"], proto=p["proto"], dport=p.get("dport"),
                          local_ips=node.local_ips)
        result = trace(rs, pkt, node)
        affinity = any("-m recent" in s.text for o in result.outcomes for s in o.path)
        several = len(result.outcomes) > 1
        lab.clear_recent()
        k = lab.probe(dst=p["dst"], proto=p["proto"], dport=p.get("dport"), src=p["src"],
                      from_node=pkt.origin == "local", samples=(300 if affinity else SAMPLES) if several else 3,
                      reset_recent=affinity, sequential=affinity)
        compare(result, k, p["name"])
