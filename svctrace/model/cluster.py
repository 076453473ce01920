"""Kubernetes objects as svctrace needs them, read from what `kubectl get -o json` prints.

Stdlib only. Objects keep their raw dict (`raw`) so nothing is lost; the typed fields are what the
explanation uses.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from sys import intern
from typing import Any

from svctrace.errors import InputError, Warn, shorten
from svctrace.limits import MAX_JSON_DEPTH

Obj = dict[str, Any]


@dataclass(slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str
    target_port: int | str
    node_port: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"name": self.name or None, "port": self.port, "protocol": self.protocol,
                "target_port": self.target_port, "node_port": self.node_port}


@dataclass(slots=True)
class Service:
    namespace: str
    name: str
    type: str
    cluster_ips: list[str]
    ports: list[ServicePort]
    selector: dict[str, str] | None
    session_affinity: str = "None"
    affinity_timeout: int | None = None
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    external_ips: list[str] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)
    lb_source_ranges: list[str] = field(default_factory=list)
    lb_hostnames: list[str] = field(default_factory=list)  # status.loadBalancer.ingress[].hostname
    lb_class: str | None = None  # spec.loadBalancerClass
    publish_not_ready: bool = False
    created: str | None = None  # metadata.creationTimestamp (RFC 3339, compares as text)
    external_name: str | None = None
    health_check_node_port: int | None = None
    raw: Obj = field(default_factory=dict, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def headless(self) -> bool:
        return self.type != "ExternalName" and (not self.cluster_ips or self.cluster_ips[0] == "None")

    def port_by(self, spec: str | int) -> ServicePort | None:
        for p in self.ports:
            if str(spec) == p.name or str(spec) == str(p.port):
                return p
        return None

    def to_json(self) -> dict[str, object]:
        return {"namespace": self.namespace, "name": self.name, "type": self.type,
                "cluster_ips": [ip for ip in self.cluster_ips if ip != "None"],
                "session_affinity": self.session_affinity}


@dataclass(slots=True)
class Endpoint:
    addresses: list[str]
    ready: bool
    serving: bool
    terminating: bool
    node_name: str | None
    zone: str | None = None
    hints: list[str] | None = None
    target: str | None = None  # "ns/pod" from targetRef


@dataclass(slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str | None
    address_type: str
    endpoints: list[Endpoint]
    ports: list[tuple[str, int | None, str]]  # (name, port, protocol)
    raw: Obj = field(default_factory=dict, repr=False)
    legacy: bool = False  # made from a v1 Endpoints object


@dataclass
class Pod:
    namespace: str
    name: str
    ips: list[str]
    labels: dict[str, str]
    node_name: str | None
    container_ports: list[tuple[str, int, str]]  # (name, containerPort, protocol)
    host_network: bool = False
    phase: str | None = None
    ready: bool | None = None
    deleting: bool = False
    created: str | None = None  # metadata.creationTimestamp (RFC 3339, compares as text)
    dns_policy: str = "ClusterFirst"
    dns_config: Obj = field(default_factory=dict)  # spec.dnsConfig (nameservers, searches, options)
    enable_service_links: bool = True
    images: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port_named(self, name: str, protocol: str | None = None) -> tuple[str, int, str] | None:
        """The containerPort with this name (and protocol, when given): (name, number, protocol)."""
        for p in self.container_ports:
            if p[0] == name and (protocol is None or p[2].upper() == protocol.upper()):
                return p
        return None


@dataclass
class Node:
    name: str
    internal_ips: list[str]
    external_ips: list[str]
    pod_cidrs: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    provider_id: str | None = None  # spec.providerID: set by a cloud provider (aws://, gce://, azure://)

    @property
    def zone(self) -> str | None:
        return self.labels.get("topology.kubernetes.io/zone")


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), ANDed;
    the empty selector selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        for key, op, values in self.match_expressions:
            have = key in labels
            if op == "In" and not (have and labels[key] in values):
                return False
            if op == "NotIn" and have and labels[key] in values:
                return False
            if op == "Exists" and not have:
                return False
            if op == "DoesNotExist" and have:
                return False
            if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
                return False  # the API server rejects other operators; match nothing rather than guess
        return True

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def text(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for key, op, values in self.match_expressions:
            if op in ("In", "NotIn"):
                parts.append(f"{key} {'in' if op == 'In' else 'notin'} ({','.join(values)})")
            else:
                parts.append(key if op == "Exists" else f"!{key}")
        return ",".join(parts) or "{} (everything)"


@dataclass(frozen=True)
class PolicyPeer:
    """One `from`/`to` entry: an ipBlock, or a podSelector and/or namespaceSelector."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    cidr: str | None = None
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyPort:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol; a str is a named containerPort
    end_port: int | None = None


@dataclass(frozen=True)
class PolicyRule:
    peers: tuple[PolicyPeer, ...] | None  # None: `from`/`to` absent or empty, every peer
    ports: tuple[PolicyPort, ...] | None  # None: `ports` absent or empty, every port


@dataclass
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector
    types: tuple[str, ...]  # Ingress and/or Egress (the API's defaulting applied)
    ingress: list[PolicyRule]
    egress: list[PolicyRule]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Workload:
    """A DaemonSet or Deployment (any namespace), as far as telling which add-ons run: its images."""

    kind: str
    namespace: str
    name: str
    images: list[str]
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class ProxySettings:
    """What is known of kube-proxy's configuration, and where each value came from."""

    mode: str | None = None
    cluster_cidr: str | None = None
    masquerade_bit: int | None = None
    version: str | None = None
    node_port_addresses: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # field -> "ConfigMap kube-system/kube-proxy", ...


@dataclass
class Cluster:
    services: dict[str, Service] = field(default_factory=dict)
    slices: list[EndpointSlice] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    warnings: list[Warn] = field(default_factory=list)
    # every item, as cluster.json has it (with parse_cluster's raw_for: that Service's own only)
    objects: list[dict[str, Any]] = field(default_factory=list, repr=False)
    policies: list[NetworkPolicy] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # Namespace objects: name -> labels
    workloads: list[Workload] = field(default_factory=list)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """A namespace's labels; without its Namespace object only the label the API server always sets
        (kubernetes.io/metadata.name, since 1.21) is known, and None says the rest is unknown."""
        if name in self.namespaces:
            return {"kubernetes.io/metadata.name": name, **self.namespaces[name]}
        return None

    _index: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def _indexed(self, what: str) -> Any:
        """The lookup tables, built once and built again when an object list changed length (objects are
        read once, by parse_cluster; nothing edits them in place): every lookup below costs the same for
        10 Services as for 20,000 (issue 16: `check` asks one question per Service port)."""
        sizes = (len(self.slices), len(self.pods), len(self.nodes))
        if self._index.get("sizes") != sizes:
            self._index.clear()
            self._index["sizes"] = sizes
        if what not in self._index:
            self._index[what] = self._build(what)
        return self._index[what]

    def _build(self, what: str) -> Any:
        if what == "slices":
            slices: dict[tuple[str, str, bool], list[EndpointSlice]] = {}
            for x in self.slices:
                slices.setdefault((x.namespace, x.service or "", x.legacy), []).append(x)
            return slices
        if what == "pods":
            by_key: dict[tuple[str, str], Pod] = {}
            by_ns: dict[str, list[Pod]] = {}
            by_name: dict[str, list[Pod]] = {}
            for p in self.pods:
                by_key.setdefault((p.namespace, p.name), p)
                by_ns.setdefault(p.namespace, []).append(p)
                by_name.setdefault(p.name, []).append(p)
            return by_key, by_ns, by_name
        if what == "pod_ips":
            ips: dict[str, Pod] = {}
            for p in self.pods:  # a pod's own address first, then hostNetwork pods (the node's address)
                if not p.host_network:
                    for ip in p.ips:
                        ips.setdefault(ip, p)
            for p in self.pods:
                for ip in p.ips:
                    ips.setdefault(ip, p)
            return ips
        if what == "node_ips":
            nodes: dict[str, Node] = {}
            for n in self.nodes.values():
                for ip in [*n.internal_ips, *n.external_ips]:
                    nodes.setdefault(ip, n)
            return nodes
        if what == "endpoint_ips":  # an endpoint address -> (its node, its target), the last slice's word
            eps: dict[str, tuple[str | None, str | None]] = {}
            for s in self.slices:
                for e in s.endpoints:
                    for a in e.addresses:
                        eps[a] = (e.node_name, e.target)
            return eps
        raise KeyError(what)

    def service(self, namespace: str, name: str) -> Service | None:
        return self.services.get(f"{namespace}/{name}")

    def slices_for(self, svc: Service) -> list[EndpointSlice]:
        """The Service's EndpointSlices, else (an old cluster) the slices made from its v1 Endpoints."""
        index = self._indexed("slices")
        return list(index.get((svc.namespace, svc.name, False)) or index.get((svc.namespace, svc.name, True)) or [])

    def pods_in(self, namespace: str) -> list[Pod]:
        return list(self._indexed("pods")[1].get(namespace, []))

    def pod(self, namespace: str, name: str) -> Pod | None:
        got: Pod | None = self._indexed("pods")[0].get((namespace, name))
        return got

    def pods_named(self, name: str) -> list[Pod]:
        """Every pod of this name, in any namespace (kubectl-like name lookup across namespaces)."""
        return list(self._indexed("pods")[2].get(name, []))

    def pod_by_ip(self, ip: str) -> Pod | None:
        """The pod with this address (a pod network pod before a host-network one), through an index built once
        (rebuilt when pods were added): explain asks once per endpoint."""
        index = self.__dict__.get("_pod_ip_index")
        if index is None or index[0] != len(self.pods):
            by_ip: dict[str, Pod] = {}
            for p in self.pods:
                for a in p.ips:
                    if a not in by_ip or (by_ip[a].host_network and not p.host_network):
                        by_ip[a] = p
            index = (len(self.pods), by_ip)
            self.__dict__["_pod_ip_index"] = index
        return index[1].get(ip)

    def node_by_ip(self, ip: str) -> Node | None:
        got: Node | None = self._indexed("node_ips").get(ip)
        return got

    def endpoint_of_ip(self, ip: str) -> tuple[str | None, str | None] | None:
        """(node, target pod) of an endpoint address as the EndpointSlices name them, or None."""
        got: tuple[str | None, str | None] | None = self._indexed("endpoint_ips").get(ip)
        return got

    def node_of_ip(self, ip: str) -> Node | None:
        """The node whose podCIDR holds ip (for pod IPs without a Pod object)."""
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for n in self.nodes.values():
            for c in n.pod_cidrs:
                try:
                    if a in ipaddress.ip_network(c, strict=False):
                        return n
                except ValueError:
                    continue
        return None

    def slices_in(self, namespace: str, service: str) -> tuple[list[EndpointSlice], list[EndpointSlice]]:
        """(EndpointSlices, slices made from v1 Endpoints) that name this Service."""
        index = self._indexed("slices")
        return list(index.get((namespace, service, False), [])), list(index.get((namespace, service, True), []))

    def selected_pods(self, svc: Service) -> list[Pod]:
        if not svc.selector:
            return []
        return [p for p in self.pods_in(svc.namespace)
                if all(p.labels.get(k) == v for k, v in svc.selector.items())]


# -- reading ------------------------------------------------------------------------------------

# The shape of every field svctrace reads, by kind (docs/snapshots.md). `parse_cluster` checks an object
# against it before reading it, so a string where a list belongs, metadata as a list or a port of 10**400 is
# one line naming the file and the JSON path (exit 2), never a crash further on. Absent and null fields are
# fine everywhere; fields svctrace does not read are not looked at.
class _T:
    """A leaf type: `name` for the message, `ok` the test."""

    def __init__(self, name: str, ok: Any) -> None:
        self.name, self.ok = name, ok


def _is_ip(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    if v in ("", "None"):  # headless Services, unset fields
        return True
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _is_port(v: Any) -> bool:
    return type(v) is int and 0 <= v <= 65535


STR = _T("a string", lambda v: isinstance(v, str))
SCALAR = _T("a string or number", lambda v: isinstance(v, str | int | float) and not isinstance(v, bool))
BOOL = _T("true or false", lambda v: isinstance(v, bool))
INT = _T("an integer of at most 10 digits", lambda v: type(v) is int and abs(v) < 10**10)
PORT = _T("a port number (0-65535)", _is_port)
PORT_OR_NAME = _T("a port number (0-65535) or a port name", lambda v: _is_port(v) or (isinstance(v, str) and len(v) <= 253))
IP = _T("an IP address", _is_ip)
ANY = _T("anything", lambda v: True)


class _Map:
    """A JSON object of string keys to `value`s (labels, selector, data)."""

    def __init__(self, value: Any) -> None:
        self.value = value


_META = {"name": SCALAR, "namespace": SCALAR, "labels": _Map(SCALAR), "deletionTimestamp": ANY}
_REF = {"kind": STR, "name": SCALAR, "namespace": SCALAR}
_PORTS = [{"name": SCALAR, "port": PORT, "protocol": STR}]
_CONDITIONS = [{"type": STR, "status": STR}]
SCHEMA: dict[str, dict[str, Any]] = {
    "Service": {"metadata": _META, "spec": {
        "clusterIP": IP, "clusterIPs": [IP], "type": STR, "selector": _Map(SCALAR), "sessionAffinity": STR,
        "ports": [{"name": SCALAR, "port": PORT, "targetPort": PORT_OR_NAME, "nodePort": PORT, "protocol": STR}],
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": INT}}, "externalTrafficPolicy": STR,
        "internalTrafficPolicy": STR, "externalIPs": [IP], "loadBalancerSourceRanges": [STR], "externalName": STR,
        "healthCheckNodePort": PORT},
        "status": {"loadBalancer": {"ingress": [{"ip": IP, "hostname": STR}]}}},
    "EndpointSlice": {"metadata": _META, "addressType": STR, "ports": [{"name": SCALAR, "port": PORT, "protocol": STR}],
                      "endpoints": [{"addresses": [STR], "nodeName": STR, "zone": STR, "targetRef": _REF,
                                     "conditions": {"ready": BOOL, "serving": BOOL, "terminating": BOOL},
                                     "hints": {"forZones": [{"name": STR}]}}]},
    "Endpoints": {"metadata": _META, "subsets": [{
        "addresses": [{"ip": IP, "nodeName": STR, "targetRef": _REF}],
        "notReadyAddresses": [{"ip": IP, "nodeName": STR, "targetRef": _REF}], "ports": _PORTS}]},
    "Pod": {"metadata": _META,
            "spec": {"nodeName": STR, "hostNetwork": BOOL,
                     "containers": [{"ports": [{"containerPort": PORT, "name": SCALAR, "protocol": STR}]}],
                     "initContainers": [{"ports": [{"containerPort": PORT, "name": SCALAR, "protocol": STR}]}]},
            "status": {"podIP": IP, "podIPs": [{"ip": IP}], "phase": STR, "conditions": _CONDITIONS}},
    "Node": {"metadata": _META, "spec": {"podCIDR": STR, "podCIDRs": [STR]},
             "status": {"addresses": [{"type": STR, "address": STR}], "conditions": _CONDITIONS}},
    "ConfigMap": {"metadata": _META, "data": _Map(SCALAR)},
    "DaemonSet": {"metadata": _META, "spec": {"template": {"spec": {"containers": [
        {"image": STR, "command": [SCALAR], "args": [SCALAR]}]}}}},
}


def _kind_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer of " + (f"{len(str(abs(v)))} digits" if abs(v) < 10**4000 else "thousands of digits")
    return {str: "a string", float: "a number", list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def check_shape(o: Any, schema: Any, path: str, source: str) -> None:
    """Raise InputError (naming `source` and the JSON path) where `o` does not have the shape `schema`
    says. Iterative, and linear in the fields looked at."""
    work: list[tuple[Any, Any, str]] = [(o, schema, path)]
    while work:
        v, sch, at = work.pop()
        if v is None:
            continue
        want: str | None = None
        if isinstance(sch, _T):
            if not sch.ok(v):
                want = sch.name
        elif isinstance(sch, list):
            if not isinstance(v, list):
                want = "a list"
            else:
                work.extend((x, sch[0], f"{at}[{i}]") for i, x in enumerate(v))
        elif isinstance(sch, _Map):
            if not isinstance(v, dict):
                want = "an object"
            else:
                work.extend((x, sch.value, f"{at}.{k}") for k, x in v.items())
        elif isinstance(sch, dict):
            if not isinstance(v, dict):
                want = "an object"
            else:
                work.extend((v[k], sub, f"{at}.{k}") for k, sub in sch.items() if k in v)
        if want is not None:
            got = _kind_name(v)
            shown = f" ({shorten(v, 60)!r})" if isinstance(v, str) else ""
            raise InputError(f"{at}: expected {want}, not {got}{shown}", source=source)



# check_shape walks the schema for every value, which costs a third of loading a 5k-Service snapshot. Each kind's
# schema is also compiled once into a plain Python function (`_compile`) that only says whether the object has
# the shape (straight-line code: no work list, no JSON paths, exact types); only an object it refuses is walked by
# check_shape, which names the path. The compiled test may be stricter, never looser: a value it refuses that
# check_shape accepts costs a walk and nothing else (tests/test_hostile.py checks the two agree).
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")
_FAST_LEAF = {  # a leaf type's test as an expression of {x}, exactly as strict as its `ok` or stricter
    id(STR): "type({x}) is str",
    id(SCALAR): "(type({x}) is str or type({x}) is int or type({x}) is float)",
    id(BOOL): "({x} is True or {x} is False)",
    id(INT): "(type({x}) is int and -10**10 < {x} < 10**10)",
    id(PORT): "(type({x}) is int and 0 <= {x} <= 65535)",
    id(PORT_OR_NAME): "((type({x}) is int and 0 <= {x} <= 65535) or (type({x}) is str and len({x}) <= 253))",
    id(IP): "(type({x}) is str and (_v4({x}) is not None or _is_ip({x})))",  # dotted IPv4 without ipaddress
    id(ANY): "",
}


def _compile(schema: Any, name: str) -> Any:
    """A function `ok(o) -> bool`: does `o` have the shape `schema` says (None fine everywhere)?"""
    lines = [f"def {name}(v0):"]
    env: dict[str, Any] = {"_v4": _IPV4.fullmatch, "_is_ip": _is_ip}
    count = [0]

    def var() -> str:
        count[0] += 1
        return f"v{count[0]}"

    def emit(sch: Any, x: str, ind: str) -> None:
        if isinstance(sch, _T):
            expr = _FAST_LEAF.get(id(sch))
            if expr is None:
                env[f"_ok{id(sch)}"] = sch.ok
                expr = f"_ok{id(sch)}({{x}})"
            if expr:
                lines.append(f"{ind}if {x} is not None and not {expr.format(x=x)}: return False")
            return
        if isinstance(sch, list | _Map):  # a list of items, or an object of string keys to values
            kind, items, inner = ("list", "", sch[0]) if isinstance(sch, list) else ("dict", ".values()", sch.value)
            lines.append(f"{ind}if {x} is not None:")
            lines.append(f"{ind}    if type({x}) is not {kind}: return False")
            item = var()
            body = len(lines)
            lines.append(f"{ind}    for {item} in {x}{items}:")
            emit(inner, item, ind + "        ")
            if len(lines) == body + 1:  # nothing to test in the items
                lines.pop()
            return
        assert isinstance(sch, dict), sch
        lines.append(f"{ind}if {x} is not None:")
        lines.append(f"{ind}    if type({x}) is not dict: return False")
        for key, sub in sch.items():
            if isinstance(sub, _T) and not _FAST_LEAF.get(id(sub), "x"):
                continue  # ANY
            field_var = var()
            lines.append(f"{ind}    {field_var} = {x}.get({key!r})")
            emit(sub, field_var, ind + "    ")

    emit(schema, "v0", "    ")
    lines.append("    return True")
    exec("\n".join(lines), env)  # our own text, made from SCHEMA above
    return env[name]


class _ShapeTests(dict[str, Any]):
    """kind -> its compiled shape test, compiled when first asked for (a few milliseconds each)."""

    def __missing__(self, kind: str) -> Any:
        test = self[kind] = _compile(SCHEMA[kind], f"_shape_{kind}")
        return test


SHAPE_OK = _ShapeTests()


def _items(doc: Any, source: str, at: str = "", depth: int = 0) -> Iterator[tuple[str, Obj]]:
    """(JSON path, object) of every object with a `kind`, in document order, through Lists and lists of
    lists; iteratively, at most MAX_JSON_DEPTH lists deep. `at`, `depth`: where `doc` is in a bigger document."""
    work: list[tuple[Any, str, int]] = [(doc, at, depth)]
    while work:
        d, at, depth = work.pop()
        if depth > MAX_JSON_DEPTH:
            raise InputError(f"{at or 'the document'}: lists nest deeper than {MAX_JSON_DEPTH} (svctrace's limit "
                             "MAX_JSON_DEPTH, see docs/limits.md)", source=source)
        if isinstance(d, list):
            work.extend((x, f"{at}[{i}]", depth + 1) for i, x in reversed(list(enumerate(d))))
        elif isinstance(d, dict):
            if isinstance(d.get("items"), list):
                work.extend((x, f"{at}.items[{i}]".lstrip("."), depth + 1)
                            for i, x in reversed(list(enumerate(d["items"]))))
            elif "kind" in d:
                yield at or "$", d


def _meta(o: Obj) -> tuple[str, str]:
    m = o.get("metadata") or {}
    return intern(str(m.get("namespace") or "default")), str(m.get("name") or "")


def _same(v: Any) -> Any:
    """One string object for a value that repeats across the objects (a node's name, a protocol, a port's name):
    a 10k-Service cluster repeats such words some 200,000 times. Anything else as it is."""
    return intern(v) if type(v) is str else v


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def parse_service(o: Obj) -> Service:
    ns, name = _meta(o)
    spec = o.get("spec") or {}
    ips = list(spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []))
    ports = []
    for p in spec.get("ports") or []:
        tp = p.get("targetPort", p.get("port"))
        ports.append(ServicePort(name=intern(str(p.get("name") or "")), port=int(p.get("port", 0)),
                                 protocol=intern(str(p.get("protocol") or "TCP")),
                                 target_port=tp if isinstance(tp, int) or not str(tp).isdigit() else int(tp),
                                 node_port=_int(p.get("nodePort"))))
    status = (o.get("status") or {}).get("loadBalancer") or {}
    lb_ips = [i["ip"] for i in status.get("ingress") or [] if i.get("ip")]
    aff = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
    svc_type = intern(str(spec.get("type") or "ClusterIP"))
    return Service(
        namespace=ns, name=name, type=svc_type, cluster_ips=[str(i) for i in ips], ports=ports,
        selector=dict(spec["selector"]) if spec.get("selector") else None,
        session_affinity=str(spec.get("sessionAffinity") or "None"),
        affinity_timeout=_int(aff) if aff is not None else (10800 if spec.get("sessionAffinity") == "ClientIP" else None),
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        internal_traffic_policy=str(spec.get("internalTrafficPolicy") or "Cluster"),
        external_ips=list(spec.get("externalIPs") or []), lb_ips=lb_ips,
        lb_source_ranges=[r.strip() for r in spec.get("loadBalancerSourceRanges") or []],
        lb_hostnames=[i["hostname"] for i in status.get("ingress") or [] if i.get("hostname")],
        lb_class=spec.get("loadBalancerClass"), publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
        created=(o.get("metadata") or {}).get("creationTimestamp"),
        external_name=spec.get("externalName"), health_check_node_port=_int(spec.get("healthCheckNodePort")),
        raw=o,
    )


def parse_endpointslice(o: Obj) -> EndpointSlice:
    ns, name = _meta(o)
    labels = (o.get("metadata") or {}).get("labels") or {}
    eps = []
    for e in o.get("endpoints") or []:
        cond = e.get("conditions") or {}
        ready = cond.get("ready")
        terminating = bool(cond.get("terminating", False))
        # The API says: a nil ready means ready unless terminating; nil serving means as ready.
        ready_b = (not terminating) if ready is None else bool(ready)
        serving = cond.get("serving")
        ref = e.get("targetRef") or {}
        hints = [z.get("name") for z in ((e.get("hints") or {}).get("forZones") or []) if z.get("name")]
        eps.append(Endpoint(addresses=list(e.get("addresses") or []), ready=ready_b,
                            serving=ready_b if serving is None else bool(serving), terminating=terminating,
                            node_name=_same(e.get("nodeName")), zone=_same(e.get("zone")), hints=hints or None,
                            target=f"{ref.get('namespace') or ns}/{ref['name']}" if ref.get("kind") == "Pod" and
                            ref.get("name") else None))
    ports = [(intern(str(p.get("name") or "")), _int(p.get("port")), intern(str(p.get("protocol") or "TCP")))
             for p in o.get("ports") or []]
    return EndpointSlice(ns, name, _same(labels.get("kubernetes.io/service-name")),
                         intern(str(o.get("addressType") or "IPv4")), eps, ports, raw=o)


def parse_endpoints(o: Obj) -> list[EndpointSlice]:
    """A v1 Endpoints object as one EndpointSlice per subset (old clusters)."""
    ns, name = _meta(o)
    out = []
    for i, sub in enumerate(o.get("subsets") or []):
        eps = []
        for addrs, ready in ((sub.get("addresses") or [], True), (sub.get("notReadyAddresses") or [], False)):
            for a in addrs:
                ref = a.get("targetRef") or {}
                eps.append(Endpoint([a.get("ip")], ready, ready, False, a.get("nodeName"),
                                    target=f"{ref.get('namespace') or ns}/{ref['name']}" if ref.get("name") else None))
        ports = [(str(p.get("name") or ""), _int(p.get("port")), str(p.get("protocol") or "TCP"))
                 for p in sub.get("ports") or []]
        out.append(EndpointSlice(ns, f"{name}-{i}", name, "IPv4", eps, ports, raw=o, legacy=True))
    return out


def parse_pod(o: Obj) -> Pod:
    ns, name = _meta(o)
    spec = o.get("spec") or {}
    status = o.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")] or (
        [status["podIP"]] if status.get("podIP") else [])
    ports = []
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            if p.get("containerPort") is not None:
                ports.append((str(p.get("name") or ""), int(p["containerPort"]), str(p.get("protocol") or "TCP")))
    ready = None
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            ready = c.get("status") == "True"
    meta = o.get("metadata") or {}
    return Pod(ns, name, ips, dict(meta.get("labels") or {}), spec.get("nodeName"), ports,
               bool(spec.get("hostNetwork")), status.get("phase"), ready, bool(meta.get("deletionTimestamp")),
               meta.get("creationTimestamp"), str(spec.get("dnsPolicy") or "ClusterFirst"),
               dict(spec.get("dnsConfig") or {}), spec.get("enableServiceLinks") is not False,
               [str(c.get("image") or "") for c in spec.get("containers") or []])


def parse_node(o: Obj) -> Node:
    _, name = _meta(o)
    spec = o.get("spec") or {}
    addrs = (o.get("status") or {}).get("addresses") or []
    return Node(name, [a["address"] for a in addrs if a.get("type") == "InternalIP"],
                [a["address"] for a in addrs if a.get("type") == "ExternalIP"],
                list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])),
                dict((o.get("metadata") or {}).get("labels") or {}), spec.get("providerID") or None)


def parse_selector(d: Any) -> LabelSelector:
    d = d or {}
    labels = tuple(sorted((str(k), str(v)) for k, v in (d.get("matchLabels") or {}).items()))
    exprs = tuple((str(e["key"]), str(e["operator"]), tuple(str(v) for v in e.get("values") or []))
                  for e in d.get("matchExpressions") or [])
    return LabelSelector(labels, exprs)


def _policy_rule(r: Obj, peers_key: str) -> PolicyRule:
    peers: list[PolicyPeer] = []
    for p in r.get(peers_key) or []:
        block = p.get("ipBlock")
        if block:
            ipaddress.ip_network(str(block["cidr"]), strict=False)  # a bad CIDR: the object is skipped, warned
            peers.append(PolicyPeer(cidr=str(block["cidr"]), except_=tuple(str(x) for x in block.get("except") or [])))
        else:
            peers.append(PolicyPeer(
                parse_selector(p["podSelector"]) if p.get("podSelector") is not None else None,
                parse_selector(p["namespaceSelector"]) if p.get("namespaceSelector") is not None else None))
    ports = []
    for q in r.get("ports") or []:
        port = q.get("port")
        if port is not None and (isinstance(port, int) or str(port).isdigit()):
            port = int(port)
        ports.append(PolicyPort(str(q.get("protocol") or "TCP").upper(), port, _int(q.get("endPort"))))
    return PolicyRule(tuple(peers) or None, tuple(ports) or None)


def parse_network_policy(o: Obj) -> NetworkPolicy:
    ns, name = _meta(o)
    spec = o.get("spec") or {}
    ingress = [_policy_rule(r or {}, "from") for r in spec.get("ingress") or []]
    egress = [_policy_rule(r or {}, "to") for r in spec.get("egress") or []]
    types = spec.get("policyTypes")
    if not types:  # the API's defaulting: Ingress always, Egress when egress rules are given
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return NetworkPolicy(ns, name, parse_selector(spec.get("podSelector")), tuple(str(t) for t in types),
                         ingress, egress)


def parse_workload(o: Obj) -> Workload:
    ns, name = _meta(o)
    tspec = (((o.get("spec") or {}).get("template") or {}).get("spec") or {})
    images = [str(c.get("image") or "") for c in (tspec.get("containers") or []) + (tspec.get("initContainers") or [])]
    return Workload(str(o.get("kind")), ns, name, images, dict((o.get("metadata") or {}).get("labels") or {}))


def _proxy_from_config(text: str, where: str, proxy: ProxySettings) -> None:
    """KubeProxyConfiguration as YAML or JSON (the ConfigMap's config.conf)."""

    def grab(key: str) -> str | None:
        m = re.search(rf"(?m)^\s*\"?{key}\"?\s*:\s*\"?([^\"\n#,]*)\"?", text)
        return m.group(1).strip() if m and m.group(1).strip() else None

    mode = grab("mode")
    if mode is not None:
        proxy.mode = mode or None
        proxy.sources["mode"] = where
    cidr = grab("clusterCIDR")
    if cidr:
        proxy.cluster_cidr = cidr
        proxy.sources["cluster_cidr"] = where
    bit = grab("masqueradeBit")
    if bit and bit.isdigit():
        proxy.masquerade_bit = int(bit)
        proxy.sources["masquerade_bit"] = where


# kubectl's names for the kinds a snapshot holds (`kubectl get svc`, `deploy/web`, ...): name -> kind.
KIND_NAMES = {
    **dict.fromkeys(("svc", "service", "services"), "Service"),
    **dict.fromkeys(("deploy", "deployment", "deployments"), "Deployment"),
    **dict.fromkeys(("po", "pod", "pods"), "Pod"),
    **dict.fromkeys(("no", "node", "nodes"), "Node"),
    **dict.fromkeys(("endpointslice", "endpointslices"), "EndpointSlice"),
    **dict.fromkeys(("ep", "endpoints"), "Endpoints"),
    **dict.fromkeys(("netpol", "networkpolicy", "networkpolicies"), "NetworkPolicy"),
    **dict.fromkeys(("ns", "namespace", "namespaces"), "Namespace"),
    **dict.fromkeys(("ds", "daemonset", "daemonsets"), "DaemonSet"),
    **dict.fromkeys(("cm", "configmap", "configmaps"), "ConfigMap"),
}
CLUSTER_SCOPED = frozenset({"Node", "Namespace"})


def stream_items(text: str, source: str) -> Iterator[tuple[str, Obj]]:
    """`_items` of a List document (`{"items": [...]}`, what kubectl prints) read from its JSON text one item at a
    time with the json module's own scanner, so that an item's objects can be let go before the next is read.
    NotStreamed when the text is anything else or not JSON (json.loads of the whole text then says what)."""
    scan: Any = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # (the C scanner json.loads uses)
    space = _JSON_SPACE.match
    seen = False

    def ws(i: int) -> int:
        m = space(text, i)
        return m.end() if m is not None else i

    def value(i: int) -> tuple[Any, int]:
        try:
            got: tuple[Any, int] = scan(text, i)
            return got
        except (StopIteration, ValueError, RecursionError):
            raise NotStreamed from None

    i = ws(0)
    if text[i:i + 1] != "{":
        raise NotStreamed
    i = ws(i + 1)
    while True:
        if text[i:i + 1] != '"':
            raise NotStreamed
        try:
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        except ValueError:
            raise NotStreamed from None
        i = ws(i)
        if text[i:i + 1] != ":":
            raise NotStreamed
        i = ws(i + 1)
        if key != "items":
            _, i = value(i)
        elif seen or text[i:i + 1] != "[":
            raise NotStreamed  # a second "items" (json keeps the last), or not a list
        else:
            seen = True
            i = ws(i + 1)
            n = 0
            while text[i:i + 1] != "]":
                if n:
                    if text[i:i + 1] != ",":
                        raise NotStreamed
                    i = ws(i + 1)
                o, i = value(i)
                yield from _items(o, source, f"items[{n}]", 1)
                del o
                n += 1
                i = ws(i)
            i += 1
        i = ws(i)
        if text[i:i + 1] == ",":
            i = ws(i + 1)
            continue
        if text[i:i + 1] != "}" or ws(i + 1) != len(text) or not seen:
            raise NotStreamed
        return


class NotStreamed(Exception):
    """cluster.json is not a List that stream_items reads (or not JSON at all)."""


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def find_objects(cluster: Cluster, what: str, namespace: str | None) -> list[dict[str, Any]]:
    """The objects `kubectl get WHAT -n NAMESPACE` would show: WHAT is `KIND`, `KIND/NAME` or `KIND NAME` in
    kubectl's spelling (svc, deploy, po, ...); `namespace` None means every namespace (-A)."""
    kind_name, _, name = what.replace(" ", "/", 1).partition("/")
    kind = KIND_NAMES.get(kind_name.lower())
    if kind is None:
        raise InputError(f"unknown kind {kind_name!r}; known: {', '.join(sorted(set(KIND_NAMES.values())))}")
    out = []
    for o in cluster.objects:
        if not isinstance(o, dict) or o.get("kind") != kind:
            continue
        raw = o.get("metadata")
        meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if name and meta.get("name") != name:
            continue
        if kind not in CLUSTER_SCOPED and namespace is not None and (meta.get("namespace") or "default") != namespace:
            continue
        out.append(o)
    return out


def _related(kind: str, o: Obj, service: tuple[str, str]) -> bool:
    """Is `o` the Service `service` (namespace, name), or one of its EndpointSlices or its v1 Endpoints?"""
    if kind not in ("Service", "EndpointSlice", "Endpoints"):
        return False
    meta = o.get("metadata") or {}
    if str(meta.get("namespace") or "default") != service[0]:
        return False
    if kind == "EndpointSlice":
        return (meta.get("labels") or {}).get("kubernetes.io/service-name") == service[1]
    return str(meta.get("name") or "") == service[1]


def parse_cluster(doc: Any, source: str = "cluster.json", raw_for: tuple[str, str] | None = None) -> Cluster:
    """The objects of a cluster.json document. `raw_for` (namespace, name): the one Service whose API objects are
    kept as read (`raw`, `Cluster.objects`: that Service, its EndpointSlices or Endpoints), for a caller that asks
    about it alone; every other object is read into its model and its JSON let go (a 10k-Service cluster.json is
    50 MB of Python objects)."""
    return parse_items(_items(doc, source), source, raw_for)


def parse_items(items: Iterable[tuple[str, Obj]], source: str, raw_for: tuple[str, str] | None = None) -> Cluster:
    """parse_cluster of the (JSON path, object) pairs `_items` gives, as they come."""
    c = Cluster()
    kinds_seen: set[str] = set()
    for at, o in items:
        kind = o.get("kind")
        if not isinstance(kind, str):
            raise InputError(f"{at}.kind: expected a string, not {_kind_name(kind)}", source=source)
        kinds_seen.add(kind)
        if kind in SCHEMA and not SHAPE_OK[kind](o):
            check_shape(o, SCHEMA[kind], at, source)
        keep = raw_for is None or _related(kind, o, raw_for)
        if keep:
            c.objects.append(o)
        try:
            if kind == "Service":
                s = parse_service(o)
                c.services[s.key] = s
                if not keep:
                    s.raw = {}
            elif kind == "EndpointSlice":
                sl = parse_endpointslice(o)
                c.slices.append(sl)
                if not keep:
                    sl.raw = {}
            elif kind == "Endpoints":
                got = parse_endpoints(o)
                c.slices.extend(got)
                if not keep:
                    for sl in got:
                        sl.raw = {}
            elif kind == "Pod":
                c.pods.append(parse_pod(o))
            elif kind == "Node":
                n = parse_node(o)
                c.nodes[n.name] = n
            elif kind == "ConfigMap":
                ns, name = _meta(o)
                data = o.get("data") or {}
                if ns == "kube-system" and name == "kube-proxy" and "config.conf" in data:
                    _proxy_from_config(data["config.conf"], "ConfigMap kube-system/kube-proxy", c.proxy)
                elif ns == "kube-system" and name == "kube-proxy-config":
                    for v in data.values():
                        _proxy_from_config(str(v), "ConfigMap kube-system/kube-proxy-config", c.proxy)
            elif kind in ("DaemonSet", "Deployment"):
                ns, name = _meta(o)
                if kind == "DaemonSet" and ns == "kube-system" and name == "kube-proxy":
                    _proxy_from_daemonset(o, c.proxy)
                c.workloads.append(parse_workload(o))
            elif kind == "NetworkPolicy":
                c.policies.append(parse_network_policy(o))
            elif kind == "Namespace":
                _, name = _meta(o)
                c.namespaces[name] = dict((o.get("metadata") or {}).get("labels") or {})
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # what the schema cannot say
            c.warnings.append(Warn(f"{at} ({kind}) could not be read ({type(e).__name__}: {shorten(e)}); skipped",
                                   source, None, "cluster"))
    if not kinds_seen & {"Service"}:
        raise InputError("no Service objects in it (expected the output of "
                         "`kubectl get services,endpointslices,pods,nodes -A -o json`)", source=source)
    return c


def _proxy_from_daemonset(o: Obj, proxy: ProxySettings) -> None:
    containers = (((o.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for ct in containers:
        image = str(ct.get("image") or "")
        if ":" in image.rsplit("/", 1)[-1]:
            tag = image.rsplit(":", 1)[1]
            if tag.startswith("v") and proxy.version is None:
                proxy.version = tag.split("-")[0].split("@")[0]
                proxy.sources["version"] = "DaemonSet kube-system/kube-proxy image"
        args = [str(a) for a in (ct.get("command") or []) + (ct.get("args") or [])]
        for a in args:
            for flag, attr in (("--proxy-mode=", "mode"), ("--cluster-cidr=", "cluster_cidr")):
                if a.startswith(flag):
                    setattr(proxy, attr, a[len(flag):])
                    proxy.sources[attr] = "DaemonSet kube-system/kube-proxy flags"
            if a.startswith("--masquerade-bit="):
                proxy.masquerade_bit = _int(a.split("=", 1)[1])
                proxy.sources["masquerade_bit"] = "DaemonSet kube-system/kube-proxy flags"


def pod_cidr_supernet(cidrs: Iterable[str]) -> str | None:
    """The smallest IPv4 network holding every given pod CIDR (the cluster CIDR, when nothing states it);
    None without an IPv4 one. Unparseable entries are skipped."""
    nets = []
    for c in cidrs:
        try:
            nets.append(ipaddress.ip_network(c, strict=False))
        except ValueError:
            continue
    v4 = [n for n in nets if n.version == 4]
    if not v4:
        return None
    net = v4[0]
    while not all(x.subnet_of(net) for x in v4):
        net = net.supernet()
    return str(net)
