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
