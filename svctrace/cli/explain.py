"""`svctrace explain svc/NAME`: a Service, from a source, on a saved cluster."""

from __future__ import annotations

from enum import StrEnum

import typer

from svctrace.cli import app, emit_json
from svctrace.cli.trace import Output, Proto
from svctrace.errors import InputError
from svctrace.explain import VIA, Request, explain, question
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
                                 show_default=False),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Namespace of the Service (default: "
                                         "default)."),
    port: str | None = typer.Option(None, "--port", help="Service port, by name or number (default: the first)."),
    proto: Proto | None = typer.Option(None, "--proto", "-p", help="Protocol (default: the port's; icmp = ping)."),
    source: str | None = typer.Option(None, "--from", help="pod/NAME, node/NAME or an IP (default: a pod for "
                                      "cluster-ip, an outside client otherwise)."),
    to: Via | None = typer.Option(None, "--to", help="Which address of the Service the packet is sent to."),
    node: str | None = typer.Option(None, "--node", help="The node that receives the packet (for node-port, "
                                    "external-ip, load-balancer and outside sources)."),
    snapshot: str | None = typer.Option(None, "--snapshot", help="A snapshot bundle (directory or .tar.gz), or "
                                        "`demo` for the bundled demo cluster."),
    demo: bool = typer.Option(False, "--demo", help="Short for --snapshot demo."),
    returning_client: bool = typer.Option(False, "--returning-client", help="The client connected before "
                                          "(session affinity)."),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context (live cluster)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file (live cluster)."),
    refresh: bool = typer.Option(False, "--refresh", help="Live cluster: collect again instead of using the "
                                 "snapshot cached for a minute."),
    output: Output = typer.Option(Output.text, "--output", "-o", help="Output format."),
) -> None:
    """Explain where traffic to a Service goes: hop by hop, to which pods, and what is wrong."""
    if demo:
        if snapshot not in (None, "demo"):
            raise InputError("give --snapshot or --demo, not both")
        snapshot = "demo"
    if snapshot is None:
        # Ask the live cluster: only what this question needs (cached for a minute; --refresh forces).
        from rich.console import Console as _Console

        from svctrace.collect import live

        err = _Console(stderr=True)
        if namespace is None and question.parse_target(target).namespace is None:
            # kubectl's rule: the context's namespace, unless the target names its own (NAME.NS.svc, svc/NS/NAME)
            namespace = live.context_namespace(context, kubeconfig)
        snapshot = live.snapshot_for_question(target, namespace, node, source=source, context=context,
                                              kubeconfig=kubeconfig, refresh=refresh,
                                              progress=lambda m: err.print(f"[dim]{m}[/dim]", highlight=False))
    snap = load_snapshot(snapshot)
    req = Request(target=target, namespace=namespace, port=port, proto=proto.value if proto else None,
                  source=source, to=to.value if to else None, node=node, returning_client=returning_client)
    exp = explain(snap, req)
    if output is Output.json:
        emit_json(exp.to_json(), exp.warnings)
    else:
        from rich.console import Console

        from svctrace.render.explain import render_explanation

        render_explanation(exp, Console(highlight=False))
    raise typer.Exit(exp.exit_code)
