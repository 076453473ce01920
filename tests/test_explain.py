"""`explain` on the demo and on purpose-built snapshots: every diagnostic, every Service type."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from svctrace.data import build_demo
from svctrace.dataplane.iptables import load_ruleset
from svctrace.errors import InputError
from svctrace.explain import Request, explain
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import Texts, bundle_bytes, load_snapshot

BIN = Path(sys.executable).parent


def codes(exp: Any) -> set[str]:
    return {d.code for d in exp.diagnostics}


def ask(target: str, snap: str | Any = "demo", **kw: Any) -> Any:
    s = load_snapshot(snap) if isinstance(snap, str) else snap
    return explain(s, Request(target=target, **kw))


def write_snapshot(root: Path, objs: list[dict], dumps: dict[str, str] | None = None,
                   extra: dict[str, str] | None = None) -> Path:
    """A bundle directory: cluster.json from objs, and each node's dump generated from objs unless given."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cluster.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
    for name in build_demo.NODES:
        d = root / "nodes" / name
        d.mkdir(parents=True, exist_ok=True)
        text = (dumps or {}).get(name)
        if text is None:
            text = build_demo.node_dump(objs, name)
        if text:
            (d / "iptables-save").write_text(text)
    for rel, text in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


# -- the demo -----------------------------------------------------------------------------------

def test_demo_bundle_is_what_the_builder_makes() -> None:
    root = Path(build_demo.__file__).parent / "demo"
    files = build_demo.files()
    assert files and {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(files)
    for rel, text in files.items():
        assert (root / rel).read_text() == text, f"{rel} is stale: run python -m svctrace.data.build_demo"


def test_cluster_ip_three_backends_with_pods_and_nodes() -> None:
    exp = ask("svc/web", source="pod/client")
    assert exp.source.kind == "pod" and exp.source.node == "node01" and exp.node == "node01"
    got = {o.endpoint: (o.pod, o.endpoint_node, round(o.probability, 6)) for o in exp.outcomes}
    assert got == {
        "10.244.1.10:8080": ("default/web-6d4f9c7b8-2lqzx", "node01", 0.333333),
        "10.244.2.10:8080": ("default/web-6d4f9c7b8-9ctrw", "node02", 0.333333),
        "10.244.2.11:8080": ("default/web-6d4f9c7b8-kx5vd", "node02", 0.333333),
    }
    assert exp.port is not None and exp.port.target_port == "http-web"
    assert not any(o.masquerade for o in exp.outcomes)
    assert exp.exit_code == 0 and not [d for d in exp.diagnostics if d.severity == "error"]
    assert any("KUBE-SERVICES matched 10.96.10.10:80/tcp, the cluster IP of default/web:http" in h for h in exp.hops)


@pytest.mark.parametrize("target", ["web.default", "web.default.svc", "web.default.svc.cluster.local",
                                    "10.96.10.10:80", "svc/default/web"])
def test_target_spellings(target: str) -> None:
    exp = ask(target)
    assert exp.service.key == "default/web" and len(exp.outcomes) == 3


def test_udp_dns_port_by_name() -> None:
    exp = ask("svc/kube-dns", namespace="kube-system", port="dns")
    assert exp.port is not None and exp.port.protocol == "UDP"
    assert {o.endpoint for o in exp.outcomes} == {"10.244.0.2:53", "10.244.0.3:53"}
    exp_tcp = ask("svc/kube-dns", namespace="kube-system", port="dns-tcp")
    assert exp_tcp.destination["protocol"] == "TCP" and len(exp_tcp.outcomes) == 2


def test_nodeport_from_outside_masquerades_and_says_why() -> None:
    exp = ask("svc/web-nodeport", to="node-port", node="node02")
    assert exp.destination == {"ip": "192.168.56.12", "port": 30080, "protocol": "TCP", "via": "node-port"}
    assert len(exp.outcomes) == 3 and all(o.masquerade for o in exp.outcomes)
    assert all("externalTrafficPolicy Cluster" in (o.masquerade_reason or "") for o in exp.outcomes)


def test_local_policy_drops_on_a_node_without_endpoints() -> None:
    exp = ask("svc/frontend", to="load-balancer", node="node02", source="192.168.56.99")
    assert [o.verdict for o in exp.outcomes] == ["drop"] and exp.exit_code == 1
    assert "no-local-endpoints" in codes(exp)
    good = ask("svc/frontend", to="load-balancer", node="node01", source="192.168.56.99")
    assert [o.endpoint for o in good.outcomes] == ["10.244.1.30:80"] and not good.outcomes[0].masquerade
    assert "no-local-endpoints" not in codes(good)


def test_source_range_blocked() -> None:
    exp = ask("svc/frontend", to="load-balancer", node="node01", source="10.1.2.3")
    assert [o.verdict for o in exp.outcomes] == ["drop"] and "source-range-blocked" in codes(exp)


def test_no_endpoints_selector_near_miss() -> None:
    exp = ask("svc/payment")
    assert [o.verdict for o in exp.outcomes] == ["reject"]
    assert {"no-endpoints", "selector-matches-no-pods"} <= codes(exp)
    near = next(d for d in exp.diagnostics if d.code == "selector-matches-no-pods")
    assert "payments-84c5d7f9b-t6r2k" in near.message and "app=payments" in near.message


def test_no_ready_endpoints() -> None:
    exp = ask("svc/slow-start")
    assert [o.verdict for o in exp.outcomes] == ["reject"] and "no-ready-endpoints" in codes(exp)
    d = next(d for d in exp.diagnostics if d.code == "no-ready-endpoints")
    assert "slow-start-6f9d8b7c5-b8v4n" in d.message


def test_headless_and_external_name_and_no_selector() -> None:
    h = ask("svc/db")
    assert codes(h) == {"headless-service"} and not h.outcomes and "10.244.2.30" in h.diagnostics[0].message
    e = ask("svc/weather-api")
    assert codes(e) == {"external-name"} and "api.weather.example.com" in e.diagnostics[0].message
    m = ask("svc/legacy-db")
    assert "no-selector" in codes(m) and [o.endpoint for o in m.outcomes] == ["192.168.56.50:3306"]


def test_ping_and_wrong_port_go_nowhere() -> None:
    p = ask("svc/web", proto="icmp")
    assert "ping-virtual-ip" in codes(p) and [o.endpoint for o in p.outcomes] == [None] and p.exit_code == 1
    w = ask("10.96.10.10:8080")
    assert "port-not-in-service" in codes(w) and w.exit_code == 1


def test_session_affinity_and_returning_client() -> None:
    exp = ask("svc/session", source="pod/client")
    assert "session-affinity" in codes(exp) and len(exp.outcomes) == 2
    back = ask("svc/session", source="pod/client", returning_client=True)
    assert sorted(round(o.probability, 6) for o in back.outcomes) == [0.5, 0.5]
    for o in back.outcomes:
        assert any("--rcheck" in s.text for s in o.path)
    # told its previous endpoint, the sticky answer, and the diagnostic says so (not "for a new client")
    sticky = ask("svc/session", source="pod/client", previous_endpoint="10.244.2.20:5000")
    assert [(o.endpoint, o.probability) for o in sticky.outcomes] == [("10.244.2.20:5000", 1.0)]
    d = next(d for d in sticky.diagnostics if d.code == "session-affinity")
    assert "went to 10.244.2.20:5000" in d.message and "new client" not in d.message
    stale = ask("svc/session", source="pod/client", previous_endpoint="10.244.2.20:5000", affinity_age=10800)
    assert sorted(round(o.probability, 6) for o in stale.outcomes) == [0.5, 0.5]
    with pytest.raises(InputError, match="IP:PORT"):
        ask("svc/session", source="pod/client", previous_endpoint="10.244.2.20")


def test_hairpin_masquerade() -> None:
    exp = ask("svc/web", source="pod/web-6d4f9c7b8-2lqzx")
    assert "hairpin-masquerade" in codes(exp)
    masq = {o.endpoint: o.masquerade for o in exp.outcomes}
    assert masq == {"10.244.1.10:8080": True, "10.244.2.10:8080": False, "10.244.2.11:8080": False}


def test_node_source_uses_output_path() -> None:
    exp = ask("svc/kubernetes", source="node/node01")
    assert exp.source.kind == "node" and exp.outcomes[0].path[0].hook == "OUTPUT"
    assert exp.outcomes[0].endpoint == "192.168.56.10:6443" and exp.outcomes[0].masquerade


# -- purpose-built snapshots --------------------------------------------------------------------

def _objs() -> list[dict]:
    return copy.deepcopy(build_demo.objects())


def _slice(objs: list[dict], svc: str) -> dict:
    return next(o for o in objs if o["kind"] == "EndpointSlice"
                and o["metadata"]["labels"].get("kubernetes.io/service-name") == svc)


def test_rules_stale_and_nodes_disagree(tmp_path: Path) -> None:
    objs = _objs()
    old_dumps = {n: build_demo.node_dump(objs, n) for n in build_demo.NODES}
    # The API moved on: web lost a pod and gained one; node02's kube-proxy caught up, node01's did not.
    sl = _slice(objs, "web")
    sl["endpoints"][2]["addresses"] = ["10.244.2.12"]
    new_node02 = build_demo.node_dump(objs, "node02")
    root = write_snapshot(tmp_path / "s", objs, {"node01": old_dumps["node01"], "node02": new_node02,
                                                 "controlplane": old_dumps["controlplane"]})
    exp = ask("svc/web", str(root), source="pod/client")
    assert {"rules-stale", "nodes-disagree"} <= codes(exp)
    stale = next(d for d in exp.diagnostics if d.code == "rules-stale")
    assert "10.244.2.11:8080" in stale.message and "10.244.2.12:8080" in stale.message
    fresh = ask("svc/web", str(root), source="10.244.2.99")
    assert "rules-stale" not in codes(fresh)


def test_a_directory_bundles_big_dumps_are_read_when_used(tmp_path: Path) -> None:
    """Issue 13: loading leaves a directory bundle's big node files on disk; explain reads the deciding node's dump,
    compares another node's on disk (the same bytes: not read), and reads one that differs (nodes-disagree)."""
    objs = _objs()
    pad = "".join(f"# padding {i}\n" for i in range(8000))  # bigger than snapshot.LAZY_SIZE
    old = build_demo.node_dump(objs, "node01") + pad
    _slice(objs, "web")["endpoints"][2]["addresses"] = ["10.244.2.12"]
    root = write_snapshot(tmp_path / "s", objs, {"node01": old, "node02": old,
                                                 "controlplane": build_demo.node_dump(objs, "controlplane") + pad})
    snap = load_snapshot(str(root))
    texts = {n: snap.nodes[n].files for n in ("node01", "node02", "controlplane")}
    assert all(isinstance(t, Texts) and t.on_disk("iptables-save") and not t.is_read("iptables-save")
               for t in texts.values())
    exp = explain(snap, Request(target="svc/web", source="pod/client"))
    assert exp.node == "node01" and {"rules-stale", "nodes-disagree"} <= codes(exp)
    disagree = next(d for d in exp.diagnostics if d.code == "nodes-disagree")
    assert "controlplane:" in disagree.message and "node02:" not in disagree.message
    assert {n for n, t in texts.items() if t.is_read("iptables-save")} == {"node01", "controlplane"}
    assert snap.nodes["node01"].files["iptables-save"] == old  # decoded as before
    (root / "nodes" / "node02" / "iptables-save").write_bytes(b"\x00" * 70000)
    with pytest.raises(InputError, match="node02/iptables-save: binary data where text was expected"):
        load_snapshot(str(root))


@pytest.mark.parametrize("target", ["svc/web", "svc/web-nodeport", "svc/kube-dns"])
def test_a_snapshot_read_for_one_service_answers_alike(target: str) -> None:
    """Issue 13: explain's command line keeps the JSON of the Service asked about alone (load_snapshot's raw_for);
    the answer is the one the whole snapshot gives."""
    ns = "kube-system" if target == "svc/kube-dns" else None
    name = target.split("/")[1]
    light = load_snapshot("demo", raw_for=(ns or "default", name))
    assert {(o["kind"], o["metadata"].get("name")) for o in light.cluster.objects} <= {
        ("Service", name), *(("EndpointSlice", s.name) for s in light.cluster.slices if s.service == name)}
    assert not any(s.raw for s in light.cluster.services.values() if s.name != name)
    assert light.cluster.services[f"{ns or 'default'}/{name}"].raw
    whole = ask(target, namespace=ns, source="pod/client")
    assert ask(target, light, namespace=ns, source="pod/client").to_json() == whole.to_json()


def test_rules_missing(tmp_path: Path) -> None:
    objs = _objs()
    without_web = [o for o in objs if not (o["kind"] == "Service" and o["metadata"]["name"] == "web")]
    dumps = {n: build_demo.node_dump(without_web, n) for n in build_demo.NODES}
    root = write_snapshot(tmp_path / "s", objs, dumps)
    exp = ask("svc/web", str(root))
    assert "rules-missing" in codes(exp) and exp.exit_code == 1


def test_named_port_unresolved(tmp_path: Path) -> None:
    objs = _objs()
    for o in objs:
        if o["kind"] == "Pod" and o["metadata"]["name"].startswith("web-"):
            o["spec"]["containers"][0]["ports"][0]["name"] = "http"
    root = write_snapshot(tmp_path / "s", objs)
    assert "named-port-unresolved" in codes(ask("svc/web", str(root)))


def test_target_port_not_declared(tmp_path: Path) -> None:
    """`targetPort: 80` while the pods declare only 8080: a warning naming both; a declared targetPort, a pod that
    declares nothing, or a named targetPort gives none."""
    objs = _objs()
    web = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"] == "web")
    web["spec"]["ports"][0]["targetPort"] = 80
    declared = {p["containerPort"] for o in objs if o["kind"] == "Pod" and o["metadata"]["name"].startswith("web-")
                for p in o["spec"]["containers"][0].get("ports", [])}
    assert declared and 80 not in declared
    root = write_snapshot(tmp_path / "s", objs)
    exp = ask("svc/web", str(root))
    d = next(x for x in exp.diagnostics if x.code == "target-port-not-declared")
    assert d.severity == "warning" and "targetPort 80" in d.message and f"{min(declared)}/TCP" in d.message
    # The healthy demo (named targetPort) and a pod that declares no ports: no warning.
    assert "target-port-not-declared" not in codes(ask("svc/web", "demo"))
    for o in objs:
        if o["kind"] == "Pod" and o["metadata"]["name"].startswith("web-"):
            o["spec"]["containers"][0].pop("ports", None)
    root2 = write_snapshot(tmp_path / "s2", objs)
    assert "target-port-not-declared" not in codes(ask("svc/web", str(root2)))


def test_mixed_backends_and_proxy_mode_mismatch(tmp_path: Path) -> None:
    objs = _objs()
    legacy = build_demo.node_dump(objs, "node01")
    root = write_snapshot(tmp_path / "s", objs, extra={
        "nodes/node01/iptables-legacy-save": legacy,
        "nodes/node01/proxy-mode": "ipvs\n",
    })
    exp = ask("svc/web", str(root), source="pod/client")
    assert {"mixed-iptables-backends", "proxy-mode-mismatch"} <= codes(exp)


def test_missing_dump_uses_another_node_with_a_warning(tmp_path: Path) -> None:
    objs = _objs()
    root = write_snapshot(tmp_path / "s", objs, {"node01": ""})
    exp = ask("svc/web", str(root), source="pod/client")
    assert len(exp.outcomes) == 3
    assert any("has no iptables-save" in w.message for w in exp.warnings)
    # ...but not when a Local policy makes nodes differ: then the missing file is named, exit 2
    with pytest.raises(InputError, match="nodes/node01/iptables-save"):
        ask("svc/frontend", str(root), to="load-balancer", node="node01", source="192.168.56.99")


def test_tar_gz_bundle_with_a_top_folder(tmp_path: Path) -> None:
    root = Path(build_demo.__file__).parent / "demo"
    files = {f"snap/{p.relative_to(root).as_posix()}": p.read_text() for p in root.rglob("*") if p.is_file()}
    tgz = tmp_path / "snap.tgz"
    tgz.write_bytes(bundle_bytes(files))
    exp = ask("svc/web", str(tgz))
    assert len(exp.outcomes) == 3


# -- explain and trace agree ----------------------------------------------------------------------

@pytest.mark.parametrize(("svc", "kw"), [
    ("svc/web", {"source": "pod/client"}),
    ("svc/web-nodeport", {"to": "node-port", "node": "node02"}),
    ("svc/frontend", {"to": "load-balancer", "node": "node02", "source": "192.168.56.99"}),
    ("svc/payment", {}),
    ("svc/session", {}),
])
def test_explain_and_trace_agree(svc: str, kw: dict) -> None:
    snap = load_snapshot("demo")
    exp = explain(snap, Request(target=svc, **kw))
    nf = snap.nodes[exp.node]
    rs = load_ruleset(nf.files["iptables-save"], "dump")
    node = snap.cluster.nodes[exp.node]
    pkt = Packet.make(src=exp.source.ip, dst=str(exp.destination["ip"]), proto=str(exp.destination["protocol"]).lower(),
                      dport=exp.destination["port"], origin="local" if exp.source.kind == "node" else None)  # type: ignore[arg-type]
    tr = trace(rs, pkt, NodeFacts.make(local_ips=node.internal_ips))
    assert [(o.verdict, o.dnat, o.masquerade, round(o.probability, 9)) for o in tr.outcomes] == \
        [(o.verdict, o.endpoint, o.masquerade, round(o.probability, 9)) for o in exp.outcomes]


# -- JSON and the command line ---------------------------------------------------------------------

def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"} | {"COLUMNS": "120"}
    return subprocess.run([str(BIN / "svctrace"), *args], capture_output=True, text=True, env=env, timeout=60)


def test_json_follows_the_spec() -> None:
    p = run("explain", "svc/web", "--demo", "--from", "pod/client", "-o", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {"service", "port", "source", "destination", "node", "proxy_mode", "outcomes", "diagnostics"} <= set(doc)
    assert doc["service"] == {"namespace": "default", "name": "web", "type": "ClusterIP",
                              "cluster_ips": ["10.96.10.10"], "session_affinity": "None"}
    assert doc["port"] == {"name": "http", "port": 80, "protocol": "TCP", "target_port": "http-web", "node_port": None}
    assert doc["source"] == {"kind": "pod", "name": "default/client", "ip": "10.244.1.50", "node": "node01"}
    assert doc["destination"] == {"ip": "10.96.10.10", "port": 80, "protocol": "TCP", "via": "cluster-ip"}
    assert doc["node"] == "node01" and doc["proxy_mode"] == "iptables"
    for o in doc["outcomes"]:
        assert {"probability", "verdict", "endpoint", "pod", "endpoint_node", "masquerade", "certain", "path"} <= set(o)
        assert isinstance(o["probability"], float) and 0 <= o["probability"] <= 1
    for d in doc["diagnostics"]:
        assert set(d) == {"code", "severity", "message", "hint"}


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), [
    (("explain", "svc/nope", "--demo"), "no Service default/nope in the snapshot"),
    (("explain", "svc/web", "--snapshot", "/nonexistent/snap"), "/nonexistent/snap: no such snapshot"),
    (("explain", "svc/web", "--demo", "--node", "ghost"), "no node ghost in the snapshot"),
    (("explain", "svc/web", "--demo", "--port", "nosuch"), "no port named 'nosuch'"),
    (("explain", "svc/web", "--demo", "--from", "pod/ghost"), "no pod default/ghost"),
    (("explain", "deploy/web", "--demo"), "not deploy/"),
])
def test_bad_requests_are_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    p = run(*args)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_bad_snapshots(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run("explain", "svc/web", "--snapshot", str(empty))
    assert p.returncode == 2 and "no cluster.json" in p.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cluster.json").write_text('{"items": [\n  {"kind": "Service",\n  oops}\n]}')
    p = run("explain", "svc/web", "--snapshot", str(broken))
    assert p.returncode == 2 and f"{broken}/cluster.json:3: broken JSON" in p.stderr
    notgz = tmp_path / "x.tgz"
    notgz.write_bytes(b"not a tarball")
    p = run("explain", "svc/web", "--snapshot", str(notgz))
    assert p.returncode == 2 and "not a readable .tar.gz" in p.stderr
    ghost = write_snapshot(tmp_path / "ghost", _objs(), extra={"nodes/ghost/iptables-save": "*nat\nCOMMIT\n"})
    p = run("explain", "svc/web", "--snapshot", str(ghost), "-o", "json")
    assert p.returncode == 0 and "not in cluster.json" in p.stderr


@pytest.mark.kernel
def test_demo_dumps_load_with_the_real_iptables_restore() -> None:
    import shutil
    import uuid

    if os.geteuid() != 0 or not shutil.which("iptables-restore"):
        pytest.skip("needs root and iptables-restore")
    root = Path(build_demo.__file__).parent / "demo" / "nodes"
    dumps = sorted(root.glob("*/iptables-save"))
    assert dumps
    for dump in dumps:
        ns = f"svt-demo-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            ipset = dump.parent / "ipset"  # IPVS mode: the sets the rules match must exist first
            if ipset.exists():
                subprocess.run(["ip", "netns", "exec", ns, "ipset", "restore"], input=ipset.read_text(), text=True,
                               check=True)
            p = subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=dump.read_text(), text=True,
                               capture_output=True)
            assert p.returncode == 0, (dump, p.stderr)
            saved = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True,
                                   check=True).stdout
            want = [x for x in dump.read_text().splitlines() if x.startswith("-A")]
            assert [x for x in saved.splitlines() if x.startswith("-A")] == want
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_hop_sentences_tell_the_firewall_cases_apart() -> None:
    blocked = ask("svc/frontend", to="load-balancer", node="node01", source="10.1.2.3")
    allowed_no_local = ask("svc/frontend", to="load-balancer", node="node02", source="192.168.56.99")
    assert any("the source is not in loadBalancerSourceRanges" in h for h in blocked.hops)
    assert any("the source is in loadBalancerSourceRanges, but KUBE-EXT-" in h for h in allowed_no_local.hops)
    assert not any("is not in loadBalancerSourceRanges" in h for h in allowed_no_local.hops)


def test_rules_stale_names_why_an_endpoint_should_be_gone(tmp_path: Path) -> None:
    objs = _objs()
    dumps = {n: build_demo.node_dump(objs, n) for n in build_demo.NODES}
    _slice(objs, "web")["endpoints"][0]["conditions"] = {"ready": False, "serving": False, "terminating": False}
    root = write_snapshot(tmp_path / "s", objs, dumps)
    stale = next(d for d in ask("svc/web", str(root)).diagnostics if d.code == "rules-stale")
    assert "10.244.1.10:8080 (not ready)" in stale.message


def test_terminating_but_serving_endpoints_are_used_not_stale(tmp_path: Path) -> None:
    objs = _objs()
    for e in _slice(objs, "slow-start")["endpoints"]:
        e["conditions"] = {"ready": False, "serving": True, "terminating": True}
    root = write_snapshot(tmp_path / "s", objs)  # dumps generated from the same objects: kube-proxy falls back
    exp = ask("svc/slow-start", str(root))
    assert {o.verdict for o in exp.outcomes} == {"accept"} and len(exp.outcomes) == 2
    d = next(d for d in exp.diagnostics if d.code == "no-ready-endpoints")
    assert d.severity == "warning" and "falls back" in d.message
    assert "rules-stale" not in codes(exp)


def test_unknown_match_is_diagnosed(tmp_path: Path) -> None:
    objs = _objs()
    dump = build_demo.node_dump(objs, "node01").replace(
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\"",
        "-A FORWARD -m physdev --physdev-is-bridged -j DROP\n-A FORWARD -m comment --comment \"kubernetes forwarding rules\"", 1)
    assert "physdev" in dump
    root = write_snapshot(tmp_path / "s", objs, {"node01": dump})
    exp = ask("svc/web", str(root), source="pod/client")
    assert "unknown-match" in codes(exp) and any(not o.certain for o in exp.outcomes)
    assert {o.verdict for o in exp.outcomes} == {"accept", "drop"}


def test_configz_and_cidr_inference(tmp_path: Path) -> None:
    objs = [o for o in _objs() if o["kind"] not in ("ConfigMap", "DaemonSet")]
    root = write_snapshot(tmp_path / "s", objs)
    exp = ask("svc/web", str(root))
    import ipaddress

    pod_cidrs = [ipaddress.ip_network(c) for _, c, _ in build_demo.NODES.values()]
    want = pod_cidrs[0]
    while not all(c.subnet_of(want) for c in pod_cidrs):  # the smallest network holding every podCIDR
        want = want.supernet()
    assert any(f"cluster CIDR: {want} (inferred from the nodes' podCIDRs" in i for i in exp.inferred), exp.inferred
    assert any("proxy mode: iptables (from the node's KUBE-SERVICES rules" in i for i in exp.inferred)
    (root / "nodes" / "node01" / "configz.json").write_text(
        json.dumps({"kubeproxy.config": {"mode": "iptables", "clusterCIDR": "10.244.0.0/16"}}))
    snap = load_snapshot(str(root))
    assert snap.cluster.proxy.cluster_cidr == "10.244.0.0/16"
    assert snap.cluster.proxy.sources["cluster_cidr"] == "nodes/node01/configz.json"
    assert snap.cluster.proxy.mode == "iptables"


def test_cluster_json_may_be_an_array_of_lists(tmp_path: Path) -> None:
    objs = _objs()
    root = write_snapshot(tmp_path / "s", objs)
    cm = [o for o in objs if o["kind"] in ("ConfigMap", "DaemonSet")]
    rest = [o for o in objs if o["kind"] not in ("ConfigMap", "DaemonSet")]
    (root / "cluster.json").write_text(json.dumps([{"kind": "List", "items": rest}, {"kind": "List", "items": cm}]))
    snap = load_snapshot(str(root))
    assert snap.cluster.proxy.cluster_cidr == "10.244.0.0/16" and snap.cluster.proxy.version == build_demo.KUBE_VERSION
    assert len(ask("svc/web", snap).outcomes) == 3


@pytest.mark.parametrize(("node", "mode", "table"), [("node01", "iptables", "nat"), ("node03", "ipvs", "ipvs"),
                                                     ("node04", "nftables", "ip kube-proxy")])
def test_the_three_modes_answer_the_same_nodeport_question(node: str, mode: str, table: str) -> None:
    exp = ask("svc/web-nodeport", to="node-port", node=node)
    assert exp.proxy_mode == mode
    assert sorted(o.endpoint for o in exp.outcomes) == ["10.244.1.10:8080", "10.244.2.10:8080", "10.244.2.11:8080"]
    assert all(o.masquerade and o.verdict == "accept" for o in exp.outcomes)
    assert all(abs(o.probability - 1 / 3) < 1e-6 for o in exp.outcomes)
    assert any(s.table == table for o in exp.outcomes for s in o.path)


@pytest.mark.parametrize(("node", "verdicts"), [("node01", {"accept"}), ("node03", {"reject"}),
                                                ("node04", {"reject"})])
def test_ping_differs_by_mode(node: str, verdicts: set[str]) -> None:
    exp = ask("svc/web", source=f"node/{node}", proto="icmp")
    assert {o.verdict for o in exp.outcomes} == verdicts
    d = next(d for d in exp.diagnostics if d.code == "ping-virtual-ip")
    assert {"node01": "iptables mode", "node03": "IPVS mode", "node04": "nftables mode"}[node] in d.message
    assert exp.exit_code == 1  # no reply either way


def test_a_snapshot_parses_each_dump_once() -> None:
    """Many questions of one snapshot (the TUI asks one per Service) reuse the parsed dumps."""
    import svctrace.dataplane.iptables.parser as parser

    snap = load_snapshot("demo")
    calls: list[str] = []
    real = parser._Loader.load

    def counting(self: Any) -> Any:
        calls.append(self.source)
        return real(self)

    parser._Loader.load = counting  # type: ignore[method-assign]
    try:
        first = [explain(snap, Request(target=t)).to_json() for t in ("svc/web", "svc/session", "svc/payment")]
        again = [explain(snap, Request(target=t)).to_json() for t in ("svc/web", "svc/session", "svc/payment")]
    finally:
        parser._Loader.load = real  # type: ignore[method-assign]
    assert first == again
    assert calls and len(calls) == len(set(calls)), calls  # every dump parsed at most once


# -- the question, parsed once (explain and live collect) ------------------------------------------------

def test_question_parses_every_target_form() -> None:
    from svctrace.explain.question import Target, parse_target

    assert parse_target("svc/web") == Target(None, "web")
    assert parse_target("services/team/web", "other") == Target("team", "web")
    assert parse_target("web.team.svc.cluster.local") == Target("team", "web")
    assert parse_target("web.team") == Target("team", "web")
    assert parse_target("web", "team") == Target("team", "web")
    assert parse_target("10.96.0.10:53") == Target(None, None, "10.96.0.10", 53)
    assert parse_target("[fd00::10]:443", "x") == Target("x", None, "fd00::10", 443)
    with pytest.raises(InputError, match="not pod/"):
        parse_target("pod/web")
    with pytest.raises(InputError, match="names namespace team but -n says default"):
        parse_target("web.team.svc", "default")


@pytest.mark.parametrize("source,node", [
    (None, None), (None, "node03"), ("pod/client", None), ("pod/client", "node02"),
    ("pod/kube-system/coredns-7db6d8ff4d-4xkq9", None), ("node/node04", None), ("10.244.2.11", None), ("10.244.3.77", None), ("192.168.0.13", None), ("198.51.100.7", "node02"),
])
def test_live_collect_dumps_the_node_explain_reads(source: str | None, node: str | None) -> None:
    """Live collection asks question.py for the one node to dump; with every Ready node's dump possible it is
    the node explain's answer then decides on (the demo has every node's dump)."""
    from svctrace.explain.question import node_to_collect, parse_source

    snap = load_snapshot("demo")
    spec = parse_source(source, "default") if source else None
    want = node_to_collect(snap.cluster, spec, node, list(snap.cluster.nodes))
    assert want == ask("svc/web", source=source, node=node).node


# -- the diagnostics registry ------------------------------------------------------------------------------

def test_every_registered_diagnostic_is_documented_and_provoked_by_a_test() -> None:
    """One registered check per stable code: its docs line is docs/cli.md's row, docs/explain.md lists it,
    and the test it names exists here (or in test_explain_whole.py) and asserts the code."""
    import ast

    from svctrace.explain.diagnostics import checks
    from svctrace.explain.diagnostics.registry import ORDER

    root = Path(__file__).resolve().parents[1]
    cli_md, explain_md = (root / "docs" / "cli.md").read_text(), (root / "docs" / "explain.md").read_text()
    tests: dict[str, str] = {}
    for f in sorted(Path(__file__).parent.glob("test_explain*.py")):  # test_explain_whole.py: issue 14's classes
        src = f.read_text()
        tests |= {n.name: ast.get_source_segment(src, n) or "" for n in ast.parse(src).body
                  if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    registered = checks()
    assert [c.code for c in registered] == list(ORDER)
    for c in registered:
        assert f"| `{c.code}` | {c.doc} |" in cli_md, c.code
        assert f"`{c.code}`" in explain_md, c.code
        assert c.test in tests and f'"{c.code}"' in tests[c.test], (c.code, c.test)


def test_other_nodes_chains_cut_out_cheaply_read_like_the_full_parse() -> None:
    """nodes-disagree reads another node's service chain (and its KUBE-SEP chains) cut out of the dump; for
    every service chain of every demo dump that gives the endpoints the full parse gives, and a dump with
    anything unusual about those chains is left to the full parse."""
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.explain.diagnostics.rules import _chains_alone, _programmed_endpoints

    snap = load_snapshot("demo")
    seen = 0
    for nf in snap.nodes.values():
        text = nf.get("iptables-save")
        if not text:
            continue
        full = load_ruleset(text, "full")
        for c in full.tables["nat"].chains.values():
            if not c.name.startswith(("KUBE-SVC-", "KUBE-SVL-")):
                continue
            mini = _chains_alone(text, c.name, "cut")
            assert mini is not None, c.name
            assert _programmed_endpoints(mini, c.name) == _programmed_endpoints(full, c.name), c.name
            seen += 1
        absent = _chains_alone(text, "KUBE-SVC-NOSUCHCHAIN", "cut")
        assert absent is not None and _programmed_endpoints(absent, "KUBE-SVC-NOSUCHCHAIN") is None
        svc = next((c.name for c in full.tables["nat"].chains.values() if c.name.startswith("KUBE-SVC-") and len(c)),
                   None)
        if svc is None:
            continue
        line = next(r.text for r in full.chain("nat", svc).raw)
        for odd in (text.replace(line, "[0:0] " + line), text.replace(line, "-I " + line[3:]),
                    text.replace(line, line + " -A " + svc + " -j DROP"), text.replace("*nat\n", "*nat \n"),
                    text.replace(line, "-X " + svc + "\n" + line), text.replace("\n", "\r\n"),
                    text.replace("COMMIT\n", "COMMIT\n" + line + "\n", 1), text + ":BAD\n",
                    text + "*nat\n" + line + "\nCOMMIT\n", text.replace("*nat\n", "*nat\n*filter\n")):
            assert odd != text
            assert _chains_alone(odd, svc, "cut") is None
    assert seen > 10


# -- the node around the rules: purpose-built snapshots (tests/nodefacts.py, docs/node-path.md) --------------

NODEFACTS = Path(__file__).resolve().parent / "fixtures" / "nodefacts"


def nodefacts(name: str, target: str = "svc/web", **kw: Any) -> Any:
    return ask(target, str(NODEFACTS / f"{name}.tar.gz"), **kw)


def test_nodefacts_snapshots_are_what_the_builder_makes() -> None:
    import io
    import tarfile

    import nodefacts as nf

    for name, make in nf.SCENARIOS.items():
        with tarfile.open(fileobj=io.BytesIO((NODEFACTS / f"{name}.tar.gz").read_bytes())) as tf:
            got = {m.name: tf.extractfile(m).read().decode() for m in tf.getmembers()}  # type: ignore[union-attr]
        assert got == make(), f"{name}: run python tests/nodefacts.py"


def test_healthy_node_facts_decide_interfaces_and_the_reply() -> None:
    exp = nodefacts("healthy", source="pod/client")
    assert exp.exit_code == 0 and not {"ip-forward-off", "reply-bypasses-conntrack"} & codes(exp)
    assert not any(i.startswith("assumed") for i in exp.inferred)  # every fact was collected
    outs = {str(o.endpoint): o for o in exp.outcomes}
    assert {o.certain for o in exp.outcomes} == {True}
    assert outs["10.244.1.10:8080"].reply == {
        "from": "10.244.1.10:8080", "to": "10.244.1.50", "through_conntrack": True,
        "why": "the reply crosses bridge cni0, whose frames pass iptables (br_netfilter), so conntrack undoes the "
               "DNAT", "client_sees": "10.96.10.10:80"}
    raw = {str(o.dnat): o for o in exp.trace.outcomes}
    assert (raw["10.244.1.10:8080"].iif, raw["10.244.1.10:8080"].oif) == ("cni0", "cni0")
    assert raw["10.244.2.10:8080"].oif == "eth0"


def test_missing_node_facts_are_stated_assumptions() -> None:
    exp = ask("svc/web", source="pod/client")  # the demo has no sysctl for node01
    assert "assumed ip_forward=1 (the node forwards): no sysctl file for node node01 in the snapshot" in exp.inferred
    exp = ask("svc/web-nodeport", to="node-port")  # an outside client: masqueraded
    assert any(i.startswith("assumed masquerade address 192.168.56.10: the node's address from the Node object")
               for i in exp.inferred), exp.inferred


def test_masquerade_address_is_the_outgoing_interfaces(tmp_path: Path) -> None:
    exp = nodefacts("healthy", "svc/web-nodeport", to="node-port", source="203.0.113.7", node="node01")
    masq = [o for o in exp.outcomes if o.masquerade]
    assert masq and {(o.snat, o.snat_from) for o in masq if o.endpoint_node == "node02"} == {
        ("192.168.56.11", "the primary address of eth0, the outgoing interface")}
    assert {o.snat for o in masq if o.endpoint_node == "node01"} == {"10.244.1.1"}  # out on cni0: its address
    d = exp.to_json()["outcomes"]
    assert {x["snat"] for x in d if x["masquerade"]} == {"192.168.56.11", "10.244.1.1"}


def test_ip_forward_off() -> None:
    exp = nodefacts("ip-forward-off", source="pod/client")
    assert [(o.verdict, o.cause) for o in exp.outcomes] == [("drop", "ip-forward-off")]
    assert "ip-forward-off" in codes(exp) and exp.exit_code == 1
    d = next(d for d in exp.diagnostics if d.code == "ip-forward-off")
    assert "sysctl -w net.ipv4.ip_forward=1" in d.message


def test_forward_policy_drop() -> None:
    exp = nodefacts("forward-policy-drop", source="pod/client")
    assert [(o.verdict, o.certain) for o in exp.outcomes] == [("drop", True)]  # Docker's -i/-o docker0 rules decided
    assert exp.outcomes[0].path[-1].action == "policy DROP" and "forward-policy-drop" in codes(exp)
    # An outside client is masqueraded (mark 0x4000): kube-proxy's KUBE-FORWARD accepts it despite the policy.
    exp = nodefacts("forward-policy-drop", "svc/web-nodeport", to="node-port", source="203.0.113.7", node="node01")
    assert {o.verdict for o in exp.outcomes} == {"accept"} and "forward-policy-drop" not in codes(exp)
    # Without node facts the docker0 rules' interfaces are unknown: both ways are walked, uncertain.
    snap = load_snapshot(str(NODEFACTS / "forward-policy-drop.tar.gz"))
    for f in ("ip-addr.json", "ip-route.json", "sysctl"):
        snap.nodes["node01"].files.pop(f)
    exp = explain(snap, Request(target="svc/web", source="pod/client"))
    assert not all(o.certain for o in exp.outcomes)


def test_rp_filter_drop() -> None:
    exp = nodefacts("rp-filter-drop", "172.16.0.11:30080", source="203.0.113.7")
    assert [(o.verdict, o.cause) for o in exp.outcomes] == [("drop", "rp-filter")]
    assert "rp-filter-drop" in codes(exp)
    assert any("in on eth1: it holds 172.16.0.11" in i for i in exp.inferred)
    # The same client on the address of eth0 comes in where its route back leaves: no drop.
    exp = nodefacts("rp-filter-drop", "192.168.56.11:30080", source="203.0.113.7")
    assert {o.verdict for o in exp.outcomes} == {"accept"} and "rp-filter-drop" not in codes(exp)


def test_no_route() -> None:
    exp = nodefacts("no-route", source="pod/client")
    got = {(o.verdict, o.cause, str(o.endpoint) if o.endpoint else None) for o in exp.outcomes}
    assert got == {("reject", "no-route", None), ("accept", None, "10.244.1.10:8080")}
    assert "no-route" in codes(exp)


def test_localhost_nodeport_martian() -> None:
    exp = nodefacts("localhost-nodeport-martian", "127.0.0.1:30080", source="node/node01")
    assert [(o.verdict, o.cause) for o in exp.outcomes] == [("drop", "output-martian")]
    assert "localhost-nodeport-martian" in codes(exp)
    exp = nodefacts("healthy", "127.0.0.1:30080", source="node/node01")  # route_localnet = 1: masqueraded out
    assert {o.verdict for o in exp.outcomes} == {"accept"} and all(o.masquerade for o in exp.outcomes)


def test_reply_bypasses_conntrack() -> None:
    exp = nodefacts("reply-bypasses-conntrack", source="pod/client")
    lost = [o for o in exp.outcomes if o.reply_lost]
    assert [str(o.endpoint) for o in lost] == ["10.244.1.10:8080"]  # the pod on the client's bridge only
    assert lost[0].reply["client_sees"] == "10.244.1.10:8080"
    assert "reply-bypasses-conntrack" in codes(exp) and exp.exit_code == 1
    assert exp.to_json()["outcomes"][0]["reply"]["through_conntrack"] in (True, False)


def test_hairpin_mode_off() -> None:
    exp = nodefacts("hairpin-mode-off", source="pod/web-6d4f9c7b8-2lqzx")
    lost = [o for o in exp.outcomes if o.reply_lost]
    assert [str(o.endpoint) for o in lost] == ["10.244.1.10:8080"] and lost[0].reply["request_dropped"]
    assert "hairpin-mode-off" in codes(exp)
    exp = nodefacts("healthy", source="pod/web-6d4f9c7b8-2lqzx")  # hairpin_mode 1 on every port
    assert "hairpin-mode-off" not in codes(exp) and exp.exit_code == 0


def test_reply_asymmetric() -> None:
    exp = nodefacts("reply-asymmetric", source="203.0.113.7", node="node01")
    lost = sorted(str(o.endpoint) for o in exp.outcomes if o.reply_lost)
    assert lost == ["10.244.2.10:8080", "10.244.2.11:8080"]  # on node02; node01's own pod answers through it
    assert "reply-asymmetric" in codes(exp)
    exp = nodefacts("healthy", source="203.0.113.7", node="node01")  # clusterCIDR set: masqueraded
    assert "reply-asymmetric" not in codes(exp)


def test_conntrack_table_full() -> None:
    assert "conntrack-table-full" in codes(nodefacts("conntrack-table-full", source="pod/client"))
    snap = load_snapshot(str(NODEFACTS / "healthy.tar.gz"))
    nf = snap.nodes["node01"]
    assert "conntrack-table-full" not in codes(explain(snap, Request(target="svc/web", source="pod/client")))
    for count, severity in (("131072", "error"), ("120000", "warning")):
        snap = load_snapshot(str(NODEFACTS / "healthy.tar.gz"))
        nf = snap.nodes["node01"]
        nf.files["sysctl"] = nf.files["sysctl"].replace("nf_conntrack_count = 212", f"nf_conntrack_count = {count}")
        exp = explain(snap, Request(target="svc/web", source="pod/client"))
        d = next(d for d in exp.diagnostics if d.code == "conntrack-table-full")
        assert d.severity == severity and f"holds {count} of at most 131072" in d.message


def test_reply_asymmetric_by_interface() -> None:
    """A second network: the request for 172.16.0.11 comes in on eth1, loose rp_filter lets it through, but the
    node answers by its default route on eth0 (masqueraded or not): a warning, the translation itself is undone."""
    exp = nodefacts("reply-other-interface", "172.16.0.11:30080", source="203.0.113.7")
    assert {o.verdict for o in exp.outcomes} == {"accept"} and exp.exit_code == 0
    d = next(d for d in exp.diagnostics if d.code == "reply-asymmetric")
    assert d.severity == "warning" and "comes in on eth1 but the node's route back to 203.0.113.7 leaves by eth0" \
        in d.message
    assert {o.reply["through_conntrack"] for o in exp.outcomes if o.reply} == {None}


def test_ip_forward_off_loses_ipvs_replies() -> None:
    """IPVS mode sends the request itself (LOCAL_OUT), so ip_forward=0 does not stop it; the endpoint's reply to
    the pod, which the node must forward, is lost (kernel semantics; this machine's kernel has no ip_vs to
    measure it)."""
    snap = load_snapshot("demo")
    snap.nodes["node03"].files["sysctl"] = "net.ipv4.ip_forward = 0\n"
    exp = explain(snap, Request(target="svc/web", node="node03"))
    assert exp.proxy_mode == "ipvs" and {o.verdict for o in exp.outcomes} == {"accept"}
    assert all(o.reply_lost and o.reply["code"] == "ip-forward-off" for o in exp.outcomes if o.endpoint)
    assert "ip-forward-off" in codes(exp) and exp.exit_code == 1


def test_a_reply_from_the_node_itself_needs_no_forwarding() -> None:
    """kubernetes' endpoint is the control plane's own address: delivered locally, its reply leaves through OUTPUT,
    so ip_forward=0 loses nothing."""
    snap = load_snapshot("demo")
    snap.nodes["controlplane"].files["sysctl"] = "net.ipv4.ip_forward = 0\n"
    exp = explain(snap, Request(target="svc/kubernetes", source="203.0.113.7", node="controlplane"))
    assert [(o.verdict, str(o.endpoint)) for o in exp.outcomes] == [("accept", "192.168.56.10:6443")]
    assert exp.outcomes[0].reply["through_conntrack"] is True and "the node itself" in exp.outcomes[0].reply["why"]
    assert exp.exit_code == 0 and "ip-forward-off" not in codes(exp)


def test_nodes_with_the_deciding_nodes_very_dump_are_not_parsed(tmp_path: Path) -> None:
    """nodes-disagree compares other nodes' programming; a node whose dump is the deciding node's, byte for byte,
    programs it the same, so its dump is not parsed at all (explain stays one parse on a cluster of equal nodes),
    while a node with a different dump still is."""
    objs = _objs()
    dumps = {n: build_demo.node_dump(objs, "node01") for n in build_demo.NODES}
    sl = _slice(objs, "web")
    sl["endpoints"][2]["addresses"] = ["10.244.2.12"]
    dumps["controlplane"] = build_demo.node_dump(objs, "node02")
    snap = load_snapshot(str(write_snapshot(tmp_path / "s", objs, dumps)))
    exp = ask("svc/web", snap, source="pod/client")
    assert exp.node == "node01"
    assert "nodes-disagree" in codes(exp)  # controlplane's dump differs
    parsed = {n: sorted(nf._parsed) for n, nf in snap.nodes.items()}
    assert parsed["node02"] == []  # node01's dump exactly: nothing read
    assert parsed["controlplane"] != []
