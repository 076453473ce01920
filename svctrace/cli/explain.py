"""`svctrace explain svc/NAME`: a Service, from a source, on a saved cluster."""

from __future__ import annotations

import functools
import gc
from enum import StrEnum

import typer

from svctrace.cli import app, complete
from svctrace.cli.graphout import GRAPH_OUTPUTS, emit_graph
from svctrace.cli.output import Output, emit, option, parse_output
from svctrace.cli.source import ContextOpt, DemoOpt, KubeconfigOpt, RefreshOpt, SnapshotOpt, question_snapshot
from svctrace.cli.source import source as source_of
from svctrace.cli.trace import Proto
from svctrace.explain import VIA, Request, explain, question, service_named
from svctrace.model.snapshot import load_snapshot


class Via(StrEnum):
    cluster_ip = "cluster-ip"
    node_port = "node-port"
    external_ip = "external-ip"
    load_balancer = "load-balancer"


assert tuple(v.value for v in Via) == VIA

# The formats `explain` prints (cli/output.py); `wide` adds the rule that decided each backend's fate.
FORMATS = ("text", "wide", "json", "yaml", "jsonpath", *GRAPH_OUTPUTS)  # dot|svg|mermaid: docs/graphs.md


@app.command("explain")
def explain_cmd(
    target: str = typer.Argument(..., help="svc/NAME (or `svc NAME`, as kubectl), svc/NAMESPACE/NAME, "
                                 "NAME.NAMESPACE[.svc[.cluster.local]], or the Service's IP[:PORT] (cluster, "
                                 "external or load-balancer IP; a node IP with a node port).", show_default=False,
                                 autocompletion=complete.services),
    name: str | None = typer.Argument(None, help="NAME, after `svc`: `explain svc web`.", show_default=False),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of the Service (default: "
                                         "default).", autocompletion=complete.namespaces),
    port: str | None = typer.Option(None, "--port", help="Service port, by name or number (default: the first)."),
    proto: Proto | None = typer.Option(None, "--proto", "-p", help="Protocol (default: the port's; icmp = ping)."),
    source: str | None = typer.Option(None, "--from", help="pod/NAME (in the Service's namespace, else the one "
                                      "pod of that name elsewhere), pod/NAMESPACE/NAME, node/NAME or an IP "
                                      "(default: a pod for cluster-ip, an outside client otherwise).",
                                      autocompletion=complete.sources),
    to: Via | None = typer.Option(None, "--to", help="Which address of the Service the packet is sent to."),
    node: str | None = typer.Option(None, "--node", help="The node that receives the packet (for node-port, "
                                    "external-ip, load-balancer and outside sources).",
                                    autocompletion=complete.nodes),
    snapshot: SnapshotOpt = None,
    demo: DemoOpt = False,
    returning_client: bool = typer.Option(False, "--returning-client", help="The client connected before "
                                          "(session affinity)."),
    previous_endpoint: str | None = typer.Option(None, "--previous-endpoint", help="IP:PORT the returning "
                                                 "client's previous connection went to: the sticky answer "
                                                 "(implies --returning-client)."),
    affinity_age: float | None = typer.Option(None, "--affinity-age", help="Seconds since the returning client's "
                                              "last new connection (default: fresh)."),
    context: ContextOpt = None,
    kubeconfig: KubeconfigOpt = None,
    refresh: RefreshOpt = False,
    output: str = option(FORMATS),
) -> None:
    """Explain where traffic to a Service goes: hop by hop, to which pods, and what is wrong."""
    out = parse_output(output, FORMATS)
    target = question.join_target([target, name] if name is not None else [target])
    # A snapshot, or the live cluster: only what this question needs (cached for a minute; --refresh forces).
    src = source_of(snapshot, demo, context, kubeconfig, refresh)
    path, namespace = question_snapshot(src, target, namespace, node, source)
    # One Service is asked about: the other objects' JSON need not be kept once read (explain, svc/NAME).
    snap = load_snapshot(path, raw_for=service_named(target, namespace))
    # One question, then the process ends, and what was just read lives until then: the cyclic garbage collector
    # would walk those hundreds of thousands of objects at each of its full collections (a third of the command's
    # time on a 5k-Service snapshot). Later allocations are still collected.
    gc.freeze()
    req = Request(target=target, namespace=namespace, port=port, proto=proto.value if proto else None,
                  source=source, to=to.value if to else None, node=node, returning_client=returning_client,
                  previous_endpoint=previous_endpoint, affinity_age=affinity_age)
    exp = explain(snap, req)

    def text(o: Output) -> None:
        from rich.console import Console

        from svctrace.render.explain import render_explanation

        render_explanation(exp, Console(highlight=False), wide=o.wide)

    def graph(fmt: str) -> None:
        from svctrace.browse.graph import explain_graph

        emit_graph(explain_graph(exp), fmt, exp.warnings)

    emit(out, exp.to_json, exp.warnings, text=text,
         renderers={fmt: functools.partial(graph, fmt) for fmt in GRAPH_OUTPUTS})
    raise typer.Exit(exp.exit_code)
