"""The lessons' window on the engine: the demo cluster, its nodes' rules, simulated clusters, and a model of a
pod's DNS resolver. Every answer a question checks comes from `explain()`, `trace()` or `simulate()` through
here, at run time. Pure: no UI, no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from svctrace.dataplane.iptables import Ruleset, load_ruleset
from svctrace.errors import InputError
from svctrace.explain import Explanation, Request, explain
from svctrace.kubeproxy.recover import names_service
from svctrace.kubeproxy.simulate import Simulation, objects_of, simulate
from svctrace.model.cluster import Service, parse_cluster
from svctrace.model.snapshot import NodeFiles, Snapshot, load_snapshot

CLUSTER_DOMAIN = "cluster.local"
NDOTS = 5


# -- the demo cluster ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def demo() -> Snapshot:
    return load_snapshot("demo")


_SNAPSHOTS: dict[str, Snapshot] = {}  # "learn:NAME" -> a simulated cluster (see simulated())


def snapshot(name: str = "demo") -> Snapshot:
    return demo() if name == "demo" else _SNAPSHOTS[name]


def ask(target: str, *, snap: str = "demo", **kw: Any) -> Explanation:
    """explain() on the demo cluster (or on a simulated one, by name), cached: lessons and their questions ask
    the same things."""
    return _ask(snap, target, tuple(sorted(kw.items())))


@lru_cache(maxsize=256)
def _ask(snap: str, target: str, key: tuple[tuple[str, Any], ...]) -> Explanation:
    return explain(snapshot(snap), Request(target, **dict(key)))


def rules_of(node: str, snap: str = "demo") -> Ruleset:
    """A node's iptables-save from the snapshot, through the parser (the snapshot's parse, shared with explain)."""
    s = snapshot(snap)
    nf = s.nodes.get(node)
    if nf is None or nf.get("iptables-save") is None:
        raise InputError(f"no iptables-save for node {node}", source=s.source)
    return nf.parsed("iptables-save", load_ruleset)


def chain_lines(rs: Ruleset, table: str, chain: str) -> list[str]:
    """Every rule of a chain, as the dump has it."""
    c = rs.chain(table, chain)
    return [r.text for r in c.rules] if c is not None else []


def lines_mentioning(rs: Ruleset, key: str, table: str | None = None) -> list[str]:
    """The rules whose comment names a Service (`default/web`) or a Service port (`default/web:http`), in
    the dump's order (tables as the dump has them)."""
    return [r.text for c in rs.iter_chains() if table is None or c.table == table
            for r in c.rules if names_service(r.comment, key, anywhere=True)]


def count_service_rules(rs: Ruleset, key: str, table: str | None = None) -> int:
    """How many rules kube-proxy wrote for a Service or a Service port (their comments name it)."""
    return len(lines_mentioning(rs, key, table))


def path_lines(exp: Explanation, *, tables: tuple[str, ...] = ("nat", "filter"),
               chains: tuple[str, ...] = ("KUBE-",)) -> list[str]:
    """The distinct rules the walk went through: chains in the order first met, each chain's rules in its order."""
    order: dict[tuple[str, str], dict[int, str]] = {}
    for o in exp.outcomes:
        for st in o.path:
            if st.table in tables and st.chain.startswith(chains) and st.rule is not None:
                order.setdefault((st.table, st.chain), {})[st.rule] = st.text
    return [text for rules in order.values() for _, text in sorted(rules.items())]


# -- simulated clusters -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulated:
    name: str  # what ask(snap=...) and rules_of(snap=...) take
    sim: Simulation
    snap: Snapshot


@lru_cache(maxsize=8)
def simulated(name: str, yaml_text: str) -> Simulated:
    """simulate() on a lesson's YAML, and the result as an in-memory snapshot that explain() can read."""
    import yaml

    objs = objects_of([d for d in yaml.safe_load_all(yaml_text) if d is not None])
    sim = simulate(objs)
    source = f"learn:{name}"
    cluster = parse_cluster({"apiVersion": "v1", "kind": "List", "items": sim.objects}, source)
    if cluster.proxy.cluster_cidr is None and sim.cluster_cidr:
        cluster.proxy.cluster_cidr = sim.cluster_cidr
        cluster.proxy.sources["cluster_cidr"] = "simulate"
    if cluster.proxy.mode is None:
        cluster.proxy.mode = "iptables"
    nodes = {n: NodeFiles(n, {"iptables-save": d, "proxy-mode": "iptables\n"}, source) for n, d in sim.dumps.items()}
    snap = Snapshot(source, cluster, {"proxy_mode": "iptables"}, nodes)
    _SNAPSHOTS[source] = snap
    return Simulated(source, sim, snap)


def sim_object(s: Simulated, kind: str, name: str) -> dict[str, Any]:
    for o in s.sim.objects:
        if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name:
            return o
    raise KeyError(f"{kind} {name} not in the simulation")


# -- reading an explanation ---------------------------------------------------------------------------------

def pct(p: float) -> str:
    """A probability the way explain prints it: 33.3%, 50.0%, 100%, 0%."""
    if p >= 0.9995:
        return "100%"
    if p <= 0.0005:
        return "0%"
    return f"{p * 100:.1f}%"


def hops_for(exp: Explanation, endpoint: str | None = None) -> list[str]:
    """The explanation's hop sentences; with `endpoint`, the shared ones and that endpoint's bullet only."""
    out: list[str] = []
    for h in exp.hops:
        bullet = h.lstrip().startswith("•")
        if not bullet or endpoint is None or f"endpoint {endpoint} " in h or f"endpoint {endpoint}." in h:
            out.append(h.strip())
    return out


def diagnostics_text(exp: Explanation, *codes: str) -> list[str]:
    return [f"{d.code}: {d.message}" for d in exp.diagnostics if not codes or d.code in codes]


def fate(exp: Explanation) -> str:
    """What happens to the packet, in one word: dnat, reject, drop, nowhere, dns (no rules: DNS only)."""
    if not exp.outcomes:
        return "dns"
    verdicts = {o.verdict for o in exp.outcomes}
    if verdicts == {"reject"}:
        return "reject"
    if verdicts == {"drop"}:
        return "drop"
    if verdicts == {"accept"} and all(o.endpoint is None for o in exp.outcomes):
        return "nowhere"
    if verdicts == {"accept"}:
        return "dnat"
    return "mixed"


FATE_WORDS = {
    "nowhere": "No rule matches it: it leaves untranslated towards an address no host owns, and times out",
    "reject": "kube-proxy REJECTs it: the client gets 'connection refused' at once",
    "drop": "This node DROPs it: the client waits and times out",
    "dns": "Nothing: kube-proxy has no rule for it, only DNS answers",
}


def dnat_words(endpoints: list[tuple[str, str | None]], masquerade: bool) -> str:
    """`DNAT to one of 3 endpoints (pods on node01, node02); ...` from (endpoint, its node) pairs."""
    if len(endpoints) == 1:
        ep, node = endpoints[0]
        to = f"DNAT to {ep} " + (f"(a pod on {node})" if node else "(not a pod)")
    else:
        nodes = sorted({n for _, n in endpoints if n})
        outside = any(n is None for _, n in endpoints)
        where = ", ".join(nodes) + (" and outside the pod network" if outside else "")
        to = f"DNAT to one of {len(endpoints)} endpoints (pods on {where})"
    src = "source masqueraded to the node's address" if masquerade else "client source address kept"
    return f"{to}; {src}"


def _endpoints(exp: Explanation) -> list[tuple[str, str | None]]:
    pairs = {(o.endpoint, o.endpoint_node if o.pod else None) for o in exp.outcomes if o.endpoint}
    return sorted(pairs, key=lambda t: t[0])


def fate_words(exp: Explanation) -> str:
    """The packet's fate as one of the options the verdict questions offer."""
    f = fate(exp)
    if f == "dnat":
        return dnat_words(_endpoints(exp), any(o.masquerade for o in exp.outcomes))
    return FATE_WORDS.get(f, "Part of it is accepted, part dropped or rejected")


def fate_distractors(exp: Explanation, receiving_node: str | None = None, snap: str = "demo") -> list[str]:
    """Wrong answers from the same data: the other fates, the DNAT with the other masquerade, only the receiving
    node's pods, or (when nothing is translated) the pods the selector picks."""
    out: list[str] = []
    eps = _endpoints(exp)
    masq = any(o.masquerade for o in exp.outcomes)
    if eps:
        out.append(dnat_words(eps, not masq))
        if receiving_node is not None:
            local = [e for e in eps if e[1] == receiving_node]
            if local and len(local) < len(eps):
                out.append(dnat_words(local, masq))
    elif exp.service.selector:
        pods = [p for p in snapshot(snap).cluster.selected_pods(exp.service) if p.ips]
        if pods:
            out.append(dnat_words(sorted((p.ips[0], p.node_name) for p in pods), False))
    out += [FATE_WORDS[f] for f in ("reject", "drop", "nowhere", "dns")]
    return out


# -- a pod's resolver, as /etc/resolv.conf makes it work ----------------------------------------------------

def search_domains(namespace: str) -> list[str]:
    """What the kubelet writes in a pod's resolv.conf `search` line (dnsPolicy ClusterFirst)."""
    return [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]


def dns_queries(name: str, namespace: str, ndots: int = NDOTS) -> list[str]:
    """The names the resolver asks for, in order: with fewer than `ndots` dots it tries the search domains
    first, then the name as it is; a name ending in a dot is absolute and asked alone."""
    if name.endswith("."):
        return [name]
    tried = [f"{name}.{d}." for d in search_domains(namespace)]
    return [f"{name}.", *tried] if name.count(".") >= ndots else [*tried, f"{name}."]


_SVC_RECORD = re.compile(rf"^(?P<svc>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                         rf"\.svc\.{re.escape(CLUSTER_DOMAIN)}\.$")


@dataclass(frozen=True)
class DnsAnswer:
    query: str
    service: Service
    rtype: str  # A or CNAME
    values: tuple[str, ...]


def dns_answer(query: str, snap: str = "demo") -> DnsAnswer | None:
    """What cluster DNS answers for one fully qualified query: a Service's record, or None (NXDOMAIN).
    Which Service a name means, and its address, come from explain()."""
    if not _SVC_RECORD.match(query):
        return None
    try:
        exp = ask(query.rstrip("."), snap=snap)
    except InputError:
        return None
    svc = exp.service
    if svc.type == "ExternalName":
        return DnsAnswer(query, svc, "CNAME", (svc.external_name or "",))
    if exp.destination.get("ip"):
        return DnsAnswer(query, svc, "A", (str(exp.destination["ip"]),))
    cluster = snapshot(snap).cluster
    ips = [a for s in cluster.slices_for(svc) for e in s.endpoints if e.ready for a in e.addresses]
    return DnsAnswer(query, svc, "A", tuple(ips))


def resolve(name: str, namespace: str, snap: str = "demo") -> DnsAnswer | None:
    """The first answer the resolver gets for `name` in a pod of `namespace`."""
    for q in dns_queries(name, namespace):
        a = dns_answer(q, snap)
        if a is not None:
            return a
    return None


def resolv_conf(namespace: str, snap: str = "demo") -> list[str]:
    """A pod's /etc/resolv.conf: the nameserver is kube-dns's cluster IP (asked of explain())."""
    ns_ip = ask("kube-dns.kube-system.svc.cluster.local", snap=snap, port="dns").destination["ip"]
    return [f"search {' '.join(search_domains(namespace))}", f"nameserver {ns_ip}", f"options ndots:{NDOTS}"]
