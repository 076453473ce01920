"""IPVS against a real kernel: node cases, the VM script that builds them, and the agreement with svctrace.

A *node case* is one node's kube-proxy IPVS state (the `ipvsadm -Sn`, `ipset save` and `iptables-save` svctrace's
own `generate_ipvs` writes for a cluster, sometimes edited the way an operator would: other weights, another
scheduler) and the probes to send. In the VM (tests/vmlab) every case gets its own node network namespace::

    client ns (cli) --eth0/c0-- node ns (the rules, kube-ipvs0) --bJ/eth0-- one ns per endpoint address

* the node: the node IP on eth0, every ClusterIP / external / LB address on the dummy `kube-ipvs0` (down, as
  kube-proxy leaves it), `ip_forward=1`, `net.ipv4.vs.conntrack=1` (kube-proxy sets both), ICMP rate limit off;
  a /32 route to each client source via eth0 and to each endpoint via its own veth; `vmprobe serve 22` as a
  host process listening on every address (kubernetes#72236);
* each endpoint namespace owns the endpoint address and runs `vmprobe serve` on its target ports: every
  connection is answered with the address:port it reached and the source it saw (masquerade or not);
* the client namespace owns every client source (pod sources in the cluster CIDR, off-cluster sources).

A probe sends N TCP connections (or UDP datagrams, or one ping) from each of its sources, from the client
namespace, from the node itself, or from an endpoint's namespace (hairpin). svctrace walks the same packet
through the same three files (`trace_ipvs`); `compare` says whether the kernel's tally fits the prediction.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.ipvs import load_ipvs
from svctrace.kubeproxy.config import ProxyConfig
from svctrace.kubeproxy.render.ipvs import IPVSRules, generate_ipvs
from svctrace.kubeproxy.walk import trace_ipvs
from svctrace.model.packet import NodeFacts, Packet

NODE_A, NODE_B, NODE_C = "node-a", "node-b", "node-c"
NODE_IP = "192.168.5.10"
CLUSTER_CIDR = "10.244.0.0/16"
POD = "10.244.1.99"  # a pod on this node (inside the cluster CIDR)
OUTSIDE = "203.0.113.7"  # an off-cluster client
STRANGER = "192.0.2.9"  # an off-cluster client outside the LB source range
N = 24  # connections per source: a multiple of every cycle length used (1, 2, 3, 4, 6, 8, 12, 24)


def svc(
    name: str, spec: dict[str, Any], status: dict[str, Any] | None = None, ns: str = "web"
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    if status:
        obj["status"] = status
    return obj


def ep(ip: str, node: str, **cond: bool) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": cond}


def eps(
    name: str,
    endpoints: list[dict[str, Any]],
    port: int,
    proto: str = "TCP",
    port_name: str = "",
    ns: str = "web",
    slice_name: str | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name or f"{name}-abcde",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": proto}],
    }


@dataclass
class Probe:
    id: str
    what: str  # what it tests, for the table
    proto: str  # tcp | udp | icmp
    dst: str
    port: int | None
    srcs: list[str]
    where: str = "cli"  # cli | node | an endpoint address (its namespace: hairpin)
    n: int = N


@dataclass
class NodeCase:
    name: str
    rules: IPVSRules | None  # None: an IPVS table alone (a wild listing), with no iptables rules or ipsets
    probes: list[Probe]
    scheduler: str = "rr"
    ipvsadm: str = ""  # the ipvsadm -Sn restored and traced (rules.ipvsadm_save() unless edited)
    iptables: str = ""
    ipset: str = ""
    kube_version: str | None = None  # what svctrace is told (None: read from the dump alone)
    node_ip: str = NODE_IP  # on eth0, towards the clients
    node_extra: tuple[str, ...] = ()  # more node addresses (a docker0, a tunnel), on a dummy `host0`
    vip_list: tuple[str, ...] = ()  # the kube-ipvs0 addresses when there are no rules to take them from

    def __post_init__(self) -> None:
        if self.rules is not None:
            self.ipvsadm = self.ipvsadm or self.rules.ipvsadm_save()
            self.iptables = self.iptables or self.rules.iptables_save()
            self.ipset = self.ipset or self.rules.ipset_save()

    def node_addresses(self) -> set[str]:
        return {self.node_ip, *self.node_extra}

    def endpoints(self) -> dict[str, set[int]]:
        """Every real server address that is not the node's (each gets a namespace) and the ports it serves."""
        out: dict[str, set[int]] = {}
        for m in re.finditer(r"-r (\d+\.\d+\.\d+\.\d+):(\d+)", self.ipvsadm):
            if m.group(1) not in self.node_addresses():
                out.setdefault(m.group(1), set()).add(int(m.group(2)))
        return out

    def node_ports(self) -> set[int]:
        """The ports of real servers on the node itself (a host process listens there)."""
        return {
            int(m.group(2))
            for m in re.finditer(r"-r (\d+\.\d+\.\d+\.\d+):(\d+)", self.ipvsadm)
            if m.group(1) in self.node_addresses()
        }

    def vips(self) -> list[str]:
        if self.rules is None:
            return list(self.vip_list)
        return [a.split("/")[0] for a in self.rules.kube_ipvs0_addresses()]


# --------------------------------------------------------------------------- the VM script

_PRELUDE = r"""set -u
t() { echo "T $1 $(cut -d' ' -f1 /proc/uptime)"; }
"""


def script(cases: list[NodeCase]) -> tuple[str, dict[str, str]]:
    """The VM script for every case, and the files it reads. Few processes: under TCG every exec of a dynamic
    binary costs tens of milliseconds, so links, addresses and routes go through `ip -batch` (one per namespace)
    and all probes through one `vmprobe batch`."""
    files: dict[str, str] = {}
    root: list[str] = []  # ip -batch in the VM's own namespace: namespaces and veth pairs
    per_ns: dict[str, list[str]] = {}  # ip -n NS -batch
    # ICMP errors are limited per destination (icmp_ratelimit, per namespace) and globally (icmp_msgs_per_sec and
    # _burst, one budget for the VM): every REJECT and every "no destination" must answer.
    sh: list[str] = [
        _PRELUDE,
        "t start",
        "echo 1000000 > /proc/sys/net/ipv4/icmp_msgs_per_sec",
        "echo 1000000 > /proc/sys/net/ipv4/icmp_msgs_burst",
        "/sbin/ip -batch root.ip || echo 'ERROR ip -batch root.ip'",
    ]
    probes: list[str] = []
    for i, case in enumerate(cases):
        node, cli, shared = f"c{i}n", f"c{i}cli", f"c{i}b"
        files[f"case{i}.ipvsadm"] = case.ipvsadm
        files[f"case{i}.ipset"] = case.ipset
        files[f"case{i}.iptables"] = case.iptables
        sources = sorted({s for p in case.probes if p.where == "cli" for s in p.srcs})
        eps = case.endpoints()
        hairpin = sorted({p.where for p in case.probes if p.where in eps})
        spaces = {shared: sorted(a for a in eps if a not in hairpin)} | {
            f"c{i}h{k}": [a] for k, a in enumerate(hairpin)
        }
        root += [f"netns add {n}" for n in (node, cli, *spaces)]
        root.append(f"link add eth0 netns {node} type veth peer name c0 netns {cli}")
        nb = per_ns.setdefault(
            node, ["link set lo up", f"addr add {case.node_ip}/24 dev eth0", "link set eth0 up"]
        )
        cb = per_ns.setdefault(
            cli,
            [
                "link set lo up",
                "link set c0 up",
                f"route add {case.node_ip}/32 dev c0",
                f"route add default via {case.node_ip} dev c0",
            ],
        )
        for s in sources:
            cb.append(f"addr add {s}/32 dev c0")
            nb.append(f"route add {s}/32 dev eth0")
        # kube-ipvs0 after eth0, as on a node (MASQUERADE picks the first universe address of the first device).
        if case.node_extra:
            nb += ["link add host0 type dummy", "link set host0 up"]
            nb += [f"addr add {a}/32 dev host0" for a in case.node_extra if not a.startswith("127.")]
        nb.append("link add kube-ipvs0 type dummy")
        nb += [f"addr add {v}/32 dev kube-ipvs0" for v in case.vips()]
        for j, (ns, addrs) in enumerate(spaces.items()):
            if not addrs:
                continue
            root.append(f"link add b{j} netns {node} type veth peer name eth0 netns {ns}")
            nb += [f"addr add 169.254.0.1/32 dev b{j} scope link", f"link set b{j} up"]
            nb += [f"route add {a}/32 dev b{j}" for a in addrs]
            per_ns[ns] = [
                "link set lo up",
                *(f"addr add {a}/32 dev eth0" for a in addrs),
                "link set eth0 up",
                "route add 169.254.0.1/32 dev eth0",
                "route add default via 169.254.0.1",
            ]
            ports = sorted({p for a in addrs for p in eps[a]})
            sh.append(f"vmprobe -n {ns} serve {' '.join(map(str, ports))} >/dev/null 2>&1 &")
        sh.append(
            f"vmprobe -n {node} serve {' '.join(map(str, sorted({22} | case.node_ports())))} >/dev/null 2>&1 &"
        )
        for p in case.probes:
            ns = {"cli": cli, "node": node}.get(p.where) or f"c{i}h{hairpin.index(p.where)}"
            for s in p.srcs:
                if p.proto == "icmp":
                    probes.append(f"{i}:{p.id} {ns} ping {s} {p.dst}")
                else:
                    probes.append(f"{i}:{p.id} {ns} {p.proto} {s} {p.dst} {p.port} {p.n}")
    files["root.ip"] = "\n".join(root) + "\n"
    for ns, lines in per_ns.items():
        files[f"{ns}.ip"] = "\n".join(lines) + "\n"
    sh.append("t links")
    for ns in per_ns:
        sh.append(f"/sbin/ip -n {ns} -batch {ns}.ip || echo 'ERROR ip -batch {ns}.ip'")
    sh.append("t addresses")
    sysctls = (
        "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv4/vs/conntrack; "
        "echo 0 > /proc/sys/net/ipv4/icmp_ratelimit; echo 0 > /proc/sys/net/ipv4/icmp_ratemask; echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter; "
        "echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter"
    )
    for i in range(len(cases)):
        node = f"c{i}n"
        rules = (
            f"ipset restore < case{i}.ipset || echo ERROR ipset restore {i}; "
            f"iptables-restore < case{i}.iptables || echo ERROR iptables-restore {i}; "
            if cases[i].rules is not None
            else ""
        )
        sh += [
            f"/sbin/ip netns exec {node} sh -c '{sysctls}; {rules}ipvsadm -R < case{i}.ipvsadm || echo ERROR ipvsadm -R {i}'"
        ]
    sh += ["t rules", "sleep 0.3", "vmprobe batch probes.txt", "t probes"]
    # The kernel's own listing of every case, for svctrace's `ipvsadm -Ln` reader (listings(), same_table()).
    for i in range(len(cases)):
        sh += [f"echo 'LN {i}'", f"/sbin/ip netns exec c{i}n ipvsadm -Ln", "echo 'LN END'"]
    sh.append("echo END")
    files["probes.txt"] = "\n".join(probes) + "\n"
    return "\n".join(sh) + "\n", files


def listings(text: str) -> dict[int, str]:
    """The `ipvsadm -Ln` the kernel printed for each case after the probes."""
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^LN (\d+)\n(.*?)^LN END$", text, re.M | re.S)}


def table_facts(text: str) -> list[tuple[Any, ...]]:
    """What svctrace reads from a listing that decides a walk: each virtual service and its real servers."""
    table = load_ipvs(text, "ipvsadm")
    # A listing whose last virtual service has no real server reads like one cut there: svctrace says so.
    honest = table.services and not table.services[-1].reals
    assert [w for w in table.warnings if not (honest and w.code == "truncated")] == [], table.warnings
    return sorted(
        (
            v.protocol,
            str(v.ip),
            v.port,
            v.scheduler,
            v.persistent,
            tuple(sorted(v.flags)),
            tuple(sorted((str(r.ip), r.port, r.weight, r.forward) for r in v.reals)),
        )
        for v in table.services
    )


def parse_output(text: str) -> tuple[dict[tuple[int, str], dict[str, Counter[str]]], list[str]]:
    """(case, probe id) -> source -> tally of answers; and the ERROR lines."""
    out: dict[tuple[int, str], dict[str, Counter[str]]] = {}
    errors: list[str] = []
    cur: Counter[str] | None = None
    for line in text.splitlines():
        if line.startswith("ERROR") or "can't" in line or "RTNETLINK" in line:
            errors.append(line)
        m = re.match(r"P (\d+):(\S+) (\S+)$", line)
        if m:
            cur = out.setdefault((int(m.group(1)), m.group(2)), {}).setdefault(m.group(3), Counter())
            continue
        if line.startswith(("T ", "END")):
            cur = None
            continue
        if cur is None:
            continue
        m = re.match(r"(\d+) (.*)$", line)
        if m and not line.startswith(("reply", "unreach", "timeout")):
            cur[m.group(2)] += int(m.group(1))
        elif line in ("reply", "timeout") or line.startswith("unreach"):
            cur[line] += 1
    return out, errors


# --------------------------------------------------------------------------- svctrace's prediction


@dataclass(frozen=True)
class Fate:
    """One outcome as the kernel lab can see it."""

    kind: str  # backend | node | reject | drop
    backend: str | None = None  # ip:port
    masquerade: bool | None = None

    def text(self) -> str:
        if self.kind == "backend":
            return (
                f"{self.backend}{' masq' if self.masquerade else ' masq?' if self.masquerade is None else ''}"
            )
        return self.kind


def kernel_fate(answer: str, src: str, endpoints: Any) -> Fate:
    """`endpoints`: every real server address (a local one too: the node's own socket answered for it)."""
    if answer.startswith("ok "):
        local, peer = answer[3:].split()
        lip = local.rsplit(":", 1)[0]
        if lip in endpoints:
            return Fate("backend", local, peer.rsplit(":", 1)[0] != src)
        return Fate("node")
    if answer == "reply":
        return Fate("node")
    if answer in ("refused", "unreach", "eperm refused") or answer.startswith("unreach "):
        return Fate("reject")
    if answer in ("timeout", "eperm"):  # eperm: a netfilter drop on the sender's own output path
        return Fate("drop")
    return Fate(f"?{answer}")


@dataclass
class Prediction:
    fates: dict[Fate, float]  # share of each fate
    certain: bool
    snat: set[str] = field(default_factory=set)


def predict(case: NodeCase, p: Probe, src: str) -> Prediction:
    table = load_ipvs(case.ipvsadm, "ipvsadm")
    rs = load_ruleset(case.iptables, "iptables-save") if case.rules is not None else None
    sets, _ = parse_ipset(case.ipset)
    node = NodeFacts.make(local_ips=[*sorted(case.node_addresses()), *case.vips()], ipsets=sets)
    origin = {"origin": "local"} if p.where == "node" else {}
    pkt = Packet.make(
        src=src, dst=p.dst, dport=p.port, proto=p.proto, sport=40000 if p.port else None, **origin
    )
    r = trace_ipvs(table, rs, pkt, node, kube_version=case.kube_version)
    fates: dict[Fate, float] = {}
    certain = True
    snat: set[str] = set()
    for o in r.outcomes:
        certain = certain and o.certain
        if o.verdict == "accept" and o.dnat is not None and o.dnat.addr is not None:
            f = Fate("backend", str(o.dnat), o.masquerade)
        elif o.verdict == "accept":
            f = Fate("node" if o.delivery == "local" else "forward")
        else:
            f = Fate(o.verdict)
        if o.snat:
            snat.add(o.snat)
        fates[f] = fates.get(f, 0) + o.probability
    return Prediction(fates, certain, snat)


# --------------------------------------------------------------------------- agreement


@dataclass
class Row:
    case: str
    scheduler: str
    probe: Probe
    predicted: str
    kernel: str
    agree: bool
    why: str = ""


def _share_text(shares: dict[Fate, float]) -> str:
    return ", ".join(f"{f.text()} {v:.3g}" for f, v in sorted(shares.items(), key=lambda kv: kv[0].text()))


def compare(case: NodeCase, p: Probe, tallies: dict[str, Counter[str]]) -> Row:
    """Does the kernel's tally fit svctrace's prediction?

    * every fate the kernel showed is one svctrace predicts (backend, masquerade, reject, drop, the node);
    * a certain prediction (rr, wrr, a single fate) must match the counts exactly: over N connections (a multiple
      of the cycle) round robin gives each real server exactly N x its share;
    * an uncertain one (sh, lc, ...: "which one depends on the hash / the counts") must hold its stated claim:
      shares within the predicted set, and for sh and persistent services one real server per client.
    """
    eps = set(case.endpoints()) | {r for r in case.node_addresses() if f"-r {r}:" in case.ipvsadm}
    pred: dict[Fate, float] = {}
    certain = True
    head = next(
        (
            line
            for line in case.ipvsadm.splitlines()
            if line.startswith("-A") and f" {p.dst}:{p.port} " in f"{line} "
        ),
        "",
    )
    # Persistence, and sh/mh without the -port flag (kube-proxy writes `-b mh-port` for mh): one real server per
    # client address.
    sticky_claim = " -p " in head or (case.scheduler in ("sh", "mh") and "-port" not in head)
    # From the node's own address, a masquerade to that address changes nothing the backend can see.
    blind = p.where == "node" and all(s in case.node_addresses() for s in p.srcs)
    per_src: dict[str, Counter[Fate]] = {}
    snat_pred: set[str] = set()  # the masquerade addresses svctrace names (when it names them)
    snat_seen: set[str] = set()  # the sources the backends saw for masqueraded connections
    for s in p.srcs:
        pr = predict(case, p, s)
        certain = certain and pr.certain
        snat_pred |= pr.snat
        for ans in tallies.get(s, Counter()):
            if ans.startswith("ok ") and kernel_fate(ans, s, eps).masquerade:
                snat_seen.add(ans.split()[2].rsplit(":", 1)[0])
        for f, v in pr.fates.items():
            if blind and f.kind == "backend":
                f = Fate(f.kind, f.backend, None)
            pred[f] = pred.get(f, 0) + v / len(p.srcs)
        c: Counter[Fate] = Counter()
        for ans, k in tallies.get(s, Counter()).items():
            f = kernel_fate(ans, s, eps)
            c[Fate(f.kind, f.backend, None) if blind and f.kind == "backend" else f] += k
        per_src[s] = c
    total: Counter[Fate] = sum(per_src.values(), Counter())
    n = sum(total.values())
    kernel_text = ", ".join(f"{f.text()} {k}" for f, k in sorted(total.items(), key=lambda kv: kv[0].text()))
    row = Row(
        case.name,
        case.scheduler,
        p,
        _share_text(pred) + ("" if certain else " (uncertain)"),
        kernel_text or "nothing",
        True,
    )
    want_n = p.n * len(p.srcs) if p.proto != "icmp" else len(p.srcs)
    if n != want_n:
        row.agree, row.why = False, f"{n} answers of {want_n}"
        return row
    extra = [f for f in total if pred.get(f, 0) <= 0]
    if extra:
        row.agree, row.why = False, f"not predicted: {', '.join(f.text() for f in extra)}"
        return row
    if snat_seen:
        row.kernel += f" (masquerade to {', '.join(sorted(snat_seen))})"
    if snat_pred and not snat_seen <= snat_pred:
        row.agree, row.why = (
            False,
            f"masqueraded to {', '.join(sorted(snat_seen))}, svctrace says {snat_pred}",
        )
        return row
    if sticky_claim and p.proto != "icmp":
        loose = [s for s, c in per_src.items() if len(c) > 1]
        if loose:
            row.agree, row.why = False, f"{len(loose)} client(s) reached several real servers"
            return row
    # rr and wrr are sequences: over a multiple of the cycle each real server gets exactly N x its share, whatever
    # else the prediction is unsure of.
    deterministic = not sticky_claim and case.scheduler in ("rr", "wrr")
    if deterministic or len(pred) == 1:
        for f, share in pred.items():
            want = share * n
            if abs(total.get(f, 0) - want) > (0.5 if abs(want - round(want)) < 1e-9 else 1):
                row.agree, row.why = False, f"{f.text()}: {total.get(f, 0)} of {n}, predicted {want:g}"
                return row
    elif not certain:
        # The claim is over many connections (lc) or many clients (sh, persistence): no fate predicted with a
        # share may be missing when there were enough draws to see it.
        clients = len(p.srcs) if sticky_claim else n
        missing = [f for f, share in pred.items() if share * clients >= 6 and total.get(f, 0) == 0]
        if missing:
            row.agree, row.why = False, f"never seen: {', '.join(f.text() for f in missing)}"
    return row


# --------------------------------------------------------------------------- the fixed cases


def _fixed_cluster() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    services = [
        svc("web", {"clusterIP": "10.96.0.20", "ports": [{"port": 80, "targetPort": 8080}]}),
        svc(
            "shop",
            {"type": "NodePort", "clusterIP": "10.96.0.21", "ports": [{"port": 80, "nodePort": 30080}]},
        ),
        svc(
            "lb",
            {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.22",
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
                "ports": [{"port": 443, "nodePort": 30443}],
            },
            {"loadBalancer": {"ingress": [{"ip": "198.51.100.22"}]}},
        ),
        svc(
            "local",
            {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.23",
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000,
                "ports": [{"port": 80, "nodePort": 30081}],
            },
            {"loadBalancer": {"ingress": [{"ip": "198.51.100.23"}]}},
        ),
        svc(
            "sticky",
            {
                "clusterIP": "10.96.0.24",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "ports": [{"port": 80}],
            },
        ),
        svc(
            "empty",
            {
                "clusterIP": "10.96.0.25",
                "ports": [{"name": "t", "port": 80}, {"name": "u", "port": 53, "protocol": "UDP"}],
            },
        ),
        svc("rolling", {"clusterIP": "10.96.0.26", "ports": [{"port": 80}]}),
        svc(
            "dns",
            {
                "clusterIP": "10.96.0.10",
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
            ns="kube-system",
        ),
        svc(
            "ext",
            {
                "type": "NodePort",
                "clusterIP": "10.96.0.27",
                "externalTrafficPolicy": "Local",
                "externalIPs": ["203.0.113.50"],
                "ports": [{"port": 8443, "nodePort": 30843}],
            },
        ),
        svc("four", {"clusterIP": "10.96.0.29", "ports": [{"port": 80, "targetPort": 9000}]}),
    ]
    slices = [
        eps("web", [ep("10.244.1.11", NODE_A), ep("10.244.2.12", NODE_B), ep("10.244.3.13", NODE_C)], 8080),
        eps("shop", [ep("10.244.2.31", NODE_B), ep("10.244.3.32", NODE_C)], 8080),
        eps("lb", [ep("10.244.1.41", NODE_A), ep("10.244.2.42", NODE_B)], 8443),
        eps("local", [ep("10.244.1.21", NODE_A), ep("10.244.2.22", NODE_B)], 8080),
        eps("sticky", [ep("10.244.2.51", NODE_B), ep("10.244.3.52", NODE_C)], 80),
        eps("empty", [], 80),
        eps(
            "rolling",
            [
                ep("10.244.2.61", NODE_B),
                ep("10.244.3.62", NODE_C),
                ep("10.244.1.63", NODE_A, ready=False, serving=False, terminating=True),
            ],
            80,
        ),
        eps(
            "dns", [ep("10.244.1.53", NODE_A), ep("10.244.2.53", NODE_B)], 53, "UDP", "dns", ns="kube-system"
        ),
        eps(
            "dns",
            [ep("10.244.1.53", NODE_A), ep("10.244.2.53", NODE_B)],
            53,
            "TCP",
            "dns-tcp",
            ns="kube-system",
            slice_name="dns-tcp-xyz",
        ),
        eps("ext", [ep("10.244.2.71", NODE_B)], 8443),
        eps("four", [ep(f"10.244.{k}.9{k}", NODE_B) for k in range(1, 5)], 9000),
    ]
    return services, slices


CLIENTS = [f"10.244.7.{k}" for k in range(1, 13)]  # twelve pod clients (sh, persistence)


def fixed_cases() -> list[NodeCase]:
    services, slices = _fixed_cluster()
    cfg = ProxyConfig(NODE_A, (NODE_IP,), CLUSTER_CIDR)
    rr = generate_ipvs(services, slices, cfg)
    base = [
        Probe("cip-pod", "ClusterIP from a pod (rr, 3 endpoints)", "tcp", "10.96.0.20", 80, [POD]),
        Probe(
            "cip-node",
            "ClusterIP from the node (source: the node IP)",
            "tcp",
            "10.96.0.20",
            80,
            [NODE_IP],
            where="node",
        ),
        Probe(
            "cip-node-vip",
            "ClusterIP from the node (source: the ClusterIP, as the kernel picks)",
            "tcp",
            "10.96.0.20",
            80,
            ["10.96.0.20"],
            where="node",
        ),
        Probe(
            "cip-hairpin",
            "ClusterIP from its own endpoint (hairpin)",
            "tcp",
            "10.96.0.20",
            80,
            ["10.244.1.11"],
            where="10.244.1.11",
        ),
        Probe("cip-outside", "ClusterIP from off the cluster", "tcp", "10.96.0.20", 80, [OUTSIDE]),
        Probe("np-outside", "NodePort from outside", "tcp", NODE_IP, 30080, [OUTSIDE]),
        Probe("np-local", "NodePort, externalTrafficPolicy Local", "tcp", NODE_IP, 30081, [OUTSIDE]),
        Probe(
            "lb-in-range",
            "LoadBalancer IP from inside its source ranges",
            "tcp",
            "198.51.100.22",
            443,
            [OUTSIDE],
        ),
        Probe(
            "lb-out-of-range",
            "LoadBalancer IP from outside its source ranges",
            "tcp",
            "198.51.100.22",
            443,
            [STRANGER],
            n=2,
        ),
        Probe(
            "lb-local", "LoadBalancer IP, externalTrafficPolicy Local", "tcp", "198.51.100.23", 80, [OUTSIDE]
        ),
        Probe(
            "extip-local", "externalIP, externalTrafficPolicy Local", "tcp", "203.0.113.50", 8443, [OUTSIDE]
        ),
        Probe(
            "affinity", "sessionAffinity ClientIP (-p 600), 12 clients", "tcp", "10.96.0.24", 80, CLIENTS, n=4
        ),
        Probe("no-endpoints", "a Service without endpoints", "tcp", "10.96.0.25", 80, [POD], n=2),
        Probe("no-endpoints-udp", "a Service without endpoints (UDP)", "udp", "10.96.0.25", 53, [POD], n=2),
        Probe(
            "no-endpoints-node",
            "a Service without endpoints, from the node",
            "tcp",
            "10.96.0.25",
            80,
            ["10.96.0.25"],
            where="node",
            n=2,
        ),
        Probe(
            "no-endpoints-node-udp",
            "a Service without endpoints, from the node (UDP)",
            "udp",
            "10.96.0.25",
            53,
            ["10.96.0.25"],
            where="node",
            n=2,
        ),
        Probe("terminating", "a terminating endpoint (weight 0)", "tcp", "10.96.0.26", 80, [POD]),
        Probe("dns-udp", "UDP ClusterIP (rr per datagram)", "udp", "10.96.0.10", 53, [POD]),
        Probe("dns-tcp", "TCP on the same ClusterIP", "tcp", "10.96.0.10", 53, [POD]),
        Probe(
            "unserved",
            "a port the ClusterIP does not serve (host listens on :22)",
            "tcp",
            "10.96.0.20",
            22,
            [POD],
            n=2,
        ),
        Probe("ping-cip", "ping a ClusterIP", "icmp", "10.96.0.20", None, [POD]),
        Probe("ping-node", "ping the node IP", "icmp", NODE_IP, None, [OUTSIDE]),
    ]
    cases = [NodeCase("rr, kube-proxy 1.30", rr, base, kube_version="1.30")]
    # Before 1.26 there is no KUBE-IPVS-FILTER: the node itself answers a ping to a ClusterIP and a host
    # process is reachable on it (kubernetes#72236). Same rules without that chain; svctrace reads the dump only.
    old = "\n".join(line for line in rr.iptables_save().splitlines() if "KUBE-IPVS-FILTER" not in line) + "\n"
    cases.append(
        NodeCase(
            "rr, no KUBE-IPVS-FILTER (before 1.26)",
            rr,
            [
                Probe("ping-cip", "ping a ClusterIP", "icmp", "10.96.0.20", None, [POD]),
                Probe(
                    "unserved",
                    "a port the ClusterIP does not serve (host listens on :22)",
                    "tcp",
                    "10.96.0.20",
                    22,
                    [POD],
                    n=2,
                ),
                Probe("cip-pod", "ClusterIP from a pod", "tcp", "10.96.0.20", 80, [POD]),
            ],
            iptables=old,
        )
    )
    # wrr with the weights an operator set by hand (kube-proxy writes 1): shares follow the weights.
    wrr = generate_ipvs(services, slices, ProxyConfig(NODE_A, (NODE_IP,), CLUSTER_CIDR, scheduler="wrr"))
    weights = {"10.244.1.91:9000": 1, "10.244.2.92:9000": 2, "10.244.3.93:9000": 3, "10.244.4.94:9000": 6}
    text = wrr.ipvsadm_save()
    for real, w in weights.items():
        text = re.sub(rf"(-r {re.escape(real)} -m) -w 1", rf"\1 -w {w}", text)
    cases.append(
        NodeCase(
            "wrr, weights 1/2/3/6",
            wrr,
            [
                Probe("wrr-weights", "wrr, 4 endpoints weighted 1:2:3:6", "tcp", "10.96.0.29", 80, [POD]),
                Probe("wrr-equal", "wrr, 3 endpoints of weight 1", "tcp", "10.96.0.20", 80, [POD]),
                Probe("wrr-np", "wrr NodePort from outside", "tcp", NODE_IP, 30080, [OUTSIDE]),
            ],
            scheduler="wrr",
            ipvsadm=text,
        )
    )
    for sched in ("sh", "lc", "mh"):
        r = generate_ipvs(services, slices, ProxyConfig(NODE_A, (NODE_IP,), CLUSTER_CIDR, scheduler=sched))
        cases.append(
            NodeCase(
                f"{sched}",
                r,
                [
                    Probe(
                        f"{sched}-clients",
                        f"{sched}, 4 endpoints, 12 pod clients",
                        "tcp",
                        "10.96.0.29",
                        80,
                        CLIENTS,
                        n=4,
                    ),
                    Probe(
                        f"{sched}-one", f"{sched}, 3 endpoints, one client", "tcp", "10.96.0.20", 80, [POD]
                    ),
                    Probe(
                        f"{sched}-affinity",
                        f"{sched} + sessionAffinity, 12 clients",
                        "tcp",
                        "10.96.0.24",
                        80,
                        CLIENTS,
                        n=4,
                    ),
                    Probe(
                        f"{sched}-terminating",
                        f"{sched}, 2 endpoints + 1 terminating (weight 0), 12 clients",
                        "tcp",
                        "10.96.0.26",
                        80,
                        CLIENTS,
                        n=4,
                    ),
                ],
                scheduler=sched,
            )
        )
    return cases


# --------------------------------------------------------------------------- random clusters


def random_case(seed: int, idx: int = 0) -> NodeCase:
    """A random cluster in kube-proxy's IPVS mode (random kinds, policies, affinity, endpoints, scheduler, version,
    masqueradeAll and cluster CIDR), with probes to every Service address from random places: a pod, off the
    cluster, outside a source range, the node itself, the Service's own endpoint (hairpin); pings and a port
    the Service does not serve."""
    rnd = random.Random(seed * 1000 + idx)
    sched = rnd.choice(["rr", "rr", "wrr", "lc", "sh"])
    services: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    probes: list[Probe] = []
    used_np: set[int] = set()
    host = 1
    for k in range(rnd.randint(2, 5)):
        name = f"s{k}"
        cip = f"10.96.{idx}.{10 + k}"
        port = rnd.choice([80, 443, 8080, 5000 + k])
        target = rnd.choice([port, 8080, 9000 + k])
        proto = "UDP" if rnd.random() < 0.2 else "TCP"
        typ = rnd.choice(["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"])
        spec: dict[str, Any] = {
            "clusterIP": cip,
            "type": typ,
            "ports": [{"port": port, "targetPort": target, "protocol": proto}],
        }
        status = None
        ext_ip = f"203.0.113.{50 + k}" if rnd.random() < 0.2 else None
        if ext_ip:
            spec["externalIPs"] = [ext_ip]
        local = (typ != "ClusterIP" or ext_ip) and rnd.random() < 0.35
        if local:
            spec["externalTrafficPolicy"] = "Local"
        if rnd.random() < 0.2:
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": rnd.choice([60, 10800])}}
        np = None
        if typ != "ClusterIP":
            np = 30000 + rnd.randrange(0, 2767)
            while np in used_np:
                np += 1
            used_np.add(np)
            spec["ports"][0]["nodePort"] = np
        lb = None
        if typ == "LoadBalancer":
            lb = f"198.51.{100 + idx % 50}.{10 + k}"
            status = {"loadBalancer": {"ingress": [{"ip": lb}]}}
            if rnd.random() < 0.5:
                spec["loadBalancerSourceRanges"] = ["203.0.113.0/24"]
        services.append(svc(name, spec, status))
        endpoints = []
        for _ in range(rnd.choice([0, 1, 2, 3, 4, 4])):
            node = rnd.choice([NODE_A, NODE_B, NODE_C])
            cond = {} if rnd.random() < 0.85 else {"ready": False, "serving": False, "terminating": True}
            endpoints.append(ep(f"10.244.{10 + idx % 200}.{host}", node, **cond))
            host += 1
        slices.append(eps(name, endpoints, target, proto))
        aff = "sessionAffinity" in spec
        many = aff or sched == "sh"
        l4 = proto.lower()
        addrs = [("cip", cip, port), ("np", NODE_IP, np), ("lb", lb, port), ("ext", ext_ip, port)]
        for kind, dst, dport in addrs:
            if dst is None or dport is None:
                continue
            froms = ["pod", "outside"] + (
                ["stranger"] if kind == "lb" and "loadBalancerSourceRanges" in spec else []
            )
            froms += [f for f in ("node", "hairpin") if rnd.random() < 0.3]
            for frm in froms:
                pid = f"{name}-{kind}-{frm}"
                # Only off-cluster clients are in the source range: every other connection waits out a timeout
                # (a dropped SYN), so a few are enough.
                fenced = kind == "lb" and "loadBalancerSourceRanges" in spec and frm != "outside"
                what = (
                    f"{typ}{' Local' if local else ''}{' affinity' if aff else ''} {kind} from {frm} ({l4})"
                )
                if frm == "hairpin":
                    # Only a pod on this node sends through this node; one elsewhere that this node sent back to
                    # itself unmasqueraded would answer itself and never reach its peer (the kernel lab saw it).
                    mine = [e["addresses"][0] for e in endpoints if e["nodeName"] == NODE_A]
                    if not mine:
                        continue
                    me = mine[0]
                    probes.append(
                        Probe(pid, what, l4, dst, dport, [me], where=me, n=2 if fenced else 6 if many else N)
                    )
                elif frm == "node":
                    src = NODE_IP if kind == "np" else dst  # the kernel's choice: the local address itself
                    probes.append(
                        Probe(
                            pid,
                            what,
                            l4,
                            dst,
                            dport,
                            [src],
                            where="node",
                            n=2 if fenced else 6 if many else N,
                        )
                    )
                elif frm == "stranger":
                    probes.append(Probe(pid, what, l4, dst, dport, [STRANGER], n=1))
                elif fenced:
                    probes.append(Probe(pid, what, l4, dst, dport, [POD], n=2))
                elif many and frm == "pod":
                    probes.append(Probe(pid, what, l4, dst, dport, CLIENTS[:8], n=3))
                else:
                    probes.append(
                        Probe(
                            pid, what, l4, dst, dport, [POD if frm == "pod" else OUTSIDE], n=6 if many else N
                        )
                    )
            if kind != "np" and rnd.random() < 0.25:
                probes.append(
                    Probe(f"{name}-{kind}-ping", f"ping the {kind} address", "icmp", dst, None, [POD])
                )
        if rnd.random() < 0.2:
            probes.append(
                Probe(
                    f"{name}-unserved",
                    "a port the ClusterIP does not serve (host listens on :22)",
                    "tcp",
                    cip,
                    22,
                    [POD],
                    n=2,
                )
            )
    cfg = ProxyConfig(
        NODE_A,
        (NODE_IP,),
        CLUSTER_CIDR if rnd.random() < 0.85 else None,
        scheduler=sched,
        kube_version=rnd.choice(["1.26", "1.28", "1.30"]),
        masquerade_all=rnd.random() < 0.2,
    )
    rules = generate_ipvs(services, slices, cfg)
    text = rules.ipvsadm_save()
    if sched == "wrr":
        text = re.sub(r"-m -w 1\b", lambda _m: f"-m -w {rnd.choice([1, 2, 3])}", text)
    # Probe counts must be multiples of the cycle: wrr's cycle is the sum of the weights.
    case = NodeCase(
        f"random {seed}/{idx} ({sched}, {cfg.kube_version}"
        f"{', masqueradeAll' if cfg.masquerade_all else ''}{', no cluster CIDR' if cfg.cluster_cidr is None else ''})",
        rules,
        probes,
        scheduler=sched,
        ipvsadm=text,
        kube_version=cfg.kube_version,
    )
    if sched == "wrr":
        for p in case.probes:
            if p.n == N and p.proto != "icmp":
                p.n = _wrr_cycle(text, p) or N
    return case


def _wrr_cycle(text: str, p: Probe) -> int | None:
    """The sum of the weights of the virtual server a probe reaches (wrr's cycle, times 2)."""
    target = f"{p.dst}:{p.port}"
    ws = [int(m.group(1)) for m in re.finditer(rf"-a -[tu] {re.escape(target)} -r \S+ -m -w (\d+)", text)]
    return 2 * sum(ws) if sum(ws) else None


def markdown(rows: list[Row]) -> str:
    out = ["| case | probe | svctrace predicts | the kernel did | agree |", "|---|---|---|---|---|"]
    for r in rows:
        verdict = "yes" if r.agree else f"**no**: {r.why}"
        out.append(f"| {r.case} | {r.probe.what} | {r.predicted} | {r.kernel} | {verdict} |")
    return "\n".join(out) + "\n"


def addresses_valid(case: NodeCase) -> bool:
    return all(ipaddress.ip_address(a).version == 4 for a in case.endpoints())


# --------------------------------------------------------------------------- a wild listing

WILD_001 = "ipvsadm/001-ipvs-v1.20-calico-nodeports.txt"


def save_form(listing: str) -> str:
    """An `ipvsadm -Ln` listing as the `ipvsadm -R` input that rebuilds it (read with svctrace's reader; the
    kernel's own listing of the result is compared back in test_vm_ipvs)."""
    flag = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
    method = {"Masq": "-m", "Route": "-g", "Tunnel": "-i", "Local": "-m"}
    out: list[str] = []
    for v in load_ipvs(listing, "ipvsadm").services:
        head = f"-A {flag[v.protocol]} {v.address} -s {v.scheduler or 'rr'}"
        out.append(head + (f" -p {v.persistent}" if v.persistent is not None else ""))
        out += [
            f"-a {flag[v.protocol]} {v.address} -r {r.endpoint} {method[r.forward or 'Masq']} -w {r.weight}"
            for r in v.reals
        ]
    return "\n".join(out) + "\n"


def wild_case(corpus: Any) -> NodeCase:
    """A listing from the wild (kube-proxy 1.20 with Calico): its NodePorts on 127.0.0.1, docker0 and Calico's
    tunnel address, the apiserver as a real server on the node itself; no iptables rules or ipsets with it."""
    text = save_form((corpus / WILD_001).read_text())
    node_ip, extra = "192.168.188.61", ("172.17.0.1", "10.244.235.192", "127.0.0.1")
    vips = sorted(
        {m.group(1) for m in re.finditer(r"-A -[tu] (\d+\.\d+\.\d+\.\d+):", text)} - {node_ip, *extra}
    )
    pod = "10.244.235.200"  # a pod on this node
    probes = [
        Probe(
            "w-apiserver",
            "kubernetes ClusterIP -> the apiserver on the node itself",
            "tcp",
            "10.96.0.1",
            443,
            [pod],
        ),
        Probe("w-dns", "DNS ClusterIP, 2 endpoints", "udp", "10.96.0.10", 53, [pod]),
        Probe("w-np-node-ip", "NodePort on the node IP, from outside", "tcp", node_ip, 30355, [OUTSIDE]),
        Probe(
            "w-np-docker0",
            "NodePort on docker0's address, from the node",
            "tcp",
            "172.17.0.1",
            30355,
            ["172.17.0.1"],
            where="node",
        ),
        Probe(
            "w-np-tunl0",
            "NodePort on Calico's tunnel address, from a pod",
            "tcp",
            "10.244.235.192",
            31356,
            [pod],
        ),
        Probe(
            "w-np-loopback",
            "NodePort on 127.0.0.1, from the node (kubernetes#96879)",
            "tcp",
            "127.0.0.1",
            30355,
            ["127.0.0.1"],
            where="node",
            n=2,
        ),
        Probe(
            "w-ping", "ping a ClusterIP (no KUBE-IPVS-FILTER in 1.20)", "icmp", "10.104.67.53", None, [pod]
        ),
    ]
    return NodeCase(
        f"wild {WILD_001.split('/')[1][:3]} (1.20, ipvsadm only)",
        None,
        probes,
        ipvsadm=text,
        node_ip=node_ip,
        node_extra=extra,
        vip_list=tuple(vips),
    )
