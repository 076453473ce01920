"""Every Service's health, computed once for both faces: the TUI's Service list marks and `svctrace check`.

A Service's health is explain's answer for each of its ports — the question `svctrace explain svc/NAME --port P`
asks without other flags (a pod sends to the cluster IP; a headless Service or an ExternalName is asked about its
DNS) — on every node whose rules matter: the node explain picks, and every node with a dump when the answer can
differ from node to node (an `internalTrafficPolicy: Local`, topology hints, or nodes that program the Service
differently). Nodes that answer alike (the same health, codes and outcome) share a row. A row's health is the
worst severity among explain's diagnostics (`error`, `warning`; `info` diagnostics are listed but do not
count), `unknown` when explain could not answer, else `ok`.

Linear in the cluster: one explain per Service port (more only for the Services whose node matters), each of
which reads the node's parsed rules (parsed once per node) and the cluster's indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from svctrace.errors import SvctraceError
from svctrace.explain import Diagnostic, Explanation, Request, explain, nodes_with_dumps
from svctrace.model.cluster import Service, ServicePort
from svctrace.model.snapshot import Snapshot

SEVERITY_RANK = {"error": 3, "warning": 2, "unknown": 1, "ok": 0}
HEALTHS = ("error", "warning", "unknown", "ok")  # worst first


def worst(a: str, b: str) -> str:
    return a if SEVERITY_RANK.get(a, 0) >= SEVERITY_RANK.get(b, 0) else b


def worsen(level: str, codes: list[str], diags: Iterable[Diagnostic]) -> str:
    """A health `level` made worse by the errors and warnings among `diags`, whose codes are added to `codes`
    (once each)."""
    for d in diags:
        if d.severity in ("error", "warning"):
            level = worst(level, d.severity)
            if d.code not in codes:
                codes.append(d.code)
    return level


@dataclass
class HealthRow:
    """One Service port's health on some nodes (those that answered alike)."""

    namespace: str
    name: str
    type: str
    port: ServicePort | None  # None: the Service has no port (or a dump names none)
    nodes: list[str]  # the nodes whose rules gave this answer ([] when none decides: DNS-only Services)
    health: str  # error / warning / unknown / ok
    codes: list[str] = field(default_factory=list)  # the error and warning diagnostics' codes
    diagnostics: list[Diagnostic] = field(default_factory=list)
    outcome: str = "-"  # what the packet meets, in a few words
    cluster_ip: str = "-"
    endpoints: str = "-"  # ready/total addresses
    error: str | None = None  # why explain could not answer (health `unknown`)
    order: int = 0  # the port's position in the Service
    warnings: list[str] = field(default_factory=list)  # explain's warnings (a damaged file, a guess it made)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def port_text(self) -> str:
        p = self.port
        if p is None:
            return "-"
        return f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol}"

    @property
    def note(self) -> str:
        """The codes behind the mark (or why there is no answer): what the TUI shows beside a Service."""
        return self.error if self.error else ", ".join(self.codes)

    def to_json(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "type": self.type,
            "port": self.port.to_json() if self.port is not None else None,
            "nodes": self.nodes,
            "health": self.health,
            "codes": self.codes,
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "outcome": self.outcome,
            "cluster_ip": self.cluster_ip,
            "endpoints": self.endpoints,
            "error": self.error,
        }


def summarize(rows: Sequence[HealthRow]) -> tuple[str, str]:
    """A Service's mark and note from its rows: the worst health, and the codes (or errors) of all rows."""
    level, notes = "ok", []
    for r in rows:
        level = worst(level, r.health)
        for n in [r.error] if r.error else r.codes:
            if n not in notes:
                notes.append(n)
    return level, ", ".join(notes)


def sort_rows(rows: Iterable[HealthRow]) -> list[HealthRow]:
    """Worst first; then by namespace, name and the port's place in the Service."""
    return sorted(
        rows, key=lambda r: (-SEVERITY_RANK.get(r.health, 0), r.namespace, r.name, r.order, r.nodes[:1])
    )


@dataclass
class CheckReport:
    """`svctrace check`: every row, worst first."""

    source: str
    namespace: str | None  # None: every namespace (-A)
    node: str | None
    services: int
    rows: list[HealthRow]

    @property
    def warnings(self) -> list[str]:
        """Every row's warnings, each once, in order."""
        return list(dict.fromkeys(w for r in self.rows for w in r.warnings))

    def count(self, health: str) -> int:
        return sum(1 for r in self.rows if r.health == health)

    @property
    def healthy(self) -> bool:
        return all(r.health == "ok" for r in self.rows)

    @property
    def exit_code(self) -> int:
        """0 when every row is ok; 1 when one is not (an error, a warning, or no answer)."""
        return 0 if self.healthy else 1

    def to_json(self) -> dict[str, object]:
        return {
            "kind": "Check",
            "source": self.source,
            "namespace": self.namespace,
            "node": self.node,
            "healthy": self.healthy,
            "summary": {
                "services": self.services,
                "rows": len(self.rows),
                **{h: self.count(h) for h in HEALTHS},
            },
            "items": [r.to_json() for r in self.rows],
            "warnings": self.warnings,
        }


# -- a snapshot's Services -------------------------------------------------------------------------------


def endpoint_counts(snap: Snapshot, svc: Service) -> str:
    """`ready/total` endpoint addresses of the Service (`-` for an ExternalName)."""
    if svc.type == "ExternalName":
        return "-"
    ready = total = 0
    seen: set[str] = set()
    for s in snap.cluster.slices_for(svc):
        for e in s.endpoints:
            for a in e.addresses:
                if a in seen:
                    continue
                seen.add(a)
                total += 1
                ready += 1 if e.ready else 0
    return f"{ready}/{total}"


def cluster_ip_text(svc: Service) -> str:
    ips = [ip for ip in svc.cluster_ips if ip != "None"]
    return ", ".join(ips) if ips else ("None" if svc.type != "ExternalName" else "-")


def outcome_text(exp: Explanation) -> str:
    """What the packet meets, in a few words: `3 endpoints`, `reject`, `drop 50%`, `DNS only`."""
    if exp.destination.get("via") == "dns":
        return "DNS only"
    parts = []
    accepted = [o for o in exp.outcomes if o.verdict == "accept"]
    eps = {str(o.endpoint) for o in accepted if o.endpoint is not None}
    if eps:
        parts.append(f"{len(eps)} endpoint{'s' if len(eps) > 1 else ''}")
    elif accepted:
        parts.append("not translated")
    for verdict in ("reject", "drop"):
        share = sum(o.probability for o in exp.outcomes if o.verdict == verdict)
        if share > 0:
            parts.append(verdict if share >= 0.9995 else f"{verdict} {share:.0%}")
    return ", ".join(parts) or "-"


def _node_matters(svc: Service, snap: Snapshot, exp: Explanation, codes: list[str]) -> bool:
    """Whether another node may answer this Service's question otherwise: kube-proxy picks endpoints per node
    for `internalTrafficPolicy: Local` and for topology hints (pkg/proxy/topology.go CategorizeEndpoints), and
    nodes-disagree says a node's rules differ."""
    if exp.node is None:
        return False
    if svc.internal_traffic_policy == "Local" or "nodes-disagree" in codes:
        return True
    return any(e.hints for s in snap.cluster.slices_for(svc) for e in s.endpoints)


def _family(svc: Service) -> int:
    ip = next((i for i in svc.cluster_ips if i != "None"), "")
    return 6 if ":" in ip else 4


def snapshot_rows(snap: Snapshot, svc: Service, node: str | None = None) -> list[HealthRow]:
    """The health rows of one Service of a snapshot: per port, per group of nodes that answer alike."""
    rows: list[HealthRow] = []
    cip, eps = cluster_ip_text(svc), endpoint_counts(snap, svc)
    ports: list[ServicePort | None] = list(svc.ports) or [None]
    for i, p in enumerate(ports):
        # By name when the Service has several ports (kube-dns's 53/UDP and 53/TCP share a number).
        spec = (p.name or str(p.port)) if p is not None and len(svc.ports) > 1 else None

        def ask(
            on: str | None, spec: str | None = spec
        ) -> tuple[str, list[str], Explanation | None, str | None]:
            try:
                exp = explain(snap, Request(target=f"svc/{svc.key}", port=spec, node=on))
            except SvctraceError as e:
                return "unknown", [], None, str(e)
            codes: list[str] = []
            return worsen("ok", codes, exp.diagnostics), codes, exp, None

        first = ask(node)
        # the node whose rules answered (none for a DNS-only Service; the one asked when there is no answer)
        answers = [(first[2].node if first[2] is not None else node, first)]
        exp0 = first[2]
        if node is None and exp0 is not None and _node_matters(svc, snap, exp0, first[1]):
            for other in nodes_with_dumps(snap, _family(svc)):
                if other != exp0.node:
                    answers.append((other, ask(other)))
        groups: dict[tuple[str, tuple[str, ...], str | None, str], HealthRow] = {}
        for on, (health, codes, exp, error) in answers:
            key = (health, tuple(codes), error, outcome_text(exp) if exp is not None else "-")
            row = groups.get(key)
            if row is None:
                row = groups[key] = HealthRow(
                    svc.namespace,
                    svc.name,
                    svc.type,
                    p if exp is None or exp.port is None else exp.port,
                    [],
                    health,
                    codes,
                    list(exp.diagnostics) if exp is not None else [],
                    outcome_text(exp) if exp is not None else "-",
                    cip,
                    eps,
                    error,
                    i,
                    [str(w) for w in exp.warnings] if exp is not None else [],
                )
            if on and on not in row.nodes:
                row.nodes.append(on)
        rows.extend(groups.values())
    return rows
