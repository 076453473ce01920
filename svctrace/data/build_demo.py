"""Build the bundled demo snapshot (`--snapshot demo`): a three-node kubeadm teaching cluster.

    python -m svctrace.data.build_demo svctrace/data/demo

The objects are written as `kubectl get -o json` prints them; each node's `iptables-save` is what
kube-proxy v1.30 (iptables mode) programs for them (svctrace.kubeproxy.render.iptables), in the canonical
form iptables 1.8.9 prints after loading. A test rebuilds it and compares with the committed files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

KUBE_VERSION = "v1.33.2"
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
NODES = {  # name: (InternalIP, podCIDR, zone)
    "controlplane": ("192.168.56.10", "10.244.0.0/24", "zone-a"),
    "node01": ("192.168.56.11", "10.244.1.0/24", "zone-a"),
    "node02": ("192.168.56.12", "10.244.2.0/24", "zone-b"),
    "node03": ("192.168.56.13", "10.244.3.0/24", "zone-b"),
    "node04": ("192.168.56.14", "10.244.4.0/24", "zone-a"),
}
# kube-proxy's mode per node: the cluster runs iptables mode; node03 runs IPVS mode and node04 nftables mode
# (separate kube-proxy DaemonSets select them), so one demo shows the three dataplanes for the same Services.
MODES = {"node03": "ipvs", "node04": "nftables"}
UID = 0


def _uid() -> str:
    global UID
    UID += 1
    return f"00000000-0000-4000-8000-{UID:012d}"


def meta(name: str, ns: str | None = "default", labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    m: Obj = {"name": name, "uid": _uid(), "creationTimestamp": "2026-11-20T09:00:00Z"}
    if ns is not None:
        m["namespace"] = ns
    if labels:
        m["labels"] = labels
    m.update(extra)
    return m


def node(name: str) -> Obj:
    ip, cidr, zone = NODES[name]
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": zone}
    if name == "controlplane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": meta(name, None, labels),
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]} | (
            {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}
            if name == "controlplane" else {}),
        "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "nodeInfo": {"kubeletVersion": KUBE_VERSION, "kubeProxyVersion": KUBE_VERSION}},
    }


def pod(name: str, ns: str, labels: dict[str, str], node_name: str, ip: str, ports: list[tuple[str, int, str]],
        ready: bool = True, host_network: bool = False, image: str = "nginx:1.27") -> Obj:
    cports = [{"containerPort": p, "protocol": proto} | ({"name": n} if n else {}) for n, p, proto in ports]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta(name, ns, labels),
        "spec": {"nodeName": node_name, "hostNetwork": host_network,
                 "containers": [{"name": name.rsplit("-", 2)[0] if "-" in name else name, "image": image,
                                 "ports": cports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": NODES[node_name][0],
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def service(name: str, ns: str, ports: list[Obj], selector: dict[str, str] | None, cluster_ip: str | None,
            svc_type: str = "ClusterIP", **spec_extra: Any) -> Obj:
    spec: Obj = {"type": svc_type, "ports": ports, "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
        spec["clusterIPs"] = [cluster_ip]
    if selector is not None:
        spec["selector"] = selector
    if svc_type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    spec.update(spec_extra)
    status: Obj = {"loadBalancer": {}}
    if "lb_ip" in spec:
        status = {"loadBalancer": {"ingress": [{"ip": spec.pop("lb_ip"), "ipMode": "VIP"}]}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, ns), "spec": spec, "status": status}


def slice_for(svc: str, ns: str, ports: list[tuple[str, int, str]], endpoints: list[Obj], suffix: str = "x7k2p",
              managed: bool = True) -> Obj:
    labels = {"kubernetes.io/service-name": svc}
    if managed:
        labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": meta(f"{svc}-{suffix}", ns, labels), "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def ep(ip: str, node_name: str | None, pod_name: str | None, ns: str = "default", ready: bool = True,
       serving: bool | None = None, terminating: bool = False) -> Obj:
    e: Obj = {"addresses": [ip], "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                                                 "terminating": terminating}}
    if node_name:
        e["nodeName"] = node_name
        e["zone"] = NODES[node_name][2]
    if pod_name:
        e["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": ns}
    return e


def objects() -> list[Obj]:
    global UID
    UID = 0
    o: list[Obj] = [node(n) for n in NODES]
    # -- pods ------------------------------------------------------------------------------
    dns_ports = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    o += [
        pod("coredns-7db6d8ff4d-4xkq9", "kube-system", {"k8s-app": "kube-dns"}, "controlplane", "10.244.0.2",
            dns_ports, image="registry.k8s.io/coredns/coredns:v1.11.1"),
        pod("coredns-7db6d8ff4d-p8w2m", "kube-system", {"k8s-app": "kube-dns"}, "controlplane", "10.244.0.3",
            dns_ports, image="registry.k8s.io/coredns/coredns:v1.11.1"),
        pod("web-6d4f9c7b8-2lqzx", "default", {"app": "web"}, "node01", "10.244.1.10", [("http-web", 8080, "TCP")]),
        pod("web-6d4f9c7b8-9ctrw", "default", {"app": "web"}, "node02", "10.244.2.10", [("http-web", 8080, "TCP")]),
        pod("web-6d4f9c7b8-kx5vd", "default", {"app": "web"}, "node02", "10.244.2.11", [("http-web", 8080, "TCP")]),
        pod("session-5b7c9d6f4-h2m8n", "default", {"app": "session"}, "node01", "10.244.1.20",
            [("", 5000, "TCP")], image="python:3.12"),
        pod("session-5b7c9d6f4-q4z7t", "default", {"app": "session"}, "node02", "10.244.2.20",
            [("", 5000, "TCP")], image="python:3.12"),
        pod("frontend-7f8b9c5d6-w9xj2", "default", {"app": "frontend"}, "node01", "10.244.1.30",
            [("http", 80, "TCP")]),
        pod("db-0", "default", {"app": "db"}, "node02", "10.244.2.30", [("postgres", 5432, "TCP")],
            image="postgres:16"),
        pod("payments-84c5d7f9b-t6r2k", "default", {"app": "payments", "tier": "backend"}, "node01", "10.244.1.40",
            [("", 8443, "TCP")], image="payments:2.3"),
        pod("slow-start-6f9d8b7c5-b8v4n", "default", {"app": "slow-start"}, "node01", "10.244.1.60",
            [("", 8080, "TCP")], ready=False, image="slow:1.0"),
        pod("slow-start-6f9d8b7c5-z2k9m", "default", {"app": "slow-start"}, "node02", "10.244.2.60",
            [("", 8080, "TCP")], ready=False, image="slow:1.0"),
        pod("client", "default", {"run": "client"}, "node01", "10.244.1.50", [], image="busybox:1.36"),
    ]
    # -- services and their endpoints ---------------------------------------------------------
    o += [
        service("kubernetes", "default", [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
                None, "10.96.0.1"),
        slice_for("kubernetes", "default", [("https", 6443, "TCP")], [ep("192.168.56.10", None, None)],
                  suffix="", managed=False) | {"metadata": meta("kubernetes", "default",
                                                                {"kubernetes.io/service-name": "kubernetes"})},
        service("kube-dns", "kube-system",
                [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                 {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                 {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}],
                {"k8s-app": "kube-dns"}, "10.96.0.10"),
        slice_for("kube-dns", "kube-system", dns_ports,
                  [ep("10.244.0.2", "controlplane", "coredns-7db6d8ff4d-4xkq9", "kube-system"),
                   ep("10.244.0.3", "controlplane", "coredns-7db6d8ff4d-p8w2m", "kube-system")], suffix="m4q8z"),
        service("web", "default", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http-web"}],
                {"app": "web"}, "10.96.10.10"),
        slice_for("web", "default", [("http", 8080, "TCP")],
                  [ep("10.244.1.10", "node01", "web-6d4f9c7b8-2lqzx"), ep("10.244.2.10", "node02", "web-6d4f9c7b8-9ctrw"),
                   ep("10.244.2.11", "node02", "web-6d4f9c7b8-kx5vd")], suffix="b9w2c"),
        service("web-nodeport", "default",
                [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}],
                {"app": "web"}, "10.96.10.11", "NodePort"),
        slice_for("web-nodeport", "default", [("http", 8080, "TCP")],
                  [ep("10.244.1.10", "node01", "web-6d4f9c7b8-2lqzx"), ep("10.244.2.10", "node02", "web-6d4f9c7b8-9ctrw"),
                   ep("10.244.2.11", "node02", "web-6d4f9c7b8-kx5vd")], suffix="h3j8d"),
        service("session", "default", [{"name": "", "port": 5000, "protocol": "TCP", "targetPort": 5000}],
                {"app": "session"}, "10.96.20.20", sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}}),
        slice_for("session", "default", [("", 5000, "TCP")],
                  [ep("10.244.1.20", "node01", "session-5b7c9d6f4-h2m8n"),
                   ep("10.244.2.20", "node02", "session-5b7c9d6f4-q4z7t")], suffix="p2n6v"),
        service("frontend", "default",
                [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80, "nodePort": 31080}],
                {"app": "frontend"}, "10.96.30.30", "LoadBalancer", externalTrafficPolicy="Local",
                healthCheckNodePort=32000, loadBalancerSourceRanges=["192.168.56.0/24"], lb_ip="192.168.56.200"),
        slice_for("frontend", "default", [("http", 80, "TCP")],
                  [ep("10.244.1.30", "node01", "frontend-7f8b9c5d6-w9xj2")], suffix="r7t5k"),
        service("db", "default", [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
                {"app": "db"}, "None"),
        slice_for("db", "default", [("postgres", 5432, "TCP")], [ep("10.244.2.30", "node02", "db-0")],
                  suffix="f8d2s") | {"metadata": meta("db-f8d2s", "default", {
                      "kubernetes.io/service-name": "db", "service.kubernetes.io/headless": "",
                      "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})},
        service("weather-api", "default", [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 443}],
                None, None, "ExternalName", externalName="api.weather.example.com"),
        service("legacy-db", "default", [{"name": "mysql", "port": 3306, "protocol": "TCP", "targetPort": 3306}],
                None, "10.96.40.40"),
        slice_for("legacy-db", "default", [("mysql", 3306, "TCP")], [ep("192.168.56.50", None, None)],
                  suffix="manual", managed=False),
        service("payment", "default", [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 8443}],
                {"app": "payment"}, "10.96.50.50"),
        slice_for("payment", "default", [], [], suffix="q2w9e"),
        service("slow-start", "default", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                {"app": "slow-start"}, "10.96.60.60"),
        slice_for("slow-start", "default", [("http", 8080, "TCP")],
                  [ep("10.244.1.60", "node01", "slow-start-6f9d8b7c5-b8v4n", ready=False),
                   ep("10.244.2.60", "node02", "slow-start-6f9d8b7c5-z2k9m", ready=False)], suffix="n5c3x"),
    ]
    # -- kube-proxy ------------------------------------------------------------------------------
    conf = ("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
            f"clusterCIDR: {CLUSTER_CIDR}\nmode: \"iptables\"\niptables:\n  masqueradeAll: false\n"
            "  masqueradeBit: null\n  minSyncPeriod: 1s\n  syncPeriod: 30s\nnodePortAddresses: null\n")
    o.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("kube-proxy", "kube-system"),
              "data": {"config.conf": conf}})
    o.append({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("kube-proxy", "kube-system"),
              "spec": {"template": {"spec": {"containers": [{
                  "name": "kube-proxy", "image": f"registry.k8s.io/kube-proxy:{KUBE_VERSION}",
                  "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf",
                              "--hostname-override=$(NODE_NAME)"]}]}}}})
    return o


def node_dump(objs: list[Obj], name: str) -> str:
    """What kube-proxy (iptables mode) programs on node `name`, as iptables-save prints it."""
    from svctrace.kubeproxy.config import ProxyConfig
    from svctrace.kubeproxy.render.iptables import generate, to_save

    ip = NODES[name][0]
    kinds = _kinds(objs)
    cfg = ProxyConfig(node_name=name, node_ips=(ip,), cluster_cidr=CLUSTER_CIDR, kube_version=KUBE_VERSION.lstrip("v"),
                      kubelet_rules=True)
    rules = generate(kinds.get("Service", []), kinds.get("EndpointSlice", []), cfg, nodes=kinds.get("Node", []))
    return to_save(rules)


def _kinds(objs: list[Obj]) -> dict[str, list[Obj]]:
    kinds: dict[str, list[Obj]] = {}
    for o in objs:
        kinds.setdefault(o["kind"], []).append(o)
    return kinds


def node_files(objs: list[Obj], name: str) -> dict[str, str]:
    """The node's files in the bundle, in the node's kube-proxy mode."""
    from svctrace.kubeproxy.config import ProxyConfig

    mode = MODES.get(name, "iptables")
    if mode == "ipvs":
        from svctrace.kubeproxy.render.ipvs import generate_ipvs

        kinds = _kinds(objs)
        cfg = ProxyConfig(node_name=name, node_ips=(NODES[name][0],), cluster_cidr=CLUSTER_CIDR,
                          kube_version=KUBE_VERSION.lstrip("v"))
        return generate_ipvs(kinds.get("Service", []), kinds.get("EndpointSlice", []), cfg,
                             nodes=kinds.get("Node", [])).snapshot_files()
    if mode == "nftables":
        from svctrace.kubeproxy.render.nft import generate_nft

        kinds = _kinds(objs)
        ncfg = ProxyConfig(node_name=name, node_ips=(NODES[name][0],), cluster_cidr=CLUSTER_CIDR,
                         kube_version=KUBE_VERSION.lstrip("v"), service_cidrs=(SERVICE_CIDR,))
        return generate_nft(kinds.get("Service", []), kinds.get("EndpointSlice", []), ncfg,
                            nodes=kinds.get("Node", [])).snapshot_files()
    return {"iptables-save": node_dump(objs, name), "proxy-mode": "iptables\n"}


def files() -> dict[str, str]:
    """The bundle as {relative path: text}."""
    objs = objects()
    doc = {"apiVersion": "v1", "kind": "List", "items": objs, "metadata": {"resourceVersion": ""}}
    meta_doc = {"format": "svctrace-snapshot/1", "collected_at": "2026-11-20T10:00:00Z", "svctrace": "demo",
                "context": "demo-kubeadm", "server_version": KUBE_VERSION, "proxy_mode": "iptables",
                "cluster_cidr": CLUSTER_CIDR, "service_cidr": SERVICE_CIDR,
                "nodes": {n: {"transport": "demo", "backend": "nft", "ok": True, "proxy_mode": MODES.get(n, "iptables")}
                          for n in NODES}}
    out = {"cluster.json": json.dumps(doc, indent=2) + "\n", "meta.json": json.dumps(meta_doc, indent=2) + "\n"}
    for name in NODES:
        for fname, text in node_files(objs, name).items():
            out[f"nodes/{name}/{fname}"] = text
    return out


def build(out: Path) -> list[Path]:
    written = []
    for rel, text in files().items():
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        written.append(p)
    return written


if __name__ == "__main__":
    for p in build(Path(sys.argv[1] if len(sys.argv) > 1 else "svctrace/data/demo")):
        print(p)
