"""NetworkPolicy on this path: the backend pod's ingress and the client pod's egress, for the packet as it is
after the walk's DNAT (and SNAT), and whether the cluster's CNI enforces policies at all."""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.explain.addons import Enforcement, policy_enforcement
from svctrace.explain.netpol import Evaluator, Peer, Verdict
from svctrace.model.cluster import Pod

from .registry import Context, Diagnostic, check


@dataclass
class PathPolicy:
    endpoint: str  # ip:port after DNAT
    pod: Pod | None
    seen_source: str
    masqueraded: bool
    ingress: Verdict | None
    egress: Verdict | None
    port: int
    protocol: str


def _node_ips(ctx: Context, node: str | None) -> list[str]:
    n = ctx.snap.cluster.nodes.get(node or "")
    return (n.internal_ips + n.external_ips) if n else []


def path_policies(ctx: Context) -> list[PathPolicy]:
    def make() -> list[PathPolicy]:
        exp, cluster = ctx.exp, ctx.snap.cluster
        if exp is None or not cluster.policies:
            return []
        proto = str(exp.destination.get("protocol") or "TCP").upper()
        if proto not in ("TCP", "UDP", "SCTP"):
            return []
        src = exp.source
        src_pod = cluster.pod_by_ip(src.ip) if src.kind == "pod" and not src.synthetic else None
        out: list[PathPolicy] = []
        seen: set[tuple[str, bool]] = set()
        evaluate = Evaluator(cluster)
        for o in exp.outcomes:
            if (
                o.verdict != "accept"
                or o.endpoint is None
                or o.endpoint.addr is None
                or o.endpoint.port is None
            ):
                continue
            ip, port = str(o.endpoint.addr), int(o.endpoint.port)
            key = (f"{ip}:{port}", o.masquerade)
            if key in seen:
                continue
            seen.add(key)
            target = cluster.pod_by_ip(ip)
            if target is not None and target.host_network:
                target = None
            if o.masquerade:
                masq = _node_ips(ctx, exp.node)
                peer = Peer(masq[0] if masq else src.ip, None)
            else:
                peer = Peer(src.ip, src_pod, known=not (src.kind == "pod" and src.synthetic))
            sp = (ctx.port.port, ctx.port.name) if ctx.port is not None else None
            ingress = (
                evaluate(
                    "ingress",
                    target,
                    peer,
                    port,
                    proto,
                    target,
                    service_port=sp,
                    pod_node_ips=_node_ips(ctx, target.node_name),
                )
                if target is not None
                else None
            )
            egress = (
                evaluate(
                    "egress",
                    src_pod,
                    Peer(ip, target),
                    port,
                    proto,
                    target,
                    service_port=sp,
                    pod_node_ips=_node_ips(ctx, src_pod.node_name),
                )
                if src_pod is not None
                else None
            )
            out.append(
                PathPolicy(f"{ip}:{port}", target, peer.ip, o.masquerade, ingress, egress, port, proto)
            )
        return out

    got: list[PathPolicy] = ctx.memo("netpol", make)
    return got


def enforcement(ctx: Context) -> Enforcement:
    got: Enforcement = ctx.memo("netpol-enforcement", lambda: policy_enforcement(ctx.snap.cluster))
    return got


def _denied(ctx: Context, direction: str, *, service_port: bool | None) -> list[tuple[PathPolicy, Verdict]]:
    out = []
    for pp in path_policies(ctx):
        v = pp.ingress if direction == "ingress" else pp.egress
        if v is None or v.allowed is not False:
            continue
        confused = bool(v.service_port_rules) and ctx.port is not None and ctx.port.port != pp.port
        if service_port is None or confused == service_port:
            out.append((pp, v))
    return out


def _seen(pp: PathPolicy) -> str:
    if pp.masqueraded:
        return (
            f"from {pp.seen_source} (the walk masquerades, so the pod sees the node's address, taken to be its "
            "first InternalIP)"
        )
    return f"from {pp.seen_source}"


def _assumed(ctx: Context) -> str:
    """Who enforces the policies, as one clause: the CNI found, or the assumption made."""
    return f"; {enforcement(ctx).text}"


@check(
    "netpol-service-port",
    ["path"],
    "a NetworkPolicy allows the Service's port, but after DNAT the pod is reached on its targetPort",
    "test_netpol_service_port_instead_of_target_port",
)
def netpol_service_port(ctx: Context) -> Diagnostic | None:
    if not path_policies(ctx) or enforcement(ctx).enforced is False:
        return None
    hits = _denied(ctx, "ingress", service_port=True) + _denied(ctx, "egress", service_port=True)
    if not hits or ctx.port is None:
        return None
    pp, v = hits[0]
    pods = sorted({h[0].pod.name for h in hits if h[0].pod is not None})
    return Diagnostic(
        "netpol-service-port",
        "error",
        f"{v.service_port_rules[0]} allows port {ctx.port.port}/{pp.protocol}, the Service's port, but after "
        f"kube-proxy's DNAT the packet reaches pod {', '.join(pods) or pp.endpoint} on port {pp.port} and "
        f"NetworkPolicy sees that port: {v.direction} is denied{_assumed(ctx)}.",
        f"Put the targetPort ({pp.port}"
        + (f" or its name {ctx.port.target_port}" if isinstance(ctx.port.target_port, str) else "")
        + ") in the policy's ports instead of the Service's port.",
        blocks=True,
    )


def _deny_text(ctx: Context, hits: list[tuple[PathPolicy, Verdict]], direction: str) -> str:
    pp, v = hits[0]
    pods = sorted({h[1].pod.name for h in hits})
    who = ", ".join(pods[:4]) + (f" and {len(pods) - 4} more" if len(pods) > 4 else "")
    if direction == "ingress":
        return (
            f"NetworkPolicy {v.names()} selects pod {who} for ingress and no rule allows this packet "
            f"({_seen(pp)} to port {pp.port}/{pp.protocol}, after DNAT): it is dropped{_assumed(ctx)}."
        )
    return (
        f"NetworkPolicy {v.names()} selects the client pod {v.pod.name} for egress and no rule allows "
        f"{pp.endpoint}/{pp.protocol} (the pod address and port after DNAT): it is dropped{_assumed(ctx)}."
    )


def _with_rules(v: Verdict, direction: str) -> str:
    """The policy to edit: the first selecting one that has rules for the direction (not a bare default deny)."""
    return next((p.key for p in v.policies if getattr(p, direction)), v.policies[0].key)


@check(
    "netpol-ingress-denied",
    ["path"],
    "NetworkPolicy on the backend pod denies the packet (after DNAT)",
    "test_netpol_ingress_default_deny_and_allow",
)
def netpol_ingress_denied(ctx: Context) -> Diagnostic | None:
    if not path_policies(ctx) or enforcement(ctx).enforced is False:
        return None
    hits = _denied(ctx, "ingress", service_port=False)
    if not hits:
        return None
    pp = hits[0][0]
    share = len(hits) < len(path_policies(ctx))
    return Diagnostic(
        "netpol-ingress-denied",
        "error",
        _deny_text(ctx, hits, "ingress")
        + (" Other endpoints accept it, so connections fail at random." if share else ""),
        f"Add an ingress rule allowing {'the source ' + pp.seen_source if not pp.masqueraded else 'the node address'} "
        f"on port {pp.port}/{pp.protocol} to {_with_rules(hits[0][1], 'ingress')}, or send from a pod it already "
        "allows.",
        blocks=True,
    )


@check(
    "netpol-egress-denied",
    ["path"],
    "NetworkPolicy on the client pod denies the packet (after DNAT)",
    "test_netpol_egress_denied_and_not_enforced",
)
def netpol_egress_denied(ctx: Context) -> Diagnostic | None:
    if not path_policies(ctx) or enforcement(ctx).enforced is False:
        return None
    hits = _denied(ctx, "egress", service_port=False)
    if not hits:
        return None
    pp, v = hits[0]
    return Diagnostic(
        "netpol-egress-denied",
        "error",
        _deny_text(ctx, hits, "egress"),
        f"Add an egress rule to {_with_rules(v, 'egress')} allowing the backend pods on port {pp.port}/{pp.protocol} "
        "(the pod's port, not the Service's; and UDP/TCP 53 to kube-dns if the client resolves names).",
        blocks=True,
    )


@check(
    "netpol-uncertain",
    ["path"],
    "whether a NetworkPolicy allows the packet depends on what the snapshot lacks",
    "test_netpol_uncertain_and_namespace_selector",
)
def netpol_uncertain(ctx: Context) -> Diagnostic | None:
    for pp in path_policies(ctx):
        for v in (pp.ingress, pp.egress):
            if v is not None and v.allowed is None:
                return Diagnostic(
                    "netpol-uncertain",
                    "warning",
                    f"NetworkPolicy {v.names()} selects pod {v.pod.name} for {v.direction}; whether it allows this "
                    f"packet is unknown: {v.why}.",
                    "Name the client with --from pod/NAMESPACE/NAME, and collect Namespaces, so that every selector "
                    "can be decided.",
                )
    return None


@check(
    "netpol-not-enforced",
    ["path"],
    "NetworkPolicies would deny the packet, but the cluster's CNI enforces none",
    "test_netpol_egress_denied_and_not_enforced",
)
def netpol_not_enforced(ctx: Context) -> Diagnostic | None:
    if not path_policies(ctx):
        return None
    e = enforcement(ctx)
    if e.enforced is not False:
        return None
    hits = _denied(ctx, "ingress", service_port=None) + _denied(ctx, "egress", service_port=None)
    if not hits:
        return None
    names = sorted({p.key for _, v in hits for p in v.policies})
    return Diagnostic(
        "netpol-not-enforced",
        "warning",
        f"NetworkPolicy {', '.join(names)} would deny this packet, but {e.text}: the policies have no effect "
        "and the packet passes.",
        "Install a CNI that enforces policies (Calico, Cilium, Antrea, ...) before relying on them, or delete "
        "policies that only pretend to protect.",
    )


@check(
    "netpol-allowed",
    ["path"],
    "NetworkPolicies isolate the pods on this path and a named rule allows it",
    "test_netpol_ingress_default_deny_and_allow",
)
def netpol_allowed(ctx: Context) -> Diagnostic | None:
    parts = []
    for pp in path_policies(ctx):
        for v in (pp.ingress, pp.egress):
            if v is not None and v.isolated and v.allowed is True:
                parts.append(f"{v.direction} of {v.pod.name}: {v.allowed_by or v.why}")
    if not parts or any(
        v is not None and v.allowed is not True for pp in path_policies(ctx) for v in (pp.ingress, pp.egress)
    ):
        return None
    uniq = list(dict.fromkeys(parts))
    return Diagnostic(
        "netpol-allowed",
        "info",
        "NetworkPolicies isolate the pods on this path and allow the packet: "
        + "; ".join(uniq[:4])
        + (f"; and {len(uniq) - 4} more" if len(uniq) > 4 else "")
        + f"{_assumed(ctx)}.",
        "Nothing to do; a change to these rules changes this path.",
    )
