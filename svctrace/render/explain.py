"""Human output of `svctrace explain`: an explanation a CKA student learns from."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from svctrace.explain import ExplainedOutcome, Explanation
from svctrace.render.text import decided_by

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


def _verdict(o: ExplainedOutcome) -> Text:
    """The verdict as the client sees it: an accepted packet routed on untranslated towards a virtual address
    gets no answer, whatever the kernel's verdict (the diagnosis says why)."""
    if o.nowhere:
        return Text("NO ANSWER" + ("" if o.certain else " ?"), style="bold red")
    style = "green" if o.verdict == "accept" else "red"
    return Text(o.verdict.upper() + ("" if o.certain else " ?"), style=f"bold {style}")


def backends(exp: Explanation, width: int | None = None, wide: bool = False) -> Table:
    """The outcomes, one row each; `wide` adds the rule that decided each (as `trace` names it). To fit `width`
    columns, pods are named without the Service's namespace (their own: EndpointSlices live beside their
    Service), then the probability bar goes; no cell wraps mid-word."""

    def table(bar: bool, short: bool) -> Table:
        ns = exp.service.namespace + "/" if short else "\0"
        t = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
        t.add_column("prob.", justify="right", no_wrap=True)
        if bar:
            t.add_column("", no_wrap=True)
        t.add_column("verdict", no_wrap=True)
        t.add_column("endpoint", no_wrap=True)
        t.add_column("pod", no_wrap=True, overflow="ellipsis")
        t.add_column("node", no_wrap=True, overflow="ellipsis")
        t.add_column("masquerade", no_wrap=True)
        if wide:
            t.add_column("decided by", overflow="fold")
        for o in exp.outcomes:
            cells: list[Text | str] = [_pct(o.probability)]
            if bar:
                color = "red" if o.nowhere or o.verdict != "accept" else "magenta"
                cells.append(Text("█" * max(1, round(o.probability * 10)), style=color))
            pod = o.pod[len(ns):] if o.pod and o.pod.startswith(ns) else o.pod
            endpoint = o.endpoint or ("(not translated)" if o.nowhere else "-")
            cells += [_verdict(o), endpoint, pod or "-", o.endpoint_node or "-",
                      (f"yes ({o.snat})" if o.masquerade and o.snat else "yes" if o.masquerade else "no")
                      if o.verdict == "accept" and not o.nowhere else "-"]
            if wide:
                cells.append(decided_by(o.path, o.verdict, o.reason))
            t.add_row(*cells)
        return t

    if width is None or wide:
        return table(bar=True, short=False)
    from rich.console import Console

    measurer = Console(width=10_000)
    for bar, short in ((True, False), (True, True)):
        t = table(bar, short)
        if measurer.measure(t).maximum <= width:
            return t
    return table(bar=False, short=True)


def render_explanation(exp: Explanation, console: Console, *, wide: bool = False) -> None:
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
        console.print(backends(exp, console.width, wide))
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
