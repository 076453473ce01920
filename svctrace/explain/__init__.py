"""Join the cluster's objects with a node's dataplane: which Service port, from where, through which
node, to which pods, and what is wrong. Pure: reads a `Snapshot`, returns an `Explanation`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from svctrace.dataplane.contract import Dnat, PathStep, TraceResult
from svctrace.errors import InputError, Warn
from svctrace.explain.diagnostics import Context, Diagnostic, run
from svctrace.explain.hops import hop_sentences, masquerade_reason
from svctrace.explain.question import (
    OUTSIDE_CLIENT,
    Request,
    Source,
    deciding_node,
    parse_source,
    parse_target,
    resolve_port,
    resolve_source,
)
from svctrace.model.cluster import Cluster, Service, ServicePort
from svctrace.model.packet import NodeFacts, Packet, format_endpoint
from svctrace.model.snapshot import Snapshot

VIA = ("cluster-ip", "node-port", "external-ip", "load-balancer")


@dataclass
class ExplainedOutcome:
    probability: float
    verdict: str
    endpoint: Dnat | None
    pod: str | None
    endpoint_node: str | None
    masquerade: bool
    certain: bool
    path: list[PathStep]
    reason: str
    masquerade_reason: str | None = None
    assumptions: list[str] = field(default_factory=list)
    # Accepted but sent on untranslated towards a Service's virtual address that no host owns: no answer comes
    # (ping to a cluster IP in iptables mode, a port the Service does not serve). The kernel accepts it; the
    # client still waits in vain, so the faces must not show it as a backend reached.
    nowhere: bool = False
    snat: str | None = None  # the masquerade address, when known
    snat_from: str | None = None  # where it came from, or the assumption made
    cause: str | None = None  # what outside the rules decided (Outcome.cause)
    reply: dict[str, object] | None = None  # the reply's way back (`reply_of`)

    @property
    def reply_lost(self) -> bool:
        return self.reply is not None and self.reply.get("through_conntrack") is False

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "probability": round(self.probability, 10), "verdict": self.verdict, "endpoint": self.endpoint,
            "pod": self.pod, "endpoint_node": self.endpoint_node, "masquerade": self.masquerade,
            "certain": self.certain, "path": [s.to_json() for s in self.path], "reason": self.reason,
        }
        if self.nowhere:
            d["nowhere"] = True
        if self.masquerade_reason:
            d["masquerade_reason"] = self.masquerade_reason
        if self.snat:
            d["snat"] = self.snat
            if self.snat_from:
                d["snat_from"] = self.snat_from
        if self.cause:
            d["cause"] = self.cause
        if self.reply is not None:
            d["reply"] = self.reply
        if self.assumptions:
            d["assumptions"] = self.assumptions
        return d


@dataclass
class Explanation:
    service: Service
    port: ServicePort | None
    source: Source
    destination: dict[str, object]
    node: str | None
    proxy_mode: str | None
    outcomes: list[ExplainedOutcome]
    diagnostics: list[Diagnostic]
    warnings: list[Warn]
    inferred: list[str]
    hops: list[str]
    trace: TraceResult | None = None
    rules_from: str | None = None  # the dump that decided
    rules_node: str | None = None  # the node whose dump decided (another's may stand in for `node`'s)
    asked_name: str | None = None  # the Service's name as the question wrote it (`web`, `web.shop`), if a name
    client_pod: str | None = None  # `ns/name` of the --from pod (a host-network pod's source is its node)
    requested_via: str | None = None  # what --to (or the target's address) asked for, before any fallback

    @property
    def exit_code(self) -> int:
        """0 when every outcome reaches a destination; 1 when one is dropped, rejected or goes nowhere
        (sent on untranslated to a virtual IP that no host owns)."""
        if not all(o.verdict == "accept" for o in self.outcomes) or any(o.reply_lost for o in self.outcomes):
            return 1
        if any(d.blocks for d in self.diagnostics):
            return 1
        if any(o.nowhere for o in self.outcomes) or (self.trace is not None and self.trace.nowhere):
            return 1
        virtual = self.destination.get("via") == "cluster-ip"
        return 1 if virtual and any(o.endpoint is None for o in self.outcomes) else 0

    def to_json(self) -> dict[str, object]:
        return {
            "service": self.service.to_json(),
            "port": self.port.to_json() if self.port else None,
            "source": self.source.to_json(),
            "destination": self.destination,
            "node": self.node,
            "proxy_mode": self.proxy_mode,
            "outcomes": [o.to_json() for o in self.outcomes],
            "diagnostics": [d.to_json() for d in self.diagnostics],
            "hops": self.hops,
            "inferred": self.inferred,
            "warnings": [w.to_json() for w in self.warnings],
            "rules": self.rules_from,
        }


# -- resolution -----------------------------------------------------------------------------------

def service_named(target: str, namespace: str | None) -> tuple[str, str] | None:
    """(namespace, name) of the Service a target names (`svc/NAME`, `NAME.NS`, ...); None for an address, or a
    target explain refuses (it says why when asked)."""
    try:
        t = parse_target(target.strip(), namespace)
    except InputError:
        return None
    return None if t.ip is not None else (t.namespace or "default", t.name or "")


def resolve_target(cluster: Cluster, req: Request) -> tuple[Service, str | None, str | None, str | None]:
    """(service, port spec, via, destination ip) from `svc/NAME`, `NAME.NS.svc.cluster.local` or `IP:PORT`."""
    t = req.target.strip()
    target = parse_target(t, req.namespace)
    if target.ip is not None and target.port is None:
        return _service_at(cluster, target.ip, t)
    if target.ip is not None and target.port is not None:
        ip, port = target.ip, target.port
        for svc in cluster.services.values():
            for p in svc.ports:
                if ip in svc.cluster_ips and p.port == port:
                    return svc, str(port), "cluster-ip", ip
                if ip in svc.external_ips and p.port == port:
                    return svc, str(port), "external-ip", ip
                if ip in svc.lb_ips and p.port == port:
                    return svc, str(port), "load-balancer", ip
                if p.node_port == port and (cluster.node_by_ip(ip) is not None or _loopback(ip)):
                    return svc, p.name or str(p.port), "node-port", ip
        owners = [s for s in cluster.services.values() if ip in s.cluster_ips + s.external_ips + s.lb_ips]
        if owners:
            return owners[0], str(port), None, ip  # a port the Service does not serve: diagnosed later
        raise InputError(f"no Service has the address {t} (cluster IP, external IP, load-balancer IP or "
                         "node IP with a node port)")
    ns, name = service_named(t, req.namespace) or ("default", "")
    found = cluster.service(ns, name)
    if found is None:
        here = sorted(s.name for s in cluster.services.values() if s.namespace == ns)
        elsewhere = sorted(s.key for s in cluster.services.values() if s.name == name)
        hint = f"; in {ns}: {', '.join(here[:12])}" if here else f"; namespace {ns} has no Services"
        if elsewhere:
            hint += f"; did you mean {' or '.join(elsewhere[:3])} (-n)?"
        raise InputError(f"no Service {ns}/{name} in the snapshot{hint}")
    return found, None, None, None


def _service_at(cluster: Cluster, ip: str, t: str) -> tuple[Service, str | None, str | None, str | None]:
    """`explain IP`: the Service whose cluster IP, external IP or load-balancer IP it is (its first port)."""
    for via, ips in (("cluster-ip", lambda s: s.cluster_ips), ("external-ip", lambda s: s.external_ips),
                     ("load-balancer", lambda s: s.lb_ips)):
        owners = [s for s in cluster.services.values() if ip in ips(s)]
        if len(owners) > 1:
            raise InputError(f"{t} is an address of {', '.join(s.key for s in owners[:4])}: give the port "
                             "(IP:PORT) or the name")
        if owners:
            return owners[0], None, via, ip
    node = cluster.node_by_ip(ip)
    if node is not None:
        raise InputError(f"{t} is node {node.name}'s address: give the node port (IP:PORT)")
    raise InputError(f"no Service has the address {t} (cluster IP, external IP or load-balancer IP)")


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1: a NodePort the node itself can reach on localhost (kube-proxy's localhost NodePorts)."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def nodes_with_dumps(snap: Snapshot, family: int) -> list[str]:
    """The nodes whose dumps can answer, in the cluster's order: those that can decide."""
    from svctrace.dataplane.detect import usable

    names = [n for n in snap.nodes if usable(snap, n, family)]
    order = list(snap.cluster.nodes)
    return sorted(names, key=lambda n: order.index(n) if n in order else len(order))


def _node_ips(snap: Snapshot, node: str | None) -> list[str]:
    if node is None:
        return []
    out: list[str] = []
    n = snap.cluster.nodes.get(node)
    if n is not None:
        out += n.internal_ips + n.external_ips
    nf = snap.nodes.get(node)
    if nf is not None:
        from svctrace.dataplane.node import node_addresses

        out += node_addresses(nf)
    seen: list[str] = []
    for ip in out:
        if ip not in seen:
            seen.append(ip)
    return seen


# -- the explanation --------------------------------------------------------------------------------

def explain(snap: Snapshot, req: Request) -> Explanation:
    cluster = snap.cluster
    svc, port_spec, via_from_target, dst_ip = resolve_target(cluster, req)
    diags: list[Diagnostic] = []
    warns: list[Warn] = list(snap.warnings)
    inferred: list[str] = []

    if svc.type == "ExternalName":
        diags.extend(run("service", Context(snap, svc)))
        return Explanation(svc, svc.ports[0] if svc.ports else None, Source("external", None, "-", None),
                           {"ip": None, "port": None, "protocol": None, "via": "dns"}, None,
                           cluster.proxy.mode, [], diags, warns, inferred, [])

    if req.node is not None and req.node not in cluster.nodes and req.node not in snap.nodes:
        raise InputError(f"no node {req.node} in the snapshot (nodes: {', '.join(sorted(cluster.nodes)) or 'none'})")
    port_arg = req.port or port_spec
    port, by_node_port = resolve_port(svc, port_arg, req.to or via_from_target)
    if port is None:
        port = _choose_port(snap, svc, port_arg, diags, warns)
    proto = (req.proto or (port.protocol if port else "TCP")).lower()
    via = req.to or via_from_target or ("node-port" if by_node_port else "cluster-ip")
    if by_node_port and port is not None:
        inferred.append(f"port: {port_arg} is the nodePort of {port.name or port.port}/{port.protocol}"
                        + ("" if req.to else "; sent to a node's address (--to node-port)"))
    requested_via = via
    if via not in VIA:
        raise InputError(f"--to takes one of {', '.join(VIA)}, not {via!r}")
    if via == "load-balancer" and not svc.lb_ips and dst_ip is None and port is not None and port.node_port:
        # No address to send to (EXTERNAL-IP <pending>): the load balancer would forward to a node port, so
        # that is the path to explain (lb-no-ingress says why there is no address).
        via = "node-port"
        inferred.append(f"destination: {svc.key} has no load-balancer address, so its NodePort {port.node_port} "
                        "(where a load balancer would send the traffic)")

    if svc.headless and via == "cluster-ip":
        diags.extend(run("dns", Context(snap, svc, port)))
        return Explanation(svc, port, Source("external", None, "-", None),
                           {"ip": None, "port": port.port if port else None, "protocol": proto.upper(), "via": "dns"},
                           None, cluster.proxy.mode, [], diags, warns, inferred, [])

    family = _family(dst_ip) if dst_ip else (
        _family(svc.cluster_ips[0]) if svc.cluster_ips and svc.cluster_ips[0] != "None" else 4)

    def candidates() -> list[str]:
        return nodes_with_dumps(snap, family)

    spec = parse_source(req.source, req.namespace or svc.namespace) if req.source is not None else None
    source = resolve_source(cluster, spec, via, req.node, candidates)
    if source.note:
        inferred.append(f"source: {source.note}")
    if source.synthetic and source.kind == "pod":
        inferred.append(f"source: no --from, so a pod on {source.node} ({source.ip}, from the node's podCIDR)")
    elif source.synthetic:
        inferred.append(f"source: no --from, so an outside client ({source.ip})")

    node = deciding_node(cluster, source, req.node, candidates)
    if source.kind in ("pod", "node") and source.node:
        if req.node and req.node != node:
            warns.append(Warn(f"--node {req.node} ignored: the source runs on {node}, whose rules decide"))
    elif not req.node and node:
        inferred.append(f"receiving node: {node} (the first node with a dump; choose with --node)")

    dst, dport = _destination(snap, svc, port, via, node, dst_ip, diags)
    if proto == "icmp" or proto == "icmpv6":
        dport = None

    from svctrace.dataplane.node import dataplane_for

    dp = dataplane_for(snap, node, family, _uses_local(svc, via), svc.key, warns)
    if dp.node != node:
        inferred.append(f"rules: {dp.node}'s dump stands in for {node}'s")
    local_ips = _node_ips(snap, node) + [ip for ip in dp.extra_local_ips if ip not in _node_ips(snap, node)]
    if node and local_ips:
        n_obj = cluster.nodes.get(node)
        from_node = (n_obj.internal_ips + n_obj.external_ips) if n_obj else []
        more = [ip for ip in local_ips if ip not in from_node]
        text = f"node {node}'s own addresses: {', '.join(from_node) or 'none known'} (from the Node object)"
        if more:
            text += f" and {len(more)} more on its interfaces (ip-addr: {', '.join(more[:4])}{', ...' if len(more) > 4 else ''})"
        inferred.append(text)
    from svctrace.dataplane.host import load_host

    host = load_host(snap.nodes.get(node) if node else None, warns)
    host.node = node or ""
    try:
        facts = NodeFacts.make(local_ips=local_ips, returning_client=req.returning_client, host=host,
                               previous_endpoint=req.previous_endpoint, affinity_age=req.affinity_age)
    except ValueError as e:
        raise InputError(f"--previous-endpoint/--affinity-age: {e}") from None
    origin = "local" if source.kind == "node" else "forwarded"
    src_ip = dst if origin == "local" and _loopback(dst) else source.ip  # a socket to 127.0.0.1 binds 127.0.0.1
    pkt = Packet.make(src=src_ip, dst=dst, proto=proto, dport=dport, origin=origin,  # type: ignore[arg-type]
                      local_ips=facts.local_ips)
    from svctrace.kubeproxy.walk import trace_dataplane

    result = trace_dataplane(dp, pkt, facts, kube_version=cluster.proxy.version)
    warns.extend(w for w in result.warnings if w not in warns)
    inferred.extend(f"node {node}: {f}" for f in result.facts)
    inferred.extend(f"assumed {a}" for a in result.assumed)

    outcomes = [_map_outcome(cluster, o, node) for o in result.outcomes]
    for eo, raw in zip(outcomes, result.outcomes, strict=True):
        # Routed on untranslated towards a virtual address: a cluster IP, or what the walk found no host owns
        # (a packet the node delivers to itself, as IPVS's kube-ipvs0 address answers ping, is answered).
        eo.nowhere = result.unanswered(raw) or (via == "cluster-ip" and raw.verdict == "accept" and raw.dnat is None
                                                and raw.delivery != "local")
        eo.reply = reply_of(eo, raw, source, node, host, family)
        if eo.reply is not None:
            # what conntrack's reverse translation gives the client: the address it asked (DNAT and masquerade
            # undone), or, when the reply misses the entry, the pod's own address
            through = eo.reply["through_conntrack"]
            eo.reply["client_sees"] = (format_endpoint(dst, dport) if through is True else
                                       str(eo.endpoint) if through is False else None)
    mode = dp.mode
    if not (snap.nodes.get(dp.node) and snap.nodes[dp.node].get("proxy-mode")) and not cluster.proxy.mode:
        inferred.append(f"proxy mode: {mode} (from {dp.mode_source or 'the dumps'}; no /proxyMode or config)")
    from svctrace.model.snapshot import infer_cluster_cidr

    cidr, cidr_from = infer_cluster_cidr(snap)
    if (cidr and cidr_from.startswith("inferred")) or (cidr and cidr_from == "meta.json"):
        inferred.append(f"cluster CIDR: {cidr} ({cidr_from})")
    dest: dict[str, object] = {"ip": dst, "port": dport, "protocol": proto.upper(), "via": via}
    exp = Explanation(svc, port, source, dest, node, mode, outcomes, diags, warns, inferred,
                      hop_sentences(result, cluster, svc, port), result, dp.main_file, dp.node,
                      _asked_name(req.target),
                      f"{spec.namespace or 'default'}/{spec.name}" if spec is not None and spec.kind == "pod" else None,
                      requested_via)
    diags.extend(run("path", Context(snap, svc, port, exp=exp, dp=dp)))
    return exp


def _asked_name(target: str) -> str | None:
    """The Service name as written: `web` for `web` and `svc/web`, `web.shop` for `svc/shop/web`; None for an
    address."""
    t = parse_target(target)
    if t.name is None:
        return None
    t_text = target.strip()
    if "/" in t_text:
        return t.name if t.namespace is None else f"{t.name}.{t.namespace}"
    return t_text.rstrip(".")


def _choose_port(snap: Snapshot, svc: Service, spec: str | None, diags: list[Diagnostic],
                 warns: list[Warn]) -> ServicePort | None:
    if not svc.ports:
        return None
    if spec is None:
        if len(svc.ports) > 1:
            names = ", ".join(f"{p.name or '-'} ({p.port}/{p.protocol})" for p in svc.ports)
            warns.append(Warn(f"{svc.key} has several ports: {names}; explaining the first (choose with --port)"))
        return svc.ports[0]
    p = svc.port_by(spec)
    if p is not None:
        return p
    if spec.isdigit():
        diags.extend(run("port", Context(snap, svc, spec=spec)))
        return ServicePort(name="", port=int(spec), protocol=svc.ports[0].protocol, target_port=int(spec))
    names = ", ".join(f"{p.name or '-'}={p.port}/{p.protocol}" for p in svc.ports)
    raise InputError(f"{svc.key} has no port named {spec!r} (ports: {names})")


def _destination(snap: Snapshot, svc: Service, port: ServicePort | None, via: str, node: str | None,
                 dst_ip: str | None, diags: list[Diagnostic]) -> tuple[str, int | None]:
    pnum = port.port if port else None
    if via == "cluster-ip":
        ip = dst_ip or next((i for i in svc.cluster_ips if i != "None"), None)
        if ip is None:
            raise InputError(f"{svc.key} has no cluster IP")
        return ip, pnum
    if via == "node-port":
        if port is None or port.node_port is None:
            raise InputError(f"{svc.key} port {port.name or port.port if port else '?'} has no nodePort "
                             f"(type {svc.type})")
        ips = [dst_ip] if dst_ip else [i for i in _node_ips(snap, node) if not i.startswith("127.")]
        if not ips:
            raise InputError(f"node {node} has no address in the snapshot to send the NodePort packet to")
        return ips[0], port.node_port
    if via == "external-ip":
        if not svc.external_ips and not dst_ip:
            raise InputError(f"{svc.key} has no externalIPs")
        return dst_ip or svc.external_ips[0], pnum
    if not svc.lb_ips and not dst_ip:
        raise InputError(f"{svc.key} has no load-balancer IP in status.loadBalancer.ingress")
    return dst_ip or svc.lb_ips[0], pnum


def _uses_local(svc: Service, via: str) -> bool:
    if via == "cluster-ip":
        return svc.internal_traffic_policy == "Local"
    return svc.external_traffic_policy == "Local"


def _map_outcome(cluster: Cluster, o: object, node: str | None) -> ExplainedOutcome:
    from svctrace.dataplane.contract import Outcome

    assert isinstance(o, Outcome)
    pod = ep_node = None
    if o.dnat is not None and o.dnat.addr is not None:
        host = str(o.dnat.addr)
        p = cluster.pod_by_ip(host)
        if p is not None:
            pod, ep_node = p.key, p.node_name
        else:
            got = cluster.endpoint_of_ip(host)
            if got is not None:
                ep_node, pod = got
            if ep_node is None:
                n = cluster.node_of_ip(host) or cluster.node_by_ip(host)
                ep_node = n.name if n else None
    return ExplainedOutcome(o.probability, o.verdict, o.dnat, pod, ep_node, o.masquerade, o.certain, o.path,
                            o.reason, masquerade_reason(o) if o.masquerade else None, list(o.assumptions),
                            snat=o.snat if o.masquerade else None, snat_from=o.snat_how if o.masquerade else None,
                            cause=o.cause)


def reply_of(o: ExplainedOutcome, raw: object, source: Source, node: str | None, host: object,
             family: int) -> dict[str, object] | None:
    """The reply of an accepted, DNATed connection: who answers whom, and whether the node's conntrack turns it
    back into the Service's address (svctrace.dataplane.kernel.reply_path decides)."""
    from svctrace.dataplane.contract import Outcome
    from svctrace.dataplane.kernel import reply_path

    assert isinstance(raw, Outcome)
    if o.verdict != "accept" or o.endpoint is None or o.endpoint.addr is None or source.kind == "node":
        return None
    try:
        client = ipaddress.ip_address(source.ip)
    except ValueError:
        return None
    ep = o.endpoint.addr
    to = o.snat if o.masquerade and o.snat else ("the node's masquerade address" if o.masquerade else str(client))
    if raw.delivery == "local":  # the node itself answers: its reply leaves through OUTPUT, nothing to forward
        return {"from": str(o.endpoint), "to": to, "through_conntrack": True,
                "why": "the endpoint is the node itself: its reply leaves through OUTPUT, where conntrack undoes "
                       "the DNAT"}
    remote = o.endpoint_node is not None and node is not None and o.endpoint_node != node
    behind = source.kind == "pod" and source.node == node
    rp = reply_path(host, client=client, client_iif=raw.iif, endpoint=ep, endpoint_oif=raw.oif,
                    masquerade=o.masquerade, endpoint_remote=remote, client_behind_node=behind, family=family)
    d: dict[str, object] = {"from": str(o.endpoint), "to": to, "through_conntrack": rp.through, "why": rp.why}
    if rp.code:
        d["code"] = rp.code
    if rp.request_dropped:
        d["request_dropped"] = True
    return d


__all__ = [
    "OUTSIDE_CLIENT",
    "Diagnostic",
    "ExplainedOutcome",
    "Explanation",
    "Request",
    "Source",
    "explain",
    "format_endpoint",
    "nodes_with_dumps",
    "service_named",
]
