"""Purpose-built snapshots for the node around kube-proxy's rules (docs/node-path.md, tests/test_explain.py).

Each is the demo cluster with node01's kube-proxy rules and node01's network facts (sysctl, ip-addr.json,
ip-route.json, ip-rule.json, hairpin-mode, modules) as `svctrace collect` writes them, one thing broken per
snapshot. node01: eth0 192.168.56.11/24, the pod bridge cni0 10.244.1.1/24 (pods client 10.244.1.50 and
web-...-2lqzx 10.244.1.10 on it), routes to the other nodes' pod CIDRs via their InternalIPs.

    python tests/nodefacts.py            # rewrite tests/fixtures/nodefacts/*.tar.gz

A test rebuilds them and compares with the committed archives' contents.
"""

from __future__ import annotations

import copy
import io
import json
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from svctrace.data import build_demo

OUT = Path(__file__).resolve().parent / "fixtures" / "nodefacts"
NODE = "node01"

PORTS = ("veth1a2b3c", "veth4d5e6f", "veth7a8b9c")  # the pods' bridge ports on cni0


def _link(
    idx: int, name: str, addrs: list[tuple[str, int, str]], master: str | None = None
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ifindex": idx,
        "ifname": name,
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "operstate": "UP",
    }
    if master:
        d["master"] = master
    d["addr_info"] = [
        {"family": "inet", "local": ip, "prefixlen": plen, "scope": scope, "label": name}
        for ip, plen, scope in addrs
    ]
    return d


def addresses(eth1: bool = False) -> list[dict[str, Any]]:
    links = [_link(1, "lo", [("127.0.0.1", 8, "host")]), _link(2, "eth0", [("192.168.56.11", 24, "global")])]
    if eth1:
        links.append(_link(3, "eth1", [("172.16.0.11", 24, "global")]))
    links.append(_link(4, "cni0", [("10.244.1.1", 24, "global")]))
    links += [_link(5 + i, p, [], master="cni0") for i, p in enumerate(PORTS)]
    return links


def routes(eth1: bool = False, pod_routes: bool = True, default: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if default:
        out.append(
            {"dst": "default", "gateway": "192.168.56.1", "dev": "eth0", "protocol": "static", "flags": []}
        )
    if pod_routes:
        for name, (ip, cidr, _zone) in build_demo.NODES.items():
            if name != NODE:
                out.append({"dst": cidr, "gateway": ip, "dev": "eth0", "flags": ["onlink"]})
    out.append(
        {
            "dst": "10.244.1.0/24",
            "dev": "cni0",
            "protocol": "kernel",
            "scope": "link",
            "prefsrc": "10.244.1.1",
            "flags": [],
        }
    )
    if eth1:
        out.append(
            {
                "dst": "172.16.0.0/24",
                "dev": "eth1",
                "protocol": "kernel",
                "scope": "link",
                "prefsrc": "172.16.0.11",
                "flags": [],
            }
        )
    out.append(
        {
            "dst": "192.168.56.0/24",
            "dev": "eth0",
            "protocol": "kernel",
            "scope": "link",
            "prefsrc": "192.168.56.11",
            "flags": [],
        }
    )
    local = [("127.0.0.0/8", "lo"), ("127.0.0.1", "lo"), ("192.168.56.11", "eth0"), ("10.244.1.1", "cni0")]
    if eth1:
        local.append(("172.16.0.11", "eth1"))
    for dst, dev in local:
        out.append(
            {
                "type": "local",
                "dst": dst,
                "dev": dev,
                "table": "local",
                "protocol": "kernel",
                "scope": "host",
                "prefsrc": "127.0.0.1" if dev == "lo" else dst,
                "flags": [],
            }
        )
    return out


RULES = [
    {"priority": 0, "src": "all", "table": "local"},
    {"priority": 32766, "src": "all", "table": "main"},
    {"priority": 32767, "src": "all", "table": "default"},
]


def sysctl(
    ip_forward: int = 1,
    rp_filter: int = 0,
    route_localnet: int = 1,
    br_netfilter: bool = True,
    eth1: bool = False,
    conntrack_count: int = 212,
) -> str:
    devs = ["all", "default", "lo", "eth0", *(["eth1"] if eth1 else []), "cni0", *PORTS]
    lines = [f"net.ipv4.ip_forward = {ip_forward}", "net.ipv6.conf.all.forwarding = 0"]
    lines += [f"net.ipv4.conf.{d}.forwarding = {ip_forward}" for d in devs]
    lines += [f"net.ipv4.conf.{d}.route_localnet = {route_localnet if d == 'all' else 0}" for d in devs]
    lines += [f"net.ipv4.conf.{d}.rp_filter = {rp_filter if d in ('all', 'default') else 0}" for d in devs]
    if br_netfilter:
        lines += ["net.bridge.bridge-nf-call-iptables = 1", "net.bridge.bridge-nf-call-ip6tables = 1"]
    lines += [
        "net.netfilter.nf_conntrack_max = 131072",
        f"net.netfilter.nf_conntrack_count = {conntrack_count}",
        "net.netfilter.nf_conntrack_tcp_be_liberal = 0",
    ]
    return "\n".join(lines) + "\n"


def modules(br_netfilter: bool = True) -> str:
    mods = [("br_netfilter", "bridge"), ("bridge", ""), ("nf_conntrack", "nf_nat,xt_conntrack"), ("veth", "")]
    return "".join(
        f"{m} 32768 {1 if used else 0} {used or '-'}{',' if used else ''} Live 0x0000000000000000\n"
        for m, used in mods
        if br_netfilter or m != "br_netfilter"
    )


DOCKER_FORWARD = """\
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-USER -j RETURN
"""


def _docker(dump: str) -> str:
    """Docker on the node: FORWARD policy DROP and its chains (what dockerd writes at start)."""
    head, sep, rest = dump.partition("*filter\n")
    rest = rest.replace(
        ":FORWARD ACCEPT [0:0]\n", ":FORWARD DROP [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n", 1
    )
    i = rest.index("COMMIT\n")
    return head + sep + rest[:i] + DOCKER_FORWARD + rest[i:]


def _no_cluster_cidr(objs: list[dict[str, Any]]) -> str:
    """node01's rules from a kube-proxy without clusterCIDR (nor masqueradeAll): it masquerades no ClusterIP
    traffic from outside the cluster."""
    from svctrace.kubeproxy.config import ProxyConfig
    from svctrace.kubeproxy.render.iptables import generate, to_save

    kinds = build_demo._kinds(objs)
    cfg = ProxyConfig(
        node_name=NODE,
        node_ips=(build_demo.NODES[NODE][0],),
        cluster_cidr=None,
        kube_version=build_demo.KUBE_VERSION.lstrip("v"),
        kubelet_rules=True,
    )
    return to_save(
        generate(kinds.get("Service", []), kinds.get("EndpointSlice", []), cfg, nodes=kinds.get("Node", []))
    )


def _files(objs: list[dict[str, Any]], *, dump: str | None = None, **facts: Any) -> dict[str, str]:
    eth1 = facts.pop("eth1", False)
    hairpin = facts.pop("hairpin", 1)
    pod_routes = facts.pop("pod_routes", True)
    default = facts.pop("default", True)
    br = facts.get("br_netfilter", True)
    d = f"nodes/{NODE}/"
    return {
        "cluster.json": json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=1) + "\n",
        d + "iptables-save": dump if dump is not None else build_demo.node_dump(objs, NODE),
        d + "proxy-mode": "iptables",
        d + "sysctl": sysctl(eth1=eth1, **facts),
        d + "ip-addr.json": json.dumps(addresses(eth1)) + "\n",
        d + "ip-route.json": json.dumps(routes(eth1, pod_routes, default)) + "\n",
        d + "ip-rule.json": json.dumps(RULES) + "\n",
        d + "hairpin-mode": "".join(f"{p} {hairpin}\n" for p in PORTS),
        d + "modules": modules(br),
    }


def _objs(eth1: bool = False) -> list[dict[str, Any]]:
    objs = copy.deepcopy(build_demo.objects())
    if eth1:
        node = next(o for o in objs if o["kind"] == "Node" and o["metadata"]["name"] == NODE)
        node["status"]["addresses"].insert(1, {"type": "ExternalIP", "address": "172.16.0.11"})
    return objs


SCENARIOS: dict[str, Callable[[], dict[str, str]]] = {
    "healthy": lambda: _files(_objs()),
    "ip-forward-off": lambda: _files(_objs(), ip_forward=0),
    "forward-policy-drop": lambda: _files(_objs(), dump=_docker(build_demo.node_dump(_objs(), NODE))),
    "rp-filter-drop": lambda: _files(_objs(eth1=True), rp_filter=1, eth1=True),
    "no-route": lambda: _files(_objs(), pod_routes=False, default=False),
    "localhost-nodeport-martian": lambda: _files(_objs(), route_localnet=0),
    "reply-bypasses-conntrack": lambda: _files(_objs(), br_netfilter=False),
    "hairpin-mode-off": lambda: _files(_objs(), hairpin=0),
    "reply-asymmetric": lambda: _files(_objs(), dump=_no_cluster_cidr(_objs())),
    "conntrack-table-full": lambda: _files(_objs(), conntrack_count=131072),
    "reply-other-interface": lambda: _files(_objs(eth1=True), rp_filter=2, eth1=True),
}


def archive(files: dict[str, str]) -> bytes:
    """A .tar.gz with fixed metadata (no timestamps), so that rebuilding gives the same bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for rel, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    import gzip

    return gzip.compress(raw.getvalue(), mtime=0)


def build(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in SCENARIOS.items():
        p = out / f"{name}.tar.gz"
        p.write_bytes(archive(make()))
        written.append(p)
    return written


if __name__ == "__main__":
    for p in build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT):
        print(p)
