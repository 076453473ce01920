"""The diagnostics registry: one registered check per stable code (docs/cli.md, docs/explain.md), each with
its one-line docs text and the test that provokes it, run in one stable order.

Adding a diagnosis: write a check in the module of its kind (service.py, endpoints.py, rules.py) with
`@check(code, phases, doc, test)`, and put its code in ORDER where it belongs in the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from svctrace.model.cluster import Service, ServicePort
from svctrace.model.snapshot import Snapshot

if TYPE_CHECKING:
    from svctrace.dataplane.node import Dataplane
    from svctrace.explain import Explanation


@dataclass
class Diagnostic:
    code: str
    severity: str  # error / warning / info
    message: str
    hint: str = ""
    blocks: bool = False  # the packet does not get through for this reason (explain exits 1)

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "hint": self.hint}


@dataclass
class Context:
    """What a check may read. Phases: `service` (the Service alone), `port` (a port asked for), `dns` (a
    headless Service: no path), `path` (after the walk: `exp` and `dp` are set)."""

    snap: Snapshot
    svc: Service
    port: ServicePort | None = None
    spec: str | None = None  # the port asked for (phase `port`)
    exp: Explanation | None = None
    dp: Dataplane | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """A value several checks share (the endpoint selection, the programmed rules), computed once."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


CheckFn = Callable[[Context], "Diagnostic | None"]


@dataclass(frozen=True)
class Check:
    code: str
    phases: tuple[str, ...]
    doc: str  # the one-line docs text (docs/cli.md's table)
    test: str  # the test (in tests/test_explain.py) that provokes it
    run: CheckFn


# The output order: the order explain has always printed its diagnostics in.
ORDER = (
    "external-name", "port-not-in-service", "headless-service", "ping-virtual-ip",
    "headless-not-ready", "no-selector", "selector-matches-no-pods", "named-port-unresolved", "named-port-protocol", "target-port-not-declared",
    "lb-no-ingress",
    "no-endpoints", "no-ready-endpoints", "no-local-endpoints", "source-range-blocked",
    "netpol-service-port", "netpol-ingress-denied", "netpol-egress-denied", "netpol-uncertain", "netpol-not-enforced",
    "netpol-allowed", "conntrack-stale", "session-affinity", "service-env-missing", "dns-other-namespace",
    "dns-resolver",
    "hairpin-masquerade", "ip-forward-off", "forward-policy-drop", "rp-filter-drop", "no-route",
    "localhost-nodeport-martian", "reply-bypasses-conntrack", "hairpin-mode-off", "reply-asymmetric", "conntrack-table-full",
    "rules-missing", "rules-stale", "nodes-disagree", "mixed-iptables-backends",
    "proxy-mode-mismatch", "unknown-match",
)

REGISTRY: dict[str, Check] = {}


def check(code: str, phases: Iterable[str], doc: str, test: str) -> Callable[[CheckFn], CheckFn]:
    def register(fn: CheckFn) -> CheckFn:
        if code in REGISTRY or code not in ORDER:
            raise ValueError(f"diagnostic {code!r}: registered twice, or missing from ORDER")
        REGISTRY[code] = Check(code, tuple(phases), doc, test, fn)
        return fn

    return register


def checks() -> list[Check]:
    """Every registered check, in output order."""
    return [REGISTRY[c] for c in ORDER if c in REGISTRY]


def run(phase: str, ctx: Context) -> Iterator[Diagnostic]:
    for c in checks():
        if phase in c.phases:
            d = c.run(ctx)
            if d is not None:
                yield d
