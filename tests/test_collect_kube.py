"""Collecting from a live cluster through the Kubernetes API and debug pods, against tests/fakeapi.py.

The real kubernetes client talks to a fake API server (a thread here) through a real kubeconfig; exec
runs the node commands in network namespaces holding the demo nodes' rules (node02 on the legacy
backend). Needs root for the namespaces; the kubeconfig and slimming tests run anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakeapi import CANARY, FakeAPIServer, NodeNamespaces, demo_node_ips, netns_available

from svctrace.collect import debugpod, kube, live
from svctrace.collect.debugpod import DebugPodOptions, pod_manifest
from svctrace.errors import CollectError, InputError
from svctrace.explain import Request, explain
from svctrace.model.cluster import parse_cluster
from svctrace.model.snapshot import load_snapshot

FAST = DebugPodOptions(poll_interval=0.05, start_timeout=10, exec_timeout=60, command_timeout=20)

QUESTIONS: list[tuple[str, dict[str, Any]]] = [
    ("svc/web", {"source": "pod/client"}),
    ("svc/web", {"source": "pod/web-6d4f9c7b8-9ctrw"}),
    ("svc/web-nodeport", {"to": "node-port", "node": "node02"}),
    ("svc/frontend", {"to": "load-balancer", "node": "node02", "source": "192.168.56.99"}),
    ("svc/payment", {}),
    ("svc/session", {}),
    ("svc/db", {}),
    ("svc/weather-api", {}),
    ("svc/legacy-db", {}),
    ("svc/slow-start", {}),
    ("svc/kube-dns", {"namespace": "kube-system"}),
    ("svc/kubernetes", {}),
]


def answer(snap: Any, target: str, **kw: Any) -> dict[str, Any]:
    """What explain says, without what legitimately differs between bundles (file paths, line numbers, the
    node addresses `ip addr` adds)."""
    exp = explain(snap, Request(target=target, **kw))
    j: dict[str, Any] = exp.to_json()
    for o in j["outcomes"]:
        for s in o["path"]:
            s.pop("line", None)
        o.pop("snat_from", None)  # collected: the outgoing interface's address; the demo: assumed
        if o.get("reply"):
            o["reply"].pop("why")
    j.pop("inferred")
    j.pop("rules")
    j["exit_code"] = exp.exit_code
    return j


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def nodes() -> Iterator[NodeNamespaces]:
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    with NodeNamespaces(demo_node_ips(), legacy={"node02"}) as nn:
        yield nn


@pytest.fixture
def fake(nodes: NodeNamespaces) -> Iterator[FakeAPIServer]:
    with FakeAPIServer() as f:
        f.node_netns = dict(nodes.names)
        yield f


@pytest.fixture
def kc(fake: FakeAPIServer, tmp_path: Path) -> str:
    return str(fake.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def bare() -> Iterator[FakeAPIServer]:
    """A fake API server without nodes to exec in (tests that never reach a debug pod; no root needed)."""
    with FakeAPIServer() as f:
        yield f


@pytest.fixture
def bare_kc(bare: FakeAPIServer, tmp_path: Path) -> str:
    return str(bare.write_kubeconfig(tmp_path / "kubeconfig"))


def bundle_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


# -- a full bundle ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_full_bundle_answers_like_the_demo(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    notes: list[str] = []
    res = live.collect_cluster(tmp_path / "snap", via="debug-pod", kubeconfig=kc, progress=notes.append,
                               debug=FAST)
    assert res.ok, [(n.name, [e.to_json() for e in n.errors]) for n in res.nodes if not n.ok]
    assert res.failed == [] and res.server_version == "v1.30.2" and res.context == "fake"
    snap = load_snapshot(str(tmp_path / "snap"))
    demo = load_snapshot("demo")
    assert sorted(snap.nodes) == ["controlplane", "node01", "node02"]  # the demo's iptables-mode nodes
    for target, kw in QUESTIONS:
        assert answer(snap, target, **kw) == answer(demo, target, **kw), (target, kw)

    meta = json.loads((tmp_path / "snap" / "meta.json").read_text())
    assert meta["format"] == "svctrace-snapshot/1" and meta["context"] == "fake"
    assert meta["server_version"] == "v1.30.2" and meta["proxy_mode"] == "iptables"
    assert {n: (m["transport"], m["backend"], m["ok"]) for n, m in meta["nodes"].items()} == {
        "controlplane": ("debug-pod", "nft", True), "node01": ("debug-pod", "nft", True),
        "node02": ("debug-pod", "legacy", True)}
    for n in ("controlplane", "node01", "node02"):
        assert (tmp_path / "snap" / "nodes" / n / "errors.json").is_file()
        assert (tmp_path / "snap" / "nodes" / n / "proxy-mode").read_text().strip() == "iptables"
    # one pod per node, each on its node, each deleted; the pods' spec is least-privilege
    bodies = fake.state.created_bodies
    assert sorted(b["spec"]["nodeName"] for b in bodies) == ["controlplane", "node01", "node02"]
    assert len(fake.deleted_pods()) == 3 and fake.live_pods() == []
    for b in bodies:
        spec = b["spec"]
        ctr = spec["containers"][0]
        assert spec["hostNetwork"] is True and spec["automountServiceAccountToken"] is False
        assert ctr["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
        assert ctr["securityContext"]["privileged"] is False and all("hostPath" not in v for v in spec["volumes"])
        assert ctr["image"] == debugpod.DEFAULT_IMAGE
    assert any("deleting pod" in n for n in notes)


@pytest.mark.slow
def test_cluster_json_is_kubectl_get_json(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST)
    text = (tmp_path / "snap" / "cluster.json").read_text()
    doc = json.loads(text)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List" and text.startswith('{\n    "apiVersion"')
    kinds = {(o["apiVersion"], o["kind"]) for o in doc["items"]}
    assert kinds == {("v1", "Service"), ("discovery.k8s.io/v1", "EndpointSlice"), ("v1", "Pod"), ("v1", "Node"),
                     ("v1", "ConfigMap"), ("apps/v1", "DaemonSet")}
    assert sorted(os.listdir(tmp_path / "snap" / "nodes")) == ["node01"]
    cm = next(o for o in doc["items"] if o["kind"] == "ConfigMap")
    assert list(cm["data"]) == ["config.conf"]  # kube-proxy's kubeconfig.conf is left behind
    ds = next(o for o in doc["items"] if o["kind"] == "DaemonSet")
    assert ds["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "--hostname-override=$(NODE_NAME)"
    # a whole cluster reads cluster-wide lists, and never Secrets
    paths = {r.path for r in fake.requests}
    assert {"/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/pods", "/api/v1/nodes"} <= paths
    assert not any("secret" in p for p in paths)


@pytest.mark.slow
def test_nothing_secret_lands_in_a_bundle(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    out = tmp_path / "snap.tar.gz"
    live.collect_cluster(out, via="debug-pod", kubeconfig=kc, debug=FAST)
    root = tmp_path / "x"
    with tarfile.open(out) as tf:
        tf.extractall(root, filter="data")
    text = bundle_text(root)
    assert CANARY not in text and fake.token not in text
    for word in ("managedFields", "last-applied-configuration", '"env"', "envFrom", "secretRef", "secretKeyRef",
                 "serviceAccountToken", "kubeconfig.conf\":", "--token", "bootID", "volumeMounts"):
        assert word not in text, word
    assert not any("secret" in r.path for r in fake.requests)
    assert load_snapshot(str(out)).cluster.services  # the archive loads


@pytest.mark.slow
def test_old_cluster_without_endpointslices(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.no_endpointslices = True
    res = live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST)
    doc = json.loads((tmp_path / "snap" / "cluster.json").read_text())
    assert {o["kind"] for o in doc["items"]} >= {"Endpoints"} and "EndpointSlice" not in {o["kind"] for o in doc["items"]}
    assert any("v1 Endpoints used instead" in w for w in res.warnings)
    snap = load_snapshot(str(tmp_path / "snap"))
    got = answer(snap, "svc/web", source="pod/client")
    want = answer(load_snapshot("demo"), "svc/web", source="pod/client")
    assert got["outcomes"] == want["outcomes"]


@pytest.mark.slow
def test_lists_follow_continue_tokens(bare: FakeAPIServer, bare_kc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "PAGE", 4)
    with kube.Kube(kube.connect(bare_kc)) as k:
        pods = k.list("pods")
    assert len(pods) == 13 and all(p["kind"] == "Pod" and p["apiVersion"] == "v1" for p in pods)
    assert [r.q("continue") for r in bare.seen("GET", "pods")] == [None, "4", "8", "12"]


# -- kubeconfig resolution --------------------------------------------------------------------------

def _kubeconfig(path: Path, server: str, token: str, ctx: str, *, current: str | None, ns: str | None = None) -> Path:
    import yaml

    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": f"{ctx}-cluster", "cluster": {"server": server}}],
        "users": [{"name": f"{ctx}-user", "user": {"token": token}}],
        "contexts": [{"name": ctx, "context": {"cluster": f"{ctx}-cluster", "user": f"{ctx}-user",
                                               **({"namespace": ns} if ns else {})}}]}
    if current is not None:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_list_merges_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client import Configuration

    a = _kubeconfig(tmp_path / "a", "http://127.0.0.1:1", "tok-a", "alpha", current="alpha", ns="team-a")
    b = _kubeconfig(tmp_path / "b", "http://127.0.0.1:2", "tok-b", "beta", current="beta")
    before = {p: p.read_bytes() for p in (a, b)}
    default_before = Configuration._default
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), str(a), str(b)]))
    c = kube.connect()
    # the first file that sets current-context wins (the client's own merger would pick the last)
    assert (c.context, c.server, c.namespace) == ("alpha", "http://127.0.0.1:1", "team-a")
    assert live.context_namespace() == "team-a" and live.context_namespace("beta") == "default"
    assert c.configuration.api_key["BearerToken"].endswith("tok-a")
    c = kube.connect(context="beta")  # a context of the second file
    assert (c.context, c.server, c.namespace) == ("beta", "http://127.0.0.1:2", "default")
    assert c.configuration.api_key["BearerToken"].endswith("tok-b")
    with pytest.raises(CollectError, match=r'context "gamma" does not exist \(contexts: alpha, beta\)'):
        kube.connect(context="gamma")
    # --kubeconfig wins over $KUBECONFIG; a missing one is an error
    assert kube.connect(kubeconfig=str(b)).context == "beta"
    with pytest.raises(CollectError, match="no such file") as ei:
        kube.connect(kubeconfig=str(tmp_path / "nope"))
    assert ei.value.exit_code == 3
    # nothing written back, and the client's global default untouched
    assert {p: p.read_bytes() for p in (a, b)} == before
    assert Configuration._default is default_before


def test_kubeconfig_default_location_and_no_current_context(tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    (home / ".kube").mkdir()
    _kubeconfig(home / ".kube" / "config", "http://127.0.0.1:3", "tok", "home", current=None)
    with pytest.raises(CollectError, match=r"no current-context set; choose one with --context \(home\)"):
        kube.connect()
    assert kube.connect(context="home").server == "http://127.0.0.1:3"
    os.unlink(home / ".kube" / "config")
    with pytest.raises(CollectError, match="no cluster configured"):
        kube.connect()


@pytest.mark.slow
def test_relative_certificate_path_in_a_merged_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    if os.system("command -v openssl >/dev/null 2>&1") != 0:
        pytest.skip("openssl is needed for the TLS fake server")
    with FakeAPIServer(tls=True) as f:
        assert f.ca_file is not None
        first = _kubeconfig(tmp_path / "first", "http://127.0.0.1:1", "t", "other", current="tls")
        d = tmp_path / "elsewhere"
        d.mkdir()
        (d / "ca.crt").write_bytes(Path(f.ca_file).read_bytes())
        doc = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "c", "cluster": {"server": f.url, "certificate-authority": "ca.crt"}}],
               "users": [{"name": "u", "user": {"token": f.token}}],
               "contexts": [{"name": "tls", "context": {"cluster": "c", "user": "u"}}]}
        (d / "config").write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(d / "config")]))
        c = kube.connect()  # current-context from the first file names a context of the second
        assert c.context == "tls" and c.server == f.url
        with kube.Kube(c) as k:  # ca.crt is found beside the file that names it
            assert k.version()["gitVersion"] == "v1.30.2"


@pytest.mark.slow
def test_in_cluster_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.system("command -v openssl >/dev/null 2>&1") != 0:
        pytest.skip("openssl is needed for the TLS fake server")
    with FakeAPIServer(tls=True) as f:
        assert f.ca_file is not None
        sa = tmp_path / "sa"
        sa.mkdir()
        (sa / "token").write_text(f.token)
        (sa / "ca.crt").write_bytes(Path(f.ca_file).read_bytes())
        (sa / "namespace").write_text("tools\n")
        monkeypatch.setattr(kube, "SERVICE_TOKEN_FILE", str(sa / "token"))
        monkeypatch.setattr(kube, "SERVICE_CA_FILE", str(sa / "ca.crt"))
        monkeypatch.setattr(kube, "SERVICE_NAMESPACE_FILE", str(sa / "namespace"))
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(f.port))
        c = kube.connect()
        assert (c.source, c.context, c.namespace, c.server) == ("in-cluster", None, "tools", f.url)
        with kube.Kube(c) as k:
            assert k.version()["gitVersion"] == "v1.30.2"  # over TLS, verified against the CA
            assert len(k.list("nodes")) == 3
        with pytest.raises(CollectError, match="--context"):
            kube.connect(context="x")


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_rbac_denial_names_the_permission(bare: FakeAPIServer, bare_kc: str, tmp_path: Path) -> None:
    bare.forbid.add(("list", "pods", None))
    with pytest.raises(kube.PermissionDenied) as ei:
        live.collect_cluster(tmp_path / "snap", via="debug-pod", kubeconfig=bare_kc, debug=FAST)
    msg = str(ei.value)
    assert "cannot list pods cluster-wide" in msg and "kubectl auth can-i list pods -A" in msg
    assert 'User "alice" cannot list resource "pods"' in msg and ei.value.exit_code == 3
    assert not (tmp_path / "snap").exists() and bare.seen("POST", "pods") == []


@pytest.mark.slow
def test_rbac_denial_in_a_namespace(bare: FakeAPIServer, bare_kc: str, tmp_path: Path) -> None:
    bare.forbid.add(("list", "endpointslices", "default"))
    bare.forbid.add(("get", "endpoints", "default"))
    with pytest.raises(kube.PermissionDenied, match=r"cannot list endpointslices in namespace default.*"
                                                    r"kubectl auth can-i list endpointslices -n default"):
        live.snapshot_for_question("svc/web", "default", kubeconfig=bare_kc, via="debug-pod", debug=FAST)


@pytest.mark.slow
def test_optional_kube_system_objects_may_be_refused(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.forbid.update({("get", "configmaps", "kube-system"), ("get", "daemonsets", "kube-system")})
    res = live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST)
    assert res.ok
    assert any("cannot get configmaps kube-proxy in namespace kube-system" in w for w in res.warnings)
    meta = json.loads((tmp_path / "snap" / "meta.json").read_text())
    assert any("daemonsets" in w for w in meta["warnings"])


@pytest.mark.slow
def test_pod_create_and_exec_refused(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.forbid.add(("create", "pods", "default"))
    res = live.collect_cluster(tmp_path / "a", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST)
    err = json.loads((tmp_path / "a" / "nodes" / "node01" / "errors.json").read_text())
    assert res.failed == ["node01"] and "cannot create pods in namespace default" in err["errors"][0]["error"]
    fake.forbid = {("create", "pods/exec", "*")}
    res = live.collect_cluster(tmp_path / "b", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST)
    err = json.loads((tmp_path / "b" / "nodes" / "node01" / "errors.json").read_text())
    assert res.failed == ["node01"] and "cannot create pods/exec in namespace default" in err["errors"][0]["error"]
    assert len(fake.deleted_pods()) == 1 and fake.live_pods() == []


@pytest.mark.slow
def test_auto_falls_back_to_ssh_and_keeps_both_reasons(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fake.forbid.add(("create", "pods", "default"))
    res = live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="auto", kubeconfig=kc, debug=FAST,
                               ssh_options={"timeout": 2, "hosts": {"node01": f"127.0.0.1:{port}"}})
    assert res.failed == ["node01"] and any("SSH tried instead" in w for w in res.warnings)
    err = json.loads((tmp_path / "snap" / "nodes" / "node01" / "errors.json").read_text())
    assert [e["what"] for e in err["errors"]] == ["node", "connect"]
    assert "cannot create pods in namespace default" in err["errors"][0]["error"]
    assert "connection refused" in err["errors"][1]["error"]


@pytest.mark.slow
def test_pod_security_admission_is_not_rbac(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.pod_security = "baseline"
    err = _one(fake, kc, tmp_path, deleted=0)
    msg = err["errors"][0]["error"]
    assert "does not admit the debug pod (Pod Security admission" in msg and "--debug-namespace kube-system" in msg
    assert 'violates PodSecurity "baseline:latest"' in msg and "permission denied" not in msg


@pytest.mark.slow
def test_unreachable_and_unauthorized(bare: FakeAPIServer, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dead = _kubeconfig(tmp_path / "dead", f"http://127.0.0.1:{port}", "t", "dead", current="dead")
    with pytest.raises(CollectError, match=r"cannot reach context dead \(http://127.0.0.1:\d+\).*Connection refused") \
            as ei:
        live.collect_cluster(tmp_path / "snap", kubeconfig=str(dead))
    assert ei.value.exit_code == 3
    bad = bare.write_kubeconfig(tmp_path / "bad", token="wrong-token")
    with pytest.raises(CollectError, match="rejected the credentials"):
        live.collect_cluster(tmp_path / "snap", kubeconfig=str(bad))


# -- one question, and its cache --------------------------------------------------------------------

@pytest.mark.slow
def test_question_reads_only_what_it_needs_and_caches(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    path = live.snapshot_for_question("svc/web", "default", source="pod/client", kubeconfig=kc, debug=FAST,
                                      via="debug-pod")
    assert Path(path).is_relative_to(tmp_path / "cache" / "svctrace" / "live")
    reads = [(r.method, r.path, r.q("labelSelector"), r.q("fieldSelector")) for r in fake.requests
             if r.method == "GET" and r.resource != "pods/exec" and not r.path.startswith("/api/v1/namespaces/default/pods/svctrace-")]
    assert sorted(reads) == sorted([
        ("GET", "/version/", None, None),
        ("GET", "/api/v1/namespaces/default/services", None, None),
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", "kubernetes.io/service-name=web", None),
        ("GET", "/api/v1/namespaces/default/pods", None, None),
        ("GET", "/api/v1/nodes", None, None),
        ("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy", None, None),
        ("GET", "/api/v1/namespaces/kube-system/configmaps/kube-proxy-config", None, None),
        ("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy", None, None),
        # around the rules: the namespace's NetworkPolicies, Namespaces' labels, add-ons (names and images)
        ("GET", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", None, None),
        ("GET", "/api/v1/namespaces", None, None),
        ("GET", "/apis/apps/v1/daemonsets", None, None),
        ("GET", "/apis/apps/v1/deployments", None, None),
        ("GET", "/api/v1/namespaces/kube-system/pods", None, None),
    ])
    # one debug pod, on the sender's node
    assert [b["spec"]["nodeName"] for b in fake.state.created_bodies] == ["node01"] and fake.live_pods() == []
    snap = load_snapshot(path)
    assert sorted(snap.nodes) == ["node01"]
    text = bundle_text(Path(path))
    assert fake.token not in text and CANARY not in text
    assert oct(Path(path).parent.stat().st_mode & 0o777) == "0o700" and oct(Path(path).stat().st_mode & 0o777) == "0o700"
    assert answer(snap, "svc/web", source="pod/client") == answer(load_snapshot("demo"), "svc/web", source="pod/client")
    # asking again is instant and does not touch the cluster
    n = len(fake.requests)
    t0 = time.monotonic()
    assert live.snapshot_for_question("svc/web", "default", source="pod/client", kubeconfig=kc, debug=FAST,
                                      via="debug-pod") == path
    assert time.monotonic() - t0 < 0.5 and len(fake.requests) == n
    # refresh forces a new collection; so does an expired entry
    live.snapshot_for_question("svc/web", "default", source="pod/client", kubeconfig=kc, debug=FAST,
                               via="debug-pod", refresh=True)
    assert len(fake.requests) > n
    n = len(fake.requests)
    live.snapshot_for_question("svc/web", "default", source="pod/client", kubeconfig=kc, debug=FAST,
                               via="debug-pod", ttl=0)
    assert len(fake.requests) > n and len(fake.deleted_pods()) == 3


@pytest.mark.slow
def test_question_by_address_and_default_node(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    path = live.snapshot_for_question("10.96.20.20:5000", kubeconfig=kc, debug=FAST, via="debug-pod",
                                      cache_dir=tmp_path / "c")
    assert Path(path).parent == tmp_path / "c"
    # IP:PORT needs every Service to find the owner; the rest is its namespace only
    assert fake.seen("GET", "services")[0].path == "/api/v1/services"
    assert [r.path for r in fake.seen("GET", "pods", verb="list")] == [
        "/api/v1/namespaces/default/pods", "/api/v1/namespaces/kube-system/pods"]  # kube-system: static add-on pods
    # no --from/--node: the first Ready worker, as explain picks its neutral client
    assert [b["spec"]["nodeName"] for b in fake.state.created_bodies] == ["node01"]
    snap = load_snapshot(path)
    assert answer(snap, "10.96.20.20:5000") == answer(load_snapshot("demo"), "10.96.20.20:5000")


@pytest.mark.slow
def test_question_in_another_namespace_and_unknown_service(fake: FakeAPIServer, kc: str) -> None:
    path = live.snapshot_for_question("kube-dns.kube-system.svc.cluster.local", node="node02", kubeconfig=kc,
                                      debug=FAST, via="debug-pod")
    assert [b["spec"]["nodeName"] for b in fake.state.created_bodies] == ["node02"]
    assert {r.namespace for r in fake.seen("GET", "pods", verb="list")} == {"kube-system"}
    snap = load_snapshot(path)
    assert answer(snap, "kube-dns.kube-system.svc.cluster.local", node="node02")["outcomes"]
    # a name that is not in the namespace: its namesakes elsewhere are read, for explain's hint
    path = live.snapshot_for_question("svc/kube-dns", "default", kubeconfig=kc, debug=FAST, via="debug-pod")
    assert fake.seen("GET", "services")[-1].q("fieldSelector") == "metadata.name=kube-dns"
    from svctrace.errors import InputError

    with pytest.raises(InputError, match=r"did you mean kube-system/kube-dns"):
        explain(load_snapshot(path), Request(target="svc/kube-dns", namespace="default"))


@pytest.mark.slow
def test_question_fails_clearly_when_the_node_cannot_be_read(fake: FakeAPIServer, kc: str) -> None:
    fake.pod_mode = "image-pull"
    with pytest.raises(CollectError, match=r"could not read the rules of node node01: .*cannot be pulled"):
        live.snapshot_for_question("svc/web", source="pod/client", kubeconfig=kc, debug=FAST, via="debug-pod")
    assert fake.live_pods() == [] and not any((Path(os.environ["XDG_CACHE_HOME"]) / "svctrace" / "live").glob("*/meta.json"))


# -- the debug pod always goes away -------------------------------------------------------------------

def _one(fake: FakeAPIServer, kc: str, tmp_path: Path, opts: DebugPodOptions = FAST, deleted: int = 1,
         **kw: Any) -> dict[str, Any]:
    res = live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=opts, **kw)
    assert res.failed == ["node01"]
    assert len(fake.deleted_pods()) == deleted and fake.live_pods() == [], "the debug pod was not deleted"
    return dict(json.loads((tmp_path / "snap" / "nodes" / "node01" / "errors.json").read_text()))


@pytest.mark.slow
def test_cleanup_after_an_exec_error(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.exec_override = lambda node, argv: (1, b"", b"sh: 1: cannot create /tmp/x: Read-only file system\n")
    err = _one(fake, kc, tmp_path)
    assert "the collection script did not run (exit code 1): sh: 1: cannot create" in err["errors"][0]["error"]


@pytest.mark.slow
def test_cleanup_after_an_exec_timeout(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.exec_override = lambda node, argv: 30.0  # hangs
    t0 = time.monotonic()
    err = _one(fake, kc, tmp_path, DebugPodOptions(poll_interval=0.05, exec_timeout=1.0))
    assert time.monotonic() - t0 < 10
    assert "timed out after 1 s" in err["errors"][0]["error"]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "expect"), [
    ("image-pull", r"image registry.k8s.io/build-image/debian-iptables:bookworm-v1.0.0 cannot be pulled on the node "
                   r"\((ErrImagePull|ImagePullBackOff): .*--image"),
    ("pending", r"did not start within 1 s \(last state: Pending\); is the node Ready"),
    ("failed", r"ended \(Failed\): OutOfpods Pod was rejected"),
    ("unschedulable", r"is unschedulable: 0/3 nodes are available"),
])
def test_cleanup_when_the_pod_does_not_start(fake: FakeAPIServer, kc: str, tmp_path: Path, mode: str,
                                             expect: str) -> None:
    import re

    fake.pod_mode = mode
    err = _one(fake, kc, tmp_path, DebugPodOptions(poll_interval=0.05, start_timeout=1.0))
    assert re.search(expect, err["errors"][0]["error"]), err


@pytest.mark.slow
def test_cleanup_on_ctrl_c(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    def progress(msg: str) -> None:
        if "running the node commands" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST,
                             progress=progress)
    assert len(fake.deleted_pods()) == 1 and fake.live_pods() == []
    assert not (tmp_path / "snap").exists()


@pytest.mark.slow
def test_cleanup_on_sigterm(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)

    def progress(msg: str) -> None:
        if "running the node commands" in msg:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises in here

    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        live.collect_cluster(tmp_path / "snap", nodes=["node01"], via="debug-pod", kubeconfig=kc, debug=FAST,
                             progress=progress)
    assert len(fake.deleted_pods()) == 1 and fake.live_pods() == []
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_cleanup_of_every_node_when_one_is_interrupted(fake: FakeAPIServer, kc: str, tmp_path: Path) -> None:
    fake.exec_override = lambda node, argv: 2.0 if node != "node02" else None  # the others are busy

    def progress(msg: str) -> None:
        if msg.startswith("node02: running the node commands"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        live.collect_cluster(tmp_path / "snap", via="debug-pod", kubeconfig=kc, debug=FAST, progress=progress,
                             parallel=3)
    assert len(fake.state.created_bodies) == 3
    assert len(fake.deleted_pods()) == 3 and fake.live_pods() == []


# -- what is kept -----------------------------------------------------------------------------------

def test_slim_keeps_what_svctrace_reads() -> None:
    assert kube.slim({"apiVersion": "v1", "kind": "Secret", "data": {"a": "b"}}) is None
    svc = kube.slim({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "s", "namespace": "n", "managedFields": [{}],
        "annotations": {"service.kubernetes.io/topology-mode": "Auto", "kubectl.kubernetes.io/last-applied-configuration": "x"}},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}, "status": {"loadBalancer": {}, "conditions": []}})
    assert svc == {"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "s", "namespace": "n",
                                "annotations": {"service.kubernetes.io/topology-mode": "Auto"}},
                   "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}, "status": {"loadBalancer": {}}}
    ds = kube.slim({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "kube-proxy"},
                    "spec": {"template": {"spec": {"containers": [{
                        "name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.31.0", "env": [{"name": "X"}],
                        "command": ["kube-proxy", "--proxy-mode=ipvs", "--token", "abc", "--api-token=def",
                                    "--master=https://admin:pw@10.0.0.1:6443"]}]}}}})
    assert ds is not None
    assert ds["spec"]["template"]["spec"]["containers"] == [{
        "name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.31.0",
        "command": ["kube-proxy", "--proxy-mode=ipvs", "--master=https://10.0.0.1:6443"]}]


def test_pod_manifest_privileged_only_when_asked() -> None:
    m = pod_manifest("p", "node01", DebugPodOptions(image="example.org/tools:1", privileged=True))
    ctr = m["spec"]["containers"][0]
    assert ctr["securityContext"] == {"privileged": True} and ctr["image"] == "example.org/tools:1"
    assert m["spec"]["volumes"] == [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}]
    assert ctr["volumeMounts"][0]["readOnly"] is True
    assert m["spec"]["tolerations"] == [{"operator": "Exists"}] and m["spec"]["activeDeadlineSeconds"] > 0
    assert debugpod.pod_name("Node_01.example.com").startswith("svctrace-node-01-example-com-")


def test_slim_keeps_policies_namespaces_and_add_ons_names_only() -> None:
    """Around the rules (docs/whole-path.md): a NetworkPolicy's spec, a Namespace's labels, an add-on's name and
    images — no commands, env or annotations of other workloads; pods keep their DNS settings."""
    pol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "p", "namespace": "n", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": CANARY}},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert kube.slim(pol) == {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "p", "namespace": "n"},
                              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    ns = kube.slim({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}},
                    "spec": {"finalizers": ["kubernetes"]}})
    assert ns == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}}
    dep = kube.slim({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "controller",
                                                                                 "namespace": "metallb-system"},
                     "spec": {"template": {"spec": {"containers": [{
                         "name": "c", "image": "quay.io/metallb/controller:v0.14.5", "args": ["--token=" + CANARY],
                         "env": [{"name": "X", "value": CANARY}]}]}}}})
    assert dep is not None and CANARY not in json.dumps(dep)
    assert dep["spec"]["template"]["spec"]["containers"] == [{"name": "c", "image": "quay.io/metallb/controller:v0.14.5"}]
    pod = kube.slim({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
                     "spec": {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}, "enableServiceLinks": False,
                              "containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": CANARY}]}]}})
    assert pod is not None and CANARY not in json.dumps(pod)
    assert pod["spec"]["dnsPolicy"] == "None" and pod["spec"]["dnsConfig"] == {"nameservers": ["1.1.1.1"]}
    assert pod["spec"]["enableServiceLinks"] is False and pod["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"


@pytest.mark.slow
def test_policies_namespaces_and_add_ons_are_collected_and_optional(tmp_path: Path) -> None:
    from fakeapi import realistic_objects

    objs = [
        *realistic_objects(),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "default"},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "labels": {"team": "web"}}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "calico-node", "namespace": "kube-system"},
         "spec": {"template": {"spec": {"containers": [{"name": "calico-node", "image": "docker.io/calico/node:v3.28.0",
                                                        "env": [{"name": "X", "value": CANARY}]}]}}}}]
    with FakeAPIServer(objs) as f:
        kc = str(f.write_kubeconfig(tmp_path / "kc"))
        with kube.Kube(kube.connect(kc)) as k:
            got = kube.fetch_objects(k, namespace="default", service="web")
        assert [o["metadata"]["name"] for o in got.of("NetworkPolicy")] == ["deny"]
        assert got.of("Namespace")[0]["metadata"] == {"name": "default", "labels": {"team": "web"}}
        assert CANARY not in json.dumps(got.items) and not got.warnings
        snap_cluster = parse_cluster(kube.as_list(got.items))
        assert [p.key for p in snap_cluster.policies] == ["default/deny"]
        assert any(w.name == "calico-node" for w in snap_cluster.workloads)
        f.forbid.update({("list", "networkpolicies", "default"), ("list", "namespaces", None),
                         ("list", "deployments", None)})
        with kube.Kube(kube.connect(kc)) as k:
            got = kube.fetch_objects(k, namespace="default", service="web")
        assert not got.of("NetworkPolicy") and not got.of("Namespace")
        warned = "\n".join(got.warnings)
        assert "kubectl auth can-i list networkpolicies -n default" in warned
        assert "(optional: NetworkPolicies are not evaluated)" in warned
        assert "kubectl auth can-i list namespaces -A" in warned and "deployments" in warned


@pytest.mark.slow
def test_question_from_a_pod_of_another_namespace(fake: FakeAPIServer, kc: str) -> None:
    """`--from pod/client -n kube-system`: no client in kube-system, so its namesakes elsewhere are read; the one
    there is (default/client) sends, from its node, and explain says where it was found."""
    path = live.snapshot_for_question("svc/kube-dns", "kube-system", source="pod/client", kubeconfig=kc, debug=FAST,
                                      via="debug-pod")
    assert [r.q("fieldSelector") for r in fake.seen("GET", "pods", verb="list")][-1] == "metadata.name=client"
    assert [b["spec"]["nodeName"] for b in fake.state.created_bodies] == ["node01"]
    exp = explain(load_snapshot(path), Request(target="svc/kube-dns", namespace="kube-system", source="pod/client"))
    assert exp.source.name == "default/client" and exp.node == "node01"
    assert ("source: --from pod/client: no pod client in namespace kube-system; the only pod of that name in the "
            "snapshot is default/client") in exp.inferred


@pytest.mark.slow
def test_check_collects_the_nodes_and_answers_as_the_saved_demo(fake: FakeAPIServer, kc: str) -> None:
    from svctrace.browse.session import SnapshotSession

    path = live.snapshot_for_check(None, kubeconfig=kc, debug=FAST, via="debug-pod")
    snap = load_snapshot(path)
    demo = load_snapshot("demo")
    assert sorted(snap.nodes) == sorted(snap.cluster.nodes) == ["controlplane", "node01", "node02"]  # all: few

    def rows(s: Any) -> list[tuple[str, str, str, list[str], str]]:
        return [(r.key, r.port_text, r.health, r.codes, r.outcome) for r in SnapshotSession(s).check().rows]

    assert rows(snap) == rows(demo)
    n = len(fake.requests)  # cached for a minute, like a question
    assert live.snapshot_for_check(None, kubeconfig=kc, debug=FAST, via="debug-pod") == path
    assert len(fake.requests) == n


def test_pod_manifest_least_privilege() -> None:
    """Issue 17 #10: before, the pod added NET_ADMIN and NET_RAW to the runtime's default capabilities, with
    no seccomp profile and a writable root filesystem. Now: everything dropped but the two the dump tools
    need (measured: iptables-legacy-save fails without either, nft/ipset without NET_ADMIN, ipvsadm without
    NET_RAW), RuntimeDefault seccomp, a read-only root filesystem with an in-memory /tmp."""
    digest = "example.org/tools@sha256:" + "ab" * 32
    m = pod_manifest("p", "node01", DebugPodOptions(image=debugpod.check_image(digest)))
    ctr = m["spec"]["containers"][0]
    assert ctr["image"] == digest
    assert ctr["securityContext"] == {
        "privileged": False, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert m["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert ctr["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert m["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]
    assert m["spec"]["automountServiceAccountToken"] is False and m["spec"]["hostNetwork"] is True
    assert "hostPID" not in m["spec"] and "hostPath" not in json.dumps(m)


@pytest.mark.parametrize("image", ["repo@sha256:abc", "repo@sha256:" + "AB" * 32, "repo@md5:" + "a" * 32, "",
                                   "two words"])
def test_malformed_image_is_a_usage_error(image: str) -> None:
    with pytest.raises(InputError):
        debugpod.check_image(image)
