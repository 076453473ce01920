"""The path graph (`svctrace.browse.graph`) as text a tool draws: Graphviz DOT, Mermaid (for Markdown), and SVG
through Graphviz's `dot` (the `graphviz` Python binding runs it). Only drawing here: the graph is built in browse.
"""

from __future__ import annotations

from svctrace.browse.graph import Graph, GraphNode
from svctrace.errors import SvctraceError

FONT = "Helvetica"

# Colours per style name: (fill, border/line, text).
NODE_COLOURS = {
    "plain": ("#f4f6f8", "#5b6770", "#1d2329"),
    "masquerade": ("#fff3d6", "#c77c00", "#5c3a00"),
    "accept": ("#e3f5e1", "#2e7d32", "#1b4d1e"),
    "uncertain": ("#fff8e1", "#b28704", "#5c4400"),
    "drop": ("#fde2e1", "#c62828", "#7f1010"),
    "nowhere": ("#fde2e1", "#c62828", "#7f1010"),
}
PACKET_COLOURS = ("#e3eefc", "#1f5fa8", "#0d2f57")
IPVS_COLOURS = ("#ede7f6", "#5e35b1", "#311b92")
EDGE_COLOURS = {"plain": "#5b6770", "branch": "#8e24aa", "masquerade": "#c77c00", "drop": "#c62828"}


def _colours(n: GraphNode) -> tuple[str, str, str]:
    if n.kind == "packet":
        return PACKET_COLOURS
    if n.kind == "ipvs":
        return IPVS_COLOURS
    return NODE_COLOURS.get(n.style, NODE_COLOURS["plain"])


# -- DOT ----------------------------------------------------------------------------------------------------------

def _dot_str(text: str) -> str:
    """A DOT quoted string: backslashes and quotes escaped, each line centred (`\\n`)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def _dot_node(n: GraphNode) -> str:
    fill, line, font = _colours(n)
    shape = {"packet": "oval", "outcome": "box"}.get(n.kind, "box")
    style = "filled" if n.kind in ("packet",) else "rounded,filled"
    if n.kind == "outcome":
        style = "filled,bold" if n.style in ("drop", "nowhere") else "filled"
    return (f"{n.id} [label={_dot_str(n.label)}, shape={shape}, style=\"{style}\", fillcolor=\"{fill}\", "
            f"color=\"{line}\", fontcolor=\"{font}\"];")


def to_dot(g: Graph) -> str:
    out = [
        "digraph svctrace {",
        f"  graph [rankdir=TB, fontname=\"{FONT}\", fontsize=12, label={_dot_str(g.title)}, labelloc=t, "
        "nodesep=0.35, ranksep=0.45];",
        f"  node [fontname=\"{FONT}\", fontsize=10, margin=\"0.12,0.06\"];",
        f"  edge [fontname=\"{FONT}\", fontsize=9, arrowsize=0.7];",
    ]
    for n in g.nodes:
        if n.group is None:
            out.append("  " + _dot_node(n))
    for i, group in enumerate(g.groups):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f"    label={_dot_str(group)}; style=\"dashed,rounded\"; color=\"#9aa5ae\"; fontcolor=\"#5b6770\";")
        out += ["    " + _dot_node(n) for n in g.nodes if n.group == group]
        out.append("  }")
    for e in g.edges:
        colour = EDGE_COLOURS.get(e.style, EDGE_COLOURS["plain"])
        attrs = [f"label={_dot_str(e.label)}", f"color=\"{colour}\"", f"fontcolor=\"{colour}\""]
        if e.style in ("drop", "masquerade", "branch"):
            attrs.append("penwidth=1.6")
        if e.style == "masquerade":
            attrs.append("style=dashed")
        out.append(f"  {e.src} -> {e.dst} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


# -- Mermaid ------------------------------------------------------------------------------------------------------

def _mermaid_str(text: str) -> str:
    """A Mermaid quoted label: entity codes for the characters Mermaid or its HTML would read, `<br/>` for lines."""
    body = (text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
            .replace("\n", "<br/>"))
    return f'"{body}"'


def to_mermaid(g: Graph) -> str:
    out = ["flowchart TB"]

    def node(n: GraphNode) -> str:
        label = _mermaid_str(n.label)
        if n.kind == "packet":
            return f"{n.id}([{label}])"
        if n.kind == "outcome":
            return f"{n.id}[{label}]"
        return f"{n.id}({label})"

    out += ["  " + node(n) for n in g.nodes if n.group is None]
    for i, group in enumerate(g.groups):
        out.append(f"  subgraph hook{i} [{_mermaid_str(group)}]")
        out += ["    " + node(n) for n in g.nodes if n.group == group]
        out.append("  end")
    for e in g.edges:
        arrow = "-.->" if e.style == "masquerade" else "-->"
        out.append(f"  {e.src} {arrow}|{_mermaid_str(e.label)}| {e.dst}")
    styles = sorted({("packet" if n.kind == "packet" else "ipvs" if n.kind == "ipvs" else n.style) for n in g.nodes})
    for name in styles:
        fill, line, font = PACKET_COLOURS if name == "packet" else IPVS_COLOURS if name == "ipvs" else \
            NODE_COLOURS.get(name, NODE_COLOURS["plain"])
        out.append(f"  classDef {name} fill:{fill},stroke:{line},color:{font}")
    for name in styles:
        ids = [n.id for n in g.nodes if ("packet" if n.kind == "packet" else "ipvs" if n.kind == "ipvs"
                                         else n.style) == name]
        out.append(f"  class {','.join(ids)} {name}")
    for i, e in enumerate(g.edges):
        if e.style != "plain":
            out.append(f"  linkStyle {i} stroke:{EDGE_COLOURS[e.style]},color:{EDGE_COLOURS[e.style]}")
    return "\n".join(out) + "\n"


# -- SVG ----------------------------------------------------------------------------------------------------------

class GraphvizMissing(SvctraceError):
    exit_code = 2


def dot_to_svg(dot: str) -> str:
    """SVG drawn by Graphviz's `dot` from DOT text."""
    try:
        import graphviz  # type: ignore[import-untyped]
    except ImportError:
        raise GraphvizMissing("-o svg needs the `graphviz` Python package (pip install graphviz) and Graphviz's "
                              "`dot` (apt install graphviz); -o dot writes the graph without them") from None
    try:
        svg: bytes = graphviz.Source(dot).pipe(format="svg")
    except graphviz.ExecutableNotFound:
        raise GraphvizMissing("-o svg needs Graphviz's `dot` program: install Graphviz (apt install graphviz, "
                              "brew install graphviz); -o dot writes the graph without it") from None
    return svg.decode("utf-8")


def to_svg(g: Graph) -> str:
    return dot_to_svg(to_dot(g))


def render(g: Graph, fmt: str) -> str:
    """The graph as `fmt`: dot, svg or mermaid."""
    if fmt == "dot":
        return to_dot(g)
    if fmt == "mermaid":
        return to_mermaid(g)
    if fmt == "svg":
        return to_svg(g)
    raise ValueError(f"no graph format {fmt!r}")


GRAPH_FORMATS = ("dot", "svg", "mermaid")

__all__ = ["GRAPH_FORMATS", "GraphvizMissing", "dot_to_svg", "render", "to_dot", "to_mermaid", "to_svg"]
