"""kube-proxy's iptables rules recomputed from Kubernetes objects (svctrace.kubeproxy.render.iptables).

Proof, in three parts:

* kube-proxy's own test cases (tests/corpus/kube-proxy/iptables, 19 cases from
  pkg/proxy/iptables/rules_test.go): the Service/EndpointSlice objects of each test, transcribed into
  tests/fixtures/kube-proxy/<case>.json, generate exactly the case's ``rules.iptables-save`` (rule for
  rule, in order, chain declarations included) and, chain by chain, the rules of its
  ``rules.restore-input`` token for token.
* The kernel (root only): the generated restore input loads with ``iptables-restore --test`` and, loaded
  into a throw-away network namespace, ``iptables-save`` prints exactly what :func:`to_save` predicts
  (nft and legacy backends, IPv4 and IPv6, several kube-proxy versions and options).
* The walker agrees with the generator: a packet to each cluster IP (and NodePort) is DNATed to the
  endpoints the endpoint selection chose, 1/n each.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import KP_IPTABLES, need_corpus

from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.printer import save_probability
from svctrace.kubeproxy.config import ProxyConfig, nodeport_addresses
from svctrace.kubeproxy.names import fw_chain, svc_chain
from svctrace.kubeproxy.plan import PortPlan, collect_ports, node_context, plan_ports
from svctrace.kubeproxy.render.iptables import (
    ProxyRules,
    generate,
    to_restore,
    to_save,
)
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kube-proxy"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))
BUILTIN = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")


def load_fixture(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{case}.json").read_text())


def fixture_rules(case: str) -> tuple[dict[str, Any], ProxyRules]:
    fx = load_fixture(case)
    return fx, generate(fx["services"], fx["endpointSlices"], ProxyConfig(**fx["config"]))


def drop_ignored_jumps(lines: list[str], fx: dict[str, Any]) -> list[str]:
    """001: TestTracePacket's hand-written base-chain jumps lack the ones to KUBE-PROXY-FIREWALL."""
    ignored = fx.get("ignoreBaseJumpsTo", [])
    return [ln for ln in lines
            if not any(ln.startswith(f"-A {b} ") and ln.endswith(f" -j {t}") for b in BUILTIN for t in ignored)]


# --------------------------------------------------------------------------- kube-proxy's own cases


def test_every_corpus_case_has_a_fixture() -> None:
    need_corpus()
    assert sorted(p.name for p in KP_IPTABLES.iterdir() if p.is_dir()) == CASES
    assert len(CASES) == 19


@pytest.mark.parametrize("case", CASES, ids=[c[:3] for c in CASES])
def test_generated_save_equals_corpus(case: str) -> None:
    need_corpus()
    fx, rules = fixture_rules(case)
    want = (KP_IPTABLES / case / "rules.iptables-save").read_text().splitlines()
    got = drop_ignored_jumps(to_save(rules).splitlines(), fx)
    assert got == want


def _by_chain(text: str) -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    chains: dict[str, set[str]] = {}
    rules: dict[tuple[str, str], list[str]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.setdefault(table, set()).add(line.split()[0][1:])
        elif line.startswith("-A "):
            rules.setdefault((table, line.split()[1]), []).append(line)
    return chains, rules


@pytest.mark.parametrize("case", CASES, ids=[c[:3] for c in CASES])
def test_generated_restore_equals_corpus_chain_by_chain(case: str) -> None:
    """Same chains; in each chain the same rules, in order, in kube-proxy's own spelling.

    (The corpus's restore input is kube-proxy's test expectation, whose chains the test helper sorts;
    kube-proxy writes chain lines and rules in its own order, which to_restore keeps.)
    """
    need_corpus()
    fx, rules = fixture_rules(case)
    got_chains, got_rules = _by_chain("\n".join(drop_ignored_jumps(to_restore(rules).splitlines(), fx)))
    want_chains, want_rules = _by_chain((KP_IPTABLES / case / "rules.restore-input").read_text())
    assert got_chains == want_chains
    assert got_rules == want_rules


def test_restore_is_kube_proxys_own_order() -> None:
    _, rules = fixture_rules("005-TestExternalTrafficPolicyLocal")
    text = to_restore(rules, base_chains=False)
    lines = text.splitlines()
    # the top-level chains in syncProxyRules' order, then the service's chains as it creates them
    assert lines[:7] == ["*filter", ":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]",
                         ":KUBE-FORWARD - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]",
                         ":KUBE-FIREWALL - [0:0]"]
    nat = lines[lines.index("*nat"):]
    assert [ln for ln in nat if ln.startswith(":")] == [
        ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]", ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]", ":KUBE-SVL-XPGD46QRK7WJZT7O - [0:0]",
        ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]", ":KUBE-SEP-ZX7GRIZKSNUQ3LAJ - [0:0]"]
    assert not any(ln.startswith(("-A INPUT", "-A PREROUTING", ":INPUT")) for ln in lines)
    first_rule = next(i for i, ln in enumerate(nat) if ln.startswith("-A "))
    assert nat[first_rule] == "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN"
    assert nat[-2].startswith('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports;')
    assert text.endswith("COMMIT\n")


# --------------------------------------------------------------------------- a richer scenario

NODE = "node-a"


def _svc(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "web"}, "spec": spec}
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if status:
        obj["status"] = status
    return obj


def _slice(svc: str, fam: str, eps: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": f"{svc}-{fam.lower()}", "namespace": "web",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": fam, "endpoints": eps, "ports": ports}


def _ep(ip: str, node: str | None = None, zones: list[str] | None = None, **cond: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"addresses": [ip], "conditions": cond}
    if node:
        d["nodeName"] = node
    if zones:
        d["hints"] = {"forZones": [{"name": z} for z in zones]}
    return d


SERVICES = [
    _svc("multi", {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                   "ipFamilies": ["IPv4", "IPv6"],
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "https", "port": 443},
                             {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "sctp", "port": 9, "protocol": "SCTP"}]}),
    _svc("sticky", {"clusterIP": "10.96.0.11", "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]}),
    _svc("lb", {"type": "LoadBalancer", "clusterIP": "10.96.0.12", "ports": [{"name": "p", "port": 80, "nodePort": 30080}],
                "loadBalancerSourceRanges": ["192.168.5.0/24", "203.0.113.7/25"],
                "externalIPs": ["198.51.100.9", "2001:db8:9::9"]},
         {"loadBalancer": {"ingress": [{"ip": "203.0.113.200"}, {"hostname": "lb.example"}, {"ip": "2001:db8:7::7"},
                                       {"ip": "203.0.113.202"}]}}),
    _svc("local", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                   "clusterIP": "10.96.0.13", "ports": [{"port": 8080, "nodePort": 30081}]},
         {"loadBalancer": {"ingress": [{"ip": "203.0.113.201"}]}}),
    _svc("three", {"type": "NodePort", "clusterIP": "10.96.0.18", "ports": [{"port": 80, "nodePort": 30084}]}),
    _svc("hinted", {"clusterIP": "10.96.0.14", "ports": [{"port": 80}]},
         annotations={"service.kubernetes.io/topology-mode": "Auto"}),
    _svc("itp", {"clusterIP": "10.96.0.15", "internalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
    _svc("empty", {"type": "NodePort", "clusterIP": "10.96.0.16", "ports": [{"port": 80, "nodePort": 30082}]}),
    _svc("nolocal", {"type": "NodePort", "externalTrafficPolicy": "Local", "clusterIP": "10.96.0.17",
                     "ports": [{"port": 80, "nodePort": 30083}]}),
    _svc("terminating", {"type": "NodePort", "externalTrafficPolicy": "Local", "clusterIP": "10.96.0.19",
                         "ports": [{"port": 80, "nodePort": 30085}]}),
    _svc("headless", {"clusterIP": "None", "ports": [{"port": 80}]}),
    _svc("ext", {"type": "ExternalName", "externalName": "example.com"}),
]
SLICES = [
    _slice("multi", "IPv4", [_ep("10.244.1.9", NODE), _ep("10.244.1.10", "node-b"), _ep("10.244.1.11", "node-b", ready=False)],
           [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "https", "port": 8443, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"}, {"name": "sctp", "port": 9999, "protocol": "SCTP"}]),
    _slice("multi", "IPv6", [_ep("fd00:244::9", NODE), _ep("fd00:244::a", "node-b")],
           [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
    _slice("sticky", "IPv4", [_ep("10.244.2.1", NODE), _ep("10.244.2.2", "node-b")], [{"name": "", "port": 80}]),
    _slice("lb", "IPv4", [_ep("10.244.3.1", "node-b")], [{"name": "p", "port": 80}]),
    _slice("lb", "IPv6", [_ep("fd00:244::31", "node-b")], [{"name": "p", "port": 80}]),
    _slice("local", "IPv4", [_ep("10.244.4.1", NODE), _ep("10.244.4.2", "node-b"), _ep("10.244.4.3", NODE, ready=False, serving=True, terminating=True)],
           [{"name": "", "port": 8080}]),
    _slice("three", "IPv4", [_ep("10.244.8.1", NODE), _ep("10.244.8.2", "node-b"), _ep("10.244.8.3", "node-c")],
           [{"name": "", "port": 80}]),
    _slice("hinted", "IPv4", [_ep("10.244.5.1", NODE, ["zone-a"]), _ep("10.244.5.2", "node-b", ["zone-b"]),
                              _ep("10.244.5.3", "node-c", ["zone-a"])], [{"name": "", "port": 80}]),
    _slice("itp", "IPv4", [_ep("10.244.6.1", "node-b")], [{"name": "", "port": 80}]),
    _slice("nolocal", "IPv4", [_ep("10.244.7.1", "node-b")], [{"name": "", "port": 80}]),
    _slice("terminating", "IPv4", [_ep("10.244.9.1", "node-b"), _ep("10.244.9.2", NODE, ready=False, serving=True, terminating=True)], [{"name": "", "port": 80}]),
]
NODES = [{"metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "zone-a"}}},
         {"metadata": {"name": "node-b", "labels": {"topology.kubernetes.io/zone": "zone-b"}}}]
_BASE: dict[str, Any] = {"node_name": NODE, "node_ips": ("192.168.5.10", "2001:db8::10"), "cluster_cidr": "10.244.0.0/16"}
_V6 = {**_BASE, "cluster_cidr": "fd00:244::/56", "ip_family": "IPv6"}
CONFIGS: dict[str, ProxyConfig] = {
    "v4-1.28": ProxyConfig(**_BASE),
    "v4-1.28-masquerade-all": ProxyConfig(**_BASE, masquerade_all=True, random_fully=True, masquerade_bit=5),
    "v4-1.28-nodeport-addresses": ProxyConfig(**_BASE, nodeport_addresses=("192.168.5.0/24", "127.0.0.1/32"),
                                              kubelet_rules=True),
    "v4-1.28-no-detector": ProxyConfig(**{**_BASE, "cluster_cidr": None}, localhost_nodeports=False),
    "v6-1.28": ProxyConfig(**_V6),
    "v4-1.29-liberal": ProxyConfig(**_BASE, kube_version="1.29", conntrack_tcp_be_liberal=True),
    "v4-1.26": ProxyConfig(**_BASE, kube_version="1.26"),
    "v4-1.24": ProxyConfig(**_BASE, kube_version="1.24", kubelet_rules=True),
    "v4-1.22": ProxyConfig(**_BASE, kube_version="1.22", kubelet_rules=True),
    "v4-1.16": ProxyConfig(**_BASE, kube_version="v1.16.3"),
    "v6-1.22": ProxyConfig(**_V6, kube_version="1.22"),
}


def scenario(name: str) -> ProxyRules:
    return generate(SERVICES, SLICES, CONFIGS[name], nodes=NODES)


# --------------------------------------------------------------------------- the walker agrees


def _walker_cases() -> list[tuple[str, ProxyRules, list[str]]]:
    out = []
    for case in CASES:
        _, rules = fixture_rules(case)
        out.append((case[:3], rules, ["192.168.0.2", "192.168.1.2", "192.168.99.11", "127.0.0.1"]))
    for name in CONFIGS:
        out.append((name, scenario(name), [*CONFIGS[name].node_ips, "127.0.0.1", "::1"]))
    return out


WALKER_CASES = _walker_cases()


@pytest.mark.parametrize(("rules", "local_ips"), [c[1:] for c in WALKER_CASES], ids=[c[0] for c in WALKER_CASES])
def test_walker_reaches_the_selected_endpoints(rules: ProxyRules, local_ips: list[str]) -> None:
    cfg = rules.config
    rs = load_ruleset(to_save(rules), "generated")
    node = NodeFacts.make(local_ips=local_ips)
    v6 = cfg.ip_family == "IPv6"
    pod = "fd00:244::99" if v6 else "10.244.99.99"
    outside = "2001:db8:99::1" if v6 else "203.0.113.99"
    node_ip = next(ip for ip in local_ips if (":" in ip) == v6 and not ip.startswith(("127.", "::1")))
    legacy = cfg.version < (1, 24)
    # before 1.17 kube-proxy printed 5 decimals: 0.33333 then 0.50000 gives 0.33333 / 0.333335 / 0.333335
    tolerance = 1e-5 if cfg.version < (1, 17) else 1e-6
    checked = 0
    for sel in rules.selections:
        sp = sel.service_port
        proto = sp.protocol.lower()
        pkt = Packet.make(src=pod, dst=sp.cluster_ip, proto=proto, dport=sp.port, local_ips=node.local_ips)
        outs = [o for o in trace(rs, pkt, node).outcomes if o.probability > 0]
        internal = sel.internal_endpoints
        if internal and sel.has_internal_endpoints:
            want = {e.endpoint for e in internal}
            assert {o.dnat for o in outs} == want, (sp.name, outs)
            for o in outs:
                assert o.verdict == "accept" and o.certain
                assert o.probability == pytest.approx(1 / len(want), abs=tolerance)
        else:
            assert [o.verdict for o in outs] == [("drop" if sel.has_any_endpoints else "reject")], (sp.name, outs)
        checked += 1
        # NodePort from outside the cluster: external policy (eTP Local: this node's endpoints only)
        if sp.node_port and not cfg.nodeport_addresses and sel.has_any_endpoints and not legacy:
            pkt = Packet.make(src=outside, dst=node_ip, proto=proto, dport=sp.node_port, local_ips=node.local_ips)
            outs = [o for o in trace(rs, pkt, node).outcomes if o.probability > 0]
            if sel.has_external_endpoints:
                assert {o.dnat for o in outs} == {e.endpoint for e in sel.external_endpoints}, (sp.name, outs)
                assert all(o.masquerade != sp.external_policy_local for o in outs), (sp.name, outs)
            else:
                assert [o.verdict for o in outs] == ["drop"], (sp.name, outs)
    assert checked == len(rules.selections) > 0


# --------------------------------------------------------------------------- the kernel (root)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


ROOT = os.geteuid() == 0
NETNS = _can_unshare()
BACKENDS = [b for b in ("nft", "legacy") if shutil.which(f"iptables-{b}-restore") and shutil.which(f"ip6tables-{b}-restore")]


def _tool(rules: ProxyRules, backend: str) -> str:
    return ("ip6tables" if rules.config.ip_family == "IPv6" else "iptables") + f"-{backend}"


ALL_DUMPS = [(c, lambda c=c: fixture_rules(c)[1]) for c in CASES] + [(n, lambda n=n: scenario(n)) for n in CONFIGS]


def _run_batch(tmp: Path, jobs: list[tuple[str, str, str]]) -> dict[str, tuple[int, str]]:
    """Run ``command < input`` for each (key, command, input) in one shell inside one throw-away netns.

    Returns key -> (exit status, stdout+stderr).  One ``unshare`` for all keeps the test fast.
    """
    lines = ["#!/bin/sh"]
    for i, (_, cmd, text) in enumerate(jobs):
        (tmp / f"{i}.in").write_text(text)
        lines.append(f"{{ {cmd}; }} < {i}.in > {i}.out 2>&1; echo $? > {i}.rc")
    (tmp / "run.sh").write_text("\n".join(lines) + "\n")
    argv = ["unshare", "-n", "sh", "run.sh"] if NETNS else ["sh", "run.sh"]
    subprocess.run(argv, cwd=tmp, check=True, timeout=120)
    return {key: (int((tmp / f"{i}.rc").read_text()), (tmp / f"{i}.out").read_text())
            for i, (key, _, _) in enumerate(jobs)}


@pytest.mark.kernel
@pytest.mark.skipif(not ROOT, reason="iptables-restore --test needs root")
@pytest.mark.parametrize("backend", BACKENDS or ["none"])
def test_iptables_restore_accepts_the_dumps(backend: str, tmp_path: Path) -> None:
    if backend == "none":
        pytest.skip("no iptables-restore")
    jobs = []
    for name, make in ALL_DUMPS:
        rules = make()
        texts = {"restore": to_restore(rules), "save": to_save(rules)}
        if not any(rules.extra_chains.values()):
            # kube-proxy's own bytes: complete only on top of the chains it EnsureChain's itself
            texts["kube-proxy"] = to_restore(rules, base_chains=False)
        for kind, text in texts.items():
            jobs.append((f"{name} {kind}", f"{_tool(rules, backend)}-restore --test --noflush", text))
    for key, (rc, out) in _run_batch(tmp_path, jobs).items():
        assert rc == 0, (key, out)


def _tables(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = line[1:]
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


@pytest.mark.kernel
@pytest.mark.skipif(not NETNS, reason="needs root and `unshare -n`")
@pytest.mark.parametrize("backend", BACKENDS or ["none"])
def test_kernel_prints_what_to_save_predicts(backend: str, tmp_path: Path) -> None:
    """to_restore -> iptables-restore -> iptables-save in a throw-away netns == to_save (table order aside).

    Each restore (no --noflush) replaces the tables wholesale, so the dumps can share one namespace.
    """
    if backend == "none":
        pytest.skip("no iptables-restore")
    made = {name: make() for name, make in ALL_DUMPS}
    jobs = [(name, f"{_tool(r, backend)}-restore && {_tool(r, backend)}-save", to_restore(r)) for name, r in made.items()]
    for name, (rc, out) in _run_batch(tmp_path, jobs).items():
        assert rc == 0, (name, out)
        assert _tables(out) == _tables(to_save(made[name])), name


# --------------------------------------------------------------------------- version knobs and options


def _one_service(version: str, **cfg: Any) -> ProxyRules:
    svc = _svc("svc", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
                       "clusterIP": "10.96.0.20", "loadBalancerSourceRanges": ["203.0.113.0/24"],
                       "ports": [{"port": 80, "nodePort": 30090}]},
               {"loadBalancer": {"ingress": [{"ip": "198.51.100.20"}]}})
    sl = _slice("svc", "IPv4", [_ep("10.244.0.1", NODE), _ep("10.244.0.2", "node-b"), _ep("10.244.0.3", "node-b")],
                [{"name": "", "port": 8080}])
    return generate([svc], [sl], ProxyConfig(node_name=NODE, node_ips=("192.168.5.10",),
                                             cluster_cidr="10.244.0.0/16", kube_version=version, **cfg))


def _chains(rules: ProxyRules) -> set[str]:
    return set(rules.all_chains("nat")) | set(rules.all_chains("filter"))


def test_xlb_layout_before_1_24() -> None:
    old, new = _chains(_one_service("1.23")), _chains(_one_service("1.24"))
    assert any(c.startswith("KUBE-XLB-") for c in old)
    assert not any(c.startswith(("KUBE-EXT-", "KUBE-SVL-")) for c in old)
    assert any(c.startswith("KUBE-EXT-") for c in new) and any(c.startswith("KUBE-SVL-") for c in new)
    assert not any(c.startswith("KUBE-XLB-") for c in new)


def test_mark_drop_before_1_25_proxy_firewall_after() -> None:
    for version in ("1.23", "1.24"):
        rules = _one_service(version)
        assert "KUBE-MARK-DROP" in rules.all_chains("nat")
        assert "KUBE-PROXY-FIREWALL" not in rules.all_chains("filter")
        fw = next(c for c in rules.all_chains("nat") if c.startswith("KUBE-FW-"))
        assert rules.chain_rules("nat", fw)[-1].args[-2:] == ("-j", "KUBE-MARK-DROP")
    rules = _one_service("1.25")
    assert "KUBE-MARK-DROP" not in rules.all_chains("nat")
    assert "KUBE-PROXY-FIREWALL" in rules.all_chains("filter")
    assert any(r.chain == "KUBE-PROXY-FIREWALL" for r in rules.rules["filter"])
    assert any(r.chain == "INPUT" and r.args[-1] == "KUBE-PROXY-FIREWALL" for r in rules.base_rules["filter"])


def test_kube_firewall_written_by_kube_proxy_from_1_27() -> None:
    assert "KUBE-FIREWALL" not in _one_service("1.26").chains["filter"]
    assert "KUBE-FIREWALL" in _one_service("1.27").chains["filter"]
    assert "KUBE-FIREWALL" not in _one_service("1.28", localhost_nodeports=False).chains["filter"]


def test_probability_spelling_by_version() -> None:
    def probabilities(rules: ProxyRules, save: bool) -> list[str]:
        text = to_save(rules) if save else to_restore(rules)
        return [w.split()[0] for w in text.split("--probability ")[1:]]

    assert probabilities(_one_service("1.16"), save=False) == ["0.33333", "0.50000"]
    assert probabilities(_one_service("1.17"), save=False) == ["0.3333333333", "0.5000000000"]
    assert probabilities(_one_service("1.28"), save=False) == ["0.3333333333", "0.5000000000"]
    # what the kernel keeps: round(p * 2^31) / 2^31, printed with %.11f
    assert probabilities(_one_service("1.28"), save=True) == ["0.33333333349", "0.50000000000"]
    assert probabilities(_one_service("1.16"), save=True) == [save_probability("0.33333"), "0.50000000000"]
    assert save_probability("0.33333") == "0.33332999982"
    assert save_probability("0.2500000000") == "0.25000000000"
    assert save_probability("0.1000000000") == "0.10000000009"


def test_port_name_spelling_by_version() -> None:
    for version, legacy in (("1.18", True), ("1.19", False)):
        rules = _one_service(version)
        spn = "web/svc:" if legacy else "web/svc"
        assert svc_chain("web", "svc", "", "TCP", legacy_port_format=legacy) in rules.all_chains("nat")
        assert f'"{spn} cluster IP"' in to_restore(rules)
    assert svc_chain("web", "svc", "", "TCP", legacy_port_format=True) != svc_chain("web", "svc", "", "TCP")


def test_legacy_comments_and_xlb_rules() -> None:
    text = to_save(_one_service("1.22"))
    assert '-m comment --comment "web/svc" -m statistic --mode random --probability 0.33333333349' in text
    assert '"masquerade LOCAL traffic for web/svc LB IP"' in text
    assert '"Redirect pods trying to reach external loadbalancer VIP to clusterIP"' in text
    assert '-A KUBE-NODEPORTS -s 127.0.0.0/8 -p tcp -m comment --comment "web/svc" -m tcp --dport 30090 -j KUBE-MARK-MASQ' \
        in text


def test_legacy_firewall_chain_per_load_balancer_ip() -> None:
    """Before 1.24 the KUBE-FW chain line and its rules were written once per load-balancer IP."""
    rules = scenario("v4-1.22")
    fw = fw_chain("web", "lb", "p", "TCP")
    assert rules.chains["nat"].count(fw) == 2  # web/lb has two IPv4 load-balancer IPs
    assert to_restore(rules, base_chains=False).count(f":{fw} ") == 2
    assert to_restore(rules).count(f":{fw} ") == 1
    drops = [r for r in rules.chain_rules("nat", fw) if r.args[-1] == "KUBE-MARK-DROP"]
    assert len(drops) == 2  # and KUBE-MARK-DROP only marks: the second block is still reached


def test_masquerade_mark() -> None:
    rules = _one_service("1.28")
    assert rules.config.mark == "0x00004000"  # Go's %#08x pads the digits, not the whole string
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000" in to_restore(rules)
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in to_save(rules)
    assert "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0" in to_save(rules)
    assert _one_service("1.28", masquerade_bit=5).config.mark == "0x00000020"
    assert _one_service("1.28", masquerade_mark="0x4000").config.mark == "0x4000"


def test_random_fully_and_masquerade_all() -> None:
    rules = _one_service("1.28", random_fully=True, masquerade_all=True)
    save = to_save(rules)
    assert '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully' in save
    svc = next(c for c in rules.all_chains("nat") if c.startswith("KUBE-SVC-"))
    first = rules.chain_rules("nat", svc)[0]
    assert first.args[-2:] == ("-j", "KUBE-MARK-MASQ") and "!" not in first.args


def test_conntrack_liberal_from_1_29() -> None:
    invalid = "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    assert invalid in to_save(_one_service("1.28", conntrack_tcp_be_liberal=True))
    assert invalid not in to_save(_one_service("1.29", conntrack_tcp_be_liberal=True))


def test_nodeport_addresses() -> None:
    rules = _one_service("1.28", nodeport_addresses=("192.168.5.0/24", "2001:db8::/64"),
                         interface_addresses=("127.0.0.1", "192.168.5.10", "192.168.6.1", "2001:db8::10"))
    tail = [r.save_text() for r in rules.chain_rules("nat", "KUBE-SERVICES")][-1]
    assert tail == ('-A KUBE-SERVICES -d 192.168.5.10/32 -m comment --comment '
                    '"kubernetes service nodeports; NOTE: this must be the last rule in this chain" -j KUBE-NODEPORTS')
    # nodePortAddresses without loopback switch localhost NodePorts off (and KUBE-FIREWALL with them)
    assert "KUBE-FIREWALL" not in rules.chains["filter"]
    everywhere = _one_service("1.28", localhost_nodeports=False)
    assert "! -d 127.0.0.0/8 -m comment" in to_save(everywhere)


def test_large_cluster_mode_drops_endpoint_comments() -> None:
    svc = _svc("big", {"clusterIP": "10.96.1.1", "ports": [{"port": 80}]})
    eps = [_ep(f"10.245.{i // 250}.{i % 250 + 1}") for i in range(1001)]
    rules = generate([svc], [_slice("big", "IPv4", eps, [{"name": "", "port": 80}])],
                     ProxyConfig(node_name=NODE, cluster_cidr="10.244.0.0/14"))
    assert rules.large_cluster_mode
    svc_rules = [r for r in rules.rules["nat"] if r.chain.startswith(("KUBE-SVC-", "KUBE-SEP-"))]
    assert len(svc_rules) == 1 + 1001 + 2 * 1001
    masq, *balance = [r for r in svc_rules if r.chain.startswith("KUBE-SVC-")]
    assert "comment" in masq.args  # the cluster IP masquerade rule keeps its comment
    assert not any("comment" in r.args for r in balance)
    assert not any("comment" in r.args for r in svc_rules if r.chain.startswith("KUBE-SEP-"))


def test_ipv6_spellings() -> None:
    rules = scenario("v6-1.28")
    save = to_save(rules)
    assert "-j REJECT --reject-with icmp6-port-unreachable" in save
    assert "-j DNAT --to-destination [fd00:244::9]:8080" in save
    assert "! -d ::1/128" in save and "KUBE-FIREWALL" not in save
    assert "-d fd00:96::10/128" in save


def test_v1_endpoints_fallback() -> None:
    svc = _svc("old", {"clusterIP": "10.96.2.1", "ports": [{"name": "http", "port": 80}]})
    legacy = {"metadata": {"name": "old", "namespace": "web"},
              "subsets": [{"addresses": [{"ip": "10.244.0.7"}], "notReadyAddresses": [{"ip": "10.244.0.8"}],
                           "ports": [{"name": "http", "port": 8080}]}]}
    rules = generate([svc], None, ProxyConfig(node_name=NODE), endpoints=[legacy])
    assert "--to-destination 10.244.0.7:8080" in to_save(rules)
    assert "10.244.0.8" not in to_save(rules)


def test_output_does_not_depend_on_input_order() -> None:
    want = to_restore(scenario("v4-1.28"))
    rnd = random.Random(7)
    for _ in range(3):
        services, slices = copy.deepcopy(SERVICES), copy.deepcopy(SLICES)
        rnd.shuffle(services)
        rnd.shuffle(slices)
        for sl in slices:
            rnd.shuffle(sl["endpoints"])
        assert to_restore(generate(services, slices, CONFIGS["v4-1.28"], nodes=NODES)) == want


def test_kubelet_rules_are_not_kube_proxys() -> None:
    rules = scenario("v4-1.22")  # kubelet_rules=True: KUBE-MARK-DROP's mark and KUBE-FIREWALL's DROPs
    own = to_restore(rules, base_chains=False)
    assert "KUBE-MARK-DROP -j MARK" not in own and "dropping marked packets" not in own
    assert ":KUBE-MARK-DROP" not in own and ":KUBE-FIREWALL" not in own
    whole, save = to_restore(rules), to_save(rules)
    assert "-A KUBE-MARK-DROP -j MARK --or-mark 0x00008000" in whole
    assert "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000" in save
    assert '-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" ' \
           '-m mark --mark 0x8000/0x8000 -j DROP' in save
    assert save.index("-A INPUT -j KUBE-FIREWALL") < save.index("-A INPUT -m comment")


def test_base_chain_jumps_order() -> None:
    rules = scenario("v4-1.28-nodeport-addresses")  # with the kubelet's KUBE-FIREWALL jumps
    inputs = [r.restore_text() for r in rules.base_rules["filter"] if r.chain == "INPUT"]
    assert [r.split(" -j ")[-1] for r in inputs] == ["KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS",
                                                     "KUBE-EXTERNAL-SERVICES"]
    nat = [r.restore_text() for r in rules.base_rules["nat"]]
    assert nat == ['-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                   '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
                   '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']


def test_selections_explain_the_rules() -> None:
    rules = scenario("v4-1.28")
    sel = next(s for s in rules.selections if s.service_port.name == "terminating")
    assert [e.endpoint for e in sel.local_endpoints or ()] == ["10.244.9.2:80"] and sel.local_terminating_fallback
    assert [e.endpoint for e in sel.cluster_endpoints or ()] == ["10.244.9.1:80"]
    assert [s.service_port.name for s in rules.selections] == sorted(s.service_port.name for s in rules.selections)


def test_config_validation() -> None:
    with pytest.raises(TypeError):
        generate([], [], None)
    with pytest.raises(ValueError):
        ProxyConfig(node_name=NODE, ip_family="IPv5")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ProxyConfig(node_name=NODE, kube_version="next")
    assert ProxyConfig(node_name=NODE, node_ips=["192.168.0.1"]).node_ips == ("192.168.0.1",)  # type: ignore[arg-type]


def test_new_modules_stay_pure() -> None:
    code = ("import sys, svctrace.kubeproxy.endpoints, svctrace.kubeproxy.render.iptables\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rich','textual','typer','click','kubernetes','paramiko'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- the plan and the config


def _plans(endpoints: list[dict[str, Any]], node_ips: tuple[str, ...] = ("192.168.5.10",)) -> list[PortPlan]:
    svc = _svc("lb", {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "10.96.0.30",
                      "loadBalancerSourceRanges": ["192.168.5.0/24"], "ports": [{"port": 80, "nodePort": 30091}]},
               {"loadBalancer": {"ingress": [{"ip": "198.51.100.30"}]}})
    sl = _slice("lb", "IPv4", endpoints, [{"name": "", "port": 8080}])
    cfg, labels = node_context(ProxyConfig(node_name=NODE, node_ips=node_ips).for_mode("iptables"), NODES)
    return plan_ports(collect_ports([svc], [sl], None, cfg), cfg, labels)


def test_port_plan_no_endpoints_rejects_no_local_endpoint_drops() -> None:
    (none,) = _plans([])
    assert (none.internal_no_endpoints, none.external_no_endpoints) == ("reject", "reject")
    assert not none.uses_external_chain and none.filters_sources
    (remote,) = _plans([_ep("10.244.0.9", "node-b")])
    assert remote.has_internal and not remote.has_external
    assert (remote.internal_no_endpoints, remote.external_no_endpoints) == (None, "drop")
    assert remote.uses_cluster_chain and not remote.uses_local_chain and remote.uses_external_chain
    (local,) = _plans([_ep("10.244.0.8", NODE), _ep("10.244.0.9", "node-b")])
    assert local.has_external and local.uses_local_chain and local.external_local and not local.internal_local
    assert [e.ip for e in local.local_endpoints] == ["10.244.0.8"]


def test_port_plan_lets_the_node_through_its_source_ranges() -> None:
    (inside,) = _plans([_ep("10.244.0.8", NODE)])
    assert inside.allow_from_node and inside.allowed_sources == ("192.168.5.0/24", "198.51.100.30")
    (outside,) = _plans([_ep("10.244.0.8", NODE)], node_ips=("10.1.1.1",))
    assert not outside.allow_from_node and outside.allowed_sources == ("192.168.5.0/24",)


def test_one_config_fills_each_modes_defaults_and_refuses_unmodelled_versions() -> None:
    cfg = ProxyConfig(NODE)
    # one default in every mode: the newest release svctrace models (nftables' model ends at 1.35)
    assert (cfg.for_mode("iptables").kube_version, cfg.for_mode("iptables").random_fully) == ("1.35", False)
    assert (cfg.for_mode("ipvs").kube_version, cfg.for_mode("ipvs").random_fully) == ("1.35", True)
    assert cfg.for_mode("nftables").kube_version == "1.35"
    assert ProxyConfig(NODE, random_fully=True, kube_version="1.29").for_mode("iptables").random_fully is True
    for mode, version in (("ipvs", "1.25"), ("nftables", "1.30"), ("nftables", "1.36")):
        with pytest.raises(ValueError, match="not modelled"):
            ProxyConfig(NODE, kube_version=version).for_mode(mode)  # type: ignore[arg-type]
    assert ProxyConfig(NODE, kube_version="1.22").for_mode("iptables").version == (1, 22)


def test_nodeport_addresses_per_mode() -> None:
    """One reading of --nodeport-addresses; the modes differ only in the default and in ``primary``."""
    cfg = ProxyConfig(node_name="n", node_ips=("192.168.0.2",))
    assert nodeport_addresses(cfg, "iptables").match_all and nodeport_addresses(cfg, "ipvs").match_all
    assert nodeport_addresses(cfg, "iptables").contains_ipv4_loopback
    nft = nodeport_addresses(cfg, "nftables")  # empty: primary, the node IP
    assert not nft.match_all and [str(n) for n in nft.nets] == ["192.168.0.2/32"]
    primary = replace(cfg, nodeport_addresses=("primary", "10.0.0.0/8", "fd00::/8", "bogus"))
    assert [str(n) for n in nodeport_addresses(primary, "ipvs").nets] == ["192.168.0.2/32", "10.0.0.0/8"]
    assert [str(n) for n in nodeport_addresses(primary, "iptables").nets] == ["10.0.0.0/8"]
    loop = replace(cfg, node_ips=("127.0.0.1",), nodeport_addresses=("primary", "127.0.0.0/8"))
    assert [str(n) for n in nodeport_addresses(loop, "nftables").nets] == ["127.0.0.0/8"]
    assert nodeport_addresses(loop, "ipvs").contains_ipv4_loopback
    assert nodeport_addresses(primary, "ipvs").node_ips(["10.1.2.3/16", "192.168.0.2", "172.16.0.1"]) == [
        ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("192.168.0.2")]
