"""The path a packet takes as a graph, headless: the chains it crosses (grouped by netfilter hook) as nodes, the
rules that moved it on as edges labelled with their match and the share of packets that take them, and every
outcome as a leaf (the backend with its pod and node, or the drop or reject). Every branch of the walk at once.

`svctrace.render.graph` writes it as DOT, Mermaid or (through Graphviz) SVG; the TUI exports the same picture.
Styles are names (accept, drop, nowhere, masquerade, branch), not colours: the renderer picks the colours.
Deterministic: the same answer gives the same graph, node for node (the docs' pictures are compared as text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from svctrace.dataplane.contract import Outcome, PathStep, TraceResult, visible_steps
from svctrace.explain import ExplainedOutcome, Explanation
from svctrace.kubeproxy.walk import HINTS, MASQUERADE_MARK
from svctrace.model.packet import Packet, format_endpoint

# The chains kube-proxy jumps to to mark a packet for masquerade (the mark KUBE-POSTROUTING / masquerading acts on).
MASQ_MARK_CHAINS = frozenset(c for c, bits in HINTS.mark_chains.items() if bits == MASQUERADE_MARK)
MATCH_WIDTH = 52
NAME_WIDTH = 34


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str  # lines separated by "\n"
    kind: str  # packet / chain / ipvs / outcome
    style: str = "plain"  # plain / accept / drop / nowhere / uncertain (outcomes); masquerade
    group: str | None = None  # the netfilter hook the chain is walked in


@dataclass
class GraphEdge:
    src: str
    dst: str
    label: str
    style: str = "plain"  # plain / branch (a probabilistic pick) / masquerade / drop
    share: float = 0.0  # the share of packets that take this edge


@dataclass
class Graph:
    title: str
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        """The hooks, in the order the packet first enters them."""
        out: list[str] = []
        for n in self.nodes:
            if n.group is not None and n.group not in out:
                out.append(n.group)
        return out

    def node(self, node_id: str) -> GraphNode:
        return next(n for n in self.nodes if n.id == node_id)


def pct(p: float) -> str:
    if p >= 0.9995 or p == 0:
        return f"{p * 100:.0f}%"
    return f"{p * 100:.1f}%" if p >= 0.001 else f"{p * 100:.3g}%"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _wrap_name(name: str, width: int = NAME_WIDTH) -> str:
    """A long chain name (nftables: `endpoint-XKWYTQJI-default/web/tcp/http__10.244.1.10/8080`) broken at its
    `/` and `__` so that a box stays narrow; short names unchanged."""
    if len(name) <= width:
        return name
    parts = re.split(r"(?<=/)|(?=__)", name)
    lines, cur = [], ""
    for p in parts:
        if cur and len(cur) + len(p) > width:
            lines.append(cur)
            cur = ""
        cur += p
    lines.append(cur)
    return "\n".join(lines)


_COMMENT = re.compile(r'\s*-m comment --comment (?:"(?:[^"\\]|\\.)*"|\S+)')
_STATISTIC = re.compile(r"-m statistic --mode random --probability (\S+)")
_NFT_VERDICT = re.compile(r"(?:^|\s)(?:jump|goto|dnat|snat|masquerade|accept|drop|reject|return|counter|"
                          r"meta mark set|ct mark set)\b.*$")
_NFT_VMAP = re.compile(r"\s*vmap\s*\{.*$")


def rule_match(step: PathStep) -> str:
    """What a rule matched on, from its text: iptables without `-A CHAIN`, the comment and the target; nftables
    without the verdict; IPVS rules say it in their action."""
    if step.table == "ipvs" or step.rule is None:
        return ""
    text = step.text.strip()
    if text.startswith("-A "):
        text = text.split(None, 2)[2] if len(text.split(None, 2)) == 3 else ""
        text = _COMMENT.sub("", text)
        text = re.split(r"(?:^|\s)-[jg]\s", text, maxsplit=1)[0]
        text = _STATISTIC.sub(r"random p=\1", text)
    else:
        text = _NFT_VERDICT.sub("", _NFT_VMAP.sub(" vmap {…}", text))
    return " ".join(text.split())


def _edge_label(step: PathStep) -> list[str]:
    if step.rule is None:
        return [step.action]
    match = rule_match(step)
    lines = [_shorten(f"#{step.rule} {match or 'every packet'}", MATCH_WIDTH)]
    if not step.action.startswith(("jump ", "goto ")):
        lines.append(_shorten(step.action.split(" (")[0], MATCH_WIDTH))
    return lines


def _edge_style(step: PathStep) -> str:
    action = step.action.split()[0] if step.action else ""
    if action in ("DROP", "REJECT") or step.action.startswith(("policy DROP", "IPVS refuses", "IPVS: no")):
        return "drop"
    if action in ("MASQUERADE", "SNAT") or step.target in MASQ_MARK_CHAINS or step.chain in MASQ_MARK_CHAINS:
        return "masquerade"
    return "branch" if step.branch is not None else "plain"


def _packet_label(p: Packet, source: str | None = None) -> str:
    head = f"{p.proto} {format_endpoint(p.src, p.sport)} → {p.endpoint()}"
    where = "sent by the node (OUTPUT)" if p.origin == "local" else "from the network (PREROUTING)"
    return "\n".join([head, *([source] if source else []), where])


class _Builder:
    def __init__(self, title: str) -> None:
        self.graph = Graph(title)
        self.ids: dict[tuple[str, ...], str] = {}
        self.edges: dict[tuple[str, str, str], GraphEdge] = {}

    def node(self, key: tuple[str, ...], label: str, kind: str, style: str = "plain", group: str | None = None) -> str:
        found = self.ids.get(key)
        if found is not None:
            return found
        nid = f"n{len(self.ids)}"
        self.ids[key] = nid
        self.graph.nodes.append(GraphNode(nid, label, kind, style, group))
        return nid

    def chain(self, s: PathStep) -> str:
        if s.table == "ipvs":
            return self.node((s.hook, "ipvs", s.chain), f"IPVS\n{s.chain}", "ipvs", group=s.hook)
        style = "masquerade" if s.chain in MASQ_MARK_CHAINS else "plain"
        return self.node((s.hook, s.table, s.chain), f"{s.table}\n{_wrap_name(s.chain)}", "chain", style, s.hook)

    def edge(self, src: str, dst: str, label: list[str], style: str, share: float) -> None:
        key = (src, dst, "\n".join(label))
        e = self.edges.get(key)
        if e is None:
            e = self.edges[key] = GraphEdge(src, dst, key[2], style)
            self.graph.edges.append(e)
        e.share += share

    def walk(self, start: str, path: list[PathStep], leaf: str, share: float) -> None:
        steps = visible_steps(path)
        if not steps:
            self.edge(start, leaf, ["no rule applies"], "plain", share)
            return
        self.edge(start, self.chain(steps[0]), [f"enters {steps[0].hook}"], "plain", share)
        for s, nxt in zip(steps, [*steps[1:], None], strict=True):
            dst = leaf if nxt is None else self.chain(nxt)
            self.edge(self.chain(s), dst, _edge_label(s), _edge_style(s), share)

    def finish(self) -> Graph:
        # The share of packets on an edge, where not all of them take it (a probabilistic pick's printed
        # probability, in its match, is conditional on reaching the rule; the share is of all packets).
        fanout: dict[str, int] = {}
        for e in self.graph.edges:
            fanout[e.src] = fanout.get(e.src, 0) + 1
        for e in self.graph.edges:
            if fanout[e.src] > 1 and e.share < 0.9995:  # the walk splits here
                e.label += f"\n{pct(e.share)} of packets"
                if e.style == "plain":
                    e.style = "branch"
        return self.graph


def _outcome_style(o: Outcome | ExplainedOutcome, nowhere: bool) -> str:
    if o.verdict != "accept":
        return "drop"
    if nowhere:
        return "nowhere"
    return "accept" if o.certain else "uncertain"


def _outcome_lines(o: Outcome | ExplainedOutcome, dest: str | None, nowhere: bool) -> list[str]:
    if nowhere:
        lines = [f"NO ANSWER  {pct(o.probability)}", "not translated: routed on towards", "an address no host owns"]
    elif o.verdict != "accept":
        import textwrap

        lines = [f"{o.verdict.upper()}  {pct(o.probability)}",
                 *textwrap.wrap(o.reason, MATCH_WIDTH, max_lines=3, placeholder=" …", break_on_hyphens=False)]
    else:
        lines = [f"ACCEPT  {pct(o.probability)}"] + ([f"→ {dest}"] if dest else [])
    if o.masquerade and o.verdict == "accept":
        lines.append("masqueraded")
    if not o.certain:
        lines.append("uncertain (assumptions)")
    return lines


def trace_graph(result: TraceResult) -> Graph:
    """The graph of `svctrace trace`: the packet, every chain of every outcome's path, every outcome."""
    b = _Builder(_packet_label(result.packet).split("\n")[0])
    start = b.node(("packet",), _packet_label(result.packet), "packet")
    for i, o in enumerate(result.outcomes):
        nowhere = result.unanswered(o)
        lines = _outcome_lines(o, o.dnat or (o.final_dst if o.verdict == "accept" else None), nowhere)
        if o.verdict == "accept" and not nowhere:
            lines.append("delivered on the node" if o.delivery == "local" else "routed on")
        leaf = b.node(("outcome", str(i)), "\n".join(lines), "outcome", _outcome_style(o, nowhere))
        b.walk(start, o.path, leaf, o.probability)
    return b.finish()


def explain_graph(exp: Explanation) -> Graph:
    """The graph of `svctrace explain`: as `trace_graph`, with the backends' pods and nodes on the leaves."""
    port = exp.port
    what = f"{exp.service.key}" + (f":{port.name or port.port}" if port else "")
    via = exp.destination.get("via")
    b = _Builder(f"{what} via {via}" + (f" on node {exp.rules_node or exp.node}" if exp.node else ""))
    if exp.trace is None:
        b.node(("packet",), f"{what}\nno rules to walk: DNS answers for it\n(the pods' addresses, or a CNAME)", "packet")
        return b.finish()
    start = b.node(("packet",), _packet_label(exp.trace.packet, f"from {exp.source.describe()}"), "packet")
    for i, o in enumerate(exp.outcomes):
        lines = _outcome_lines(o, o.endpoint, o.nowhere)
        if o.verdict == "accept" and not o.nowhere:
            if o.pod:
                lines.append(f"pod {o.pod}")
            if o.endpoint_node:
                lines.append(f"on {o.endpoint_node}")
        leaf = b.node(("outcome", str(i)), "\n".join(lines), "outcome", _outcome_style(o, o.nowhere))
        b.walk(start, o.path, leaf, o.probability)
    return b.finish()


__all__ = ["Graph", "GraphEdge", "GraphNode", "explain_graph", "rule_match", "trace_graph"]
