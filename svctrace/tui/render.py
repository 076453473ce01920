"""Rich text for the TUI: rules with their matches and targets highlighted, outcomes with bars."""

from __future__ import annotations

from rich.text import Text

from svctrace.browse.data import RuleView
from svctrace.browse.session import OutcomeView
from svctrace.explain import Diagnostic

HEALTH = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "ok": ("✓", "green"),
          "unknown": ("?", "dim")}
SEVERITY = {"error": ("✗", "bold red"), "warning": ("!", "bold yellow"), "info": ("i", "bold cyan")}
VERDICT = {"accept": "bold green", "drop": "bold red", "reject": "bold red"}
MATCH_STYLE = {"addr": "cyan", "proto": "magenta", "iface": "cyan", "random": "bold magenta", "module": "",
               "other": "", "set": "#d7afff"}
TARGET_STYLE = {"jump": "bold #5fafff", "goto": "bold #5fafff", "accept": "bold green", "drop": "bold red",
                "reject": "bold red", "nat": "bold yellow", "mark": "yellow", "return": "dim", "other": "yellow",
                "none": "dim", "vmap": "bold #5fafff", "member": ""}


def health_mark(level: str | None) -> Text:
    if level is None:
        return Text("·", style="dim")
    mark, style = HEALTH.get(level, ("?", "dim"))
    return Text(mark, style=style)


def pct(p: float) -> str:
    if p >= 0.9995:
        return "100%"
    if p >= 0.001:
        return f"{p * 100:.1f}%"
    return f"{p * 100:.2g}%"


def bar(p: float, width: int = 10) -> Text:
    full = max(1 if p > 0 else 0, round(p * width))
    t = Text("█" * full, style="magenta")
    t.append("░" * (width - full), style="dim magenta")
    return t


def human(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            v = n / size
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return str(n)


def rule_matches(r: RuleView) -> Text:
    t = Text()
    for i, part in enumerate(r.matches):
        if i:
            t.append(" ")
        text = part.text
        if part.head and text.startswith(part.head):  # nftables: `ip saddr !=` dim, then the value
            head, op = part.head, ""
            for neg in (" !=", " <=", " >=", " <", " >"):
                if head.endswith(neg):
                    head, op = head[:-len(neg)], neg
                    break
            t.append(head, style="dim")
            if op:
                t.append(op, style="bold red" if op == " !=" else "dim")
            t.append(text[len(part.head):], style=MATCH_STYLE.get(part.kind, ""))
            continue
        if text.startswith("! "):
            t.append("! ", style="bold red")
            text = text[2:]
        style = MATCH_STYLE.get(part.kind, "")
        if part.kind in ("addr", "proto", "iface"):
            flag, _, val = text.partition(" ")
            t.append(flag + " ", style="dim")
            t.append(val, style=style)
        elif part.kind == "module":
            for j, word in enumerate(text.split(" ")):
                if j:
                    t.append(" ")
                if word == "!":
                    t.append(word, style="bold red")
                else:
                    t.append(word, style="dim" if word.startswith("-") else "")
        else:
            t.append(text, style=style)
    if not r.matches:
        t.append("(every packet)", style="dim italic")
    return t


def rule_target(r: RuleView) -> Text:
    style = TARGET_STYLE.get(r.target_kind, "")
    if r.target is None:
        return Text("" if r.target_kind == "member" else "(counts only)", style=style)
    if r.target_kind == "jump":
        return Text("→ " + r.target, style=style)
    if r.target_kind == "goto":
        return Text("↷ " + r.target, style=style)
    if r.target_kind == "vmap":
        t = Text("⇉ " + r.target, style=style)
        if r.target_args:
            t.append(" " + r.target_args, style="#5fafff")
        return t
    t = Text(r.target, style=style)
    args = r.target_args
    if r.target == "DNAT":
        args = args.replace("--to-destination ", "→ ")
    elif r.target == "REJECT":
        args = args.replace("--reject-with ", "")
    elif r.target == "MARK":
        args = args.replace("--set-xmark ", "")
    if args:
        t.append(" " + args, style="yellow" if r.target_kind in ("nat", "mark") else "dim")
    return t


def rule_comment(r: RuleView) -> Text:
    return Text(f"“{r.comment}”", style="italic #87af87") if r.comment else Text("")


def counters(r: RuleView) -> tuple[str, str]:
    if r.counters is None:
        return ("", "")
    return (human(r.counters[0]), human(r.counters[1]))


def rule_detail(r: RuleView, meaning: str | None, jump_meaning: str | None) -> Text:
    t = Text()
    t.append(f"{r.table} {r.chain} #{r.index}", style="bold")
    t.append(f"  {r.where or f'line {r.line}'}", style="dim")
    if r.counters is not None:
        t.append(f"  {r.counters[0]:,} packets, {r.counters[1]:,} bytes", style="dim")
    t.append("\n")
    t.append(r.text, style="")
    if r.comment:
        t.append("\n")
        t.append_text(rule_comment(r))
    if jump_meaning and r.jump:
        t.append("\n")
        t.append(f"{r.jump}: ", style="bold #5fafff")
        t.append(jump_meaning, style="dim")
    elif r.branches:
        t.append("\n")
        t.append("enter: ", style="bold #5fafff")
        t.append(", ".join(label for label, _ref in r.branches[:3]) + (" …" if len(r.branches) > 3 else ""),
                 style="dim")
    elif meaning:
        t.append("\n")
        t.append(f"{r.chain}: ", style="bold")
        t.append(meaning, style="dim")
    for p in r.problems:
        t.append("\n")
        t.append(f"not fully understood: {p}", style="yellow")
    return t


def outcome_text(i: int, o: OutcomeView, selected: bool = False) -> Text:
    t = Text()
    t.append(f"{pct(o.probability):>6} ", style="bold magenta")
    t.append_text(bar(o.probability))
    t.append(" ")
    if o.nowhere:  # accepted, but routed on untranslated to an address no host owns: the client gets no answer
        t.append("NO ANSWER" + ("" if o.certain else " ?"), style="bold red")
        t.append("\n   not translated: routed on towards an address no host owns", style="dim")
        return t
    t.append(o.verdict.upper() + ("" if o.certain else " ?"), style=VERDICT.get(o.verdict, "bold"))
    if o.endpoint:
        t.append(f" {o.endpoint}", style="bold cyan")
    t.append("\n")
    if o.pod or o.node:
        t.append("   pod ", style="dim")
        t.append(o.pod or "-", style="")
        t.append(" on ", style="dim")
        t.append(o.node or "?", style="bold")
        t.append("\n")
    if o.verdict == "accept":
        t.append("   masquerade ", style="dim")
        t.append("yes" if o.masquerade else "no", style="yellow" if o.masquerade else "")
        if o.masquerade and o.masquerade_reason:
            t.append(f": {o.masquerade_reason}", style="dim yellow")
    else:
        t.append(f"   {o.reason}", style="dim")
    return t


def diag_text(d: Diagnostic) -> Text:
    mark, style = SEVERITY.get(d.severity, ("-", "bold"))
    t = Text(f"{mark} ", style=style)
    t.append(d.code, style=style)
    t.append(f": {d.message}")
    if d.hint and d.severity in ("error", "warning"):
        t.append("\n  → ", style="bold")
        t.append(d.hint, style="italic")
    return t
