"""`svctrace collect` and `explain` without --snapshot, as a user runs them, against the fake API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeAPIServer, NodeNamespaces, demo_node_ips, netns_available

from svctrace.model.snapshot import load_snapshot

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeAPIServer, str, dict[str, str]]]:
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("live")
    with NodeNamespaces(demo_node_ips(), legacy={"node02"}) as nn, FakeAPIServer() as f:
        f.node_netns = dict(nn.names)
        kc = str(f.write_kubeconfig(tmp / "kubeconfig"))
        env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "SVCTRACE_DEBUG")}
        env |= {"HOME": str(tmp / "home"), "XDG_CACHE_HOME": str(tmp / "cache"), "COLUMNS": "120"}
        (tmp / "home").mkdir()
        yield f, kc, env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "svctrace"), *args], capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.slow
def test_collect_writes_a_bundle_explain_can_read(cluster: tuple[FakeAPIServer, str, dict[str, str]],
                                                  tmp_path: Path) -> None:
    _fake, kc, env = cluster
    out = tmp_path / "snap.tgz"
    p = run(env, "collect", "-o", str(out), "--kubeconfig", kc, "--via", "debug-pod")
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stderr and "3 of 3 node(s)" in p.stderr
    snap = load_snapshot(str(out))
    assert sorted(snap.nodes) == ["controlplane", "node01", "node02"]
    p = run(env, "explain", "svc/web", "--snapshot", str(out), "--from", "pod/client", "-o", "json")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["outcomes"]) == 3
    again = run(env, "collect", "-o", str(out), "--kubeconfig", kc)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_live_explain_collects_only_what_it_needs_and_caches(cluster: tuple[FakeAPIServer, str, dict[str, str]]
                                                             ) -> None:
    fake, kc, env = cluster
    p = run(env, "explain", "svc/web", "--kubeconfig", kc, "--from", "pod/client", "-o", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["node"] == "node01" and sorted(o["pod"] for o in doc["outcomes"]) == [
        "default/web-6d4f9c7b8-2lqzx", "default/web-6d4f9c7b8-9ctrw", "default/web-6d4f9c7b8-kx5vd"]
    seen = len(fake.requests)
    p2 = run(env, "explain", "svc/web", "--kubeconfig", kc, "--from", "pod/client", "-o", "json")
    assert p2.returncode == 0 and json.loads(p2.stdout)["outcomes"] == doc["outcomes"]
    assert len(fake.requests) == seen, "the second question must not touch the cluster"
    p3 = run(env, "explain", "svc/web", "--kubeconfig", kc, "--from", "pod/client", "--refresh", "-o", "json")
    assert p3.returncode == 0 and len(fake.requests) > seen


@pytest.mark.slow
def test_live_check_reads_the_cluster_once_and_says_what_the_demo_says(
        cluster: tuple[FakeAPIServer, str, dict[str, str]]) -> None:
    fake, kc, env = cluster
    p = run(env, "check", "-A", "--kubeconfig", kc, "-o", "json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["namespace"] is None and [(i["name"], i["codes"]) for i in doc["items"] if i["health"] != "ok"] == [
        ("payment", ["selector-matches-no-pods", "no-endpoints"]), ("slow-start", ["no-ready-endpoints"])]
    seen = len(fake.requests)
    again = run(env, "check", "-A", "--kubeconfig", kc, "-o", "jsonpath={.summary.error}")
    assert again.returncode == 1 and again.stdout == "2\n" and len(fake.requests) == seen  # the cached snapshot
    ns = run(env, "check", "-n", "kube-system", "--kubeconfig", kc)
    assert ns.returncode == 0 and "kube-dns" in ns.stdout and "payment" not in ns.stdout


@pytest.mark.slow
def test_unreachable_cluster_is_exit_3(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
                  "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                  "current-context: x\n")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(tmp_path),
                                                                         "XDG_CACHE_HOME": str(tmp_path / "c")}
    p = run(env, "collect", "-o", str(tmp_path / "s.tgz"), "--kubeconfig", str(kc))
    assert p.returncode == 3, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) <= 3
    p = run(env, "explain", "svc/web", "--kubeconfig", str(kc))
    assert p.returncode == 3 and "Traceback" not in p.stderr
    p = run(env, "check", "-A", "--kubeconfig", str(kc))
    assert p.returncode == 3 and "Traceback" not in p.stderr




# -- repeated interrupts (issue 17 #2) -----------------------------------------------------------------------

def _until(cond, timeout: float = 20.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def _since(f: FakeAPIServer, n0: int, method: str, what: str) -> int:
    with f.lock:
        return sum(1 for r in f.requests[n0:] if r.method == method
                   and r.resource == ("pods/exec" if what == "exec" else "pods"))


MOMENTS = {
    # the moment the first SIGINT is sent, as what the fake API server has seen since the run began
    "first-create": lambda f, n0: _since(f, n0, "POST", "pods") >= 1,
    "all-created": lambda f, n0: _since(f, n0, "POST", "pods") >= 3,
    "exec": lambda f, n0: _since(f, n0, "GET", "exec") >= 1,
    "first-delete": lambda f, n0: _since(f, n0, "DELETE", "pods") >= 1,
}


@pytest.mark.slow
@pytest.mark.parametrize("signals", [2, 3])
@pytest.mark.parametrize("moment", sorted(MOMENTS))
@pytest.mark.parametrize("parallel", [3, 1])
def test_repeated_ctrl_c_leaves_no_debug_pod(cluster: tuple[FakeAPIServer, str, dict[str, str]], tmp_path: Path,
                                             moment: str, signals: int, parallel: int) -> None:
    """Issue 17 #2: before, two or three quick Ctrl-C during `collect` left debug pods behind about half the
    time (the second broke the pool's shutdown, the third the thread join; a worker died mid-create or
    mid-delete). Now the first interrupt cancels, the later ones wait for the cleanup, every pod created is
    deleted, and the run exits 130 with one line saying so."""
    import signal
    import time

    fake, kc, env = cluster
    fake.create_delay, fake.delete_delay = 0.3, 0.3  # wide windows: signals land mid-create, mid-delete
    fake.exec_override = lambda node, argv: 1.0  # the node commands take a second
    before = {f"{p['metadata'].get('namespace')}/{p['metadata']['name']}" for p in fake.live_pods()}
    n0 = len(fake.requests)
    try:
        p = subprocess.Popen([sys.executable, "-m", "svctrace", "collect", "--kubeconfig", kc, "--via", "debug-pod",
                              "--all-nodes", "--parallel", str(parallel), "-o", str(tmp_path / "snap")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert _until(lambda: MOMENTS[moment](fake, n0) or p.poll() is not None), moment
        for _ in range(signals):
            p.send_signal(signal.SIGINT)
            time.sleep(0.05)
        _, err = p.communicate(timeout=120)
        left = [x for x in fake.live_pods()
                if f"{x['metadata'].get('namespace')}/{x['metadata']['name']}" not in before]
    finally:
        fake.create_delay = fake.delete_delay = 0.0
        fake.exec_override = None
    assert left == [], (left, err)
    assert "Traceback" not in err, err
    assert p.returncode == 130, (p.returncode, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("svctrace: interrupted; ") and "debug pod" in last and "nothing written" in last, err
    assert not (tmp_path / "snap").exists()
