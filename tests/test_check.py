"""`svctrace check`: every Service's health, the worst first, and its exit code; the same rows as the TUI's marks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from test_cli import run

from svctrace.browse.check import summarize
from svctrace.browse.session import open_session

DEMO_CLUSTER = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "cluster.json"


def rows_of(stdout: str) -> list[list[str]]:
    """The table's rows (without the header and the summary), split on the three-space column gap."""
    lines = stdout.splitlines()
    body = lines[1 : lines.index("")]
    return [[c.strip() for c in line.split("   ") if c.strip()] for line in body]


def test_check_all_namespaces_on_the_demo_exits_1_with_the_broken_services_first() -> None:
    p = run("check", "-A", "--demo")
    assert p.returncode == 1, p.stderr
    assert p.stdout.splitlines()[0].split() == ["HEALTH", "NAMESPACE", "NAME", "PORT", "NODE", "CODES"]
    rows = rows_of(p.stdout)
    # the demo's two broken Services on purpose, worst first, with explain's codes
    assert rows[0][:4] == ["error", "default", "payment", "https:443/TCP"]
    assert "selector-matches-no-pods" in rows[0][-1] and "no-endpoints" in rows[0][-1]
    assert rows[1][:3] == ["error", "default", "slow-start"] and rows[1][-1] == "no-ready-endpoints"
    assert all(r[0] == "ok" for r in rows[2:])
    # every port of every Service: kube-dns's three ports are three rows (53/UDP and 53/TCP told apart)
    assert [r[3] for r in rows if r[2] == "kube-dns"] == ["dns:53/UDP", "dns-tcp:53/TCP", "metrics:9153/TCP"]
    assert p.stdout.rstrip().endswith("11 Services, 13 rows: 2 error, 11 ok.")
    assert p.stderr == ""


def test_a_healthy_namespace_exits_0_and_the_default_namespace_is_default() -> None:
    p = run("check", "-n", "kube-system", "--demo")
    assert p.returncode == 0, p.stdout + p.stderr
    assert {r[1] for r in rows_of(p.stdout)} == {"kube-system"}
    d = run("check", "--demo")
    assert d.returncode == 1 and {r[1] for r in rows_of(d.stdout)} == {"default"}
    empty = run("check", "-n", "nothing-here", "--demo")
    assert empty.returncode == 0 and empty.stdout == "No Services in namespace nothing-here.\n"


def test_every_format_parses_and_says_the_same() -> None:
    j = run("check", "-A", "--demo", "-o", "json")
    assert j.returncode == 1 and j.stderr == ""
    doc = json.loads(j.stdout)
    assert doc["kind"] == "Check" and doc["healthy"] is False
    assert doc["summary"] == {"services": 11, "rows": 13, "error": 2, "warning": 0, "unknown": 0, "ok": 11}
    first = doc["items"][0]
    assert (first["namespace"], first["name"], first["health"]) == ("default", "payment", "error")
    assert first["port"] == {
        "name": "https",
        "port": 443,
        "protocol": "TCP",
        "target_port": 8443,
        "node_port": None,
    }
    assert {d["code"] for d in first["diagnostics"]} >= {"no-endpoints", "selector-matches-no-pods"}
    y = run("check", "-A", "--demo", "-o", "yaml")
    assert y.returncode == 1 and yaml.safe_load(y.stdout) == doc
    jp = run("check", "-A", "--demo", "-o", 'jsonpath={.items[?(@.health=="error")].name}')
    assert jp.returncode == 1 and jp.stdout == "payment slow-start\n"
    tpl = run("check", "-n", "kube-system", "--demo", "-o", 'jsonpath={.summary.rows}{"\\n"}{.healthy}')
    assert tpl.returncode == 0 and tpl.stdout == "3\ntrue\n"
    wide = run("check", "-A", "--demo", "-o", "wide")
    head = wide.stdout.splitlines()[0].split()
    assert head == [
        "HEALTH",
        "NAMESPACE",
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "PORT",
        "ENDPOINTS",
        "NODE",
        "OUTCOME",
        "CODES",
    ]
    payment = next(r for r in rows_of(wide.stdout) if r[2] == "payment")
    assert payment[3:7] == ["ClusterIP", "10.96.50.50", "https:443/TCP", "0/0"] and payment[8] == "reject"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ("-o", "table"),
            "-o table: not a format this command prints (formats: text|wide|json|yaml|jsonpath=TEMPLATE)",
        ),
        (("-o", "jsonpath="), "-o jsonpath needs a template"),
        (("-o", "jsonpath={.items[}"), "-o jsonpath: cannot read {.items[}"),
        (("-o", "json=x"), "only jsonpath takes `=`"),
        (("-A", "-n", "default"), "give -A or -n NAMESPACE, not both"),
        (("--node", "nope"), "no node nope in the snapshot"),
    ],
)
def test_bad_check_flags_are_one_line_exit_2(args: tuple[str, ...], needle: str) -> None:
    p = run("check", "--demo", *args)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("svctrace: error: ") and needle in p.stderr and p.stderr.count("\n") == 1, (
        p.stderr
    )


def test_node_flag_asks_that_nodes_rules() -> None:
    p = run("check", "-A", "--demo", "--node", "node02", "-o", "json")
    doc = json.loads(p.stdout)
    dns_only = {"default/db", "default/weather-api"}  # headless and ExternalName: no node's rules decide
    assert {tuple(i["nodes"]) for i in doc["items"] if f"{i['namespace']}/{i['name']}" not in dns_only} == {
        ("node02",)
    }
    assert [i["nodes"] for i in doc["items"] if f"{i['namespace']}/{i['name']}" in dns_only] == [[], []]
    assert doc["node"] == "node02"
    # every node answers, whatever its mode (node03 IPVS, node04 nftables): the same two Services are broken
    for node in ("controlplane", "node01", "node03", "node04"):
        r = run("check", "-A", "--demo", "--node", node, "-o", 'jsonpath={.items[?(@.health!="ok")].name}')
        assert r.returncode == 1 and r.stdout == "payment slow-start\n", (node, r.stdout, r.stderr)


def test_the_tui_marks_are_the_check_rows() -> None:
    """The Service list's marks and `check` are one computation: each mark is the worst of the Service's rows."""
    session = open_session("demo")
    report = session.check()
    by_key: dict[str, list] = {}
    for r in report.rows:
        by_key.setdefault(r.key, []).append(r)
    assert set(by_key) == {r.key for r in session.services()}
    for key, rows in by_key.items():
        assert session.health(key) == summarize(rows)
    assert session.health("default/payment") == ("error", "selector-matches-no-pods, no-endpoints")
    assert session.health("default/slow-start") == ("error", "no-ready-endpoints")
    assert session.health("default/web") == ("ok", "")


def test_a_local_policy_is_checked_on_every_node(tmp_path: Path) -> None:
    """internalTrafficPolicy: Local: each node's pods reach only that node's endpoints, so every node with rules
    is asked; the nodes without a web pod drop (no-local-endpoints), the others reach their own pods."""
    objs = json.loads(DEMO_CLUSTER.read_text())
    for o in objs["items"]:
        if o["kind"] == "Service" and o["metadata"]["name"] == "web":
            o["spec"]["internalTrafficPolicy"] = "Local"
    (tmp_path / "objs.json").write_text(json.dumps(objs))
    snap = tmp_path / "snap"
    sim = run("simulate", "-f", str(tmp_path / "objs.json"), "-o", str(snap))
    assert sim.returncode == 0, sim.stderr
    p = run("check", "--snapshot", str(snap), "-o", "json")
    web = [i for i in json.loads(p.stdout)["items"] if i["name"] == "web"]
    by_nodes = {tuple(i["nodes"]): (i["health"], i["codes"], i["outcome"]) for i in web}
    # web's pods: one on node01, two on node02 (the demo's objects)
    assert by_nodes[("node01",)] == ("ok", [], "1 endpoint")
    assert by_nodes[("node02",)] == ("ok", [], "2 endpoints")
    broken = [n for nodes, (h, codes, out) in by_nodes.items() if h == "error" for n in nodes]
    assert sorted(broken) == ["controlplane", "node03", "node04"]
    assert all(
        codes == ["no-local-endpoints"] and out == "drop"
        for (h, codes, out) in by_nodes.values()
        if h == "error"
    )
    p2 = run(
        "check",
        "--snapshot",
        str(snap),
        "--node",
        "node02",
        "-o",
        'jsonpath={.items[?(@.name=="web")].nodes}',
    )
    assert p2.stdout == '["node02"]\n'


def test_check_reads_one_nodes_dump_too() -> None:
    dump = (
        Path(__file__).resolve().parents[1]
        / "svctrace"
        / "data"
        / "examples"
        / "kube-proxy-basic.iptables-save"
    )
    p = run("check", "-A", "--snapshot", str(dump), "-o", "json")
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["items"][0]["health"] == "error" and doc["items"][0]["codes"] == ["no-endpoints"]
    assert {i["health"] for i in doc["items"][1:]} <= {"ok", "error", "warning"}


def test_check_is_registered_lazily() -> None:
    code = (
        "import sys; from svctrace.cli import _command_of, COMMANDS; "
        "assert 'check' in COMMANDS and _command_of(['check', '-A']) == 'check'"
    )
    subprocess.run([__import__("sys").executable, "-c", code], check=True)


def test_cluster_lookups_are_indexed_and_follow_objects_added_later() -> None:
    """check asks one question per Service port; the Cluster's lookups are tables built once (not a scan per
    question), built again when an object list grows."""
    from svctrace.model.cluster import Pod, parse_cluster

    c = parse_cluster(
        {
            "items": [
                {
                    "kind": "Service",
                    "metadata": {"namespace": "a", "name": "s"},
                    "spec": {"clusterIP": "10.96.0.1"},
                },
                {
                    "kind": "Pod",
                    "metadata": {"namespace": "a", "name": "p"},
                    "status": {"podIP": "10.244.0.2"},
                },
                {
                    "kind": "Pod",
                    "metadata": {"namespace": "b", "name": "h"},
                    "spec": {"hostNetwork": True},
                    "status": {"podIP": "10.244.0.3"},
                },
            ]
        }
    )
    assert c.pod("a", "p") is not None and c.pod("a", "q") is None
    assert c.pod_by_ip("10.244.0.3") is not None and c.pod_by_ip("10.244.0.3").name == "h"  # type: ignore[union-attr]
    c.pods.append(Pod("b", "p", ["10.244.0.3"], {}, None, []))
    assert [p.key for p in c.pods_named("p")] == ["a/p", "b/p"]
    # a pod's own address before a hostNetwork pod's (the node's)
    assert c.pod_by_ip("10.244.0.3").key == "b/p"  # type: ignore[union-attr]
    assert c.slices_for(c.services["a/s"]) == []


def test_warnings_are_said_once_on_stderr(tmp_path: Path) -> None:
    """A snapshot's warning (here: rules of a node cluster.json does not know) is said once, not once per row; a
    cluster.json object of the wrong shape is a one-line error naming its JSON path (docs/limits.md)."""
    import shutil

    snap = tmp_path / "snap"
    shutil.copytree(DEMO_CLUSTER.parent, snap)
    shutil.copytree(snap / "nodes" / "node01", snap / "nodes" / "ghost")
    p = run("check", "-A", "--snapshot", str(snap))
    assert p.returncode == 1
    warned = [line for line in p.stderr.splitlines() if "nodes/ghost/ holds dumps of a node" in line]
    assert len(warned) == 1 and warned[0].startswith("svctrace: warning: "), p.stderr
    j = run("check", "-A", "--snapshot", str(snap), "-o", "json")
    assert [w for w in json.loads(j.stdout)["warnings"] if "nodes/ghost/" in w] and "nodes/ghost/" in j.stderr
    doc = json.loads((snap / "cluster.json").read_text())
    doc["items"].append({"kind": "Service", "metadata": {"namespace": "default", "name": "broken"},
                         "spec": {"ports": [{"port": "eighty"}]}})
    (snap / "cluster.json").write_text(json.dumps(doc))
    p = run("check", "-A", "--snapshot", str(snap))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and ".spec.ports[0].port: expected a port number" in p.stderr


def test_another_nodes_identical_rules_are_not_parsed_but_a_changed_endpoint_is_seen() -> None:
    """nodes-disagree compares another node's service chain and its KUBE-SEP chains as text first: equal lines
    program equal endpoints; a KUBE-SEP chain whose DNAT differs (same name) is not equal."""
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.explain.diagnostics.rules import _programmed_endpoints, _same_lines

    def dump(ep: str) -> str:
        return (
            "*nat\n:KUBE-SVC-X - [0:0]\n:KUBE-SEP-A - [0:0]\n"
            '-A KUBE-SVC-X -m comment --comment "d/s:p" -j KUBE-SEP-A\n'
            f"-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination {ep}\nCOMMIT\n"
        )

    own = load_ruleset(dump("10.244.1.5:80"), "own")
    assert _same_lines(own, load_ruleset(dump("10.244.1.5:80"), "same"), "KUBE-SVC-X")
    other = load_ruleset(dump("10.244.9.9:80"), "other")
    assert not _same_lines(own, other, "KUBE-SVC-X")
    assert (
        _programmed_endpoints(other, "KUBE-SVC-X")
        == {"10.244.9.9:80"}
        != _programmed_endpoints(own, "KUBE-SVC-X")
    )
    assert not _same_lines(own, load_ruleset("*nat\n:KUBE-SVC-Y - [0:0]\nCOMMIT\n", "none"), "KUBE-SVC-X")


def test_nodes_that_program_a_service_differently_are_each_checked(tmp_path: Path) -> None:
    """The API moved on (web lost a pod and gained one); node02's kube-proxy caught up (and node03's and node04's,
    written from the new objects), node01's and the control plane's did not. nodes-disagree on the first node
    makes every node be asked: the stale ones are errors, the fresh ones only warn that others differ."""
    from test_explain import _objs, _slice, write_snapshot

    from svctrace.data import build_demo

    objs = _objs()
    old = {n: build_demo.node_dump(objs, n) for n in build_demo.NODES}
    _slice(objs, "web")["endpoints"][2]["addresses"] = ["10.244.2.12"]
    root = write_snapshot(
        tmp_path / "s",
        objs,
        {
            "node01": old["node01"],
            "node02": build_demo.node_dump(objs, "node02"),
            "controlplane": old["controlplane"],
        },
    )
    p = run("check", "--snapshot", str(root), "-o", "json")
    web = {
        tuple(sorted(i["nodes"])): (i["health"], i["codes"])
        for i in json.loads(p.stdout)["items"]
        if i["name"] == "web"
    }
    assert web == {
        ("controlplane", "node01"): ("error", ["rules-stale", "nodes-disagree"]),
        ("node02", "node03", "node04"): ("warning", ["nodes-disagree"]),
    }
    assert p.returncode == 1
