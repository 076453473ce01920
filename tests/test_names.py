"""Names as kubectl takes them: `--from pod/NAME` across namespaces, `explain svc NAME`, `explain IP[:PORT]`, and
usage errors as one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_cli import run

from svctrace.errors import InputError
from svctrace.explain.question import find_pod, join_target, parse_source, parse_target
from svctrace.model.cluster import parse_cluster

DEMO = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo"


def pod(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": ip, "phase": "Running"},
    }


CLUSTER = parse_cluster(
    {
        "items": [
            {
                "kind": "Service",
                "metadata": {"namespace": "default", "name": "s"},
                "spec": {"clusterIP": "10.96.0.9"},
            },
            pod("default", "client", "10.244.0.5"),
            pod("a", "dup", "10.244.0.6"),
            pod("b", "dup", "10.244.0.7"),
            pod("kube-system", "client", "10.244.0.8")
            | {"metadata": {"namespace": "kube-system", "name": "other"}},
        ]
    }
)


def test_a_pod_is_found_in_its_namespace_then_alone_elsewhere_else_its_namesakes_are_named() -> None:
    found, note = find_pod(CLUSTER, parse_source("pod/client", "default"))
    assert found.key == "default/client" and note is None
    found, note = find_pod(CLUSTER, parse_source("pod/client", "kube-system"))
    assert found.key == "default/client"
    assert note == (
        "--from pod/client: no pod client in namespace kube-system; the only pod of that name in the "
        "snapshot is default/client"
    )
    with pytest.raises(InputError) as e:
        find_pod(CLUSTER, parse_source("pod/dup", "default"))
    assert str(e.value) == (
        "no pod default/dup in the snapshot; pods named dup: a/dup, b/dup (say which: "
        "--from pod/NAMESPACE/dup)"
    )
    # a namespace that is written is not second-guessed
    with pytest.raises(InputError, match=r"^no pod kube-system/client in the snapshot$"):
        find_pod(CLUSTER, parse_source("pod/kube-system/client", "default"))
    with pytest.raises(InputError, match=r"^no pod default/nobody in the snapshot$"):
        find_pod(CLUSTER, parse_source("pod/nobody", "default"))
    with pytest.raises(InputError, match="name the pod"):
        parse_source("pod/", "default")


def test_from_a_pod_of_another_namespace_on_the_demo() -> None:
    p = run("explain", "svc/kube-dns", "-n", "kube-system", "--from", "pod/client", "--demo", "-o", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["source"] == {"kind": "pod", "name": "default/client", "ip": "10.244.1.50", "node": "node01"}
    assert (
        "source: --from pod/client: no pod client in namespace kube-system; the only pod of that name in the "
        "snapshot is default/client"
    ) in doc["inferred"]
    text = run("explain", "svc/kube-dns", "-n", "kube-system", "--from", "pod/client", "--demo")
    assert "no pod client in namespace kube-system" in text.stdout


def test_namesakes_in_two_other_namespaces_are_one_line_naming_them(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    shutil.copytree(DEMO, snap)
    doc = json.loads((snap / "cluster.json").read_text())
    client = next(o for o in doc["items"] if o["kind"] == "Pod" and o["metadata"]["name"] == "client")
    twin = json.loads(json.dumps(client))
    twin["metadata"]["namespace"] = "team-b"
    doc["items"].append(twin)
    (snap / "cluster.json").write_text(json.dumps(doc))
    p = run("explain", "svc/kube-dns", "-n", "kube-system", "--from", "pod/client", "--snapshot", str(snap))
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == (
        "svctrace: error: no pod kube-system/client in the snapshot; pods named client: "
        "default/client, team-b/client (say which: --from pod/NAMESPACE/client)\n"
    )
    ok = run(
        "explain",
        "svc/kube-dns",
        "-n",
        "kube-system",
        "--from",
        "pod/team-b/client",
        "--snapshot",
        str(snap),
        "-o",
        "jsonpath={.source.name}",
    )
    assert ok.returncode == 0 and ok.stdout == "team-b/client\n"


def test_svc_space_name_is_svc_slash_name() -> None:
    assert join_target(["svc", "web"]) == join_target(["services", "web"]) == "svc/web"
    assert join_target(["svc/web"]) == "svc/web"
    with pytest.raises(InputError, match="explain takes one Service"):
        join_target(["pod", "web"])
    a = run("explain", "svc", "web", "--demo", "-o", "json")
    b = run("explain", "svc/web", "--demo", "-o", "json")
    assert a.returncode == b.returncode == 0 and json.loads(a.stdout) == json.loads(b.stdout)


def test_explain_an_address_finds_its_service() -> None:
    assert parse_target("10.96.10.10").ip == "10.96.10.10" and parse_target("10.96.10.10").port is None
    assert parse_target("[fd00::10]").ip == "fd00::10"
    # (the load balancer's outside client is outside its loadBalancerSourceRanges: dropped, exit 1)
    cases = [
        ("10.96.10.10", "web cluster-ip 80", 0),
        ("10.96.10.10:80", "web cluster-ip 80", 0),
        ("192.168.56.200", "frontend load-balancer 80", 1),
        ("10.96.0.10:53", "kube-dns cluster-ip 53", 0),
    ]
    for target, want, rc in cases:
        p = run("explain", target, "--demo", "-o", "jsonpath={.service.name} {.destination.via} {.port.port}")
        assert p.returncode == rc and p.stdout == want + "\n", (target, p.stdout, p.stderr)
    for target, err in [
        ("10.1.2.3", "no Service has the address 10.1.2.3"),
        ("192.168.56.11", "192.168.56.11 is node node01's address: give the node port (IP:PORT)"),
    ]:
        p = run("explain", target, "--demo")
        assert (
            p.returncode == 2 and p.stderr.startswith("svctrace: error: " + err) and p.stderr.count("\n") == 1
        )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("explain",), "svctrace explain: Missing argument 'target'. (see svctrace explain -h)"),
        (
            ("explain", "svc/web", "--bogus"),
            "svctrace explain: No such option: --bogus (see svctrace explain -h)",
        ),
        (("nope",), "svctrace: No such command 'nope'. (see svctrace -h)"),
        (
            ("check", "--demo", "--node"),
            "svctrace check: Option '--node' requires an argument. (see svctrace check -h)",
        ),
        (
            ("explain", "svc", "web", "extra"),
            "svctrace explain: Got unexpected extra argument(s) (extra) (see svctrace explain -h)",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], line: str) -> None:
    p = run(*args)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"svctrace: error: {line}\n"


def test_help_documents_the_pod_forms() -> None:
    p = run("explain", "-h")
    assert p.returncode == 0
    flat = " ".join(p.stdout.replace("│", " ").split())
    assert "pod/NAMESPACE/NAME" in flat and "svc NAME" in flat
