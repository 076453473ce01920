"""Human output of `svctrace trace`: the hops as a compact tree, the outcomes, a one-line verdict."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from svctrace.dataplane.contract import Outcome, PathStep, TraceResult, visible_steps
from svctrace.kubeproxy.catalog import chain_meaning
from svctrace.limits import MAX_TREE_DEPTH
from svctrace.model.packet import Packet, format_endpoint

VERDICT_STYLE = {"accept": "bold green", "drop": "bold red", "reject": "bold red"}


def packet_line(p: Packet) -> Text:
    t = Text()
    t.append(f"{p.proto} ", style="bold")
    t.append(format_endpoint(p.src, p.sport), style="cyan")
    t.append(" → ")
    t.append(p.endpoint(), style="cyan")
    if p.proto in ("icmp", "icmpv6"):
        t.append(f" (type {p.icmp_type}{', echo request' if p.icmp_type in (8, 128) else ''})", style="dim")
    where = "sent by the node itself (enters at OUTPUT)" if p.origin == "local" else \
        "arriving from the network (enters at PREROUTING)"
    t.append(f"   {where}", style="dim")
    return t


def _pct(p: float) -> str:
    if p >= 0.9995 or p == 0:
        return f"{p * 100:.0f}%"
    if p >= 0.001:
        return f"{p * 100:.1f}%"
    return f"{p * 100:.3g}%"


def _step_label(s: PathStep, share: float | None = None) -> Text:
    t = Text()
    if s.rule is None:
        t.append(f"{s.table} {s.chain} ", style="bold")
        t.append(s.action, style="yellow")
        return t
    t.append(f"{s.table} {s.chain}", style="bold")
    t.append(f" #{s.rule} ", style="dim")
    if share is not None:
        # The effective share of packets that take this branch, then the rule's own printed probability.
        t.append(f"{_pct(share)} ", style="bold magenta")
        if s.probability:
            t.append(f"(--probability {s.probability}) ", style="dim magenta")
    action = s.action
    t.append(action, style="yellow" if action.startswith(("jump", "goto")) else "bold yellow")
    comment = s.comment
    if comment:
        t.append(f"  “{comment}”", style="italic dim")
    return t


def _outcome_label(o: Outcome, unanswered: bool = False) -> Text:
    t = Text("⇒ ")
    t.append(_pct(o.probability), style="bold magenta")
    t.append(" ")
    if unanswered:  # accepted, but routed on untranslated towards an address no host owns
        t.append("NO ANSWER", style="bold red")
        t.append(" (accepted, routed on untranslated: no host owns the address)", style="dim")
        return t
    t.append(o.verdict.upper(), style=VERDICT_STYLE.get(o.verdict, "bold"))
    if o.dnat:
        t.append(f" to {o.dnat}", style="bold cyan")
    if o.verdict == "accept":
        t.append(f" ({'delivered on the node' if o.delivery == 'local' else 'routed on'})", style="dim")
        if o.masquerade:
            t.append(", masqueraded" + (f" to {o.snat}" if o.snat else ""), style="yellow")
    if not o.certain:
        t.append("  [uncertain]", style="bold red")
    return t


def path_tree(result: TraceResult, width: int = 120) -> Tree:
    """The union of all outcome paths as a tree: shared hops once, branches where the walk split. Hops nest
    at most MAX_TREE_DEPTH levels, and no deeper than leaves 40 of `width` columns for the labels."""
    max_depth = min(MAX_TREE_DEPTH, max(8, (width - 40) // 4))
    # First the trie with the probability that flows through each hop, then the rich tree.
    trie: dict = {}
    for o in result.outcomes:
        level = trie
        for s in visible_steps(o.path):
            key = (s.hook, s.table, s.chain, s.rule, s.action)
            node = level.setdefault(key, {"step": s, "share": 0.0, "children": {}, "outcomes": []})
            node["share"] += o.probability
            level = node["children"]
        level.setdefault(None, {"outcomes": []})["outcomes"].append(o)

    root = Tree(packet_line(result.packet), guide_style="dim")

    # Iteratively (a path may hold thousands of steps): (tree node, trie level, depth). Below max_depth the
    # hops nest as usual; deeper, a hop with no sibling goes on at its parent's level, so that neither
    # the stack nor the width grows with the path.
    work: list[tuple[Tree, dict, int]] = [(root, trie, 0)]
    while work:
        parent, level, depth = work.pop()
        siblings = sum(1 for k in level if k is not None)
        later: list[tuple[Tree, dict, int]] = []
        for key, node in level.items():
            if key is None:
                for o in node["outcomes"]:
                    parent.add(_outcome_label(o, result.unanswered(o)))
                continue
            split = siblings > 1 or node["step"].branch is not None
            label = _step_label(node["step"], node["share"] if split else None)
            if depth >= max_depth and not split:
                parent.add(label)  # the hops after it follow as its siblings
                later.append((parent, node["children"], depth))
            else:
                later.append((parent.add(label), node["children"], depth + 1))
        work.extend(reversed(later))
    return root


def chain_legend(result: TraceResult) -> Table | None:
    seen: dict[str, str] = {}
    for o in result.outcomes:
        for s in visible_steps(o.path):
            for name in (s.chain, s.target or ""):
                m = chain_meaning(name) if name else None
                if m is not None and m.owner in ("kube-proxy", "kubelet") and m.family not in seen:
                    seen[m.family] = m.meaning
    if not seen:
        return None
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold cyan", no_wrap=True)
    t.add_column(style="dim")
    for fam, meaning in seen.items():
        t.add_row(f"  {fam}", meaning)
    return t


def _decided_by(o: Outcome) -> str:
    return decided_by(o.path, o.verdict, o.reason)


def decided_by(path: list[PathStep], verdict: str, reason: str) -> str:
    """The rule that decided an outcome (its table, chain, number and comment), or why none did."""
    ipvs = [s for s in path if s.table == "ipvs"]
    if ipvs and (verdict == "accept" or ipvs[-1].action.startswith("IPVS")):
        # IPVS picked (or refused) the destination; the iptables rules beside it only let the packet pass
        # (kube-proxy's nat KUBE-SERVICES ACCEPTs Service traffic so that IPVS, on LOCAL_IN, sees it).
        s = ipvs[-1]
        if s.action.startswith("IPVS ") and "→" in s.action:
            return f"IPVS scheduler ({s.chain})"
        return f"IPVS ({s.chain}){s.action.removeprefix('IPVS')}"
    for s in reversed(path):
        if s.rule is None and s.action == "policy ACCEPT":
            continue
        if s.rule is None and s.action.startswith("policy"):
            return f"{s.table} {s.chain} policy"
        if s.rule is not None and (s.action.split()[0] in ("ACCEPT", "DROP", "REJECT", "DNAT", "REDIRECT")
                                   or "assumed DNAT" in s.action):
            c = s.comment
            return f"{s.table} {s.chain} #{s.rule}" + (f" “{c}”" if c else "")
    return "no rule (not translated)" if verdict == "accept" else reason


def outcomes_table(result: TraceResult, wide: bool = False) -> Table:
    t = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    t.add_column("prob.", justify="right")
    t.add_column("")
    t.add_column("verdict")
    t.add_column("destination")
    t.add_column("masquerade")
    if wide:
        t.add_column("delivery")
    t.add_column("decided by", overflow="fold")
    for o in result.outcomes:
        bar = "█" * max(1, round(o.probability * 10)) if o.probability > 0 else ""
        dest = o.dnat or (o.final_dst if o.verdict == "accept" else "-")
        masq = ("yes" + (f" ({o.snat})" if o.snat else "")) if o.masquerade else "no"
        why = _decided_by(o)
        verdict = Text(o.verdict.upper() + ("" if o.certain else " ?"), style=VERDICT_STYLE.get(o.verdict, ""))
        if result.unanswered(o):
            verdict, masq = Text("NO ANSWER" + ("" if o.certain else " ?"), style="bold red"), "-"
        cells = [dest or "-", masq if o.verdict == "accept" else "-"] + ([o.delivery or "-"] if wide else []) + [why]
        t.add_row(_pct(o.probability), Text(bar, style="red" if result.unanswered(o) else "magenta"), verdict, *cells)
    return t


def verdict_line(result: TraceResult) -> Text:
    outs = result.outcomes
    accepted = [o for o in outs if o.verdict == "accept"]
    t = Text("Verdict: ", style="bold")
    if not outs:
        t.append("no outcome (empty walk)")
        return t
    uncertain = any(not o.certain for o in outs)
    if result.cut:
        t.append("UNCERTAIN: ", style="bold red")
        t.append(f"{result.cut}. If the rules stopped there: ", style="red")
    if result.nowhere:
        t.append("goes nowhere: ", style="bold red")
        t.append("not translated, routed on towards a Service address that no host owns (see the note)")
    elif len(accepted) == len(outs):
        dn = [o for o in accepted if o.dnat]
        if dn:
            backends = sorted({o.dnat for o in dn if o.dnat})
            if len(backends) == 1:
                t.append(f"DNAT to {backends[0]}", style="bold green")
            else:
                t.append(f"load-balanced over {len(backends)} backends", style="bold green")
            undn = [o for o in accepted if not o.dnat]
            if undn:
                t.append(f"; {_pct(sum(o.probability for o in undn))} not translated")
        else:
            where = {o.delivery for o in accepted}
            t.append("accepted, not translated: " + (" / ".join(
                "delivered on the node" if w == "local" else "routed on unchanged" for w in sorted(w or "" for w in where))),
                     style="bold green")
        if any(o.masquerade for o in accepted):
            share = sum(o.probability for o in accepted if o.masquerade)
            t.append(f"; masqueraded ({_pct(share)})" if share < 0.9995 else "; masqueraded", style="yellow")
    else:
        bad = [o for o in outs if o.verdict != "accept"]
        share = sum(o.probability for o in bad)
        kinds = sorted({o.verdict.upper() + "ED" if o.verdict == "reject" else "DROPPED" for o in bad})
        t.append(f"{' / '.join(kinds)}", style="bold red")
        if share < 0.9995:
            t.append(f" in {_pct(share)} of cases", style="bold red")
        t.append(f": {bad[0].reason}")
    if uncertain:
        t.append("  (depends on assumptions: see warnings)", style="red")
    return t


def render_trace(result: TraceResult, console: Console, *, show_warnings: bool = True, wide: bool = False) -> None:
    rs = result.ruleset
    meta = f"rules: {rs.source} ({rs.format}"
    if rs.backend:
        meta += f", {rs.backend}"
    meta += f", {rs.rule_count} rules)"
    if result.inputs:  # IPVS: the ipvsadm table decides; iptables and ipset beside it
        meta = "rules: " + " + ".join([f"{name} ({what})" for name, what in result.inputs] + [meta[7:]])
    console.print(Text(meta, style="dim"))
    console.print(path_tree(result, console.width))
    legend = chain_legend(result)
    if legend is not None:
        console.print(legend)
    console.print()
    console.print(outcomes_table(result, wide))
    console.print()
    console.print(verdict_line(result))
    for note in result.notes:
        console.print(Text(f"Note: {note}", style="cyan"))
    for fact in result.facts:
        console.print(Text(f"Node: {fact}", style="dim"))
    for a in result.assumed:
        console.print(Text(f"Assumed: {a}", style="dim"))
    uncertain = [o for o in result.outcomes if not o.certain]
    for o in uncertain[:5]:
        console.print(Text(f"  {_pct(o.probability)} {o.verdict.upper()} assumes: " + "; ".join(o.assumptions[:4]),
                           style="red"))
    if show_warnings and result.warnings:
        console.print()
        lines = [Text(f"warning: {w}", style="yellow") for w in result.warnings[:20]]
        if len(result.warnings) > 20:
            lines.append(Text(f"... and {len(result.warnings) - 20} more (use -o json to see all)", style="yellow"))
        console.print(Group(*lines))
