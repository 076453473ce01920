"""Fill in what a trimmed paste left out: chains and rules added to a table, flagged `assumed` (a walk through one
of their rules is uncertain and says so). Which chains a writer always writes is not known here:
`svctrace.kubeproxy.walk.complete_nft` has kube-proxy's. Stdlib only.
"""

from __future__ import annotations

from svctrace.dataplane.nftables.ir import AnonSet, Chain, Element, Rule, Table, Verdict, VerdictStmt, Vmap
from svctrace.dataplane.nftables.syntax import Tok, parse_rule_tokens, tokenize_line
from svctrace.dataplane.nftables.values import priority_value


def add_rule(t: Table, c: Chain, text: str) -> None:
    """Append an assumed rule, written in nft syntax, to chain `c` of table `t`."""
    toks: list[Tok] = []
    tokenize_line(text, 0, toks)
    stmts, comment, problems = parse_rule_tokens(toks)
    c.rules.append(Rule(t.key, c.name, len(c.rules) + 1, stmts, text, None, comment, None, problems, assumed=True))


def add_chain(t: Table, name: str, typ: str | None = None, hook: str | None = None, prio: str | None = None) -> Chain:
    """Add an assumed chain (a base chain when `hook` is given, with policy accept) to table `t`."""
    c = Chain(t.key, name, type=typ, hook=hook, priority=priority_value(prio, t.family) if prio else None,
              priority_text=prio, policy="accept" if hook else None, assumed=True)
    t.chains[name] = c
    return c


def jump_targets(t: Table) -> set[str]:
    """Every chain a rule of `t` jumps or goes to (verdict statements and anonymous verdict maps)."""
    out: set[str] = set()
    for c in t.chains.values():
        for r in c.rules:
            for s in r.stmts:
                if isinstance(s, VerdictStmt) and s.verdict.target:
                    out.add(s.verdict.target)
                if isinstance(s, Vmap) and isinstance(s.data, AnonSet):
                    for el in s.data.elements:
                        if isinstance(el, Element) and isinstance(el.data, Verdict) and el.data.target:
                            out.add(el.data.target)
    return out
