"""What the TUI shows, computed without Textual: the Service list, health marks, traces, comparisons.

A `Session` is opened on a snapshot bundle (`SnapshotSession`, answers come from `explain()`) or on a
single node's dump (`DumpSession`, Services are read from kube-proxy's rule comments and answers
come from `trace()`). Every method may be slow on a big cluster: the app calls them from thread
workers, never from the event loop.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from svctrace.browse.adapters import IPVS_TABLE, IPVSAdapter, NftAdapter
from svctrace.browse.check import (
    CheckReport,
    HealthRow,
    cluster_ip_text,
    endpoint_counts,
    snapshot_rows,
    sort_rows,
    summarize,
    worsen,
)
from svctrace.browse.data import TABLE_ORDER, ChainRef, IptablesAdapter, RulesAdapter, adapter_for, dataplanes
from svctrace.dataplane.contract import PathStep, TraceResult, visible_steps
from svctrace.dataplane.detect import detect_mode
from svctrace.dataplane.iptables import load_ruleset
from svctrace.errors import InputError, SvctraceError
from svctrace.explain import OUTSIDE_CLIENT, Diagnostic, Explanation, Request, explain
from svctrace.kubeproxy.names import ext_chain, fw_chain, nft_chain_owner, svc_chain, svl_chain
from svctrace.kubeproxy.recover import (
    RecoveredPort,
    RecoveredService,
    iptables_service_rules,
    ipvs_service_lines,
    nft_service_chain,
    nft_service_lines,
    recover_iptables,
    service_keys,
)
from svctrace.kubeproxy.walk import trace_iptables
from svctrace.model.cluster import Service
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import NodeFiles, Snapshot, decode_text, load_snapshot

VIA_LABELS = {"cluster-ip": "cluster IP", "node-port": "node port", "external-ip": "external IP",
              "load-balancer": "load balancer"}


@dataclass
class ServiceRow:
    key: str
    namespace: str
    name: str
    type: str
    cluster_ip: str
    ports: str
    endpoints: str
    health: str | None = None  # error / warning / ok / unknown; None while not yet checked
    health_note: str = ""  # the diagnostics' codes behind the mark

    @property
    def search_text(self) -> str:
        return f"{self.namespace}/{self.name} {self.type} {self.cluster_ip} {self.ports}".lower()


@dataclass(frozen=True)
class TraceRequest:
    service: str  # ns/name
    port: str | None = None  # name or number; None: the first
    via: str | None = None  # cluster-ip / node-port / external-ip / load-balancer
    source: str | None = None  # pod/NS/NAME, node/NAME, an IP; None: explain's default
    proto: str | None = None
    node: str | None = None  # the receiving node (outside sources)
    returning_client: bool = False


@dataclass(frozen=True)
class StepRef:
    hook: str
    table: str
    chain: str
    rule: int | None
    line: int | None
    action: str
    share: float | None = None  # the kernel's probability of this branch (statistic matches)


@dataclass
class OutcomeView:
    probability: float
    verdict: str
    certain: bool
    endpoint: str | None
    pod: str | None
    node: str | None
    masquerade: bool
    masquerade_reason: str | None
    reason: str
    path: list[StepRef]
    assumptions: list[str] = field(default_factory=list)
    nowhere: bool = False  # explain's ExplainedOutcome.nowhere: accepted, yet no answer comes


@dataclass
class TraceView:
    request: TraceRequest
    node: str | None  # whose rules decided
    header: list[tuple[str, str]]
    outcomes: list[OutcomeView]
    diagnostics: list[Diagnostic]
    hops: list[str]
    inferred: list[str]
    warnings: list[str]
    exit_code: int
    explanation: Explanation | None = None

    def signature(self) -> tuple[tuple[str, str | None, bool, int], ...]:
        """What a client sees, to tell whether two nodes answer alike."""
        return tuple(sorted((o.verdict, o.endpoint, o.masquerade, round(o.probability * 1000))
                            for o in self.outcomes))


@dataclass
class TraceOptions:
    ports: list[tuple[str, str]]
    vias: list[tuple[str, str]]
    sources: list[tuple[str, str]]
    protos: list[tuple[str, str]]
    nodes: list[tuple[str, str]]
    affinity: bool
    default: TraceRequest


@dataclass(frozen=True)
class NodeMode:
    node: str
    mode: str  # kube-proxy's mode, as far as the snapshot says
    dumps: tuple[str, ...]
    browser: str  # which adapter serves the chain browser, or why none does


@dataclass
class CompareLine:
    text: str
    side: str  # both / left / right


@dataclass
class Comparison:
    request: TraceRequest
    left: str
    right: str
    left_view: TraceView | None
    right_view: TraceView | None
    left_error: str | None
    right_error: str | None
    left_rules: list[CompareLine]
    right_rules: list[CompareLine]

    @property
    def differ(self) -> bool:
        if self.left_view is None or self.right_view is None:
            return True
        return self.left_view.signature() != self.right_view.signature()


def path_steps(path: list[PathStep]) -> list[StepRef]:
    """The hops that did something (as `svctrace trace` shows them), for the browser to light up."""
    return [StepRef(s.hook, s.table, s.chain, s.rule, s.line, s.action, s.branch) for s in visible_steps(path)]


def service_rules(adapter: RulesAdapter, key: str, svc: Service | None = None) -> list[str]:
    """The node's rules that belong to one Service, in the node's own syntax.

    iptables: the rules whose comment names it, and every rule of the per-Service chains
    (KUBE-SVC/SVL/EXT/FW/XLB/SEP) they lead to, as `table -A CHAIN ...` lines. nftables: the rules of its
    chains and the map elements that lead there, as `add rule` / `add element` commands. IPVS (needs
    the Service, whose addresses name the virtual servers): its virtual servers and real servers
    (`ipvsadm -S` lines), its ipset members, and the iptables rules that name it."""
    if isinstance(adapter, NftAdapter):
        return nft_service_lines(adapter.rs, key, adapter.tables())
    if isinstance(adapter, IPVSAdapter):
        lines = ipvs_service_lines(adapter.ipvs, adapter.ipsets, svc) if svc is not None else []
        return lines + (service_rules(adapter.iptables, key) if adapter.iptables is not None else [])
    if not isinstance(adapter, IptablesAdapter):
        return []
    return [f"{r.table:<6} {r.text}" for r in iptables_service_rules(adapter.rs, key, TABLE_ORDER)]


def resolve_service(rows: list[ServiceRow], text: str, namespaces: list[str | None]) -> str | None:
    """A Service key from `ns/name`, `svc/name`, `name` (in the first of `namespaces` that has it, else
    `default`), `name.ns[.svc...]`, or a name only one namespace has."""
    keys = {r.key for r in rows}
    t = text.strip()
    for kind in ("svc/", "service/", "services/"):  # kubectl's spellings of the resource
        if t.startswith(kind):
            t = t[len(kind):]
            break
    if t in keys:
        return t
    for cand_ns in [*namespaces, "default"]:
        if cand_ns and f"{cand_ns}/{t}" in keys:
            return f"{cand_ns}/{t}"
    if "." in t:
        name, _, rest = t.partition(".")
        key = f"{rest.split('.')[0]}/{name}"
        if key in keys:
            return key
    matches = [r.key for r in rows if r.name == t]
    return matches[0] if len(matches) == 1 else None


_COMMENT_MATCH = re.compile(r'\s-m comment --comment (?:"(?:[^"\\]|\\.)*"|\S+)')
_HOST32 = re.compile(r"(\d+\.\d+\.\d+\.\d+)/32\b")


def short_rule(line: str) -> str:
    """A `service_rules` line as side by side shows it: without its comment, `/32` and `-A`; nftables
    lines without the table (kube-proxy's) and without the hashes in kube-proxy's chain names."""
    s = _HOST32.sub(r"\1", _COMMENT_MATCH.sub("", line)).replace(" -A ", " ")
    words = s.split(" ", 4)
    if len(words) == 5 and words[0] == "add" and words[1] in ("rule", "element") and words[2] in ("ip", "ip6", "inet") \
            and words[3]:
        s = f"{words[1]} {words[4]}"
    return " ".join(_unhashed(w) for w in s.split(" "))


def _unhashed(word: str) -> str:
    n = nft_chain_owner(word)
    if n is None:
        return word
    return f"{n.kind}-{n.namespace}/{n.name}/{n.protocol}/{n.port_name}" + (f"__{n.endpoint}" if n.endpoint else "")


def diff_lines(left: list[str], right: list[str]) -> tuple[list[CompareLine], list[CompareLine]]:
    """Align two rule listings; lines only one side has are marked, the other side gets a gap."""
    a: list[CompareLine] = []
    b: list[CompareLine] = []
    sm = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            for x in left[i1:i2]:
                a.append(CompareLine(x, "both"))
                b.append(CompareLine(x, "both"))
            continue
        la, lb = left[i1:i2], right[j1:j2]
        for k in range(max(len(la), len(lb))):
            a.append(CompareLine(la[k], "left") if k < len(la) else CompareLine("", "gap"))
            b.append(CompareLine(lb[k], "right") if k < len(lb) else CompareLine("", "gap"))
    return a, b


class Session:
    """The common face of a snapshot and a single dump."""

    kind = "session"
    title = ""
    source = ""

    def __init__(self) -> None:
        self._adapters: dict[str, RulesAdapter] = {}
        self._lock = threading.Lock()

    # -- nodes and rules --
    def node_names(self) -> list[str]:
        raise NotImplementedError

    def default_node(self) -> str | None:
        names = self.node_names()
        return names[0] if names else None

    def node_modes(self) -> list[NodeMode]:
        raise NotImplementedError

    def node_mode(self, node: str) -> str | None:
        """kube-proxy's mode on the node, as the answers take it (None: the snapshot does not say)."""
        return None

    def _make_adapter(self, node: str) -> RulesAdapter:
        raise NotImplementedError

    def adapter(self, node: str) -> RulesAdapter:
        """The node's rules (parsed on first use: slow for a big dump, call from a worker)."""
        with self._lock:
            got = self._adapters.get(node)
            if got is None:
                got = self._make_adapter(node)
                self._adapters[node] = got
            return got

    def adapter_ready(self, node: str) -> bool:
        return node in self._adapters

    # -- Services --
    def services(self) -> list[ServiceRow]:
        raise NotImplementedError

    def health_rows(self, key: str, node: str | None = None) -> list[HealthRow]:
        """The Service's health: a row per port and per group of nodes that answer alike (browse.check)."""
        raise NotImplementedError

    def health(self, key: str) -> tuple[str, str]:
        """The Service list's mark and note: the worst of its health rows, and their codes."""
        return summarize(self.health_rows(key))

    def check_node(self, node: str) -> None:
        """An InputError unless `node` is a node of this session."""
        if node not in self.node_names():
            raise InputError(f"no node {node} here (nodes: {', '.join(self.node_names()) or 'none'})")

    def check(self, namespace: str | None = None, node: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> CheckReport:
        """`svctrace check`: every Service of `namespace` (all when None), the health rows of each, worst
        first. The same rows the Service list's marks are made of."""
        if node is not None:
            self.check_node(node)
        keys = [r.key for r in self.services() if namespace is None or r.namespace == namespace]
        rows: list[HealthRow] = []
        for i, key in enumerate(keys, 1):
            rows.extend(self.health_rows(key, node))
            if progress is not None:
                progress(i, len(keys))
        return CheckReport(self.source, namespace, node, len(keys), sort_rows(rows))

    def options(self, key: str) -> TraceOptions:
        raise NotImplementedError

    def trace(self, req: TraceRequest) -> TraceView:
        raise NotImplementedError

    def service_chain(self, key: str, node: str) -> ChainRef | None:
        """Where the chain browser opens for a Service: its first port's KUBE-SVC (or SVL, EXT, FW) chain."""
        raise NotImplementedError

    def compare_request(self, key: str) -> TraceRequest:
        return TraceRequest(key)

    def comparable_nodes(self) -> list[str]:
        return self.node_names()

    def compare(self, req: TraceRequest, left: str | None = None, right: str | None = None) -> Comparison:
        """The same request answered by two nodes' rules. Without nodes: the first pair that answers
        differently (worker nodes first), else the first two."""
        nodes = self.comparable_nodes()
        if len(nodes) < 2 and not (left and right):
            raise InputError("side by side needs two nodes with dumps; this snapshot has "
                             + (", ".join(nodes) or "none"))
        req = self._per_node_request(req)
        views: dict[str, TraceView | str] = {}

        def view(n: str) -> TraceView | str:
            if n not in views:
                try:
                    views[n] = self.trace(replace(req, node=n))
                except SvctraceError as e:
                    views[n] = str(e)
            return views[n]

        if left is None or right is None:
            pair = None
            for i, a in enumerate(nodes):
                for b in nodes[i + 1:]:
                    va, vb = view(a), view(b)
                    if isinstance(va, str) or isinstance(vb, str) or va.signature() != vb.signature():
                        pair = (a, b)
                        break
                if pair:
                    break
            left, right = pair or (left or nodes[0], right or nodes[1])
        va, vb = view(left), view(right)
        lr = self._rules_of(req.service, left)
        rr = self._rules_of(req.service, right)
        la, lb = diff_lines(lr, rr)
        return Comparison(req, left, right, va if isinstance(va, TraceView) else None,
                          vb if isinstance(vb, TraceView) else None, va if isinstance(va, str) else None,
                          vb if isinstance(vb, str) else None, la, lb)

    def _per_node_request(self, req: TraceRequest) -> TraceRequest:
        """A pod's or node's own node decides; to ask every node, send from a neutral source."""
        if req.source and req.source.startswith(("pod/", "node/")):
            return replace(req, source=None)
        return req

    def _rules_of(self, key: str, node: str) -> list[str]:
        try:
            return service_rules(self.adapter(node), key, self._service_of(key))
        except SvctraceError:
            return []

    def _service_of(self, key: str) -> Service | None:
        return None


# -- a snapshot ------------------------------------------------------------------------------------

def _pct_host(cidr: str, offset: int = 99) -> str | None:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    if net.num_addresses <= 2:
        return str(net.network_address)
    return str(net.network_address + min(offset, net.num_addresses - 2))


class SnapshotSession(Session):
    kind = "snapshot"

    def __init__(self, snap: Snapshot) -> None:
        super().__init__()
        self.snap = snap
        self._modes: dict[str, str | None] = {}
        self.source = snap.source
        self.title = "demo cluster" if snap.is_demo else snap.source

    def node_names(self) -> list[str]:
        order = list(self.snap.cluster.nodes)
        names = [n for n in self.snap.nodes if dataplanes(self.snap.nodes[n])]
        return sorted(names, key=lambda n: order.index(n) if n in order else len(order))

    def _workers_first(self, names: list[str]) -> list[str]:
        def is_cp(n: str) -> bool:
            node = self.snap.cluster.nodes.get(n)
            return bool(node) and any(k.startswith("node-role.kubernetes.io/control-plane")
                                      or k == "node-role.kubernetes.io/master" for k in node.labels)  # type: ignore[union-attr]
        return [n for n in names if not is_cp(n)] + [n for n in names if is_cp(n)]

    def default_node(self) -> str | None:
        names = self._workers_first(self.node_names())
        return names[0] if names else None

    def comparable_nodes(self) -> list[str]:
        return self._workers_first(self.node_names())

    def node_modes(self) -> list[NodeMode]:
        out = []
        for name in list(self.snap.cluster.nodes) + [n for n in self.snap.nodes if n not in self.snap.cluster.nodes]:
            nf = self.snap.nodes.get(name)
            dumps = tuple(dataplanes(nf)) if nf else ()
            mode = ((nf.get("proxy-mode") or "").strip() if nf else "") or self.snap.cluster.proxy.mode or "unknown"
            browser = self._browser_for(nf, self.node_mode(name)) if nf and dumps else "no dump"
            out.append(NodeMode(name, mode, dumps, browser))
        return out

    def _browser_for(self, nf: NodeFiles, mode: str | None) -> str:
        """Which adapter reads the node (without parsing its dumps)."""
        if self.adapter_ready(nf.name):
            a = self._adapters[nf.name]
            if isinstance(a, IPVSAdapter):
                return " + ".join(["ipvs"] + (["iptables"] if a.iptables else []) + (["ipset"] if a.ipsets else []))
            return a.kind
        has_ipt = any(nf.get(f) for f in ("iptables-save", "iptables-legacy-save"))
        if mode == "nftables" and (nf.get("nft.json") or nf.get("nft")):
            return "nftables"
        if mode == "ipvs" and nf.get("ipvsadm"):
            return " + ".join(["ipvs"] + (["iptables"] if has_ipt else []) + (["ipset"] if nf.get("ipset") else []))
        if has_ipt:
            return "iptables"
        return "none (" + ", ".join(dataplanes(nf)) + ")"

    def node_mode(self, node: str) -> str | None:
        # No lock: the top bar asks from the event loop while a worker may hold `_lock` parsing a dump.
        if node not in self._modes:
            nf = self.snap.nodes.get(node)
            self._modes[node] = detect_mode(self.snap, nf, 4)[0] if nf is not None else None
        return self._modes[node]

    def _make_adapter(self, node: str) -> RulesAdapter:
        nf = self.snap.nodes.get(node)
        if nf is None:
            raise InputError(f"no dumps for node {node} in the snapshot (nodes with dumps: "
                             f"{', '.join(self.node_names()) or 'none'})")
        return adapter_for(nf, 4, self.node_mode(node))

    def _service_of(self, key: str) -> Service | None:
        return self.snap.cluster.services.get(key)

    def _svc(self, key: str) -> Service:
        svc = self.snap.cluster.services.get(key)
        if svc is None:
            raise InputError(f"no Service {key} in the snapshot")
        return svc

    def services(self) -> list[ServiceRow]:
        rows = []
        for svc in self.snap.cluster.services.values():
            ports = ",".join(f"{p.name + ':' if p.name else ''}{p.port}"
                             + (f"►{p.node_port}" if p.node_port else "") + f"/{p.protocol}" for p in svc.ports)
            rows.append(ServiceRow(svc.key, svc.namespace, svc.name, svc.type, cluster_ip_text(svc), ports or "-",
                                   endpoint_counts(self.snap, svc)))
        return rows

    def check_node(self, node: str) -> None:
        if node not in self.snap.cluster.nodes and node not in self.snap.nodes:
            raise InputError(f"no node {node} in the snapshot (nodes: "
                             f"{', '.join(sorted(self.snap.cluster.nodes)) or 'none'})")

    def health_rows(self, key: str, node: str | None = None) -> list[HealthRow]:
        """explain's diagnostics for each of the Service's ports, on each node that matters (browse.check)."""
        return snapshot_rows(self.snap, self._svc(key), node)

    def options(self, key: str) -> TraceOptions:
        svc = self._svc(key)
        cluster = self.snap.cluster
        ports = [(f"{p.name or '(unnamed)'} {p.port}/{p.protocol}", p.name or str(p.port)) for p in svc.ports]
        vias = []
        if not svc.headless and svc.type != "ExternalName":
            vias.append((VIA_LABELS["cluster-ip"], "cluster-ip"))
        if any(p.node_port for p in svc.ports):
            vias.append((VIA_LABELS["node-port"], "node-port"))
        if svc.external_ips:
            vias.append((f"external IP {svc.external_ips[0]}", "external-ip"))
        if svc.lb_ips:
            vias.append((f"load balancer {svc.lb_ips[0]}", "load-balancer"))
        if not vias:
            vias.append(("DNS only", "cluster-ip"))
        sources: list[tuple[str, str]] = [("auto (a pod / an outside client)", "")]
        for r in svc.lb_source_ranges[:3]:
            ip = _pct_host(r)
            if ip:
                sources.append((f"outside {ip} (in {r})", ip))
        sources.append((f"outside {OUTSIDE_CLIENT}", OUTSIDE_CLIENT))
        for pod in sorted(cluster.pods, key=lambda p: (p.namespace != svc.namespace, p.key)):
            if pod.ips and not pod.host_network:
                sources.append((f"pod {pod.key} ({pod.node_name})", f"pod/{pod.key}"))
        for n in cluster.nodes.values():
            sources.append((f"node {n.name}", f"node/{n.name}"))
        protos = [("port's protocol", ""), ("tcp", "tcp"), ("udp", "udp"), ("sctp", "sctp"), ("icmp (ping)", "icmp")]
        nodes = [("auto", "")] + [(n, n) for n in self.node_names()]
        return TraceOptions(ports, vias, sources, protos, nodes, svc.session_affinity == "ClientIP",
                            TraceRequest(key, port=ports[0][1] if ports else None, via=vias[0][1]))

    def compare_request(self, key: str) -> TraceRequest:
        svc = self._svc(key)
        if svc.lb_ips:
            src = _pct_host(svc.lb_source_ranges[0]) if svc.lb_source_ranges else None
            return TraceRequest(key, via="load-balancer", source=src)
        if any(p.node_port for p in svc.ports):
            return TraceRequest(key, via="node-port")
        if svc.external_ips:
            return TraceRequest(key, via="external-ip")
        return TraceRequest(key, via="cluster-ip")

    def trace(self, req: TraceRequest) -> TraceView:
        r = Request(target=f"svc/{req.service}", port=req.port or None, proto=req.proto or None,
                    source=req.source or None, to=req.via or None, node=req.node or None,
                    returning_client=req.returning_client)
        exp = explain(self.snap, r)
        return view_of_explanation(req, exp)

    def service_chain(self, key: str, node: str) -> ChainRef | None:
        svc = self._svc(key)
        adapter = self.adapter(node)
        if isinstance(adapter, NftAdapter):
            for p in svc.ports:
                got = nft_service_chain(adapter.rs, adapter.tables(), svc.namespace, svc.name, p.protocol, p.name)
                if got is not None:
                    return ChainRef(*got)
            return adapter.entry()
        if isinstance(adapter, IPVSAdapter):
            _vips, node_ports = service_keys(svc)
            for p in svc.ports:  # the cluster IP's virtual server, else another of the Service's
                for ip in [*svc.cluster_ips, *svc.external_ips, *svc.lb_ips]:
                    vs = adapter.virtual_server(p.protocol, ip, p.port)
                    if vs is not None:
                        return ChainRef(IPVS_TABLE, vs.label)
            for vs in adapter.ipvs.services:
                if (vs.protocol, vs.port) in node_ports:
                    return ChainRef(IPVS_TABLE, vs.label)
            return adapter.entry()
        for p in svc.ports:
            for make in (svc_chain, svl_chain, ext_chain, fw_chain):
                name = make(svc.namespace, svc.name, p.name, p.protocol)
                if adapter.chain_info("nat", name) is not None:
                    return ChainRef("nat", name)
        return adapter.find_chain("KUBE-SERVICES", "nat")


def view_of_explanation(req: TraceRequest, exp: Explanation) -> TraceView:
    svc = exp.service
    head: list[tuple[str, str]] = []
    ips = ", ".join(ip for ip in svc.cluster_ips if ip != "None")
    what = f"cluster IP {ips}" if ips else ("no cluster IP" if svc.type == "ExternalName" else "headless")
    head.append(("Service", f"{svc.key} ({svc.type}, {what})"))
    if exp.port is not None:
        p = exp.port
        extra = f", nodePort {p.node_port}" if p.node_port else ""
        head.append(("Port", f"{p.name or '(unnamed)'} {p.port}/{p.protocol} → {p.target_port}{extra}"))
    if exp.source.ip != "-":
        head.append(("From", exp.source.describe()))
    d = exp.destination
    if d.get("ip"):
        where = f"{d['ip']}:{d['port']}" if d.get("port") else str(d["ip"])
        head.append(("To", f"{where} {str(d.get('protocol')).lower()} (via {d.get('via')})"))
    node = exp.rules_node or exp.node
    if exp.node:
        head.append(("Rules of", f"node {node} (kube-proxy mode {exp.proxy_mode or 'unknown'})"))
    outcomes = [OutcomeView(o.probability, o.verdict, o.certain, o.endpoint, o.pod, o.endpoint_node, o.masquerade,
                            o.masquerade_reason, o.reason, path_steps(o.path), list(o.assumptions), o.nowhere)
                for o in exp.outcomes]
    return TraceView(req, node if exp.node else None, head, outcomes, list(exp.diagnostics), list(exp.hops), list(exp.inferred),
                     [str(w) for w in exp.warnings], exp.exit_code, exp)


def open_snapshot(path: str) -> SnapshotSession:
    return SnapshotSession(load_snapshot(path))


# -- one node's dump, no cluster -------------------------------------------------------------------

def _port_label(p: RecoveredPort) -> str:
    return f"{p.name or '(unnamed)'} {p.port}/{p.proto.upper()}"


def _port_value(p: RecoveredPort) -> str:
    return f"{p.name}|{p.port}|{p.proto}"


def dump_diagnostics(svc: RecoveredService) -> list[Diagnostic]:
    """What one node's rules alone say is wrong with a Service (explain, which needs the cluster's objects,
    cannot run on a dump), under explain's codes; the first that applies. kube-proxy writes it into its rules
    (pkg/proxy/iptables/proxier.go): a `"ns/name:port has no endpoints"` REJECT in filter KUBE-SERVICES or
    KUBE-EXTERNAL-SERVICES, a `"... has no local endpoints"` DROP in KUBE-EXTERNAL-SERVICES."""
    empty = [p for p in svc.ports if p.no_endpoints]
    if empty:
        return [Diagnostic("no-endpoints", "error",
                           f"{svc.key}:{_port_names(empty)} has no endpoints: kube-proxy rejects connections to it")]
    no_local = [p for p in svc.ports if p.no_local]
    if no_local:
        return [Diagnostic("no-local-endpoints", "warning",
                           f"{svc.key}:{_port_names(no_local)} has no endpoint on this node: kube-proxy drops "
                           "external traffic to it here")]
    return []


def _port_names(ports: list[RecoveredPort]) -> str:
    return ",".join(p.name or str(p.port) for p in ports)


def _dump_type(svc: RecoveredService) -> str:
    return "LoadBalancer" if any(p.lb_ips for p in svc.ports) else "NodePort" if any(
        p.node_port for p in svc.ports) else "ClusterIP"


def _dump_cluster_ip(svc: RecoveredService) -> str:
    return next((p.cluster_ip for p in svc.ports if p.cluster_ip), None) or "-"


class DumpSession(Session):
    """One node's iptables dump without a cluster: Services come from kube-proxy's comments."""

    kind = "dump"

    def __init__(self, text: str, name: str, node: str | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.source = name
        self.title = name
        self.node = node or Path(name).name.split(".")[0] or "node"
        rs = load_ruleset(text, name)
        if not rs.rule_count:
            raise InputError("no iptables rules in it (an iptables-save dump, or a snapshot directory or .tar.gz)",
                             source=name)
        self._adapters[self.node] = IptablesAdapter(rs, self.node)
        self.rs = rs
        if progress:
            progress(f"reading the Services from {rs.rule_count:,} rules' comments")
        got = recover_iptables(rs)
        self.cluster_cidr = got.cluster_cidr
        self._svcs = got.services

    def node_names(self) -> list[str]:
        return [self.node]

    def node_modes(self) -> list[NodeMode]:
        mode = "iptables" if self.rs.has_kube_rules() else "unknown (no kube-proxy rules)"
        return [NodeMode(self.node, mode, (self.rs.format,), "iptables")]

    def node_mode(self, node: str) -> str | None:
        return "iptables" if self.rs.has_kube_rules() else None

    def _make_adapter(self, node: str) -> RulesAdapter:
        raise InputError(f"only node {self.node} is in this dump")

    def services(self) -> list[ServiceRow]:
        rows = []
        for svc in self._svcs.values():
            ports = svc.ports
            typ, cip = _dump_type(svc), _dump_cluster_ip(svc)
            text = ",".join(f"{p.name + ':' if p.name else ''}{p.port}" + (f"►{p.node_port}" if p.node_port else "")
                            + f"/{p.proto.upper()}" for p in ports)
            eps = str(max((p.endpoints for p in ports), default=0))
            level, note = summarize(self.health_rows(svc.key))
            rows.append(ServiceRow(svc.key, svc.namespace, svc.name, typ, cip, text, eps, level, note))
        return sorted(rows, key=lambda r: (r.namespace, r.name))

    def health_rows(self, key: str, node: str | None = None) -> list[HealthRow]:
        """One row for the whole Service: the dump's rules speak of it as a whole (dump_diagnostics)."""
        svc = self._dsvc(key)
        codes: list[str] = []
        diags = dump_diagnostics(svc)
        level = worsen("ok", codes, diags)
        return [HealthRow(svc.namespace, svc.name, _dump_type(svc), None, [self.node], level, codes, diags, "-",
                          _dump_cluster_ip(svc), str(max((p.endpoints for p in svc.ports), default=0)))]

    def _dsvc(self, key: str) -> RecoveredService:
        svc = self._svcs.get(key)
        if svc is None:
            raise InputError(f"no Service {key} in the dump's rule comments")
        return svc

    def options(self, key: str) -> TraceOptions:
        svc = self._dsvc(key)
        ports = [(_port_label(p), _port_value(p)) for p in svc.ports]
        vias = []
        if any(p.cluster_ip for p in svc.ports):
            vias.append((VIA_LABELS["cluster-ip"], "cluster-ip"))
        if any(p.external_ips for p in svc.ports):
            vias.append((VIA_LABELS["external-ip"], "external-ip"))
        if any(p.lb_ips for p in svc.ports):
            vias.append((VIA_LABELS["load-balancer"], "load-balancer"))
        default_src = self._default_source()
        sources = [(f"auto ({default_src})", "")]
        if default_src != OUTSIDE_CLIENT:
            sources.append((f"outside {OUTSIDE_CLIENT}", OUTSIDE_CLIENT))
        protos = [("port's protocol", ""), ("tcp", "tcp"), ("udp", "udp"), ("sctp", "sctp"), ("icmp (ping)", "icmp")]
        return TraceOptions(ports, vias or [(VIA_LABELS["cluster-ip"], "cluster-ip")], sources, protos,
                            [(self.node, self.node)], False,
                            TraceRequest(key, port=ports[0][1] if ports else None, via=vias[0][1] if vias else None))

    def _default_source(self) -> str:
        if self.cluster_cidr:
            return _pct_host(self.cluster_cidr, 250) or OUTSIDE_CLIENT
        return OUTSIDE_CLIENT

    def trace(self, req: TraceRequest) -> TraceView:
        svc = self._dsvc(req.service)
        port = svc.ports[0] if svc.ports else None
        if req.port:
            for p in svc.ports:
                if req.port in (_port_value(p), p.name, str(p.port)):
                    port = p
                    break
        if port is None:
            raise InputError(f"{svc.key} has no port in the dump")
        via = req.via or "cluster-ip"
        dst = {"cluster-ip": port.cluster_ip, "external-ip": port.external_ips[0] if port.external_ips else None,
               "load-balancer": port.lb_ips[0] if port.lb_ips else None}.get(via)
        if dst is None:
            raise InputError(f"{svc.key} port {_port_label(port)} has no {VIA_LABELS.get(via, via)} in the dump")
        src = req.source or self._default_source()
        proto = (req.proto or port.proto).lower()
        try:
            pkt = Packet.make(src=src, dst=dst, proto=proto, dport=None if proto == "icmp" else port.port)
        except ValueError as e:
            raise InputError(str(e)) from None
        result = trace_iptables(self.rs, pkt, NodeFacts.make(returning_client=req.returning_client))
        return self._view(req, svc, port, via, result)

    def _view(self, req: TraceRequest, svc: RecoveredService, port: RecoveredPort, via: str, result: TraceResult) -> TraceView:
        p = result.packet
        head = [("Service", f"{svc.key} (from the dump's comments)"), ("Port", _port_label(port)),
                ("From", f"{p.src}" + ("" if req.source else " (default)")),
                ("To", f"{p.endpoint()} {p.proto} (via {via})"), ("Rules of", f"{self.node} ({self.source})")]
        outcomes = [OutcomeView(o.probability, o.verdict, o.certain, o.dnat, None, None, o.masquerade, None, o.reason,
                                path_steps(o.path), list(o.assumptions), result.unanswered(o))
                    for o in result.outcomes]
        diags = [Diagnostic("note", "warning", n) for n in result.notes]
        return TraceView(req, self.node, head, outcomes, diags, [], [], [str(w) for w in result.warnings],
                         result.exit_code)

    def service_chain(self, key: str, node: str) -> ChainRef | None:
        svc = self._dsvc(key)
        for p in svc.ports:
            if p.chain and self.rs.chain("nat", p.chain) is not None:
                return ChainRef("nat", p.chain)
        return ChainRef("nat", "KUBE-SERVICES") if self.rs.chain("nat", "KUBE-SERVICES") else None

    def compare(self, req: TraceRequest, left: str | None = None, right: str | None = None) -> Comparison:
        raise InputError("side by side needs a snapshot with two nodes' dumps; this is a single dump")


def open_session(path: str | None, progress: Callable[[str], None] | None = None) -> Session:
    """A snapshot (directory, .tar.gz, `demo`) or one node's dump file. Slow for big inputs:
    `progress` hears what is being done."""
    say = progress or (lambda _msg: None)
    if path is None or path in ("demo", "demo:"):
        say("reading the demo snapshot")
        return open_snapshot("demo")
    p = Path(path)
    if not p.exists():
        raise InputError("no such snapshot or dump (a directory, a .tar.gz, `demo`, or an iptables-save file)",
                         source=path)
    if p.is_dir() or tarfile.is_tarfile(p):
        say(f"reading the snapshot {path}")
        return open_snapshot(path)
    say(f"reading {path}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read it: {e.strerror}", source=path) from None
    text = decode_text(data, path, "binary data, not a snapshot nor a text dump")
    say(f"parsing {len(data) // 1024:,} KiB of rules")
    return DumpSession(text, path, progress=say)
