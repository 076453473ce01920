"""Human output of `svctrace explain`: an explanation a CKA student learns from."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from svctrace.explain import Explanation

SEVERITY = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "info": ("i", "bold cyan")}


def _pct(p: float) -> str:
    return f"{p * 100:.0f}%" if p >= 0.9995 else f"{p * 100:.1f}%"


def header(exp: Explanation) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    svc = exp.service
    ips = ", ".join(ip for ip in svc.cluster_ips if ip != "None")
    what = f"cluster IP {ips}" if ips else ("no cluster IP" if svc.type == "ExternalName" else "headless: no cluster IP")
    t.add_row("Service", f"{svc.key}  ({svc.type}, {what})")
    if exp.port is not None:
        p = exp.port
        extra = f", nodePort {p.node_port}" if p.node_port else ""
        t.add_row("Port", f"{p.name or '(unnamed)'} {p.port}/{p.protocol} → targetPort {p.target_port}{extra}")
    if exp.source.ip != "-":
        t.add_row("From", exp.source.describe())
    d = exp.destination
    if d.get("ip"):
        where = f"{d['ip']}:{d['port']}" if d.get("port") else str(d["ip"])
        t.add_row("To", f"{where} {str(d.get('protocol')).lower()} (via {d.get('via')})")
    if exp.node:
        t.add_row("Rules of", f"node {exp.node} (kube-proxy mode {exp.proxy_mode or 'unknown'})")
    return t


def backends(exp: Explanation) -> Table:
    t = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for col, kw in (("prob.", {"justify": "right", "no_wrap": True}), ("", {"no_wrap": True}), ("verdict", {}),
                    ("endpoint", {"no_wrap": True}), ("pod", {"overflow": "fold"}), ("node", {}), ("masquerade", {})):
        t.add_column(col, **kw)
    for o in exp.outcomes:
        bar = "█" * max(1, round(o.probability * 10))
        style = "green" if o.verdict == "accept" else "red"
        t.add_row(_pct(o.probability), Text(bar, style="magenta"),
                  Text(o.verdict.upper() + ("" if o.certain else " ?"), style=f"bold {style}"),
                  o.endpoint or "-", o.pod or "-", o.endpoint_node or "-",
                  (f"yes ({o.snat})" if o.masquerade and o.snat else "yes" if o.masquerade else "no")
                  if o.verdict == "accept" else "-")
    return t


def render_explanation(exp: Explanation, console: Console) -> None:
    console.print(header(exp))
    if exp.hops:
        console.print()
        console.print(Text("What happens", style="bold underline"))
        steps = Table.grid(padding=(0, 1))
        steps.add_column(justify="right", no_wrap=True)
        steps.add_column()
        n = 0
        for h in exp.hops:
            if h.startswith("  •"):
                steps.add_row("•", h.strip()[1:].strip())
            else:
                n += 1
                steps.add_row(f"{n}.", h)
        console.print(steps)
    if exp.outcomes:
        console.print()
        console.print(Text("Backends", style="bold underline"))
        console.print(backends(exp))
        reasons = sorted({o.masquerade_reason for o in exp.outcomes if o.masquerade and o.masquerade_reason})
        for r in reasons:
            console.print(Text(f"  masquerade: {r}", style="yellow"))
        for o in exp.outcomes:
            if o.reply_lost and o.reply is not None:
                what = "the request never arrives" if o.reply.get("request_dropped") else \
                    "its reply misses the node's conntrack"
                console.print(Text(f"  {o.endpoint}: accepted by the rules, but {what} ({o.reply.get('code')})",
                                   style="bold red"))
    if exp.diagnostics:
        console.print()
        console.print(Text("Diagnostics", style="bold underline"))
        diag = Table.grid(padding=(0, 1))
        diag.add_column(no_wrap=True)
        diag.add_column()
        for d in exp.diagnostics:
            mark, style = SEVERITY.get(d.severity, ("-", "bold"))
            line = Text(d.code, style=style)
            line.append(f": {d.message}", style="default")
            diag.add_row(Text(f" {mark}", style=style), line)
        console.print(diag)
    hints = [d.hint for d in exp.diagnostics if d.hint and d.severity in ("error", "warning")]
    if hints:
        console.print()
        console.print(Text("What to check next", style="bold underline"))
        nxt = Table.grid(padding=(0, 1))
        nxt.add_column(no_wrap=True)
        nxt.add_column()
        for h in hints:
            nxt.add_row(" →", h)
        console.print(nxt)
    if exp.inferred:
        console.print()
        for i in exp.inferred:
            console.print(Text(f"inferred: {i}", style="dim"))
    for w in exp.warnings[:10]:
        console.print(Text(f"warning: {w}", style="yellow"))
