"""`-o dot|svg|mermaid` for `trace` and `explain`: the path graph on stdout, warnings on stderr."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # browse.graph imports explain: a trace that prints JSON or text does not pay for it
    from svctrace.browse.graph import Graph

GRAPH_OUTPUTS = ("dot", "svg", "mermaid")


def emit_graph(graph: Graph, fmt: str, warnings: list) -> None:
    from svctrace.render.graph import render

    text = render(graph, fmt)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    for w in warnings:
        sys.stderr.write(f"svctrace: warning: {w}\n")
