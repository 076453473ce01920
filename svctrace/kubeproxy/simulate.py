"""What kube-proxy would program for a set of objects: fill in what the API server and controllers
would (cluster IPs, node ports, EndpointSlices from Pods, Pods from workloads), then generate.

Pure: takes Kubernetes objects as plain dicts, returns texts. Used by `svctrace simulate`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from svctrace.kubeproxy.config import ProxyConfig
from svctrace.kubeproxy.plan import Shared
from svctrace.kubeproxy.render.common import SaveMemo
from svctrace.kubeproxy.render.iptables import generate, to_save
from svctrace.kubeproxy.versions import DEFAULT_VERSION
from svctrace.model.cluster import pod_cidr_supernet
from svctrace.model.jsontext import copy_plain
from svctrace.model.loading import gc_paused

Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "ReplicationController")
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE = ("node-1", "192.168.0.10", "10.244.0.0/24")
NODE_PORT_RANGE = (30000, 32767)


@dataclass
class Simulation:
    objects: list[Obj]  # the completed objects (what a snapshot's cluster.json holds)
    dumps: dict[str, str]  # node name -> iptables-save text
    cluster_cidr: str | None
    kube_version: str
    notes: list[str] = field(default_factory=list)  # what was filled in or inferred, one sentence each
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> snapshot file name -> text
    mode: str = "iptables"

    def bundle_files(self, svctrace_version: str) -> dict[str, str]:
        """The snapshot this simulation makes (docs/snapshots.md), as relative path -> text: cluster.json,
        meta.json and each node's files. `svctrace simulate -o DIR` and the learn drills write it."""
        from svctrace.model.jsontext import dumps_indent2

        meta = {"format": "svctrace-snapshot/1", "svctrace": svctrace_version, "simulated": True,
                "proxy_mode": self.mode, "server_version": f"v{self.kube_version}", "cluster_cidr": self.cluster_cidr,
                "nodes": {n: {"transport": "simulate", "backend": "nft", "ok": True} for n in self.files}}
        out = {"cluster.json": dumps_indent2({"apiVersion": "v1", "kind": "List", "items": self.objects}) + "\n",
               "meta.json": dumps_indent2(meta) + "\n"}
        for name, node_files in self.files.items():
            for fname, text in node_files.items():
                out[f"nodes/{name}/{fname}"] = text
        return out


def objects_of(doc: Any) -> list[Obj]:
    """Flatten Lists (and lists of them) into objects with a kind."""
    out: list[Obj] = []
    if isinstance(doc, list):
        for d in doc:
            out += objects_of(d)
    elif isinstance(doc, dict):
        if isinstance(doc.get("items"), list):
            out += objects_of(doc["items"])
        elif doc.get("kind"):
            out.append(doc)
    return out


def _meta(o: Obj) -> Obj:
    m = o.setdefault("metadata", {})
    return m if isinstance(m, dict) else {}


def _ns(o: Obj) -> str:
    return str(_meta(o).get("namespace") or "default")


def _name(o: Obj) -> str:
    return str(_meta(o).get("name") or "")


# KubeProxyConfiguration (v1alpha1; its `iptables`, `nftables`, `detectLocal`, `conntrack` sections) and
# kube-proxy's flags, as ProxyConfig fields: (config path, flag, field, kind). cmd/kube-proxy/app/options.go and
# pkg/proxy/apis/config/types.go name them.
_SETTINGS: tuple[tuple[str, str, str, str], ...] = (
    ("clusterCIDR", "--cluster-cidr", "cluster_cidr", "str"),
    ("iptables.masqueradeAll", "--masquerade-all", "masquerade_all", "bool"),
    ("nftables.masqueradeAll", "", "masquerade_all", "bool"),
    ("linux.masqueradeAll", "", "masquerade_all", "bool"),
    ("masqueradeAll", "", "masquerade_all", "bool"),
    ("iptables.masqueradeBit", "--iptables-masquerade-bit", "masquerade_bit", "int"),
    ("nftables.masqueradeBit", "", "masquerade_bit", "int"),
    ("iptables.localhostNodePorts", "--iptables-localhost-nodeports", "localhost_nodeports", "bool"),
    ("nodePortAddresses", "--nodeport-addresses", "nodeport_addresses", "list"),
    ("detectLocalMode", "--detect-local-mode", "detect_local_mode", "str"),
    ("detectLocal.bridgeInterface", "--pod-bridge-interface", "bridge_interface", "str"),
    ("detectLocal.interfaceNamePrefix", "--pod-interface-name-prefix", "interface_name_prefix", "str"),
    ("conntrack.tcpBeLiberal", "--conntrack-tcp-be-liberal", "conntrack_tcp_be_liberal", "bool"),
    ("ipvs.scheduler", "--ipvs-scheduler", "scheduler", "str"),
    ("ipvs.strictARP", "--ipvs-strict-arp", "strict_arp", "bool"),
)


def _value(raw: Any, kind: str) -> Any:
    if kind == "bool":
        return raw if isinstance(raw, bool) else str(raw).strip().lower() in ("true", "1", "yes")
    if kind == "int":
        return int(raw)
    if kind == "list":
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(x).strip() for x in items if str(x).strip())
    return str(raw)


def proxy_settings(objs: list[Obj]) -> tuple[dict[str, Any], list[str]]:
    """kube-proxy's configuration among the objects (the kube-system kube-proxy ConfigMap's KubeProxyConfiguration,
    the kube-proxy DaemonSet's flags, which win as they do in kube-proxy) as ProxyConfig keyword arguments, and
    a note naming where each came from."""
    import yaml  # PyYAML: a dependency of svctrace

    found: dict[str, Any] = {}
    where: dict[str, str] = {}
    for o in objs:
        if o.get("kind") == "ConfigMap" and _ns(o) == "kube-system" and _name(o) in ("kube-proxy", "kube-proxy-config"):
            for key, v in (o.get("data") or {}).items():
                try:
                    doc = yaml.safe_load(str(v))
                except yaml.YAMLError:
                    continue
                if not isinstance(doc, dict) or doc.get("kind", "KubeProxyConfiguration") != "KubeProxyConfiguration":
                    continue
                for path, _flag, fld, kind in _SETTINGS:
                    cur: Any = doc
                    for part in path.split("."):
                        cur = cur.get(part) if isinstance(cur, dict) else None
                    if cur is None or cur == "" or cur == []:
                        continue
                    try:
                        found[fld] = _value(cur, kind)
                    except ValueError:
                        continue
                    where[fld] = f"ConfigMap kube-system/{_name(o)} {key}: {path}"
        if o.get("kind") == "DaemonSet" and _ns(o) == "kube-system" and _name(o) == "kube-proxy":
            for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
                for a in (c.get("command") or []) + (c.get("args") or []):
                    flag, eq, val = str(a).partition("=")
                    for _path, f, fld, kind in _SETTINGS:
                        if f and flag == f:
                            try:
                                found[fld] = _value(val if eq else "true", kind)
                            except ValueError:
                                continue
                            where[fld] = f"DaemonSet kube-system/kube-proxy {flag}"
    notes = [f"kube-proxy configuration: {fld} = {found[fld]!r} ({where[fld]})" for fld in found]
    return found, notes


def _cidr_from_config(objs: list[Obj]) -> str | None:
    value = proxy_settings(objs)[0].get("cluster_cidr")
    return str(value) if value else None


def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return status.get("phase") in (None, "Running")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class _Allocator:
    def __init__(self, cidr: str, taken: Iterable[str], skip_first: int = 1) -> None:
        self.net = ipaddress.ip_network(cidr, strict=False)
        # Addresses as integers of the network's family (an address of the other family is never taken).
        self._addr = type(self.net.network_address)
        self._last = int(self.net.broadcast_address)
        self.taken = {int(a) for a in (_ip(t) for t in taken) if a is not None and a.version == self.net.version}
        self.next = int(self.net.network_address) + skip_first

    def take(self) -> str:
        while True:
            n = self.next
            self.next += 1
            if n > self._last:
                raise ValueError(f"{self.net} is full")
            if n not in self.taken and n != self._last:
                self.taken.add(n)
                return str(self._addr(n))


def _ip(s: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(s))
    except ValueError:
        return None


def complete(objects: list[Obj], *, service_cidr: str = DEFAULT_SERVICE_CIDR,
             notes: list[str] | None = None) -> list[Obj]:
    """Fill in what the API server and the controllers would: nodes, cluster IPs, node ports, pods of
    workloads, pod IPs, EndpointSlices for selector Services. The input is not modified."""
    notes = notes if notes is not None else []
    objs = [copy_plain(o) for o in objects]
    nodes = [o for o in objs if o.get("kind") == "Node"]
    if not nodes:
        name, ip, cidr = DEFAULT_NODE
        nodes = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name}}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}]
        objs += nodes
        notes.append(f"no Node objects: simulated one node {name} ({ip}, podCIDR {cidr})")
    workers = [n for n in nodes if not any("control-plane" in k or k.endswith("/master")
                                           for k in (_meta(n).get("labels") or {}))] or nodes
    pod_alloc: dict[str, _Allocator] = {}
    all_pod_ips = [str((o.get("status") or {}).get("podIP")) for o in objs if o.get("kind") == "Pod"]
    for n in nodes:
        cidrs = (n.get("spec") or {}).get("podCIDRs") or ([n["spec"]["podCIDR"]] if (n.get("spec") or {}).get(
            "podCIDR") else [])
        if cidrs:
            pod_alloc[_name(n)] = _Allocator(cidrs[0], [ip for ip in all_pod_ips if ip], skip_first=10)

    # Workloads -> pods (the ReplicaSet / StatefulSet controllers), spread over the workers.
    rr = 0
    for w in [o for o in objs if o.get("kind") in WORKLOADS]:
        spec = w.get("spec") or {}
        tmpl = spec.get("template") or {}
        count = len(workers) if w["kind"] == "DaemonSet" else int(spec.get("replicas", 1) if spec.get(
            "replicas") is not None else 1)
        for i in range(count):
            node = workers[i % len(workers)] if w["kind"] == "DaemonSet" else workers[rr % len(workers)]
            rr += 1
            pname = f"{_name(w)}-{i}" if w["kind"] == "StatefulSet" else f"{_name(w)}-sim{i}"
            objs.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": pname, "namespace": _ns(w),
                                      "labels": dict((tmpl.get("metadata") or {}).get("labels") or {})},
                         "spec": {**(tmpl.get("spec") or {}), "nodeName": _name(node)},
                         "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
        if count:
            notes.append(f"{w['kind']} {_ns(w)}/{_name(w)}: simulated {count} ready pod(s)")

    # Pods: a node and an IP when they have none (the scheduler and the CNI).
    node_by_name: dict[str, Obj] = {}
    for n in nodes:
        node_by_name.setdefault(_name(n), n)
    for p in [o for o in objs if o.get("kind") == "Pod"]:
        spec = p.setdefault("spec", {})
        status = p.setdefault("status", {})
        if not spec.get("nodeName"):
            spec["nodeName"] = _name(workers[rr % len(workers)])
            rr += 1
            notes.append(f"pod {_ns(p)}/{_name(p)}: scheduled on {spec['nodeName']}")
        if not status.get("podIP"):
            host = node_by_name.get(spec["nodeName"])
            pod_ip: str | None
            if spec.get("hostNetwork") and host is not None:
                pod_ip = next((str(a["address"]) for a in (host.get("status") or {}).get("addresses") or []
                           if a.get("type") == "InternalIP"), None)
            else:
                alloc = pod_alloc.get(spec["nodeName"])
                pod_ip = alloc.take() if alloc else None
            if pod_ip:
                status["podIP"] = pod_ip
                status["podIPs"] = [{"ip": pod_ip}]
                status.setdefault("phase", "Running")

    # Services: cluster IPs and node ports (the API server's allocators).
    services = [o for o in objs if o.get("kind") == "Service"]
    svc_alloc = _Allocator(service_cidr, [str((s.get("spec") or {}).get("clusterIP")) for s in services],
                           skip_first=10)
    used_ports = {p.get("nodePort") for s in services for p in (s.get("spec") or {}).get("ports") or []}
    next_port = NODE_PORT_RANGE[0]
    for s in services:
        spec = s.setdefault("spec", {})
        stype = spec.get("type") or "ClusterIP"
        # An object with a cluster IP came from the API server, which already allocated what it would.
        applied = bool(spec.get("clusterIP"))
        if stype != "ExternalName" and not spec.get("clusterIP"):
            spec["clusterIP"] = svc_alloc.take()
            spec["clusterIPs"] = [spec["clusterIP"]]
            notes.append(f"Service {_ns(s)}/{_name(s)}: cluster IP {spec['clusterIP']} allocated from {service_cidr}")
        wants_ports = stype == "NodePort" or (stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts",
                                                                                   True) is not False)
        if wants_ports and not applied:
            for p in spec.get("ports") or []:
                if not p.get("nodePort"):
                    while next_port in used_ports:
                        next_port += 1
                    p["nodePort"] = next_port
                    used_ports.add(next_port)
                    notes.append(f"Service {_ns(s)}/{_name(s)} port {p.get('name') or p.get('port')}: "
                                 f"nodePort {next_port} allocated")

    # EndpointSlices for selector Services that have none (the EndpointSlice controller).
    have = {(_ns(o), (_meta(o).get("labels") or {}).get("kubernetes.io/service-name"))
            for o in objs if o.get("kind") == "EndpointSlice"}
    have |= {(_ns(o), _name(o)) for o in objs if o.get("kind") == "Endpoints"}
    pods = _PodIndex(o for o in objs if o.get("kind") == "Pod")
    for s in services:
        sel = (s.get("spec") or {}).get("selector")
        if not sel or (_ns(s), _name(s)) in have:
            continue
        slices = endpoint_slices_for(s, pods.candidates(_ns(s), sel))
        objs += slices
        count = sum(len(x["endpoints"]) for x in slices)
        notes.append(f"Service {_ns(s)}/{_name(s)}: EndpointSlice built from {count} matching pod(s)")
    return objs


class _PodIndex:
    """Pods by namespace and label, so that a Service's selector looks at the pods carrying one of its labels
    rather than at every pod of the cluster."""

    def __init__(self, pods: Iterable[Obj]) -> None:
        self._by_label: dict[tuple[str, str, str], list[Obj]] = {}
        for p in pods:
            ns = _ns(p)
            for k, v in (_meta(p).get("labels") or {}).items():
                self._by_label.setdefault((ns, str(k), str(v)), []).append(p)

    def candidates(self, namespace: str, selector: dict[str, str]) -> list[Obj]:
        """The pods (in their order) that carry the rarest of the selector's labels: a superset of the pods
        the selector matches (``selector`` is not empty)."""
        return min((self._by_label.get((namespace, str(k), str(v)), []) for k, v in selector.items()), key=len)


def _resolve(target: Any, pod: Obj, protocol: str) -> int | None:
    if target is None:
        return None
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p["containerPort"])
    return None


def endpoint_slices_for(svc: Obj, pods: list[Obj]) -> list[Obj]:
    """What the EndpointSlice controller makes: one slice per distinct resolved port set."""
    spec = svc.get("spec") or {}
    sel = spec.get("selector") or {}
    groups: dict[tuple, list[Obj]] = {}
    for p in pods:
        if _ns(p) != _ns(svc) or not _matches(sel, _meta(p).get("labels") or {}):
            continue
        if not (p.get("status") or {}).get("podIP"):
            continue
        resolved = []
        for sp in spec.get("ports") or []:
            proto = sp.get("protocol") or "TCP"
            num = _resolve(sp.get("targetPort", sp.get("port")), p, proto)
            if num is not None:
                resolved.append((sp.get("name") or "", num, proto))
        groups.setdefault(tuple(resolved), []).append(p)
    out = []
    for i, (ports, members) in enumerate(sorted(groups.items(), key=lambda kv: kv[0])):
        eps = []
        for p in sorted(members, key=lambda x: x["status"]["podIP"]):
            ready = _ready(p)
            terminating = bool(_meta(p).get("deletionTimestamp"))
            eps.append({"addresses": [p["status"]["podIP"]],
                        "conditions": {"ready": ready and not terminating, "serving": ready,
                                       "terminating": terminating},
                        "nodeName": p["spec"].get("nodeName"),
                        "targetRef": {"kind": "Pod", "name": _name(p), "namespace": _ns(p)}})
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{_name(svc)}-sim{i}", "namespace": _ns(svc),
                                 "labels": {"kubernetes.io/service-name": _name(svc),
                                            "endpointslice.kubernetes.io/managed-by": "svctrace-simulate"}},
                    "addressType": "IPv4", "endpoints": eps,
                    "ports": [{"name": n, "port": num, "protocol": proto} for n, num, proto in ports]})
    if not out:
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{_name(svc)}-sim0", "namespace": _ns(svc),
                                 "labels": {"kubernetes.io/service-name": _name(svc),
                                            "endpointslice.kubernetes.io/managed-by": "svctrace-simulate"}},
                    "addressType": "IPv4", "endpoints": [], "ports": []})
    return out


def simulate(objects: list[Obj], *, nodes: list[str] | None = None, kube_version: str = DEFAULT_VERSION,
             cluster_cidr: str | None = None, service_cidr: str = DEFAULT_SERVICE_CIDR,
             mode: str = "iptables", random_fully: bool = True, nfacct: bool = True) -> Simulation:
    """kube-proxy's rules on each node (or the named ones) for these objects, in `mode`
    (iptables, ipvs, nftables), as a real node gets them: kube-proxy's configuration among the objects (ConfigMap,
    DaemonSet flags) honoured; `random_fully`: the node's iptables has --random-fully (1.6.2+, every current
    distribution); `nfacct`: its kernel has nfnetlink_acct (kube-proxy 1.30+ then counts in nfacct).
    `dumps` holds the main dump per node; `files` every snapshot file."""
    # Simulating allocates a few objects per Service, endpoint and rule and frees almost none: the cyclic
    # garbage collector would only rescan them again and again (a third of the time at 5k Services), so it
    # waits, as it does while a dump loads (dataplane/iptables/parser.py).
    with gc_paused(look_after=False):
        return _simulate(objects, nodes=nodes, kube_version=kube_version, cluster_cidr=cluster_cidr,
                         service_cidr=service_cidr, mode=mode, random_fully=random_fully, nfacct=nfacct)


def _simulate(objects: list[Obj], *, nodes: list[str] | None, kube_version: str, cluster_cidr: str | None,
              service_cidr: str, mode: str, random_fully: bool, nfacct: bool) -> Simulation:
    notes: list[str] = []
    objs = complete(objects, service_cidr=service_cidr, notes=notes)
    settings, said = proxy_settings(objs)
    notes += said
    settings.pop("cluster_cidr", None)
    settings.update(random_fully=random_fully, nfacct=nfacct)
    cidr = _cidr_from_config(objs)
    if cidr is not None and cluster_cidr is not None and cidr != cluster_cidr:
        notes.append(f"--cluster-cidr {cluster_cidr} overrides the kube-proxy configuration's {cidr}")
    if cluster_cidr is not None:
        cidr = cluster_cidr
    if cidr is None:
        pod_cidrs = [c for o in objs if o.get("kind") == "Node"
                     for c in ((o.get("spec") or {}).get("podCIDRs") or [])]
        cidr = pod_cidr_supernet(pod_cidrs)
        if cidr:
            notes.append(f"cluster CIDR {cidr} inferred from the nodes' podCIDRs (no kube-proxy configuration "
                         "among the inputs and no --cluster-cidr)")
    node_objs = {_name(o): o for o in objs if o.get("kind") == "Node"}
    names = nodes or list(node_objs)
    for n in names:
        if n not in node_objs:
            raise ValueError(f"no node {n} among the inputs (nodes: {', '.join(node_objs)})")
    kinds: dict[str, list[Obj]] = {}
    for o in objs:
        kinds.setdefault(str(o.get("kind")), []).append(o)
    dumps: dict[str, str] = {}
    files: dict[str, dict[str, str]] = {}
    memo = SaveMemo()  # the nodes share most rules: each is printed once
    shared = Shared()  # ... and most of their endpoint choices and rules: each is made once
    for n in names:
        addrs = [a["address"] for a in (node_objs[n].get("status") or {}).get("addresses") or []
                 if a.get("type") in ("InternalIP", "ExternalIP")]
        if mode == "ipvs":
            from svctrace.kubeproxy.render.ipvs import generate_ipvs

            ipvs = generate_ipvs(kinds.get("Service", []), kinds.get("EndpointSlice", []),
                                 ProxyConfig(node_name=n, node_ips=tuple(addrs), cluster_cidr=cidr,
                                             kube_version=kube_version, **settings),
                                 nodes=kinds.get("Node", []), endpoints=kinds.get("Endpoints"), shared=shared)
            files[n] = ipvs.snapshot_files()
            dumps[n] = files[n]["ipvsadm"]
            continue
        if mode == "nftables":
            import importlib

            gen = importlib.import_module("svctrace.kubeproxy.render.nft")
            nft = gen.generate_nft(kinds.get("Service", []), kinds.get("EndpointSlice", []),
                                   ProxyConfig(node_name=n, node_ips=tuple(addrs), cluster_cidr=cidr,
                                               kube_version=kube_version, **settings),
                                   nodes=kinds.get("Node", []), endpoints=kinds.get("Endpoints"), shared=shared)
            files[n] = nft.snapshot_files()
            dumps[n] = files[n]["nft"]
            continue
        cfg = ProxyConfig(node_name=n, node_ips=tuple(addrs), cluster_cidr=cidr, kube_version=kube_version,
                          kubelet_rules=True, **settings)
        rules = generate(kinds.get("Service", []), kinds.get("EndpointSlice", []), cfg, nodes=kinds.get("Node", []),
                         endpoints=kinds.get("Endpoints"), shared=shared)
        dumps[n] = to_save(rules, memo)
        files[n] = {"iptables-save": dumps[n], "proxy-mode": "iptables\n"}
    return Simulation(objs, dumps, cidr, kube_version, notes, files=files, mode=mode)
