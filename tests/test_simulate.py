"""`svctrace simulate`: kube-proxy's rules for objects, checked against kube-proxy's own expected dumps,
the real iptables-restore, the kernel, and explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import KP_IPTABLES, corpus_files, need_corpus

from svctrace.dataplane.iptables import load_ruleset
from svctrace.explain import Request, explain
from svctrace.kubeproxy.simulate import complete, endpoint_slices_for, simulate
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import load_snapshot

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kube-proxy"

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, namespace: demo}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - name: shop
        image: shop:1
        ports: [{name: web, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: demo}
spec:
  type: NodePort
  selector: {app: shop}
  ports: [{name: http, port: 80, targetPort: web}]
---
apiVersion: v1
kind: Service
metadata: {name: nothing, namespace: demo}
spec:
  selector: {app: nope}
  ports: [{port: 80}]
"""


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"}
    return subprocess.run([str(BIN / "svctrace"), *args], capture_output=True, text=True, input=stdin, env=env,
                          timeout=60)


@pytest.mark.parametrize("fixture", corpus_files(FIXTURES, "*.json"), ids=lambda p: p.stem)
def test_yaml_of_the_corpus_services_gives_kube_proxys_dump(fixture: Path, tmp_path: Path) -> None:
    """The corpus's Services and EndpointSlices, written as YAML, through the CLI's reader and the completion
    step: the dump equals kube-proxy's expected rules.iptables-save rule for rule."""
    need_corpus()
    from svctrace.cli.simulate import read_objects
    from svctrace.kubeproxy.config import ProxyConfig
    from svctrace.kubeproxy.render.iptables import generate, to_save

    fx = json.loads(fixture.read_text())
    y = tmp_path / "in.yaml"
    y.write_text(yaml.safe_dump_all(fx["services"] + fx["endpointSlices"]))
    objs = read_objects(str(y))
    done = complete([*objs, {"kind": "Node", "metadata": {"name": fx["config"]["node_name"]}, "spec": {}, "status": {"addresses": []}}])
    kinds: dict[str, list[Any]] = {}
    for o in done:
        kinds.setdefault(o["kind"], []).append(o)
    cfg = ProxyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fx["config"].items()})
    got = to_save(generate(kinds.get("Service", []), kinds.get("EndpointSlice", []), cfg))
    want = (KP_IPTABLES / fx["case"] / "rules.iptables-save").read_text()
    from test_generate import drop_ignored_jumps

    assert drop_ignored_jumps(got.splitlines(), fx) == drop_ignored_jumps(want.splitlines(), fx)


@pytest.mark.slow
def test_deployment_and_service_become_rules_and_a_snapshot(tmp_path: Path) -> None:
    y = tmp_path / "app.yaml"
    y.write_text(APP)
    p = run("simulate", "-f", str(y))
    assert p.returncode == 0, p.stderr
    dump = p.stdout
    assert "demo/shop:http -> 10.244.0.10:8080" in dump  # named targetPort resolved through the pods
    assert "--probability 0.33333333349" in dump and "--dport 30000" in dump
    assert '"demo/nothing has no endpoints"' in dump and "REJECT" in dump
    assert "Deployment demo/shop: simulated 3 ready pod(s)" in p.stderr
    out = tmp_path / "snap"
    p = run("simulate", "-f", str(y), "-o", str(out))
    assert p.returncode == 0, p.stderr
    exp = explain(load_snapshot(str(out)), Request(target="svc/shop", namespace="demo", to="node-port"))
    assert len(exp.outcomes) == 3 and all(o.masquerade for o in exp.outcomes)
    assert {o.pod for o in exp.outcomes} == {"demo/shop-sim0", "demo/shop-sim1", "demo/shop-sim2"}
    nothing = explain(load_snapshot(str(out)), Request(target="svc/nothing", namespace="demo"))
    assert {d.code for d in nothing.diagnostics} >= {"no-endpoints", "selector-matches-no-pods"}


def test_a_snapshots_cluster_json_works_as_is() -> None:
    demo = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo"
    # the demo's nodes are like kube-proxy's unit tests' (build_demo): iptables without --random-fully, no
    # nfnetlink_acct, so no nfacct counting rules
    p = run("simulate", "-f", str(demo / "cluster.json"), "--node", "node02", "--kube-version", "1.30.2",
            "--no-random-fully", "--no-nfacct")
    assert p.returncode == 0, p.stderr
    assert p.stdout == (demo / "nodes" / "node02" / "iptables-save").read_text()


def test_version_spellings() -> None:
    objs = yaml.safe_load_all(APP)
    old = simulate(list(objs), kube_version="1.23")
    dump = next(iter(old.dumps.values()))
    assert "KUBE-MARK-DROP" in dump and "KUBE-EXT-" not in dump
    new = simulate(list(yaml.safe_load_all(APP)), kube_version="1.30")
    assert "KUBE-EXT-" in next(iter(new.dumps.values()))


def test_endpoint_slices_follow_readiness_and_named_ports() -> None:
    svc = {"kind": "Service", "metadata": {"name": "s", "namespace": "n"},
           "spec": {"selector": {"a": "b"}, "ports": [{"name": "h", "port": 80, "targetPort": "web"}]}}
    pods = [{"kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "n", "labels": {"a": "b"}},
             "spec": {"nodeName": "x", "containers": [{"ports": [{"name": "web" if i != 2 else "other",
                                                                  "containerPort": 8000 + i}]}]},
             "status": {"podIP": f"10.0.0.{i}", "conditions": [{"type": "Ready", "status": "True" if i else "False"}]}}
            for i in range(3)]
    slices = endpoint_slices_for(svc, pods)
    by_port = {tuple((p["port"]) for p in s["ports"]): s for s in slices}
    assert set(by_port) == {(), (8000,), (8001,)}  # p2 declares no "web" port: a slice without that port
    assert by_port[(8000,)]["endpoints"][0]["conditions"]["ready"] is False


def test_selector_needs_every_label_in_the_services_namespace() -> None:
    """complete() looks a selector up by its labels: a pod matches only with all of them, in the namespace."""
    def pod(name: str, ns: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
        return {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": "node-1"}, "status": {"podIP": ip}}
    objs = [{"kind": "Service", "metadata": {"name": "web", "namespace": "n"},
             "spec": {"selector": {"app": "shop", "tier": "web"}, "ports": [{"port": 80}]}},
            pod("both", "n", {"app": "shop", "tier": "web"}, "10.244.0.21"),
            pod("app-only", "n", {"app": "shop"}, "10.244.0.22"),
            pod("tier-only", "n", {"tier": "web", "x": "y"}, "10.244.0.23"),
            pod("elsewhere", "m", {"app": "shop", "tier": "web"}, "10.244.0.24")]
    [sl] = [o for o in complete(objs) if o.get("kind") == "EndpointSlice"]
    assert [e["addresses"] for e in sl["endpoints"]] == [["10.244.0.21"]]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "stdin", "needle"), [
    (("simulate", "-f", "-"), "kind: Service\nmetadata: {name: x\n", "<stdin>:"),
    (("simulate", "-f", "-", "--node", "ghost"), "kind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 1}]}\n",
     "no node ghost"),
    (("simulate", "-f", "-"), "just: text\n", "no Kubernetes objects"),
    (("simulate", "-f", "-", "--kube-version", "banana"), "kind: Service\n", "not a Kubernetes version"),
])
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], stdin: str, needle: str) -> None:
    p = run(*args, stdin=stdin)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


@pytest.mark.kernel
def test_simulated_rules_load_and_the_walk_agrees_with_the_kernel() -> None:
    from agreement import compare
    from kernellab import KernelLab, kernel_available

    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    # The lab's kernel has no nfnetlink_acct: kube-proxy (which creates its nfacct counters first) writes no
    # nfacct rules on such a node, and neither does simulate told so.
    sim = simulate(list(yaml.safe_load_all(APP)), cluster_cidr="10.244.0.0/16", nfacct=False)
    dump = sim.dumps["node-1"]
    assert "--random-fully" in dump
    rs = load_ruleset(dump, "sim")
    node = NodeFacts.make(local_ips=["192.168.0.10"], route_localnet=True)
    with KernelLab(["192.168.0.10"], route_localnet=True) as lab:
        lab.load(dump)
        cases = [("10.244.0.99", "10.96.0.10", 80), ("203.0.113.7", "192.168.0.10", 30000),
                 ("10.244.0.99", "10.96.0.11", 80)]
        for src, dst, dport in cases:
            result = trace(rs, Packet.make(src=src, dst=dst, proto="tcp", dport=dport, local_ips=node.local_ips), node)
            k = lab.probe(dst=dst, proto="tcp", dport=dport, src=src, samples=600 if len(result.outcomes) > 1 else 3)
            compare(result, k, f"{src}->{dst}:{dport}")


def test_ipvs_mode_snapshot_explains_through_ipvs(tmp_path: Path) -> None:
    y = tmp_path / "app.yaml"
    y.write_text(APP)
    out = tmp_path / "snap"
    p = run("simulate", "-f", str(y), "--mode", "ipvs", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (out / "nodes" / "node-1").iterdir()} >= {"ipvsadm", "ipset", "iptables-save", "proxy-mode"}
    exp = explain(load_snapshot(str(out)), Request(target="svc/shop", namespace="demo", to="node-port"))
    assert exp.proxy_mode == "ipvs"
    assert sorted(o.endpoint for o in exp.outcomes) == ["10.244.0.10:8080", "10.244.0.11:8080", "10.244.0.12:8080"]
    assert all(o.masquerade for o in exp.outcomes)
    assert any(s.table == "ipvs" for o in exp.outcomes for s in o.path)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "version", "range_"), [("nftables", "1.30", "1.31 to 1.35"),
                                                       ("nftables", "1.36", "1.31 to 1.35"),
                                                       ("ipvs", "1.25", "1.26+")])
def test_a_version_outside_the_modes_range_is_one_line_naming_it(mode: str, version: str, range_: str) -> None:
    p = run("simulate", "-f", "-", "--mode", mode, "--kube-version", version, stdin=APP)
    assert p.returncode == 2 and p.stdout == "", p.stderr
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and f"svctrace models {range_})" in errors[0] and version in errors[0], p.stderr


@pytest.mark.parametrize("mode", ["iptables", "ipvs", "nftables"])
def test_every_mode_works_with_the_default_version_the_newest_modelled(mode: str, tmp_path: Path) -> None:
    """No --kube-version: today's kube-proxy (the newest release svctrace models), in every mode."""
    from svctrace.kubeproxy.versions import DEFAULT_VERSION, MODES

    assert all(m.default == DEFAULT_VERSION for m in MODES.values())
    y = tmp_path / "app.yaml"
    y.write_text(APP)
    out = tmp_path / "snap"
    p = run("simulate", "-f", str(y), "--mode", mode, "-o", str(out))
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["server_version"] == f"v{DEFAULT_VERSION}" and meta["proxy_mode"] == mode
    exp = explain(load_snapshot(str(out)), Request(target="svc/shop", namespace="demo"))
    assert exp.proxy_mode == mode and len(exp.outcomes) == 3


def test_nftables_mode_snapshot_explains_through_nft(tmp_path: Path) -> None:
    y = tmp_path / "app.yaml"
    y.write_text(APP)
    out = tmp_path / "snap"
    p = run("simulate", "-f", str(y), "--mode", "nftables", "--kube-version", "1.33", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert {f.name for f in (out / "nodes" / "node-1").iterdir()} >= {"nft", "nft.json", "proxy-mode"}
    exp = explain(load_snapshot(str(out)), Request(target="svc/shop", namespace="demo"))
    assert exp.proxy_mode == "nftables" and len(exp.outcomes) == 3
    assert any(s.table == "ip kube-proxy" for o in exp.outcomes for s in o.path)


def test_node_facts_go_into_the_bundle_checked(tmp_path: Path) -> None:
    """`--node-facts NODE=DIR` copies a node's network facts into the bundle, so explain decides with them; a
    damaged file stops it with the file and line (exit 2)."""
    import io
    import tarfile

    src = Path(__file__).parent / "fixtures" / "nodefacts" / "ip-forward-off.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(src.read_bytes())) as tf:
        tf.extractall(tmp_path / "snap", filter="data")
    facts = tmp_path / "snap" / "nodes" / "node01"
    (facts / "iptables-save").unlink()  # not a fact file: ignored
    out = tmp_path / "sim"
    r = run("simulate", "-f", str(tmp_path / "snap" / "cluster.json"), "-o", str(out),
            "--node-facts", f"node01={facts}")
    assert r.returncode == 0, r.stderr
    assert (out / "nodes" / "node01" / "sysctl").read_text() == (facts / "sysctl").read_text()
    assert not (out / "nodes" / "node02" / "sysctl").exists()
    r = run("explain", "svc/web", "--snapshot", str(out), "--from", "pod/client", "-o", "json")
    assert r.returncode == 1 and "ip-forward-off" in {d["code"] for d in json.loads(r.stdout)["diagnostics"]}
    (facts / "ip-route.json").write_text('[{"dst": "default"},\n {"dst": "10.0.0.300/24"}]')
    r = run("simulate", "-f", str(tmp_path / "snap" / "cluster.json"), "-o", str(tmp_path / "sim2"),
            "--node-facts", f"node01={facts}")
    assert r.returncode == 2 and f"{facts}/ip-route.json:1: " in r.stderr, r.stderr
    r = run("simulate", "-f", str(tmp_path / "snap" / "cluster.json"), "--node-facts", f"node01={facts}")
    assert r.returncode == 2 and "--node-facts needs --output-dir" in r.stderr


def _many(n: int) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i in range(n):
        labels = {"app": f"a{i}"}
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": f"ns{i % 3}"},
                     "spec": {"type": ["ClusterIP", "NodePort", "LoadBalancer"][i % 3], "selector": labels,
                              "externalTrafficPolicy": "Local" if i % 4 == 0 and i % 3 else None,
                              "sessionAffinity": "ClientIP" if i % 5 == 0 else None,
                              "loadBalancerSourceRanges": ["203.0.113.0/24"] if i % 3 == 2 else None,
                              "ports": [{"name": "http", "port": 80, "targetPort": 8080 + i % 3}]},
                     "status": {"loadBalancer": {"ingress": [{"ip": f"198.51.100.{i % 250 + 1}"}]}}
                     if i % 3 == 2 else {}})
        objs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"s{i}",
                                                                               "namespace": f"ns{i % 3}"},
                     "spec": {"replicas": i % 4, "selector": {"matchLabels": labels},
                              "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c"}]}}}})
    return objs


@pytest.mark.parametrize("mode", ["iptables", "ipvs"])
def test_printing_by_shape_equals_parsing_every_rule(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """render.common prints each rule shape once and puts the values back: the dumps equal those made by parsing
    and printing every rule (the demo's objects and 60 varied Services, two modes that print iptables-save)."""
    from svctrace.data import build_demo
    from svctrace.kubeproxy.render import common

    for objs in (build_demo.objects(), _many(60)):
        fast = simulate(objs, mode=mode, kube_version="1.31")
        monkeypatch.setattr(common, "_CHECKS", 10**9)  # every rule printed both ways (and compared)
        slow = simulate(objs, mode=mode, kube_version="1.31")
        monkeypatch.undo()
        assert fast.files == slow.files and fast.files


def _nodes_of_zones(n: int) -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Node",
             "metadata": {"name": f"n{i}", "labels": {"topology.kubernetes.io/zone": f"z{i % 2}"}},
             "spec": {"podCIDR": f"10.{100 + i}.0.0/24", "podCIDRs": [f"10.{100 + i}.0.0/24"]},
             "status": {"addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + i}"}]}} for i in range(n)]


@pytest.mark.parametrize("mode", ["iptables", "ipvs", "nftables"])
@pytest.mark.parametrize("version", ["1.31", "1.22"])
def test_nodes_sharing_their_common_rules_equal_nodes_made_alone(mode: str, version: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """simulate makes what every node has in common once (plan.Shared): each node's files equal those made for
    that node alone -- Local policies, topology hints, an endpoint listed twice (the local copy wins) and source
    ranges that take in one node's IP included."""
    from svctrace.kubeproxy import simulate as sim_mod

    if mode != "iptables" and version == "1.22":
        pytest.skip("IPVS and nftables modes are modelled from 1.26 and 1.31")
    objs = _many(40) + _nodes_of_zones(3)
    for o in objs:
        if o["kind"] == "Service" and o["metadata"]["name"] in ("s1", "s7"):
            o["metadata"]["annotations"] = {"service.kubernetes.io/topology-mode": "Auto"}
            o["spec"]["internalTrafficPolicy"] = "Local" if o["metadata"]["name"] == "s7" else None
        if o["kind"] == "Service" and o["metadata"]["name"] == "s5":
            o["spec"]["loadBalancerSourceRanges"] = ["192.0.2.11/32"]
    objs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "twice", "namespace": "ns0"},
                 "spec": {"clusterIP": "10.96.200.1", "ports": [{"name": "p", "port": 80}]}})
    objs += [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
              "metadata": {"name": f"twice-{i}", "namespace": "ns0",
                           "labels": {"kubernetes.io/service-name": "twice"}},
              "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
              "endpoints": [{"addresses": ["10.100.0.99"], "nodeName": f"n{i}",
                             "conditions": {"ready": i == 1}}]} for i in range(3)]
    shared = simulate(objs, mode=mode, kube_version=version)
    monkeypatch.setattr(sim_mod, "Shared", lambda: None)
    alone = simulate(objs, mode=mode, kube_version=version)
    assert len(shared.files) == 3 and shared.files == alone.files


def test_most_rules_are_printed_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule is parsed and printed back in full only to print or check its shape: kube-proxy's commented rules,
    NodePort rules and host addresses print by shape (a shape that failed its check would print every rule)."""
    from svctrace.kubeproxy.render import common

    printed: list[str] = []
    full = common.IptRule.save_text

    def counted(self: common.IptRule, ipv6: bool = False) -> str:
        printed.append(self.chain)
        return full(self, ipv6)

    monkeypatch.setattr(common.IptRule, "save_text", counted)
    sim = simulate(_many(200) + _nodes_of_zones(3), mode="iptables", kube_version="1.31")
    rules = sum(dump.count("\n-A ") for dump in sim.dumps.values())
    assert rules > 5000 and len(printed) * 20 < rules, (len(printed), rules)


def test_many_notes_are_counted_not_listed(tmp_path: Path) -> None:
    f = tmp_path / "many.yaml"
    f.write_text(yaml.safe_dump_all(_many(30)))
    p = run("simulate", "-f", str(f), "-o", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    notes = [line for line in p.stderr.splitlines() if line.startswith("svctrace: note:")]
    assert len(notes) == 11 and "more notes of the same kinds" in notes[-1]
