"""What the Service's endpoints say about this path: none, none ready, none local, the source's range,
session affinity, a pod that talks to itself."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import Rule
from svctrace.kubeproxy.endpoints import EndpointSelection, select_endpoints
from svctrace.kubeproxy.notes import AFFINITY_NOTE
from svctrace.kubeproxy.versions import REFERENCE_VERSION
from svctrace.model.cluster import Cluster, EndpointSlice, Service, ServicePort

from .registry import Context, Diagnostic, check


@dataclass
class EndpointView:
    ip: str
    port: int | None
    ready: bool
    serving: bool
    terminating: bool
    node: str | None
    target: str | None

    @property
    def endpoint(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


def endpoints_of(cluster: Cluster, svc: Service, port: ServicePort | None) -> list[EndpointView]:
    """Every endpoint address of the Service port, with the port number its EndpointSlice gives it."""
    out: list[EndpointView] = []
    if port is None:
        return out
    for s in cluster.slices_for(svc):
        pnum = _slice_port(s, port)
        if pnum is None and s.ports:
            continue
        for e in s.endpoints:
            for a in e.addresses:
                out.append(EndpointView(a, pnum, e.ready, e.serving, e.terminating, e.node_name, e.target))
    return out


def _slice_port(s: EndpointSlice, port: ServicePort) -> int | None:
    for name, num, proto in s.ports:
        if name == port.name and proto.upper() == port.protocol.upper():
            return num
    return None


def selection_for(cluster: Cluster, svc: Service, port: ServicePort | None, node: str | None) -> EndpointSelection | None:
    """kube-proxy's own endpoint selection for this Service port on this node (svctrace.kubeproxy.endpoints:
    CategorizeEndpoints with the terminating fallback, Local policies and topology hints)."""
    if port is None or not svc.raw:
        return None
    # Only this Service's objects: select_endpoints reads no other's, and indexing the whole namespace on every
    # question would make a question per Service quadratic.
    mine, old = cluster.slices_in(svc.namespace, svc.name)
    slices = [s.raw for s in mine]
    legacy: list[dict[str, Any]] = []
    for s in old:
        if s.raw not in legacy:
            legacy.append(s.raw)
    n = cluster.nodes.get(node or "")
    try:
        sels = select_endpoints(svc.raw, slices, node_name=node or "", node_labels=n.labels if n else {},
                                endpoints=legacy or None, kube_version=cluster.proxy.version or REFERENCE_VERSION)
    except ValueError:
        return None
    for sel in sels:
        sp = sel.service_port
        if sp.port_name == port.name and sp.protocol == port.protocol.upper():
            return sel
    return None


def endpoints(ctx: Context) -> list[EndpointView]:
    return list(ctx.memo("endpoints", lambda: endpoints_of(ctx.snap.cluster, ctx.svc, ctx.port)))


def selection(ctx: Context) -> EndpointSelection | None:
    node = ctx.exp.node if ctx.exp is not None else None
    got: EndpointSelection | None = ctx.memo("selection", lambda: selection_for(ctx.snap.cluster, ctx.svc,
                                                                                ctx.port, node))
    return got


def _via(ctx: Context) -> str:
    return str(ctx.exp.destination.get("via")) if ctx.exp is not None else "cluster-ip"


def _served_port(ctx: Context) -> bool:
    return ctx.port is not None and ctx.svc.port_by(ctx.port.port) is not None


@check("no-endpoints", ["path"], "the Service port has no endpoints at all", "test_no_endpoints_selector_near_miss")
def no_endpoints(ctx: Context) -> Diagnostic | None:
    svc, port = ctx.svc, ctx.port
    if port is None or not _served_port(ctx) or endpoints(ctx):
        return None
    verdicts = {o.verdict for o in ctx.exp.outcomes} if ctx.exp is not None else set()
    return Diagnostic(
        "no-endpoints", "error",
        f"{svc.key}:{port.name or port.port} has no endpoints at all, so kube-proxy installs a REJECT rule for "
        "it: clients get 'connection refused' at once" + (" (the trace shows it)." if "reject" in verdicts
                                                          else "."),
        "Look at `kubectl get endpointslices -l kubernetes.io/service-name=" + svc.name +
        f" -n {svc.namespace}` and at the pods the selector should match.")


@check("no-ready-endpoints", ["path"], "endpoints exist but none is ready (and which are serving/terminating)",
       "test_no_ready_endpoints")
def no_ready_endpoints(ctx: Context) -> Diagnostic | None:
    svc, port, eps = ctx.svc, ctx.port, endpoints(ctx)
    if port is None or not _served_port(ctx) or not eps or any(e.ready for e in eps):
        return None
    serving = [e for e in eps if e.serving and e.terminating]
    notready = [e for e in eps if not e.serving]
    parts = []
    if serving:
        parts.append(f"{len(serving)} terminating but still serving ({', '.join(e.endpoint for e in serving[:4])}) "
                     "— kube-proxy falls back to these")
    if notready:
        parts.append(f"{len(notready)} not ready ({', '.join((e.target or e.endpoint) for e in notready[:4])})")
    return Diagnostic(
        "no-ready-endpoints", "error" if not serving else "warning",
        f"{svc.key}:{port.name or port.port} has endpoints but none is ready: " + "; ".join(parts) + ".",
        "Check the pods' readiness probes and events: `kubectl describe pod` on them.")


@check("no-local-endpoints", ["path"], "a Local traffic policy and no endpoint on this node",
       "test_local_policy_drops_on_a_node_without_endpoints")
def no_local_endpoints(ctx: Context) -> Diagnostic | None:
    svc, via, eps = ctx.svc, _via(ctx), endpoints(ctx)
    local_policy = (svc.internal_traffic_policy == "Local") if via == "cluster-ip" else (
        svc.external_traffic_policy == "Local")
    if not local_policy or ctx.port is None or not eps:
        return None
    sel = selection(ctx)
    if sel is None or sel.local_endpoints:
        return None
    node = ctx.exp.node if ctx.exp is not None else None
    pol = "internalTrafficPolicy" if via == "cluster-ip" else "externalTrafficPolicy"
    where = sorted({e.node or "?" for e in eps if e.ready})
    return Diagnostic(
        "no-local-endpoints", "error",
        f"{svc.key} has {pol}: Local and node {node} runs none of its ready endpoints (they run on "
        f"{', '.join(where) or 'no node'}), so this node drops the traffic instead of forwarding it.",
        f"Send the traffic to a node that runs a pod of {svc.name} (the load balancer's health check on "
        f"{svc.health_check_node_port or 'the healthCheckNodePort'} does that), or set {pol}: Cluster "
        "(the client's source address is then lost).")


def _in_ranges(ip: str, ranges: list[str]) -> bool:
    a = ipaddress.ip_address(ip)
    for r in ranges:
        try:
            if a in ipaddress.ip_network(r.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@check("source-range-blocked", ["path"], "loadBalancerSourceRanges excludes the source", "test_source_range_blocked")
def source_range_blocked(ctx: Context) -> Diagnostic | None:
    svc, exp = ctx.svc, ctx.exp
    if exp is None or _via(ctx) != "load-balancer" or not svc.lb_source_ranges or \
            _in_ranges(exp.source.ip, svc.lb_source_ranges):
        return None
    return Diagnostic(
        "source-range-blocked", "error",
        f"the source {exp.source.ip} is outside {svc.key}'s loadBalancerSourceRanges "
        f"({', '.join(svc.lb_source_ranges)}): kube-proxy's KUBE-PROXY-FIREWALL drops it.",
        "Add the client's range to spec.loadBalancerSourceRanges, or send from an allowed address.")


def affinity_on_path(ctx: Context) -> tuple[int | None, str] | None:
    """The session-affinity check on the path the packet walked, read from the rules: (timeout in seconds, where
    it is). iptables: an `-m recent --rcheck --seconds N` rule in a chain the path entered (the KUBE-SVC chain);
    nftables: the affinity set a path rule updates (`update @affinity-... { ip saddr }`) and its timeout; IPVS:
    the virtual service's persistence (`-p N`). None when the path has none."""
    exp, dp = ctx.exp, ctx.dp
    if exp is None or dp is None:
        return None
    steps = [st for o in exp.outcomes for st in o.path]
    if dp.mode == "ipvs" and dp.ipvs is not None and exp.trace is not None:
        pkt = exp.trace.packet
        found = dp.ipvs.find(str(pkt.proto), pkt.dst, pkt.dport).service
        if found is not None and found.persistent is not None:
            return found.persistent, f"IPVS virtual service line {found.line}: `{found.text.strip()}`"
        return None
    if dp.mode == "nftables" and dp.nft is not None:
        for st in steps:
            upd = re.search(r"update @(\S+) \{", st.text)
            if upd is None:
                continue
            for t in dp.nft.tables.values():
                nset = t.sets.get(upd.group(1))
                if nset is not None:
                    secs = _nft_seconds(nset.timeout)
                    return secs, f"nft set {nset.name}, timeout {secs if secs is not None else 'none'} s"
        return None
    if dp.iptables is None:
        return None
    chains = list(dict.fromkeys([st.chain for st in steps if st.table == "nat"] +
                                [st.target for st in steps if st.table == "nat" and st.target]))
    for name in chains:
        chain = dp.iptables.chain("nat", name)
        if chain is None:
            continue
        # Only the lines that say --rcheck are parsed: the path runs through KUBE-SERVICES, one rule per Service
        # port, and parsing it whole for this would cost more than the walk did.
        rules = chain.rules if chain.parsed else [
            r for pos, raw in enumerate(chain.raw) if "--rcheck" in raw.text
            for r in _numbered(parse_rule("nat", name, raw, dp.iptables.family), pos + 1)]
        for r in rules:
            for m in r.matches:
                if m.module == "recent" and m.opt("--rcheck") is not None:
                    sec = m.opt("--seconds")
                    secs = int(sec.arg) if sec is not None and str(sec.arg).isdigit() else None
                    return secs, f"{name} rule {r.index}: `-m recent --rcheck --seconds {secs}`"
    return None


def _numbered(rules: list[Rule], index: int) -> list[Rule]:
    for r in rules:
        r.index = index
    return rules


def _nft_seconds(text: str | None) -> int | None:
    """nft's duration (`3h`, `10800s`, `1d2h3m4s`) in seconds."""
    if not text:
        return None
    if text.strip().isdigit():  # nft -j writes seconds
        return int(text)
    total, unit = 0, {"d": 86400, "h": 3600, "m": 60, "s": 1}
    for num, u in re.findall(r"(\d+)(ms|d|h|m|s)", text):
        total += 0 if u == "ms" else int(num) * unit[u]
    return total or None


@check("session-affinity", ["path"],
       "the path has a session-affinity check (read from the rules: its timeout), or the Service asks for one the "
       "rules lack", "test_session_affinity_read_from_the_walked_rules")
def session_affinity(ctx: Context) -> Diagnostic | None:
    svc = ctx.svc
    found = affinity_on_path(ctx)
    asked = svc.session_affinity == "ClientIP"
    if found is None and not asked:
        return None
    trace = ctx.exp.trace if ctx.exp is not None else None
    returning = next((n for n in (trace.notes if trace is not None else []) if n.startswith(AFFINITY_NOTE)), None)
    if returning is not None:  # --returning-client / --previous-endpoint: what the rules did for this client
        return Diagnostic(
            "session-affinity", "info",
            f"{svc.key} has sessionAffinity: ClientIP. {returning[len(AFFINITY_NOTE):][:1].upper()}"
            f"{returning[len(AFFINITY_NOTE) + 1:]}",
            "--previous-endpoint IP:PORT gives the sticky answer; --affinity-age SECONDS how long ago it was.")
    if found is None:
        return Diagnostic(
            "session-affinity", "warning",
            f"{svc.key} has sessionAffinity: ClientIP ({svc.affinity_timeout} s), but the path the packet walked has "
            "no affinity check: every connection picks a backend anew.",
            "Compare the node's rules with the Service (rules-stale, proxy-mode-mismatch), or restart kube-proxy on "
            "this node.")
    secs, where = found
    differs = asked and secs is not None and svc.affinity_timeout is not None and secs != svc.affinity_timeout
    return Diagnostic(
        "session-affinity", "warning" if differs or not asked else "info",
        f"the path checks client affinity ({where}): a client keeps the backend of its first connection for "
        f"{secs if secs is not None else '?'} s"
        + (f", while {svc.key} asks for {svc.affinity_timeout} s" if differs else "")
        + ("" if asked else f", though {svc.key} does not ask for sessionAffinity")
        + ". The probabilities shown are for a new client.",
        "Use --returning-client (or --previous-endpoint IP:PORT) to see the path of a client that connected before.")


@check("hairpin-masquerade", ["path"], "the source is one of the endpoints, so the packet is masqueraded",
       "test_hairpin_masquerade")
def hairpin_masquerade(ctx: Context) -> Diagnostic | None:
    exp = ctx.exp
    if exp is None or not any(e.ip == exp.source.ip for e in endpoints(ctx)):
        return None
    share = sum(o.probability for o in exp.outcomes if o.endpoint and o.endpoint.startswith(exp.source.ip + ":"))
    return Diagnostic(
        "hairpin-masquerade", "info",
        f"the source {exp.source.ip} is itself an endpoint of {ctx.svc.key}: when it picks itself "
        f"({share * 100:.1f}%) the KUBE-SEP rule marks the packet for masquerade, so the pod sees the node's "
        "address as the source instead of its own.",
        "Expected behaviour; the CNI bridge needs hairpin mode for such packets to come back to the pod.")
