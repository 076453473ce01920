"""`-o dot|svg|mermaid` (issue 19): the path as a graph. The DOT is drawn by the real Graphviz `dot`; the Mermaid
text is checked for its structure; the docs' pictures are what the commands print today."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from doctool import IMG, PICTURES, picture_dot

from svctrace.browse.graph import Graph, explain_graph, rule_match, trace_graph
from svctrace.explain import Request, explain
from svctrace.model.snapshot import load_snapshot
from svctrace.render.graph import dot_to_svg, to_dot, to_mermaid

REPO = Path(__file__).resolve().parents[1]
DOT = shutil.which("dot")
needs_dot = pytest.mark.skipif(DOT is None, reason="Graphviz's `dot` is not installed (apt install graphviz)")
NODES = {"iptables": "node01", "ipvs": "node03", "nftables": "node04"}


def nodeport(mode: str) -> object:
    return explain(load_snapshot("demo"), Request("svc/web-nodeport", to="node-port", node=NODES[mode]))


def svg_text(dot: str) -> str:
    assert DOT is not None
    p = subprocess.run([DOT, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr  # no syntax error, no warning
    root = ET.fromstring(p.stdout.encode())
    assert root.tag.endswith("svg")
    return " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))


@needs_dot
@pytest.mark.parametrize("mode", list(NODES))
def test_dot_draws_every_backend_in_every_mode(mode: str) -> None:
    exp = nodeport(mode)
    assert exp.proxy_mode == mode
    g = explain_graph(exp)
    text = svg_text(to_dot(g))
    assert len([n for n in g.nodes if n.kind == "outcome"]) == len(exp.outcomes) == 3
    for o in exp.outcomes:
        assert o.pod and o.endpoint and o.endpoint_node
        assert o.pod in text and str(o.endpoint) in text and f"on {o.endpoint_node}" in text, (o.pod, text)
    # Masquerade is marked: on the leaves, and on the rules that mark and masquerade.
    assert text.count("masqueraded") == 3
    assert any(e.style == "masquerade" for e in g.edges)
    # The deciding rules are the edges: the probabilistic pick (or the IPVS scheduler) splits three ways.
    splits = [e for e in g.edges if e.style == "branch"]
    assert len(splits) >= 3 and all("33.3% of packets" in e.label for e in splits), [e.label for e in splits]
    assert sum(1 for n in g.nodes if n.kind == "packet") == 1


@needs_dot
def test_trace_dot_is_valid_and_reaches_every_outcome() -> None:
    from svctrace.cli.trace import demo_dump, trace_inputs
    from svctrace.model.packet import NodeFacts, Packet

    facts = NodeFacts.make(local_ips=["192.168.0.2"])
    pkt = Packet.make(src="192.168.0.100", dst="192.168.0.2", proto="tcp", dport=30080, local_ips=facts.local_ips)
    result = trace_inputs([demo_dump()], pkt, facts)
    g = trace_graph(result)
    text = svg_text(to_dot(g))
    for o in result.outcomes:
        assert str(o.dnat) in text
    hooks = g.groups
    assert hooks[0] == "PREROUTING" and "POSTROUTING" in hooks


def test_drops_and_rejects_are_red() -> None:
    exp = explain(load_snapshot("demo"), Request("svc/payment"))
    assert [o.verdict for o in exp.outcomes] == ["reject"]
    g = explain_graph(exp)
    leaf = next(n for n in g.nodes if n.kind == "outcome")
    assert leaf.style == "drop" and leaf.label.startswith("REJECT  100%")
    last = next(e for e in g.edges if e.dst == leaf.id)
    assert last.style == "drop" and "REJECT" in last.label
    dot = to_dot(g)
    assert re.search(rf'{leaf.id} \[[^\n]*fillcolor="#fde2e1", color="#c62828"', dot)
    assert re.search(rf'-> {leaf.id} \[[^\n]*color="#c62828"', dot)


def test_ping_to_a_cluster_ip_is_drawn_as_no_answer() -> None:
    exp = explain(load_snapshot("demo"), Request("svc/web", proto="icmp"))
    g = explain_graph(exp)
    leaf = next(n for n in g.nodes if n.kind == "outcome")
    assert leaf.style == "nowhere" and "NO ANSWER" in leaf.label and "ACCEPT" not in leaf.label


def test_rule_match_reads_each_format() -> None:
    exp = nodeport("iptables")
    steps = {s.chain: s for o in exp.outcomes for s in o.path if s.rule is not None}
    assert rule_match(steps["KUBE-NODEPORTS"]) == "-p tcp -m tcp --dport 30080"  # comment and target gone
    svc = next(s for o in exp.outcomes for s in o.path if s.chain.startswith("KUBE-SVC-") and s.branch is not None)
    assert rule_match(svc).startswith("random p=0.3333")
    ipvs = nodeport("ipvs")
    assert all(rule_match(s) == "" for o in ipvs.outcomes for s in o.path if s.table == "ipvs")
    nft = nodeport("nftables")
    marks = [s for o in nft.outcomes for s in o.path if s.chain == "mark-for-masquerade"]
    assert marks and rule_match(marks[0]) == ""  # the statement is the action, not a match


MERMAID_LINE = re.compile(
    r'^(flowchart TB'
    r'|  (?P<def>n\d+)(?:\(\[|\[|\()"[^"\n]*"(?:\]\)|\]|\))'
    r'|    (?P<def2>n\d+)(?:\(\[|\[|\()"[^"\n]*"(?:\]\)|\]|\))'
    r'|  subgraph hook\d+ \["[^"\n]*"\]'
    r'|  end'
    r'|  (?P<src>n\d+) (?:-->|-\.->)\|"[^"\n]*"\| (?P<dst>n\d+)'
    r'|  classDef \w+ fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6},color:#[0-9a-f]{6}'
    r'|  class (?P<cls>n\d+(?:,n\d+)*) \w+'
    r'|  linkStyle (?P<link>\d+) stroke:#[0-9a-f]{6},color:#[0-9a-f]{6})$')


def check_mermaid(text: str, g: Graph) -> None:
    """The grammar the renderer writes (Mermaid's flowchart): every line one statement, labels quoted with no
    raw quote or newline inside, ids defined before an edge uses them, subgraphs closed, links numbered in
    order."""
    defined: set[str] = set()
    depth = 0
    edges = 0
    for line in text.splitlines():
        m = MERMAID_LINE.match(line)
        assert m, f"not a Mermaid statement: {line!r}"
        if line.startswith("  subgraph"):
            depth += 1
            assert depth == 1
        elif line == "  end":
            depth -= 1
            assert depth == 0
        elif m.group("def") or m.group("def2"):
            defined.add(m.group("def") or m.group("def2"))
        elif m.group("src"):
            assert {m.group("src"), m.group("dst")} <= defined, line
            edges += 1
        elif m.group("cls"):
            assert set(m.group("cls").split(",")) <= defined
        elif m.group("link"):
            assert int(m.group("link")) < edges
    assert depth == 0 and defined == {n.id for n in g.nodes} and edges == len(g.edges)
    assert "<br/>" in text and "#35;" in text  # lines and the rule numbers' `#` encoded


@pytest.mark.parametrize("mode", list(NODES))
def test_mermaid_is_well_formed(mode: str) -> None:
    g = explain_graph(nodeport(mode))
    check_mermaid(to_mermaid(g), g)


def run_cli(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"}
    env["PYTHONPATH"] = str(REPO)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-c", "import sys; from svctrace.cli import main; sys.argv[0] = "
                           "'svctrace'; main()", *args], capture_output=True, text=True, env=env, timeout=120)


@needs_dot
def test_cli_outputs_and_exit_codes() -> None:
    ok = run_cli("explain", "svc/web", "--demo", "-o", "svg")
    assert ok.returncode == 0, ok.stderr
    texts = " ".join(t.text or "" for t in ET.fromstring(ok.stdout.encode()).iter() if t.tag.endswith("text"))
    assert "pod default/web-6d4f9c7b8-2lqzx" in texts
    bad = run_cli("explain", "svc/payment", "--demo", "-o", "dot")
    assert bad.returncode == 1 and bad.stdout.startswith("digraph svctrace {")
    mer = run_cli("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80", "-o", "mermaid")
    assert mer.returncode == 0 and mer.stdout.startswith("flowchart TB\n"), mer.stderr


def test_svg_without_graphviz_is_one_line_error(tmp_path: Path) -> None:
    p = run_cli("explain", "svc/web", "--demo", "-o", "svg", path=str(tmp_path))  # no `dot` on this PATH
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "install Graphviz" in lines[0] and "Traceback" not in p.stderr, p.stderr
    dot = run_cli("explain", "svc/web", "--demo", "-o", "dot", path=str(tmp_path))  # DOT needs no Graphviz
    assert dot.returncode == 0 and dot.stdout.startswith("digraph")


def test_dot_is_deterministic() -> None:
    a = to_dot(explain_graph(nodeport("nftables")))
    b = to_dot(explain_graph(nodeport("nftables")))
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PICTURES))
def test_docs_pictures_are_real(name: str) -> None:
    """docs/img/NAME.dot is what the command prints now; NAME.svg is Graphviz's drawing of it (compared by its
    text, which does not depend on Graphviz's layout version). `python tests/doctool.py --write` renews them."""
    committed = (IMG / f"{name}.dot").read_text()
    assert picture_dot(name) == committed, f"docs/img/{name}.dot is stale: run python tests/doctool.py --write"
    if DOT is None:
        pytest.skip("Graphviz's `dot` is not installed: the SVG cannot be redrawn")

    def texts(svg: str) -> list[str]:
        return [t.text or "" for t in ET.fromstring(svg.encode()).iter() if t.tag.endswith("text")]

    assert texts((IMG / f"{name}.svg").read_text()) == texts(dot_to_svg(committed))


def test_every_picture_is_shown_in_the_docs() -> None:
    pages = "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    for name in PICTURES:
        assert f"img/{name}.svg" in pages, f"docs/img/{name}.svg is shown on no page"
        assert PICTURES[name] in pages, f"the command that makes {name} is not on any page"


def test_headless_service_has_no_path_to_draw() -> None:
    exp = explain(load_snapshot("demo"), Request("svc/db"))
    assert exp.trace is None
    g = explain_graph(exp)
    assert [n.kind for n in g.nodes] == ["packet"] and not g.edges and "DNS" in g.nodes[0].label
    assert to_dot(g).startswith("digraph svctrace {")
    check_mermaid_structure_only(to_mermaid(g))


def check_mermaid_structure_only(text: str) -> None:
    assert text.startswith("flowchart TB\n") and all(MERMAID_LINE.match(line) for line in text.splitlines())


def test_batch_refuses_a_graph_output() -> None:
    p = run_cli("trace", "--demo", "--batch", str(REPO / "docs" / "examples" / "batch.jsonl"), "-o", "dot")
    assert p.returncode == 2 and p.stdout == "" and "--batch" in p.stderr and len(p.stderr.splitlines()) == 1
