"""`svctrace check`: every Service's health in one table, the worst first (exit 1 unless all are healthy)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import typer

from svctrace.browse.check import CheckReport, HealthRow
from svctrace.cli import app
from svctrace.cli.output import TABLE, Output, emit, option, parse_output
from svctrace.errors import InputError

COLUMNS = ("HEALTH", "NAMESPACE", "NAME", "PORT", "NODE", "CODES")
WIDE = ("HEALTH", "NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "PORT", "ENDPOINTS", "NODE", "OUTCOME", "CODES")
MAX_NODES_SHOWN = 3


def nodes_text(nodes: list[str]) -> str:
    if not nodes:
        return "-"
    shown = ",".join(nodes[:MAX_NODES_SHOWN])
    return shown + (f" +{len(nodes) - MAX_NODES_SHOWN}" if len(nodes) > MAX_NODES_SHOWN else "")


def cells(r: HealthRow, wide: bool) -> list[str]:
    codes = r.note or "-"
    if not wide:
        return [r.health, r.namespace, r.name, r.port_text, nodes_text(r.nodes), codes]
    return [
        r.health,
        r.namespace,
        r.name,
        r.type,
        r.cluster_ip,
        r.port_text,
        r.endpoints,
        nodes_text(r.nodes),
        r.outcome,
        codes,
    ]


def table_text(report: CheckReport, wide: bool) -> str:
    """kubectl's plain columns: a header, a row per Service port (and group of nodes), three spaces apart; then
    one summary line."""
    if not report.rows:
        where = f"namespace {report.namespace}" if report.namespace else "any namespace"
        return f"No Services in {where}.\n"
    head = list(WIDE if wide else COLUMNS)
    rows = [cells(r, wide) for r in report.rows]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip() for x in [head, *rows]]
    counts = ", ".join(
        f"{report.count(h)} {h}" for h in ("error", "warning", "unknown", "ok") if report.count(h)
    )
    lines += [
        "",
        f"{report.services} Service{'s' if report.services != 1 else ''}, {len(report.rows)} row"
        f"{'s' if len(report.rows) != 1 else ''}: {counts}.",
    ]
    return "\n".join(lines) + "\n"


@app.command("check")
def check_cmd(
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Every namespace's Services."),
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        "-n",
        help="This namespace's Services (default: default; live: the context's namespace).",
    ),
    snapshot: str | None = typer.Option(
        None,
        "--snapshot",
        help="A snapshot bundle (directory or .tar.gz), one "
        "node's iptables-save dump, or `demo` (default: the live cluster).",
    ),
    demo: bool = typer.Option(False, "--demo", help="Short for --snapshot demo."),
    node: str | None = typer.Option(
        None,
        "--node",
        help="Only this node's rules decide (default: the node explain "
        "picks, and every node when the answer may differ by node).",
    ),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context (live cluster)."),
    kubeconfig: str | None = typer.Option(None, "--kubeconfig", help="kubeconfig file (live cluster)."),
    refresh: bool = typer.Option(
        False,
        "--refresh",
        help="Live cluster: collect again instead of using the snapshot cached for a minute.",
    ),
    output: str = option(TABLE, example="{.items[*].name}"),
) -> None:
    """Check every Service: each port's health on the nodes that decide, with explain's diagnostic codes, the
    worst first. Exit 0 when all are healthy, 1 otherwise."""
    out: Output = parse_output(output, TABLE)
    if all_namespaces and namespace is not None:
        raise InputError("give -A or -n NAMESPACE, not both")
    if demo:
        if snapshot not in (None, "demo"):
            raise InputError("give --snapshot or --demo, not both")
        snapshot = "demo"
    if snapshot is None:
        from rich.console import Console

        from svctrace.collect import live

        err = Console(stderr=True)
        if not all_namespaces and namespace is None:
            namespace = live.context_namespace(context, kubeconfig)
        snapshot = live.snapshot_for_check(
            None if all_namespaces else namespace,
            node,
            context=context,
            kubeconfig=kubeconfig,
            refresh=refresh,
            progress=lambda m: err.print(f"[dim]{m}[/dim]", highlight=False),
        )
    from svctrace.browse.session import open_session

    session = open_session(snapshot)
    ns = None if all_namespaces else (namespace or "default")
    report = session.check(ns, node, progress=_progress() if sys.stderr.isatty() else None)

    def text(o: Output) -> None:
        sys.stdout.write(table_text(report, o.wide))
        for w in report.warnings[:20]:
            sys.stderr.write(f"svctrace: warning: {w}\n")
        if len(report.warnings) > 20:
            sys.stderr.write(
                f"svctrace: warning: ... and {len(report.warnings) - 20} more (-o json lists all)\n"
            )

    emit(out, report.to_json, report.warnings, text=text)
    raise typer.Exit(report.exit_code)


def _progress() -> Callable[[int, int], None]:
    """`checking 120/5000` on a terminal's stderr, for a big cluster; erased when done."""
    import time

    last = [0.0]

    def say(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total:
            sys.stderr.write("\r\033[K")
        elif now - last[0] > 0.2:
            last[0] = now
            sys.stderr.write(f"\rchecking Services: {done}/{total}")
        sys.stderr.flush()

    return say
