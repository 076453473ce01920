"""What the objects around the path say: a LoadBalancer nobody provisions, a named port of the wrong protocol,
a headless Service's not-ready pods, a pod older than the Service (no environment variables), the DNS names a
pod can use, and the node's conntrack flows pinned to endpoints that have left."""

from __future__ import annotations

import re
from dataclasses import dataclass

from svctrace.dataplane.conntrack import Flow, parse_conntrack
from svctrace.explain.addons import LB_CLASSES, lb_provisioners
from svctrace.model.cluster import Pod, Service

from .registry import Context, Diagnostic, check

CLUSTER_DOMAIN = "cluster.local"  # kubelet's clusterDomain default; not in the snapshot


@check(
    "lb-no-ingress",
    ["path"],
    "a LoadBalancer Service has no ingress address: what provisions one, and the NodePort path meanwhile",
    "test_lb_without_ingress_names_the_missing_controller",
)
def lb_no_ingress(ctx: Context) -> Diagnostic | None:
    svc, cluster = ctx.svc, ctx.snap.cluster
    if svc.type != "LoadBalancer" or svc.lb_ips or svc.lb_hostnames:
        return None
    found = lb_provisioners(cluster)
    node_ports = ", ".join(str(p.node_port) for p in svc.ports if p.node_port) or "none"
    if svc.lb_class:
        serving = LB_CLASSES.get(svc.lb_class)
        have = [a for a in found if serving and a.name == serving]
        why = (
            f"its loadBalancerClass is {svc.lb_class}, so only the controller for that class may provision it "
            f"({serving or 'a controller svctrace does not know'}), and "
            + (
                f"{have[0].name} runs ({have[0].evidence}): look at its logs and events"
                if have
                else "none was found in the cluster"
                + (
                    f"; the default controllers found ({', '.join(a.name for a in found)}) "
                    "ignore classed Services"
                    if found
                    else ""
                )
            )
        )
        hint = (
            "Install the controller for that class, or remove spec.loadBalancerClass (immutable: recreate the "
            "Service) so that the default provisioner takes it."
        )
    elif found:
        names = ", ".join(f"{a.name} ({a.evidence})" for a in found)
        why = (
            f"something that provisions load balancers runs ({names}), so it is pending or failing: "
            f"`kubectl describe service {svc.name} -n {svc.namespace}` shows its events"
        )
        hint = "Read the Service's events and the provisioner's logs (an exhausted address pool is common)."
    else:
        why = (
            "no cloud provider (no node has a cloud providerID) and no load-balancer controller (MetalLB, kube-vip, "
            "k3s ServiceLB, a cloud-controller-manager) was found in the cluster, so nobody will ever fill "
            "status.loadBalancer.ingress"
        )
        hint = (
            "Install a load-balancer controller such as MetalLB with an address pool, or use the NodePort "
            f"({node_ports}) on a node's address."
        )
    asked = ctx.exp.requested_via if ctx.exp is not None else None
    return Diagnostic(
        "lb-no-ingress",
        "error" if asked == "load-balancer" else "warning",
        f"{svc.key} is a LoadBalancer with no address in status.loadBalancer.ingress (EXTERNAL-IP <pending>): "
        f"{why}. Its node ports ({node_ports}) work meanwhile; the path shown is "
        f"{'the NodePort path' if _via(ctx) == 'node-port' else 'via ' + _via(ctx)}.",
        hint,
        blocks=asked == "load-balancer",
    )


def _via(ctx: Context) -> str:
    return str(ctx.exp.destination.get("via")) if ctx.exp is not None else "cluster-ip"


@check(
    "named-port-protocol",
    ["dns", "path"],
    "a named targetPort exists on the pods only with another protocol (UDP Service port, TCP containerPort)",
    "test_named_port_of_the_wrong_protocol",
)
def named_port_protocol(ctx: Context) -> Diagnostic | None:
    svc, port = ctx.svc, ctx.port
    if not svc.selector or port is None or not isinstance(port.target_port, str):
        return None
    pods = ctx.snap.cluster.selected_pods(svc)
    wrong = [
        (p, q)
        for p in pods
        if p.port_named(port.target_port, port.protocol) is None
        for q in [p.port_named(port.target_port)]
        if q is not None
    ]
    if not wrong:
        return None
    p, q = wrong[0]
    return Diagnostic(
        "named-port-protocol",
        "error",
        f"targetPort {port.target_port!r} of {svc.key}:{port.name or port.port} is {port.protocol}, but pod {p.name}"
        f"{' and ' + str(len(wrong) - 1) + ' more' if len(wrong) > 1 else ''} declares {q[0]!r} as {q[1]}/{q[2]}: "
        f"a named port resolves by name and protocol, so these pods get no endpoint for this port.",
        f"Declare a {port.protocol} containerPort named {port.target_port} in the pod template (one port may be "
        f"declared once per protocol, with different names), or give the Service port a number as targetPort.",
    )


@check(
    "headless-not-ready",
    ["dns"],
    "a headless Service's selected pods that are not ready (absent from DNS unless publishNotReadyAddresses)",
    "test_headless_not_ready_and_external_name_headers",
)
def headless_not_ready(ctx: Context) -> Diagnostic | None:
    svc, cluster = ctx.svc, ctx.snap.cluster
    if not svc.selector:
        return None
    pods = [p for p in cluster.selected_pods(svc) if p.ready is False or p.deleting]
    if not pods:
        return None
    names = ", ".join(f"{p.name} ({', '.join(p.ips) or 'no IP'})" for p in pods[:6])
    if svc.publish_not_ready:
        return Diagnostic(
            "headless-not-ready",
            "info",
            f"{svc.key} sets publishNotReadyAddresses, so DNS also returns its not-ready pods: {names}; clients may "
            "reach a pod that is not ready yet.",
            "Expected for StatefulSet peer discovery; clients that need ready pods must check readiness themselves.",
        )
    return Diagnostic(
        "headless-not-ready",
        "warning",
        f"{svc.key} is headless and these selected pods are not ready, so DNS does not return them: {names} "
        "(publishNotReadyAddresses is false).",
        "Fix the pods' readiness (`kubectl describe pod`), or set publishNotReadyAddresses: true if peers must find "
        "each other before they are ready (StatefulSet bootstrapping).",
    )


@check(
    "service-env-missing",
    ["path"],
    "the client pod was created before the Service: no NAME_SERVICE_HOST in its environment",
    "test_service_env_missing_and_dns_from_another_namespace",
)
def service_env_missing(ctx: Context) -> Diagnostic | None:
    svc, exp = ctx.svc, ctx.exp
    pod = _client_pod(ctx)
    if pod is None or exp is None or pod.namespace != svc.namespace or not pod.created or not svc.created:
        return None
    if not pod.enable_service_links or pod.created >= svc.created:
        return None
    var = re.sub(r"[^A-Z0-9]", "_", svc.name.upper())
    return Diagnostic(
        "service-env-missing",
        "warning",
        f"pod {pod.name} was created at {pod.created}, before {svc.key} ({svc.created}): the kubelet sets Service "
        f"environment variables only when a container starts, so unless its containers restarted since, it has no "
        f"{var}_SERVICE_HOST / {var}_SERVICE_PORT.",
        f"Use the DNS name {svc.name}.{svc.namespace} instead of the environment variables, or restart the pod "
        f"(`kubectl rollout restart`) to get them.",
    )


def _client_pod(ctx: Context) -> Pod | None:
    exp = ctx.exp
    if exp is None or exp.client_pod is None:
        return None
    ns, _, name = exp.client_pod.partition("/")
    return ctx.snap.cluster.pod(ns, name)


def dns_names(svc: Service, from_ns: str, domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The names that resolve to the Service from a pod in `from_ns` with the default search path."""
    full = f"{svc.name}.{svc.namespace}.svc.{domain}"
    names = [f"{svc.name}.{svc.namespace}", f"{svc.name}.{svc.namespace}.svc", full]
    return ([svc.name] if from_ns == svc.namespace else []) + names


@dataclass(frozen=True)
class Resolver:
    search: list[str]
    ndots: int
    cluster_dns: bool  # the pod's queries go to the cluster's DNS
    why: str  # how the pod's resolv.conf comes about


def resolver_of(pod: Pod, domain: str = CLUSTER_DOMAIN, dns_ips: frozenset[str] = frozenset()) -> Resolver:
    """The pod's resolv.conf as the kubelet writes it (pkg/kubelet/network/dns/dns.go): ClusterFirst gives the
    namespace's search path and ndots:5; Default and a host-network ClusterFirst pod use the node's resolver;
    None uses dnsConfig alone (the cluster's DNS only when one of its nameservers is a DNS Service's cluster IP,
    `dns_ips`); dnsConfig's searches and options are appended/override."""
    cfg = pod.dns_config or {}
    policy = pod.dns_policy
    if policy == "ClusterFirst" and pod.host_network:
        policy, why = (
            "Default",
            "dnsPolicy ClusterFirst on a host-network pod falls back to the node's resolv.conf",
        )
    elif policy == "ClusterFirstWithHostNet":
        policy, why = "ClusterFirst", "dnsPolicy ClusterFirstWithHostNet"
    else:
        why = f"dnsPolicy {policy}"
    search: list[str] = []
    ndots = 1
    cluster = False
    if policy == "ClusterFirst":
        search = [f"{pod.namespace}.svc.{domain}", f"svc.{domain}", domain]
        ndots, cluster = 5, True
    search += [str(s) for s in cfg.get("searches") or [] if str(s) not in search]
    for o in cfg.get("options") or []:
        if isinstance(o, dict) and o.get("name") == "ndots" and str(o.get("value", "")).isdigit():
            ndots = int(o["value"])
    if cfg.get("searches") or cfg.get("options") or cfg.get("nameservers"):
        why += " with dnsConfig"
    if policy == "None" and dns_ips & {str(n) for n in cfg.get("nameservers") or []}:
        cluster = True
    return Resolver(search, ndots, cluster, why)


def cluster_dns_ips(ctx: Context) -> frozenset[str]:
    """The cluster IPs of the Services that serve DNS (port 53): kube-dns and the like."""
    return frozenset(
        ip
        for s in ctx.snap.cluster.services.values()
        if any(p.port == 53 for p in s.ports)
        for ip in s.cluster_ips
        if ip != "None"
    )


@check(
    "dns-other-namespace",
    ["path"],
    "the Service's short name, used from a pod in another namespace, resolves elsewhere",
    "test_service_env_missing_and_dns_from_another_namespace",
)
def dns_other_namespace(ctx: Context) -> Diagnostic | None:
    svc, exp = ctx.svc, ctx.exp
    pod = _client_pod(ctx)
    if pod is None or exp is None or pod.namespace == svc.namespace or exp.asked_name is None:
        return None
    if "." in exp.asked_name:
        return None  # the name says its namespace
    r = resolver_of(pod)
    there = ctx.snap.cluster.service(pod.namespace, svc.name)
    lands = f"is {there.key}, a different Service" if there is not None else "does not exist (NXDOMAIN)"
    return Diagnostic(
        "dns-other-namespace",
        "error",
        f"from pod {pod.key} the short name {svc.name}, as written, is looked up in the pod's namespace first "
        f"({svc.name}.{r.search[0] if r.search else pod.namespace + '.svc.' + CLUSTER_DOMAIN}), which {lands}; "
        f"{svc.key} lives in namespace {svc.namespace}.",
        f"Use {svc.name}.{svc.namespace} (or {', '.join(dns_names(svc, pod.namespace)[1:])}) from namespace "
        f"{pod.namespace}.",
    )


@check(
    "dns-resolver",
    ["path"],
    "the client pod's DNS settings keep it from resolving Service names as usual",
    "test_dns_resolver_of_a_host_network_pod",
)
def dns_resolver(ctx: Context) -> Diagnostic | None:
    pod = _client_pod(ctx)
    if pod is None:
        return None
    r = resolver_of(pod, dns_ips=cluster_dns_ips(ctx))
    default = pod.dns_policy == "ClusterFirst" and not pod.host_network and not pod.dns_config
    if default:
        return None
    names = dns_names(ctx.svc, pod.namespace)
    if not r.cluster_dns:
        return Diagnostic(
            "dns-resolver",
            "error",
            f"pod {pod.key} does not ask the cluster's DNS ({r.why}): Service names such as {names[-1]} do not "
            "resolve from it.",
            "Set dnsPolicy: ClusterFirstWithHostNet (host-network pods) or ClusterFirst, or connect to the "
            "cluster IP.",
        )
    return Diagnostic(
        "dns-resolver",
        "info",
        f"pod {pod.key} resolves through the cluster's DNS ({r.why}): search {' '.join(r.search) or '(none)'}, ndots:{r.ndots}; "
        f"it can use {', '.join(names)}.",
        f"A name with fewer than {r.ndots} dots goes through the search path first; a trailing dot "
        f"({names[-1]}.) asks for the name as given.",
    )


# -- conntrack -----------------------------------------------------------------------------------------


def stale_flows(ctx: Context) -> list[Flow]:
    exp, svc, port = ctx.exp, ctx.svc, ctx.port
    if exp is None or port is None or not exp.node:
        return []
    nf = ctx.snap.nodes.get(exp.node)
    if nf is None or nf.get("conntrack") is None:
        return []
    flows = nf.parsed("conntrack", parse_conntrack)
    cluster = ctx.snap.cluster
    targets = {(ip, port.port) for ip in svc.cluster_ips + svc.external_ips + svc.lb_ips if ip != "None"}
    if port.node_port:
        n = cluster.nodes.get(exp.node)
        for ip in (n.internal_ips + n.external_ips) if n else []:
            targets.add((ip, port.node_port))
    live = {a for s in cluster.slices_for(svc) for e in s.endpoints for a in e.addresses}
    proto = port.protocol.lower()
    return [
        f
        for f in flows
        if f.proto == proto and (f.orig.dst, f.orig.dport) in targets and f.dnat and f.reply.src not in live
    ]


@check(
    "conntrack-stale",
    ["path"],
    "conntrack flows to the Service still pinned to an endpoint that has left",
    "test_conntrack_stale_udp_dns_entry",
)
def conntrack_stale(ctx: Context) -> Diagnostic | None:
    flows = stale_flows(ctx)
    if not flows or ctx.exp is None:
        return None
    gone = sorted({f.reply.src for f in flows})
    cmds = list(dict.fromkeys(f.delete_command() for f in flows))
    f = flows[0]
    udp = f.proto == "udp"
    return Diagnostic(
        "conntrack-stale",
        "error",
        f"node {ctx.exp.node}'s conntrack table holds {len(flows)} {f.proto.upper()} flow{'s' if len(flows) > 1 else ''} "
        f"to {f.orig.dst}:{f.orig.dport} pinned to {', '.join(gone)}, no longer an endpoint of {ctx.svc.key}: "
        "packets of these flows skip kube-proxy's rules and keep going to the old address"
        + (
            "; a UDP client that reuses its source port (a resolver, a syslog or statsd client) never recovers "
            "(kube-proxy deletes such entries when an endpoint leaves: these were left behind)"
            if udp
            else ""
        )
        + ". A new flow, like the one traced, is not affected.",
        f"Delete them on {ctx.exp.node}: `"
        + "`; `".join(cmds[:3])
        + "`"
        + (f" (and {len(cmds) - 3} more)" if len(cmds) > 3 else "")
        + ".",
    )
