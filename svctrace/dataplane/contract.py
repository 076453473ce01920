"""The contract every dataplane answers in: the path a packet took (PathStep), each way it can end (Outcome)
and the whole answer (TraceResult). Walkers build these; explain, the renderers and the TUI read them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from svctrace.errors import Warn
from svctrace.model.packet import IPAddress, Packet


@dataclass(frozen=True, slots=True)
class PathStep:
    hook: str
    table: str
    chain: str
    rule: int | None  # 1-based position in the chain; None for a chain policy
    line: int | None  # line in the dump
    text: str
    action: str
    probability: str | None = None  # the printed --probability of the statistic match this step took
    branch: float | None = None  # the kernel's probability of taking this step (statistic matches)
    note: str | None = None
    comment: str | None = None  # the iptables rule's `--comment` (kube-proxy names the Service port and endpoint)
    target: str | None = None  # the chain a jump or goto step enters

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"table": self.table, "chain": self.chain, "rule": self.rule, "text": self.text,
                                "action": self.action, "hook": self.hook, "line": self.line}
        if self.probability is not None:
            d["printed_probability"] = self.probability
        if self.branch is not None:
            d["branch_probability"] = self.branch
        if self.note:
            d["note"] = self.note
        return d


def visible_steps(path: list[PathStep]) -> list[PathStep]:
    """The hops that did something: drop RETURNs, accepting policies and jumps into chains where
    nothing applied (the JSON output keeps every rule)."""
    steps = [s for s in path if s.action != "RETURN" and not (s.rule is None and s.action == "policy ACCEPT")]
    changed = True
    while changed:
        changed = False
        out: list[PathStep] = []
        for i, s in enumerate(steps):
            if s.target is not None and "not in the dump" not in s.action:
                nxt = steps[i + 1] if i + 1 < len(steps) else None
                if nxt is None or nxt.chain != s.target or nxt.table != s.table:
                    changed = True
                    continue
            out.append(s)
        steps = out
    return steps


@dataclass(frozen=True)
class Hints:
    """What the program that wrote the rules does where the dump is silent. The dataplanes know no such program;
    `svctrace.kubeproxy.walk` passes kube-proxy's. Without hints a chain missing from the dump returns."""

    writer: str = "the rules' writer"  # who, in the assumptions: "kube-proxy"
    mark_chains: Mapping[str, int] = field(default_factory=dict)  # a missing chain -> the mark bits it ORs in
    hairpin_mark: int = 0  # what an endpoint chain ORs in when it DNATs a packet back to its own source
    # The endpoint a missing chain DNATs to, from its name and the comment of the rule that jumps there.
    endpoint: Callable[[str, str | None], tuple[IPAddress, int] | None] | None = None
    # Whether the writer turned net.ipv4.conf.*.route_localnet on, read from its rules (an iptables Ruleset or an
    # NftRuleset), and the reason shown when it is off. Without it, the kernel's default: off.
    route_localnet: Callable[[Any], tuple[bool, str]] | None = None
    # iptables-nft rules as nft prints them, where the xtables match is not shown: the prefix of the writer's
    # endpoint chains whose `xt match recent` is its session-affinity check (--rcheck of the endpoint jumped to,
    # --set beside the DNAT), and whether a rule (chain, text) is its `-m conntrack ! --ctstate
    # RELATED,ESTABLISHED,DNAT`, which nft prints as `ct status dnat`. Without them both are walked as unknown.
    affinity_chains: str | None = None
    negated_ctstate: Callable[[str, str], bool] | None = None
    # The comment prefix of rules the writer's hints added to a partial dump (its usual wiring): a packet that
    # takes such a rule has an outcome that rests on it (the rest of the comment names the assumption).
    assumed: str | None = None


class Dnat(str):
    """Where DNAT (or IPVS) sent the packet, as printed: `10.0.0.1:80`, `[fd00::1]:80`, a range the kernel picks in,
    `10.0.0.1:0 (direct routing)`, `(unknown: ...)`. `addr` and `port` are typed; `addr` is None when the text
    names no single address (a range, a host name, an unknown target). JSON writes the text."""

    addr: IPAddress | None
    port: int | None

    def __new__(cls, text: str, addr: IPAddress | None = None, port: int | None = None) -> Dnat:
        self = super().__new__(cls, text)
        self.addr = addr
        self.port = port
        return self


@dataclass
class Outcome:
    probability: float
    verdict: str  # accept / drop / reject
    dnat: Dnat | None
    masquerade: bool
    snat: str | None
    delivery: str | None  # local / forward / None when dropped
    certain: bool
    path: list[PathStep]
    reason: str
    reject_with: str | None = None
    assumptions: list[str] = field(default_factory=list)
    final_dst: str | None = None
    mark: int = 0
    merged: int = 1
    iif: str | None = None  # the interface it came in on (forwarded packets), when the node's routes say
    oif: str | None = None  # the interface it leaves by (accepted, routed on), when the node's routes say
    snat_how: str | None = None  # where the masquerade address `snat` came from, or the assumption made
    cause: str | None = None  # what outside the rules decided (ip-forward-off, rp-filter, output-martian, no-route)

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "probability": round(self.probability, 12),
            "verdict": self.verdict,
            "dnat": self.dnat,
            "masquerade": self.masquerade,
            "delivery": self.delivery,
            "certain": self.certain,
            "path": [s.to_json() for s in self.path],
            "reason": self.reason,
        }
        if self.masquerade or self.snat:
            d["snat"] = self.snat
            if self.snat_how:
                d["snat_from"] = self.snat_how
        if self.cause:
            d["cause"] = self.cause
        if self.iif:
            d["in_interface"] = self.iif
        if self.oif:
            d["out_interface"] = self.oif
        if self.reject_with:
            d["reject_with"] = self.reject_with
        if self.assumptions:
            d["assumptions"] = self.assumptions
        return d


@dataclass
class TraceResult:
    packet: Packet
    outcomes: list[Outcome]
    warnings: list[Warn]
    ruleset: Any  # the walked dataplane: an iptables Ruleset, an nftables ruleset, or IPVS + iptables
    notes: list[str] = field(default_factory=list)  # plain-language explanations of the answer
    nowhere: bool = False  # accepted, but sent on untranslated to a Service's virtual IP: no host owns it
    kube_version: object = None  # the kube-proxy version the walk was given (every mode records it)
    # Every file the walk read beyond `ruleset`, as (name, what it is): IPVS mode reads ipvsadm beside iptables;
    # a caller adds the ipset dumps it gave in NodeFacts.
    inputs: list[tuple[str, str]] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # the node's facts that decided (interfaces, routes)
    assumed: list[str] = field(default_factory=list)  # node facts the walk needed and was not given
    cut: str | None = None  # the dump ends before its end (where and why): no outcome is certain

    @property
    def all_reach(self) -> bool:
        return all(o.verdict == "accept" for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 when every outcome reaches a destination; 1 when some outcome is dropped or rejected, when the
        packet goes nowhere, or when the dump is cut short (then no outcome is known)."""
        return 0 if self.all_reach and not self.nowhere and self.cut is None else 1

    def unanswered(self, o: Outcome) -> bool:
        """An outcome the kernel accepts but no host answers: sent on untranslated to an address no host owns."""
        return self.nowhere and o.verdict == "accept" and o.dnat is None and o.delivery != "local"

    def to_json(self) -> dict[str, object]:
        return {
            "packet": self.packet.to_json(),
            "outcomes": [o.to_json() for o in self.outcomes],
            "warnings": [w.to_json() for w in self.warnings],
            "notes": self.notes,
            **({"node_facts": self.facts} if self.facts else {}),
            **({"assumed": self.assumed} if self.assumed else {}),
            **({"cut": self.cut} if self.cut else {}),
        }
