"""What the Service object alone says: ExternalName, headless, a port it does not have, its selector."""

from __future__ import annotations

from svctrace.model.cluster import Cluster, Pod, Service

from .registry import Context, Diagnostic, check


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def endpoint_ips(cluster: Cluster, svc: Service) -> list[str]:
    """The ready endpoint addresses of the Service (what DNS returns for a headless one)."""
    out = []
    for s in cluster.slices_for(svc):
        for e in s.endpoints:
            if e.ready:
                out += e.addresses
    return out


@check("external-name", ["service"], "ExternalName: a DNS CNAME, nothing is proxied",
       "test_headless_and_external_name_and_no_selector")
def external_name(ctx: Context) -> Diagnostic | None:
    svc = ctx.svc
    if svc.type != "ExternalName":
        return None
    if _is_ip(svc.external_name or ""):
        return Diagnostic(
            "external-name", "error",
            f"{svc.key} is an ExternalName Service whose externalName is an IP address ({svc.external_name}): "
            f"cluster DNS answers {svc.name}.{svc.namespace}.svc with a CNAME to the name \"{svc.external_name}\", "
            "which resolves to nothing, and nothing is proxied.",
            f"For an address, use a Service without selector and an EndpointSlice holding {svc.external_name} "
            "(or externalIPs); ExternalName takes a DNS name.")
    return Diagnostic(
        "external-name", "info",
        f"{svc.key} is an ExternalName Service: cluster DNS answers {svc.name}.{svc.namespace}.svc with a CNAME to "
        f"{svc.external_name}; nothing is proxied and no node has rules for it. The client still sends the name it "
        f"used: HTTP's Host header and TLS's SNI say {svc.name}.{svc.namespace}.svc (or the short name), which "
        f"{svc.external_name} may not serve (404, or a certificate for another name).",
        f"Check that {svc.external_name} resolves and answers from the pods (`nslookup {svc.external_name}`); for "
        f"HTTP(S) set the Host header / SNI to {svc.external_name} in the client, or call {svc.external_name} "
        "directly; ports in the Service spec are not used.")


@check("port-not-in-service", ["port"], "the destination port is not one of the Service's ports",
       "test_ping_and_wrong_port_go_nowhere")
def port_not_in_service(ctx: Context) -> Diagnostic | None:
    svc, spec = ctx.svc, ctx.spec
    if spec is None or not spec.isdigit() or not svc.ports or svc.port_by(spec) is not None:
        return None
    names = ", ".join(f"{p.name or '-'}={p.port}/{p.protocol}" for p in svc.ports)
    return Diagnostic(
        "port-not-in-service", "error",
        f"port {spec} is not one of {svc.key}'s ports ({names}); the node has no rule for it, so the packet "
        "is not translated.",
        f"Use one of the Service's ports (for example {svc.ports[0].port}); if the application listens on "
        f"{spec}, that is a targetPort, reached through a Service port.")


@check("headless-service", ["dns"], "clusterIP None: no virtual IP; DNS returns the pods",
       "test_headless_and_external_name_and_no_selector")
def headless_service(ctx: Context) -> Diagnostic | None:
    svc = ctx.svc
    pods = endpoint_ips(ctx.snap.cluster, svc)
    return Diagnostic(
        "headless-service", "info",
        f"{svc.key} is headless (clusterIP: None): there is no virtual IP and kube-proxy writes no rules for it. "
        f"DNS returns the ready pods' addresses directly: {', '.join(pods) or 'none right now'}.",
        "Clients connect to a pod IP; use `nslookup` from a pod to see the A records.")


@check("no-selector", ["dns", "path"], "the Service has no selector: endpoints are managed by hand",
       "test_headless_and_external_name_and_no_selector")
def no_selector(ctx: Context) -> Diagnostic | None:
    svc = ctx.svc
    if svc.selector:
        return None
    addrs = [a for s in ctx.snap.cluster.slices_for(svc) for e in s.endpoints for a in e.addresses]
    return Diagnostic(
        "no-selector", "info",
        f"{svc.key} has no selector: Kubernetes does not manage its endpoints; they come from EndpointSlices "
        f"or Endpoints made by hand ({', '.join(addrs[:6]) or 'none exist'}).",
        f"Edit the EndpointSlice (label kubernetes.io/service-name={svc.name}) or Endpoints object yourself; "
        "a typo there is not caught by any controller.")


@check("selector-matches-no-pods", ["dns", "path"], "the selector matches no pod in the namespace",
       "test_no_endpoints_selector_near_miss")
def selector_matches_no_pods(ctx: Context) -> Diagnostic | None:
    svc, cluster = ctx.svc, ctx.snap.cluster
    if not svc.selector or cluster.selected_pods(svc):
        return None
    near = _near_miss(cluster.pods_in(svc.namespace), svc.selector)
    sel = ",".join(f"{k}={v}" for k, v in svc.selector.items())
    msg = f"the selector {sel} matches no pod in namespace {svc.namespace}"
    hint = f"Compare with `kubectl get pods -n {svc.namespace} --show-labels`."
    if near is not None:
        pod, diffs = near
        msg += f"; closest: pod {pod.name}, which has " + ", ".join(
            f"{k}={pod.labels[k]}" if k in pod.labels else f"no {k} label" for k in diffs)
        hint = (f"Fix the Service selector or the pod labels (`kubectl get pod {pod.name} -n {svc.namespace} "
                "--show-labels`).")
    return Diagnostic("selector-matches-no-pods", "error", msg + ".", hint)


@check("named-port-unresolved", ["dns", "path"], "a named targetPort is not declared by a selected pod",
       "test_named_port_unresolved")
def named_port_unresolved(ctx: Context) -> Diagnostic | None:
    svc, port = ctx.svc, ctx.port
    if not svc.selector or port is None or not isinstance(port.target_port, str):
        return None
    pods = ctx.snap.cluster.selected_pods(svc)
    # pods that declare the name with another protocol: named-port-protocol says so
    missing = [p for p in pods if p.port_named(port.target_port) is None]
    if not pods or not missing:
        return None
    names = ", ".join(p.name for p in missing[:5])
    all_missing = len(missing) == len(pods)
    return Diagnostic(
        "named-port-unresolved", "error" if all_missing else "warning",
        f"targetPort {port.target_port!r} is a name, and {'no' if all_missing else 'not every'} selected pod "
        f"declares a containerPort with that name ({names}); such pods get no endpoint for this port.",
        f"Add `ports: [{{name: {port.target_port}, containerPort: N}}]` to the pod template, or use a number "
        "as targetPort.")


@check("target-port-not-declared", ["dns", "path"],
       "a numeric targetPort that no selected pod declares, while they declare other ports", "test_target_port_not_declared")
def target_port_not_declared(ctx: Context) -> Diagnostic | None:
    """The classic port-vs-targetPort mistake: `targetPort: 80` while the container says `containerPort: 8080`.
    Declaring container ports is optional (the kubelet does not enforce them), so this is a warning, given only
    when every selected pod declares ports of this protocol and none of them is the targetPort."""
    svc, port = ctx.svc, ctx.port
    if not svc.selector or port is None or not isinstance(port.target_port, int):
        return None
    proto = port.protocol.upper()
    pods = [p for p in ctx.snap.cluster.selected_pods(svc) if not p.host_network]
    declared = [[num for _, num, pr in p.container_ports if pr.upper() == proto] for p in pods]
    if not pods or any(not d for d in declared) or any(port.target_port in d for d in declared):
        return None
    ports = sorted({n for d in declared for n in d})
    shown = ", ".join(f"{n}/{proto}" for n in ports[:4])
    return Diagnostic(
        "target-port-not-declared", "warning",
        f"targetPort {port.target_port} is not a containerPort of the selected pods (they declare {shown}); "
        f"connections reach the pods on {port.target_port}, where the application most likely does not listen "
        "(connection refused).",
        f"Set the Service port's targetPort to the port the container listens on (e.g. {ports[0]}), or to the "
        "containerPort's name.")


def _near_miss(pods: list[Pod], selector: dict[str, str]) -> tuple[Pod, list[str]] | None:
    """The pod whose labels come closest to the selector: fewest differing keys, then the most similar values."""
    from difflib import SequenceMatcher

    best: tuple[tuple[int, float], Pod, list[str]] | None = None
    for p in pods:
        diffs = [k for k, v in selector.items() if p.labels.get(k) != v]
        likeness = sum(SequenceMatcher(None, selector[k], p.labels.get(k, "")).ratio() for k in diffs)
        score = (len(diffs), -likeness)
        if best is None or score < best[0]:
            best = (score, p, diffs)
    if best is None or (best[0][0] >= len(selector) and not any(k in best[1].labels for k in selector)):
        return None
    return best[1], best[2]
