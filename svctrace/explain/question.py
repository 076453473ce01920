"""The explain question, parsed once: what is asked about (`svc/NAME`, `NAME.NS[.svc[.cluster.local]]`,
`IP:PORT`), from where (`--from pod/NAME|node/NAME|IP`), and which node's rules decide.

Offline `explain` and live `collect` (which dumps only the deciding node) both ask here, so that the node
collected is the node explain then reads.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from svctrace.errors import InputError
from svctrace.model.cluster import Cluster, Pod, Service, ServicePort

OUTSIDE_CLIENT = "203.0.113.50"  # TEST-NET-3: an address outside any cluster
SERVICE_KINDS = ("svc", "service", "services")
POD_PREFIXES = ("pod/", "pods/", "po/")
NODE_PREFIXES = ("node/", "nodes/", "no/")
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")

_FQDN = re.compile(r"^(?P<name>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                   r"(\.svc(\.[a-z0-9.-]+)?)?\.?$")
_IPPORT = re.compile(r"^\[?([0-9a-fA-F.:]+?)\]?:(\d+)$")


@dataclass
class Request:
    target: str
    namespace: str | None = None
    port: str | None = None
    proto: str | None = None
    source: str | None = None
    to: str | None = None
    node: str | None = None
    returning_client: bool = False
    previous_endpoint: str | None = None  # IP:PORT of the returning client's previous endpoint (sticky answer)
    affinity_age: float | None = None  # seconds since the client's last new connection (None: fresh)


@dataclass(frozen=True)
class Target:
    """What `explain TARGET` names: a Service (namespace may be None: -n or the default decides), or an
    address and port whose Service is still to be found."""

    namespace: str | None
    name: str | None
    ip: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class SourceSpec:
    """What `--from` names: a pod (namespace/name), a node (name) or an address (ip). `explicit`: the pod's
    namespace was written (`pod/NS/NAME`), so it is not looked for elsewhere."""

    kind: str  # pod / node / ip
    name: str | None = None
    namespace: str | None = None
    ip: str | None = None
    explicit: bool = False


@dataclass
class Source:
    kind: str  # pod / node / external / ip
    name: str | None
    ip: str
    node: str | None
    synthetic: bool = False
    note: str | None = None  # how it was found, when not where it was asked for (kubectl-like name lookup)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "ip": self.ip, "node": self.node}

    def describe(self) -> str:
        if self.kind == "pod":
            return f"pod {self.name} ({self.ip}) on {self.node}" if not self.synthetic else \
                f"a pod on {self.node} ({self.ip}, an address of its pod CIDR)"
        if self.kind == "node":
            return f"node {self.name} itself ({self.ip})"
        return f"an outside client {self.ip}" if self.kind == "external" else f"{self.ip}"


def is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def join_target(words: Sequence[str]) -> str:
    """The target of `explain svc NAME` (kubectl's `TYPE NAME`, with a space) as `svc/NAME`; one word as is."""
    if len(words) == 1:
        return words[0]
    if len(words) == 2 and words[0].lower() in SERVICE_KINDS and "/" not in words[1]:
        return f"svc/{words[1]}"
    if len(words) == 2 and words[0].lower() in SERVICE_KINDS:
        raise InputError(f"explain {words[0]} {words[1]}: give the name alone after {words[0]} (or svc/NAME)")
    raise InputError(f"explain takes one Service (svc/NAME, svc NAME, NAME.NAMESPACE, IP or IP:PORT), not "
                     f"{' '.join(words)!r}")


def parse_target(text: str, namespace: str | None = None) -> Target:
    """The forms explain takes: svc/NAME, svc/NS/NAME, NAME.NS[.svc[.cluster.local]], NAME, IP:PORT, IP (a
    Service's address; the port then is the Service's first). `namespace` is -n; a name that says its
    namespace must agree with it."""
    t = text.strip()
    m = _IPPORT.match(t)
    if m and is_ip(m.group(1)):
        return Target(namespace, None, m.group(1), int(m.group(2)))
    bare = t[1:-1] if t.startswith("[") and t.endswith("]") else t
    if is_ip(bare):
        return Target(namespace, None, bare, None)
    if "/" in t:
        kind, _, name = t.partition("/")
        if kind.lower() not in SERVICE_KINDS:
            raise InputError(f"explain takes a Service (svc/NAME), not {kind}/")
        if "/" in name:  # svc/ns/name
            ns, name = name.split("/", 1)
            return Target(ns, name)
        return Target(namespace, name)
    fm = _FQDN.match(t)
    if fm and t.count(".") >= 1:
        ns = fm.group("ns")
        if namespace and namespace != ns:
            raise InputError(f"{t} names namespace {ns} but -n says {namespace}")
        return Target(ns, fm.group("name"))
    return Target(namespace, t)


def resolve_port(svc: Service, spec: str | None, via: str | None) -> tuple[ServicePort | None, bool]:
    """The Service port `--port` names: a port's name or number, else (sent to a node port, or with no --to) a
    number that is a port's nodePort. Returns (the port, whether it was named by its nodePort); (None, False) when
    nothing matches (the caller diagnoses an unknown number)."""
    if spec is None:
        return None, False
    p = svc.port_by(spec)
    if p is not None:
        return p, False
    if spec.isdigit() and via in (None, "node-port"):
        for p in svc.ports:
            if p.node_port == int(spec):
                return p, True
    return None, False


def parse_source(spec: str, namespace: str | None) -> SourceSpec:
    """`--from`: pod/NAME or pod/NS/NAME (NAME in `namespace`), node/NAME, or an IP."""
    if spec.startswith(POD_PREFIXES):
        name = spec.split("/", 1)[1]
        ns = namespace
        explicit = "/" in name
        if explicit:
            ns, name = name.split("/", 1)
        if not name:
            raise InputError(f"--from {spec}: name the pod (pod/NAME or pod/NAMESPACE/NAME)")
        return SourceSpec("pod", name, ns, explicit=explicit)
    if spec.startswith(NODE_PREFIXES):
        return SourceSpec("node", spec.split("/", 1)[1])
    if is_ip(spec):
        return SourceSpec("ip", ip=spec)
    raise InputError(f"--from takes pod/NAME, node/NAME or an IP, not {spec!r}")


def is_control_plane(labels: dict[str, str]) -> bool:
    return any(k.startswith(CONTROL_PLANE_LABELS[0]) or k == CONTROL_PLANE_LABELS[1] for k in labels)


def first_node(cluster: Cluster, candidates: Sequence[str], prefer_workers: bool = False) -> str | None:
    """The first of `candidates` (the nodes that can decide, in the cluster's order; all nodes when none),
    a worker when `prefer_workers` (explain's neutral client is a pod on a worker)."""
    names = list(candidates) or list(cluster.nodes)
    if prefer_workers:
        workers = [n for n in names if n in cluster.nodes and not is_control_plane(cluster.nodes[n].labels)]
        names = workers or names
    return names[0] if names else None


def synthetic_pod_ip(cluster: Cluster, node: str | None) -> str | None:
    n = cluster.nodes.get(node or "")
    if n is None:
        return None
    for c in n.pod_cidrs:
        try:
            net = ipaddress.ip_network(c, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.num_addresses > 4:
            return str(net.network_address + min(250, net.num_addresses - 2))
    return None


def resolve_source(cluster: Cluster, spec: SourceSpec | None, via: str, node: str | None,
                   candidates: Callable[[], Sequence[str]], where: str = "in the snapshot") -> Source:
    """Who sends: the --from pod, node or address; without --from a pod on `node` (else the first worker
    that can decide) for a cluster IP, an outside client otherwise."""
    if spec is None:
        if via == "cluster-ip":
            # A neutral client: an address of a worker's pod CIDR (not some system pod that happens to run there).
            on = node or first_node(cluster, candidates(), prefer_workers=True)
            ip = synthetic_pod_ip(cluster, on)
            if ip is not None:
                return Source("pod", None, ip, on, synthetic=True)
            return Source("external", None, "10.0.0.250", on, synthetic=True)
        return Source("external", None, OUTSIDE_CLIENT, None, synthetic=True)
    if spec.kind == "pod":
        pod, note = find_pod(cluster, spec, where)
        if not pod.ips:
            raise InputError(f"pod {pod.key} has no IP (phase {pod.phase or 'unknown'}): it sends nothing")
        if pod.host_network:
            return Source("node", pod.node_name, pod.ips[0], pod.node_name, note=note)
        return Source("pod", pod.key, pod.ips[0], pod.node_name, note=note)
    if spec.kind == "node":
        name = spec.name or ""
        n = cluster.nodes.get(name)
        if n is None:
            raise InputError(f"no node {name} {where} (nodes: {', '.join(sorted(cluster.nodes)) or 'none'})")
        ips = n.internal_ips or n.external_ips
        if not ips:
            raise InputError(f"node {name} has no InternalIP {where}")
        return Source("node", name, ips[0], name)
    ip = spec.ip or ""
    by_ip = cluster.pod_by_ip(ip)
    if by_ip is not None and not by_ip.host_network:
        return Source("pod", by_ip.key, ip, by_ip.node_name)
    found = cluster.node_by_ip(ip)
    if found is not None:
        return Source("node", found.name, ip, found.name)
    owner = cluster.node_of_ip(ip)
    if owner is not None:
        return Source("pod", None, ip, owner.name, synthetic=True)
    return Source("external", None, ip, None)


def find_pod(cluster: Cluster, spec: SourceSpec, where: str = "in the snapshot") -> tuple[Pod, str | None]:
    """The pod `--from pod/NAME` means, as kubectl would look: in the namespace asked (the Service's, or -n);
    when it has none of that name and the namespace was not written (`pod/NS/NAME`), the one pod of that name in
    another namespace, with a note saying so; else a one-line error naming the candidates."""
    ns, name = spec.namespace or "default", spec.name or ""
    pod = cluster.pod(ns, name)
    if pod is not None:
        return pod, None
    others = [] if spec.explicit else sorted(p.key for p in cluster.pods_named(name))
    if len(others) == 1:
        found = cluster.pod(*others[0].split("/", 1))
        assert found is not None
        return found, (f"--from pod/{name}: no pod {name} in namespace {ns}; the only pod of that name "
                       f"{where} is {found.key}")
    if others:
        raise InputError(f"no pod {ns}/{name} {where}; pods named {name}: {', '.join(others[:8])}"
                         f"{', ...' if len(others) > 8 else ''} (say which: --from pod/NAMESPACE/{name})")
    raise InputError(f"no pod {ns}/{name} {where}")


def deciding_node(cluster: Cluster, source: Source, node: str | None,
                  candidates: Callable[[], Sequence[str]]) -> str | None:
    """The node whose rules decide: the sender's for pods and nodes (kube-proxy's rules act where the packet
    is sent), else the receiving node: --node, else the first node that can decide."""
    if source.kind in ("pod", "node") and source.node:
        return source.node
    return node or first_node(cluster, candidates())


def node_to_collect(cluster: Cluster, source: SourceSpec | None, node: str | None,
                    ready: Sequence[str]) -> str | None:
    """Live collection: the one node whose dump explain will read for this question. explain's own rule for
    its default (a cluster-IP question), with the Ready nodes, in the cluster's order, as the nodes that can
    decide (every node's dump can still be collected)."""
    src = resolve_source(cluster, source, "cluster-ip", node, lambda: ready, where="in the cluster")
    return deciding_node(cluster, src, node, lambda: ready)
