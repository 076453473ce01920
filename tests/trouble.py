"""The `trouble` snapshot (docs/examples/trouble): one purpose-built cluster holding a failure of every class
around kube-proxy's rules, for the docs' real output and the tests that provoke each diagnostic.

    python tests/trouble.py          # rewrite docs/examples/trouble

Three nodes of the demo (controlplane, node01, node02), Calico as the CNI (enforces NetworkPolicy), no
load-balancer controller, and:

* shop/web: port 80 -> named targetPort http (8080); NetworkPolicy shop/default-deny isolates every shop pod,
  shop/web-from-frontend allows role=frontend on port 80 (the Service's port: wrong after DNAT);
* shop/api: 80 -> 8080, shop/api-from-shop allows role=frontend pods of namespaces labelled team=shop;
* shop/cache: created after the frontend pod (no CACHE_SERVICE_HOST in it); shop/cache-from-shop allows the
  namespace's pods;
* other/client: egress only to kube-system on port 53; other/debug: no policy;
* default/store: LoadBalancer with no ingress address; default/store-nlb: a loadBalancerClass nobody serves;
* default/syslog: UDP port, targetPort named syslog, the pod declares syslog as TCP;
* default/db: headless, db-1 not ready; default/payments: ExternalName; default/cart: ClientIP affinity 600 s;
* default/node-agent: a host-network pod with dnsPolicy ClusterFirst;
* node01's conntrack: a UDP flow to kube-dns pinned to 10.244.0.9, a CoreDNS pod that has gone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from svctrace.data import build_demo as d  # noqa: E402
from svctrace.kubeproxy.simulate import endpoint_slices_for  # noqa: E402  (also for tests)

Obj = dict[str, Any]
OUT = REPO / "docs" / "examples" / "trouble"
NODES = ("controlplane", "node01", "node02")
EARLY, LATE = "2026-11-20T09:30:00Z", "2026-11-20T10:00:00Z"  # the demo's objects are made at 09:00

CONNTRACK_NODE01 = (
    "ipv4     2 udp      17 27 src=10.244.1.70 dst=10.96.0.10 sport=40123 dport=53 src=10.244.0.9 dst=10.244.1.70 "
    "sport=53 dport=40123 [ASSURED] mark=0 zone=0 use=1\n"
    "ipv4     2 udp      17 25 src=10.244.1.70 dst=10.96.0.10 sport=40999 dport=53 src=10.244.0.2 dst=10.244.1.70 "
    "sport=53 dport=40999 mark=0 zone=0 use=1\n"
    "ipv4     2 tcp      6 86390 ESTABLISHED src=10.244.1.20 dst=10.96.100.20 sport=51000 dport=80 src=10.244.2.20 "
    "dst=10.244.1.20 sport=8080 dport=51000 [ASSURED] mark=0 zone=0 use=1\n"
)


def namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": d.meta(name, None, {"kubernetes.io/metadata.name": name, **(labels or {})}),
    }


def policy(name: str, ns: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": d.meta(name, ns),
        "spec": spec,
    }


def pod(
    name: str,
    ns: str,
    labels: dict[str, str],
    node: str,
    ip: str,
    ports: list[tuple[str, int, str]],
    *,
    ready: bool = True,
    created: str | None = None,
    **spec: Any,
) -> Obj:
    p = d.pod(name, ns, labels, node, ip, ports, ready=ready)
    if created:
        p["metadata"]["creationTimestamp"] = created
    p["spec"].update(spec)
    return p


def service(
    name: str,
    ns: str,
    ports: list[Obj],
    selector: dict[str, str] | None,
    ip: str | None,
    svc_type: str = "ClusterIP",
    *,
    created: str | None = None,
    **extra: Any,
) -> Obj:
    s = d.service(name, ns, ports, selector, ip, svc_type, **extra)
    if created:
        s["metadata"]["creationTimestamp"] = created
    return s


def objects() -> list[Obj]:
    proxy = [
        x for x in d.objects() if x["kind"] in ("ConfigMap", "DaemonSet")
    ]  # kube-proxy's, as in the demo
    d.UID = 0
    o: list[Obj] = [d.node(n) for n in NODES] + proxy
    o += [
        namespace("default"),
        namespace("kube-system"),
        namespace("shop", {"team": "shop"}),
        namespace("other", {"team": "other"}),
    ]
    o.append(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": d.meta("calico-node", "kube-system"),
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "calico-node", "image": "docker.io/calico/node:v3.28.0"}]
                    }
                }
            },
        }
    )
    dns = [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")]
    pods = [
        pod("coredns-a", "kube-system", {"k8s-app": "kube-dns"}, "controlplane", "10.244.0.2", dns),
        pod("coredns-b", "kube-system", {"k8s-app": "kube-dns"}, "controlplane", "10.244.0.3", dns),
        pod("web-1", "shop", {"app": "web"}, "node01", "10.244.1.10", [("http", 8080, "TCP")]),
        pod("web-2", "shop", {"app": "web"}, "node02", "10.244.2.10", [("http", 8080, "TCP")]),
        pod("frontend", "shop", {"role": "frontend"}, "node01", "10.244.1.20", [], created=EARLY),
        pod("api-1", "shop", {"app": "api"}, "node02", "10.244.2.20", [("", 8080, "TCP")]),
        pod("cache-1", "shop", {"app": "cache"}, "node02", "10.244.2.70", [("redis", 6379, "TCP")]),
        pod("client", "other", {"run": "client"}, "node01", "10.244.1.70", []),
        pod("debug", "other", {"run": "debug"}, "node01", "10.244.1.71", []),
        pod("store-1", "default", {"app": "store"}, "node02", "10.244.2.30", [("", 8080, "TCP")]),
        pod("syslog-1", "default", {"app": "syslog"}, "node01", "10.244.1.40", [("syslog", 514, "TCP")]),
        pod("db-0", "default", {"app": "db"}, "node02", "10.244.2.50", [("pg", 5432, "TCP")]),
        pod("db-1", "default", {"app": "db"}, "node01", "10.244.1.50", [("pg", 5432, "TCP")], ready=False),
        pod("cart-1", "default", {"app": "cart"}, "node01", "10.244.1.60", [("", 8080, "TCP")]),
        pod("cart-2", "default", {"app": "cart"}, "node02", "10.244.2.60", [("", 8080, "TCP")]),
        pod(
            "node-agent",
            "default",
            {"app": "agent"},
            "node01",
            d.NODES["node01"][0],
            [],
            hostNetwork=True,
            dnsPolicy="ClusterFirst",
        ),
    ]
    o += pods
    tcp = "TCP"
    svcs = [
        service(
            "kube-dns",
            "kube-system",
            [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": tcp, "targetPort": 53},
            ],
            {"k8s-app": "kube-dns"},
            "10.96.0.10",
        ),
        service(
            "web",
            "shop",
            [{"name": "http", "port": 80, "protocol": tcp, "targetPort": "http"}],
            {"app": "web"},
            "10.96.100.10",
        ),
        service(
            "api",
            "shop",
            [{"name": "http", "port": 80, "protocol": tcp, "targetPort": 8080}],
            {"app": "api"},
            "10.96.100.20",
        ),
        service(
            "cache",
            "shop",
            [{"name": "redis", "port": 6379, "protocol": tcp, "targetPort": "redis"}],
            {"app": "cache"},
            "10.96.100.70",
            created=LATE,
        ),
        service(
            "store",
            "default",
            [{"name": "http", "port": 80, "protocol": tcp, "targetPort": 8080, "nodePort": 30300}],
            {"app": "store"},
            "10.96.100.30",
            "LoadBalancer",
        ),
        service(
            "store-nlb",
            "default",
            [{"name": "http", "port": 80, "protocol": tcp, "targetPort": 8080, "nodePort": 30301}],
            {"app": "store"},
            "10.96.100.31",
            "LoadBalancer",
            loadBalancerClass="service.k8s.aws/nlb",
        ),
        service(
            "syslog",
            "default",
            [{"name": "syslog", "port": 514, "protocol": "UDP", "targetPort": "syslog"}],
            {"app": "syslog"},
            "10.96.100.40",
        ),
        service(
            "db",
            "default",
            [{"name": "pg", "port": 5432, "protocol": tcp, "targetPort": 5432}],
            {"app": "db"},
            "None",
        ),
        service(
            "payments",
            "default",
            [{"name": "https", "port": 443, "protocol": tcp, "targetPort": 443}],
            None,
            None,
            "ExternalName",
            externalName="api.payments.example.com",
        ),
        service(
            "cart",
            "default",
            [{"name": "http", "port": 80, "protocol": tcp, "targetPort": 8080}],
            {"app": "cart"},
            "10.96.100.60",
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 600}},
        ),
    ]
    o += svcs
    for s in svcs:
        if s["spec"].get("selector"):
            for sl in endpoint_slices_for(s, pods):
                sl["metadata"]["name"] = sl["metadata"]["name"].replace("-sim", "-")
                o.append(sl)
    o += [
        policy("default-deny", "shop", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        policy(
            "web-from-frontend",
            "shop",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                        "ports": [{"protocol": tcp, "port": 80}],
                    }
                ],
            },
        ),
        policy(
            "api-from-shop",
            "shop",
            {
                "podSelector": {"matchLabels": {"app": "api"}},
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"team": "shop"}},
                                "podSelector": {
                                    "matchExpressions": [
                                        {"key": "role", "operator": "In", "values": ["frontend"]}
                                    ]
                                },
                            }
                        ],
                        "ports": [{"protocol": tcp, "port": 8080}],
                    }
                ],
            },
        ),
        policy(
            "cache-from-shop",
            "shop",
            {
                "podSelector": {"matchLabels": {"app": "cache"}},
                "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": "redis"}]}],
            },
        ),
        policy(
            "egress-dns-only",
            "other",
            {
                "podSelector": {"matchLabels": {"run": "client"}},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                }
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": tcp, "port": 53}],
                    }
                ],
            },
        ),
    ]
    return o


def files(objs: list[Obj] | None = None, conntrack: str = CONNTRACK_NODE01) -> dict[str, str]:
    objs = objects() if objs is None else objs
    doc = {"apiVersion": "v1", "kind": "List", "items": objs, "metadata": {"resourceVersion": ""}}
    out = {"cluster.json": json.dumps(doc, indent=1) + "\n"}
    for n in NODES:
        out[f"nodes/{n}/iptables-save"] = d.node_dump(objs, n)
    if conntrack:
        out["nodes/node01/conntrack"] = conntrack
    return out


def write(root: Path, objs: list[Obj] | None = None, conntrack: str = CONNTRACK_NODE01) -> Path:
    for rel, text in files(objs, conntrack).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


if __name__ == "__main__":
    import shutil

    shutil.rmtree(OUT, ignore_errors=True)
    write(OUT)
    print(OUT.relative_to(REPO))
