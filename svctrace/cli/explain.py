"""`svctrace explain svc/NAME`: a Service, from a source, on a saved cluster."""

from __future__ import annotations

from enum import StrEnum

import typer
from rich.console import Console

from svctrace.cli import app, complete, emit_json
from svctrace.cli.graphout import GRAPH_OUTPUTS, emit_graph
from svctrace.cli.source import ContextOpt, DemoOpt, KubeconfigOpt, RefreshOpt, SnapshotOpt, question_snapshot
from svctrace.cli.source import source as source_of
from svctrace.cli.trace import Output, Proto
from svctrace.explain import VIA, Request, explain
from svctrace.model.snapshot import load_snapshot


class Via(StrEnum):
    cluster_ip = "cluster-ip"
    node_port = "node-port"
    external_ip = "external-ip"
    load_balancer = "load-balancer"


assert tuple(v.value for v in Via) == VIA


@app.command("explain")
def explain_cmd(
    target: str = typer.Argument(..., help="svc/NAME, NAME.NAMESPACE[.svc[.cluster.local]], or IP:PORT.",
                                 show_default=False, autocompletion=complete.services),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of the Service (default: "
                                         "default).", autocompletion=complete.namespaces),
    port: str | None = typer.Option(None, "--port", help="Service port, by name or number (default: the first)."),
    proto: Proto | None = typer.Option(None, "--proto", "-p", help="Protocol (default: the port's; icmp = ping)."),
    source: str | None = typer.Option(None, "--from", help="pod/NAME, node/NAME or an IP (default: a pod for "
                                      "cluster-ip, an outside client otherwise).", autocompletion=complete.sources),
    to: Via | None = typer.Option(None, "--to", help="Which address of the Service the packet is sent to."),
    node: str | None = typer.Option(None, "--node", help="The node that receives the packet (for node-port, "
                                    "external-ip, load-balancer and outside sources).",
                                    autocompletion=complete.nodes),
    snapshot: SnapshotOpt = None,
    demo: DemoOpt = False,
    returning_client: bool = typer.Option(False, "--returning-client", help="The client connected before "
                                          "(session affinity)."),
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    refresh: RefreshOpt = False,
    output: Output = typer.Option(Output.text, "--output", "-o", help="Output format (dot, svg, mermaid: the path "
                                  "as a graph, see docs/graphs.md)."),
) -> None:
    """Explain where traffic to a Service goes: hop by hop, to which pods, and what is wrong."""
    # A snapshot, or the live cluster: only what this question needs (cached for a minute; --refresh forces).
    src = source_of(snapshot, demo, context, kubeconfig, refresh)
    path, namespace = question_snapshot(src, target, namespace, node, source)
    snap = load_snapshot(path)
    req = Request(target=target, namespace=namespace, port=port, proto=proto.value if proto else None,
                  source=source, to=to.value if to else None, node=node, returning_client=returning_client)
    exp = explain(snap, req)
    if output is Output.json:
        emit_json(exp.to_json(), exp.warnings)
    elif output.value in GRAPH_OUTPUTS:
        from svctrace.browse.graph import explain_graph

        emit_graph(explain_graph(exp), output.value, exp.warnings)
    else:
        from svctrace.render.explain import render_explanation

        render_explanation(exp, Console(highlight=False))
    raise typer.Exit(exp.exit_code)
