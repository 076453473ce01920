"""The text faces as a person reads them (issue 19): the Backends table tells the verdict's story, a nodePort
number given as --port is understood, pod names do not wrap mid-word at 80 columns, IPVS names its decider and
every input file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from svctrace.explain import Request, explain
from svctrace.model.snapshot import load_snapshot
from svctrace.render.explain import render_explanation
from svctrace.render.text import render_trace

DEMO = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo"


def text_of(render: object, what: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None, highlight=False, file=io.StringIO())
    render(what, console)  # type: ignore[operator]
    return console.export_text()


def backends_rows(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("Backends") + 2
    rows = []
    for line in lines[start:]:
        if not line.strip() or not line.startswith((" ", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")):
            break
        rows.append(line)
    return rows


def test_ping_to_a_cluster_ip_is_no_answer_in_the_backends_table() -> None:
    exp = explain(load_snapshot("demo"), Request("svc/web", proto="icmp"))
    assert "ping-virtual-ip" in {d.code for d in exp.diagnostics}
    assert [o.nowhere for o in exp.outcomes] == [True] and exp.exit_code == 1
    assert exp.to_json()["outcomes"][0]["nowhere"] is True  # type: ignore[index]
    rows = backends_rows(text_of(render_explanation, exp, 100))
    assert len(rows) == 1 and "NO ANSWER" in rows[0] and "ACCEPT" not in rows[0], rows
    # A backend reached is still ACCEPT, and is not marked nowhere.
    ok = explain(load_snapshot("demo"), Request("svc/web"))
    assert not any(o.nowhere for o in ok.outcomes)
    assert all("ACCEPT" in r for r in backends_rows(text_of(render_explanation, ok, 100)))


def test_ping_answered_by_the_node_is_not_nowhere() -> None:
    """IPVS before 1.26 answers ping on kube-ipvs0 (delivered on the node): no "no answer" there."""
    from svctrace.dataplane.contract import Outcome
    from svctrace.explain import _map_outcome

    snap = load_snapshot("demo")
    o = Outcome(1.0, "accept", None, False, None, "local", True, [], "delivered")
    assert _map_outcome(snap.cluster, o, "node03").nowhere is False


def test_node_port_number_as_port_is_understood() -> None:
    snap = load_snapshot("demo")
    exp = explain(snap, Request("svc/web-nodeport", port="30080", to="node-port"))
    assert exp.port is not None and exp.port.node_port == 30080 and exp.port.port == 80
    assert exp.destination["port"] == 30080 and exp.destination["via"] == "node-port"
    assert "port-not-in-service" not in {d.code for d in exp.diagnostics}
    assert any(o.endpoint for o in exp.outcomes)
    # Without --to, the nodePort number says the packet goes to a node port.
    bare = explain(snap, Request("svc/web-nodeport", port="30080"))
    assert bare.destination["via"] == "node-port" and any("nodePort of" in i for i in bare.inferred)
    # Sent to the cluster IP, 30080 is not a port the Service serves: still diagnosed.
    cip = explain(snap, Request("svc/web-nodeport", port="30080", to="cluster-ip"))
    assert "port-not-in-service" in {d.code for d in cip.diagnostics}


@pytest.mark.parametrize("width", [80, 100, 60])
def test_backends_table_never_wraps_a_pod_name(width: int) -> None:
    exp = explain(load_snapshot("demo"), Request("svc/web"))
    out = text_of(render_explanation, exp, width)
    rows = backends_rows(out)
    assert len(rows) == len(exp.outcomes) == 3, out  # one line per backend: nothing wrapped onto a second line
    assert all(len(r) <= width for r in out.splitlines())
    if width >= 80:
        for o in exp.outcomes:
            assert o.pod and any(o.pod.split("/")[1] in r for r in rows), (o.pod, rows)


def trace_node03(*extra: str) -> str:
    from svctrace.cli.trace import read_inputs, trace_inputs
    from svctrace.dataplane.ipset import parse_ipset
    from svctrace.model.packet import NodeFacts, Packet

    inputs = read_inputs(str(DEMO / "nodes" / "node03"))
    facts = NodeFacts.make(local_ips=["192.168.56.13"])
    sets, _ = parse_ipset((DEMO / "nodes" / "node03" / "ipset").read_text(), "ipset")
    facts.ipsets.update(sets)
    inputs = [(t, n) for t, n in inputs if not n.endswith(("ipset", "ip-addr.json"))]
    pkt = Packet.make(src="10.244.3.5", dst="10.96.10.10", proto="tcp", dport=80, local_ips=facts.local_ips)
    result = trace_inputs(inputs, pkt, facts)
    result.inputs.append(("ipset", "ipset, 17 sets"))
    return text_of(render_trace, result, 200)


def test_ipvs_trace_names_the_scheduler_and_every_input() -> None:
    out = trace_node03()
    # the header is one paragraph; its wrap point moves with the checkout's path length
    header = out[:out.index("\ntcp ")].replace("\n", "")
    assert re.search(r"node03/ipvsadm \(ipvsadm", header) and "node03/iptables-save (" in header
    assert "ipset (ipset, 17 sets)" in header, header
    table = out[out.index("decided by"):]
    assert "decided by nat KUBE-SERVICES" not in out and "nat KUBE-SERVICES #" not in table
    assert table.count("IPVS scheduler (TCP 10.96.10.10:80 rr)") == 3, table


def test_ipvs_trace_cli_header_names_ipset_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    node = DEMO / "nodes" / "node03"
    p = subprocess.run([sys.executable, "-c", "from svctrace.cli import main; main()", "trace", str(node),
                        "-s", "10.244.3.5", "-d", "10.96.10.10", "--dport", "80"],
                       capture_output=True, text=True, env={"COLUMNS": "300", "PATH": "/usr/bin:/bin",
                                                            "PYTHONPATH": str(DEMO.parents[2])}, timeout=60)
    header = p.stdout[:p.stdout.index("\ntcp ")].replace("\n", "")  # one paragraph, however long the path
    for f in ("ipvsadm", "ipset", "iptables-save"):
        assert f"node03/{f} (" in header, header


def test_trace_of_ping_to_a_cluster_ip_says_no_answer_in_the_tree_and_the_table() -> None:
    from svctrace.cli.trace import demo_dump, trace_inputs
    from svctrace.model.packet import NodeFacts, Packet

    facts = NodeFacts.make(local_ips=["192.168.0.2"])
    pkt = Packet.make(src="10.0.0.2", dst="172.30.0.41", proto="icmp", local_ips=facts.local_ips)
    result = trace_inputs([demo_dump()], pkt, facts)
    assert result.nowhere and [o.verdict for o in result.outcomes] == ["accept"]
    assert result.unanswered(result.outcomes[0])
    out = text_of(render_trace, result, 120)
    assert "Verdict: goes nowhere" in out
    assert "⇒ 100% NO ANSWER" in out and "⇒ 100% ACCEPT" not in out
    row = next(line for line in out.splitlines() if line.lstrip().startswith("100%"))
    assert "NO ANSWER" in row and "ACCEPT" not in row
