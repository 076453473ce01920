"""Diagnostics with stable codes (shared/spec/cli-and-json.md) for an explanation, iptables mode."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.rules import Ruleset
from svctrace.dataplane.node import Dataplane
from svctrace.kubeproxy.endpoints import EndpointSelection, select_endpoints
from svctrace.kubeproxy.names import svc_chain
from svctrace.model.cluster import Cluster, EndpointSlice, Pod, Service, ServicePort
from svctrace.model.snapshot import Snapshot

from . import Diagnostic, Explanation


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
    slices = [s.raw for s in cluster.slices if not s.legacy and s.namespace == svc.namespace]
    legacy: list[dict[str, Any]] = []
    for s in cluster.slices:
        if s.legacy and s.namespace == svc.namespace and s.raw not in legacy:
            legacy.append(s.raw)
    n = cluster.nodes.get(node or "")
    try:
        sels = select_endpoints(svc.raw, slices, node_name=node or "", node_labels=n.labels if n else {},
                                endpoints=legacy or None, kube_version=cluster.proxy.version or "1.28")
    except ValueError:
        return None
    for sel in sels:
        sp = sel.service_port
        if sp.port_name == port.name and sp.protocol == port.protocol.upper():
            return sel
    return None


def selector_checks(cluster: Cluster, svc: Service, port: ServicePort | None, diags: list[Diagnostic]) -> None:
    if not svc.selector:
        slices = cluster.slices_for(svc)
        addrs = [a for s in slices for e in s.endpoints for a in e.addresses]
        diags.append(Diagnostic(
            "no-selector", "info",
            f"{svc.key} has no selector: Kubernetes does not manage its endpoints; they come from EndpointSlices "
            f"or Endpoints made by hand ({', '.join(addrs[:6]) or 'none exist'}).",
            f"Edit the EndpointSlice (label kubernetes.io/service-name={svc.name}) or Endpoints object yourself; "
            "a typo there is not caught by any controller."))
        return
    pods = cluster.selected_pods(svc)
    if not pods:
        near = _near_miss(cluster.pods_in(svc.namespace), svc.selector)
        sel = ",".join(f"{k}={v}" for k, v in svc.selector.items())
        msg = f"the selector {sel} matches no pod in namespace {svc.namespace}"
        hint = f"Compare with `kubectl get pods -n {svc.namespace} --show-labels`."
        if near is not None:
            pod, diffs = near
            msg += f"; closest: pod {pod.name}, which has " + ", ".join(
                f"{k}={pod.labels[k]}" if k in pod.labels else f"no {k} label" for k in diffs)
            hint = (f"Fix the Service selector or the pod labels (`kubectl get pod {pod.name} -n {svc.namespace} "
                    "--show-labels`).")
        diags.append(Diagnostic("selector-matches-no-pods", "error", msg + ".", hint))
        return
    if port is not None and isinstance(port.target_port, str):
        missing = [p for p in pods if not any(n == port.target_port and proto.upper() == port.protocol.upper()
                                              for n, _, proto in p.container_ports)]
        if missing:
            names = ", ".join(p.name for p in missing[:5])
            all_missing = len(missing) == len(pods)
            diags.append(Diagnostic(
                "named-port-unresolved", "error" if all_missing else "warning",
                f"targetPort {port.target_port!r} is a name, and {'no' if all_missing else 'not every'} selected pod "
                f"declares a containerPort with that name ({names}); such pods get no endpoint for this port.",
                f"Add `ports: [{{name: {port.target_port}, containerPort: N}}]` to the pod template, or use a number "
                "as targetPort."))


def _near_miss(pods: list[Pod], selector: dict[str, str]) -> tuple[Pod, list[str]] | None:
    """The pod whose labels come closest to the selector: fewest differing keys, then the most similar values."""
    from difflib import SequenceMatcher

    best: tuple[tuple[int, float], Pod, list[str]] | None = None
    for p in pods:
        diffs = [k for k, v in selector.items() if p.labels.get(k) != v]
        likeness = sum(SequenceMatcher(None, selector[k], p.labels.get(k, "")).ratio() for k in diffs)
        score = (len(diffs), -likeness)
        if best is None or score < best[0]:
            best = (score, p, diffs)
    if best is None or (best[0][0] >= len(selector) and not any(k in best[1].labels for k in selector)):
        return None
    return best[1], best[2]


def _in_ranges(ip: str, ranges: list[str]) -> bool:
    a = ipaddress.ip_address(ip)
    for r in ranges:
        try:
            if a in ipaddress.ip_network(r.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def _programmed_endpoints(rs: Ruleset, chain: str) -> set[str] | None:
    """DNAT targets reachable from a kube-proxy service chain (None when the chain is absent)."""
    c = rs.chain("nat", chain)
    if c is None:
        return None
    out: set[str] = set()
    for r in c.rules:
        t = r.target
        if t is None:
            continue
        if t.name.startswith("KUBE-SEP-"):
            sep = rs.chain("nat", t.name)
            if sep is not None:
                for sr in sep.rules:
                    if sr.target is not None and sr.target.name == "DNAT":
                        o = sr.target.opt("--to-destination")
                        if o:
                            out.add(o.arg)
            else:
                m = re.search(r"->\s*(\S+)", r.comment or "")
                if m:
                    out.add(m.group(1))
        elif t.name == "DNAT":
            o = t.opt("--to-destination")
            if o:
                out.add(o.arg)
    return out


def diagnose(snap: Snapshot, exp: Explanation, dp: Dataplane) -> None:
    cluster = snap.cluster
    rs = dp.iptables
    svc, port, diags = exp.service, exp.port, exp.diagnostics
    via = str(exp.destination.get("via"))
    proto = str(exp.destination.get("protocol") or "").lower()
    node = exp.node
    local_policy = (svc.internal_traffic_policy == "Local") if via == "cluster-ip" else (
        svc.external_traffic_policy == "Local")

    if proto in ("icmp", "icmpv6") and via in ("cluster-ip", "external-ip", "load-balancer"):
        diags.append(_ping_diagnostic(exp, dp))

    selector_checks(cluster, svc, port, diags)

    eps = endpoints_of(cluster, svc, port)
    if port is not None and svc.port_by(port.port) is not None:
        if not eps:
            verdicts = {o.verdict for o in exp.outcomes}
            diags.append(Diagnostic(
                "no-endpoints", "error",
                f"{svc.key}:{port.name or port.port} has no endpoints at all, so kube-proxy installs a REJECT rule for "
                "it: clients get 'connection refused' at once" + (" (the trace shows it)." if "reject" in verdicts
                                                                  else "."),
                "Look at `kubectl get endpointslices -l kubernetes.io/service-name=" + svc.name +
                f" -n {svc.namespace}` and at the pods the selector should match."))
        elif not any(e.ready for e in eps):
            serving = [e for e in eps if e.serving and e.terminating]
            notready = [e for e in eps if not e.serving]
            parts = []
            if serving:
                parts.append(f"{len(serving)} terminating but still serving ({', '.join(e.endpoint for e in serving[:4])}) "
                             "— kube-proxy falls back to these")
            if notready:
                parts.append(f"{len(notready)} not ready ({', '.join((e.target or e.endpoint) for e in notready[:4])})")
            diags.append(Diagnostic(
                "no-ready-endpoints", "error" if not serving else "warning",
                f"{svc.key}:{port.name or port.port} has endpoints but none is ready: " + "; ".join(parts) + ".",
                "Check the pods' readiness probes and events: `kubectl describe pod` on them."))

    selection = selection_for(cluster, svc, port, node)
    if local_policy and port is not None and eps and selection is not None and not selection.local_endpoints:
        pol = "internalTrafficPolicy" if via == "cluster-ip" else "externalTrafficPolicy"
        where = sorted({e.node or "?" for e in eps if e.ready})
        diags.append(Diagnostic(
            "no-local-endpoints", "error",
            f"{svc.key} has {pol}: Local and node {node} runs none of its ready endpoints (they run on "
            f"{', '.join(where) or 'no node'}), so this node drops the traffic instead of forwarding it.",
            f"Send the traffic to a node that runs a pod of {svc.name} (the load balancer's health check on "
            f"{svc.health_check_node_port or 'the healthCheckNodePort'} does that), or set {pol}: Cluster "
            "(the client's source address is then lost)."))

    if via == "load-balancer" and svc.lb_source_ranges and not _in_ranges(exp.source.ip, svc.lb_source_ranges):
        diags.append(Diagnostic(
            "source-range-blocked", "error",
            f"the source {exp.source.ip} is outside {svc.key}'s loadBalancerSourceRanges "
            f"({', '.join(svc.lb_source_ranges)}): kube-proxy's KUBE-PROXY-FIREWALL drops it.",
            "Add the client's range to spec.loadBalancerSourceRanges, or send from an allowed address."))

    if svc.session_affinity == "ClientIP":
        diags.append(Diagnostic(
            "session-affinity", "info",
            f"{svc.key} has sessionAffinity: ClientIP: a client keeps the backend of its first connection for "
            f"{svc.affinity_timeout or 10800} s (iptables `-m recent` lists per endpoint). The probabilities shown are "
            "for a new client.",
            "Use --returning-client to see the path of a client that connected before."))

    if any(e.ip == exp.source.ip for e in eps):
        share = sum(o.probability for o in exp.outcomes if o.endpoint and o.endpoint.startswith(exp.source.ip + ":"))
        diags.append(Diagnostic(
            "hairpin-masquerade", "info",
            f"the source {exp.source.ip} is itself an endpoint of {svc.key}: when it picks itself "
            f"({share * 100:.1f}%) the KUBE-SEP rule marks the packet for masquerade, so the pod sees the node's "
            "address as the source instead of its own.",
            "Expected behaviour; the CNI bridge needs hairpin mode for such packets to come back to the pod."))

    if dp.mode == "iptables" and rs is not None:
        _rules_checks(snap, exp, rs, selection)
    elif dp.mode == "ipvs":
        _ipvs_rules_checks(exp, dp, selection)
    _dataplane_checks(snap, exp, dp)

    uncertain = [o for o in exp.outcomes if not o.certain]
    if uncertain:
        assumptions = sorted({a for o in uncertain for a in o.assumptions})
        diags.append(Diagnostic(
            "unknown-match", "warning",
            "part of the answer depends on something the dump does not say: " + "; ".join(assumptions[:4]) + ".",
            "Give what is missing (--ipset, the interface) or read the rules named in the warnings."))


def _rules_checks(snap: Snapshot, exp: Explanation, rs: Ruleset, selection: EndpointSelection | None) -> None:
    svc, port, node = exp.service, exp.port, exp.node
    if port is None or svc.port_by(port.port) is None or svc.headless or selection is None:
        return
    proto = port.protocol.lower()
    cluster_chain = svc_chain(svc.namespace, svc.name, port.name, proto)
    legacy_chain = svc_chain(svc.namespace, svc.name, port.name, proto, legacy_port_format=True)
    chain = cluster_chain if rs.chain("nat", cluster_chain) else (
        legacy_chain if rs.chain("nat", legacy_chain) else None)
    expected = list(selection.cluster_endpoints or ())
    services = rs.chain("nat", "KUBE-SERVICES")
    vip_rule = services is not None and any(f"-d {ip}/" in r.text or f"-d {ip} " in r.text
                                            for ip in svc.cluster_ips if ip != "None" for r in services.raw)
    if expected and chain is None and not vip_rule:
        exp.diagnostics.append(Diagnostic(
            "rules-missing", "error",
            f"the API has {svc.key}:{port.name or port.port} with {len(expected)} usable endpoint(s), but node "
            f"{node}'s rules have no {cluster_chain} chain and no KUBE-SERVICES rule for its cluster IP: kube-proxy "
            "has not programmed it.",
            "Check kube-proxy on that node (`kubectl -n kube-system logs` of its pod): iptables-restore failures, "
            "a crash loop, or a different proxy mode."))
        return
    if chain is None:
        return
    programmed = _programmed_endpoints(rs, chain) or set()
    want = {e.endpoint for e in expected}
    if want != programmed and (want or programmed):
        extra = sorted(programmed - want)
        missing = sorted(want - programmed)
        parts = []
        if extra:
            why = []
            for ep in extra[:5]:
                v = selection.verdict(ep)
                why.append(f"{ep} ({v.cluster_reason})" if v is not None else f"{ep} (not in the API)")
            parts.append(f"DNATs to {', '.join(why)}")
        if missing:
            parts.append(f"lacks {', '.join(missing[:5])}")
        exp.diagnostics.append(Diagnostic(
            "rules-stale", "error",
            f"node {node}'s {chain} (for {svc.key}:{port.name or port.port}) " + " and ".join(parts) +
            ", compared with what kube-proxy would program from the API's endpoints.",
            "kube-proxy on this node is behind the API: look at its logs, and compare with another node "
            "(`svctrace explain ... --node OTHER`)."))
    _nodes_disagree(snap, exp, chain, programmed)


def _nodes_disagree(snap: Snapshot, exp: Explanation, chain: str, mine: set[str]) -> None:
    others: dict[str, set[str]] = {}
    for name, nf in snap.nodes.items():
        if name == exp.node or not nf.get("iptables-save"):
            continue
        try:
            rs = nf.parsed("iptables-save", load_ruleset)
        except Exception:  # a damaged other dump must not spoil this answer
            continue
        got = _programmed_endpoints(rs, chain)
        if got is not None and got != mine:
            others[name] = got
    if others:
        detail = "; ".join(f"{n}: {', '.join(sorted(v)) or 'none'}" for n, v in sorted(others.items())[:3])
        exp.diagnostics.append(Diagnostic(
            "nodes-disagree", "warning",
            f"nodes program {chain} differently: {exp.node}: {', '.join(sorted(mine)) or 'none'}; {detail}.",
            "The same Service port should have the same endpoints on every node (Local policies aside): a node "
            "whose kube-proxy is stuck answers differently."))


def _ping_diagnostic(exp: Explanation, dp: Dataplane) -> Diagnostic:
    svc = exp.service
    ip = exp.destination["ip"]
    ports = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports)
    test = f"Test the Service with a port instead: `nc -zv {ip} {svc.ports[0].port if svc.ports else 80}` from a pod."
    answered = any(o.verdict == "accept" and o.endpoint is None and o.path and any(
        s.hook == "INPUT" for s in o.path) for o in exp.outcomes)
    if dp.mode == "ipvs":
        if answered or any(o.verdict == "accept" for o in exp.outcomes):
            what = (f"in IPVS mode kube-proxy puts every Service IP on the node's kube-ipvs0 interface, so the node "
                    f"itself answers ping to {ip} (before 1.26, or without KUBE-IPVS-FILTER): a reply proves only that "
                    "the node is there, not that a backend is.")
        else:
            what = (f"in IPVS mode since 1.26, KUBE-IPVS-FILTER rejects traffic to {ip} on ports the Service does not "
                    f"serve ({ports}), ping included.")
        return Diagnostic("ping-virtual-ip", "warning", f"ping to {ip}: {what}", test)
    if dp.mode == "nftables":
        return Diagnostic(
            "ping-virtual-ip", "warning",
            f"ping to {ip} is rejected: in nftables mode (kube-proxy 1.30+) the cluster-ips-check chain rejects "
            f"traffic to a ClusterIP on anything but the Service's ports ({ports}), so ping gets an ICMP error "
            "at once instead of a reply.", test)
    return Diagnostic(
        "ping-virtual-ip", "warning",
        f"ping to {ip} gets no answer: in iptables mode a Service IP is not an address of any interface, only DNAT "
        f"rules for the Service's ports ({ports}). An ICMP echo request matches none of them, is not translated, "
        "and is routed on towards an address no host owns.",
        test + " (In IPVS mode the node answers ping itself, before 1.26; in nftables mode it is rejected.)")


def _ipvs_rules_checks(exp: Explanation, dp: Dataplane, selection: EndpointSelection | None) -> None:
    """IPVS: the virtual server's real servers (weight > 0) against kube-proxy's endpoint selection."""
    svc, port = exp.service, exp.port
    if port is None or svc.port_by(port.port) is None or selection is None or dp.ipvs is None:
        return
    vip = next((ip for ip in svc.cluster_ips if ip != "None"), None)
    vs = next((v for v in dp.ipvs.services if str(v.ip) == vip and v.port == port.port
               and v.protocol == port.protocol.lower()), None)
    expected = {e.endpoint for e in (selection.cluster_endpoints or ())}
    if vs is None:
        if expected:
            exp.diagnostics.append(Diagnostic(
                "rules-missing", "error",
                f"the API has {svc.key}:{port.name or port.port} with {len(expected)} usable endpoint(s), but node "
                f"{dp.node}'s IPVS table has no virtual server {vip}:{port.port}/{port.protocol.lower()}.",
                "Check kube-proxy (IPVS mode) on that node: its logs, and `ipvsadm -Ln`."))
        return
    programmed = {f"{r.ip}:{r.port}" for r in vs.reals if (r.weight or 0) > 0}
    if expected and programmed != expected:
        extra, missing = sorted(programmed - expected), sorted(expected - programmed)
        parts = ([f"sends to {', '.join(extra[:5])}"] if extra else []) + (
            [f"lacks {', '.join(missing[:5])}"] if missing else [])
        exp.diagnostics.append(Diagnostic(
            "rules-stale", "error",
            f"node {dp.node}'s IPVS virtual server {vs.label} " + " and ".join(parts) +
            ", compared with what kube-proxy would program from the API's endpoints.",
            "kube-proxy on this node is behind the API: look at its logs."))


def _dataplane_checks(snap: Snapshot, exp: Explanation, dp: Dataplane) -> None:
    nf = snap.nodes.get(dp.node or "")
    if nf is None:
        return
    legacy = nf.get("iptables-legacy-save")
    nft = nf.get("iptables-save")
    if legacy and nft and "KUBE-" in legacy and "KUBE-" in nft:
        exp.diagnostics.append(Diagnostic(
            "mixed-iptables-backends", "error",
            f"node {exp.node} has KUBE-* rules in both iptables-legacy and iptables-nft: the kernel runs both sets, "
            "and which one kube-proxy maintains depends on its image.",
            "Flush the stale backend's KUBE-* chains (`iptables-legacy-save | grep KUBE` to see them) and make the "
            "kubelet, kube-proxy and the CNI use one backend."))
    configured = (nf.get("proxy-mode") or "").strip() or snap.cluster.proxy.mode
    rs = dp.iptables
    has_iptables_mode = rs is not None and any(c.name.startswith("KUBE-SVC-") for c in rs.iter_chains())
    ipvs_traces = (rs is not None and any(c.name in ("KUBE-LOAD-BALANCER", "KUBE-LOOP-BACK", "KUBE-IPVS-FILTER")
                                          for c in rs.iter_chains())) or bool(
        nf.get("ipvsadm") and re.search(r"(?m)^(TCP|UDP|-A)", nf.get("ipvsadm") or ""))
    nft_text = (nf.get("nft") or "") + (nf.get("nft.json") or "")
    nft_mode = "kube-proxy" in nft_text and ("table ip kube-proxy" in nft_text or '"kube-proxy"' in nft_text)
    modes = {m for m, present in (("iptables", has_iptables_mode), ("ipvs", ipvs_traces), ("nftables", nft_mode))
             if present}
    problems = []
    if configured and configured in ("iptables", "ipvs", "nftables") and modes and configured not in modes:
        problems.append(f"kube-proxy is configured for {configured} but the node holds {', '.join(sorted(modes))}-mode "
                        "rules")
    leftovers = sorted(modes - {dp.mode})
    if leftovers:
        problems.append(f"the node runs {dp.mode} mode and still holds {' and '.join(leftovers)}-mode rules "
                        "(KUBE-SVC chains, IPVS virtual servers or an `ip kube-proxy` table)")
    if problems:
        exp.diagnostics.append(Diagnostic(
            "proxy-mode-mismatch", "warning", "; ".join(problems) + ".",
            "Leftovers of another mode keep matching packets; run `kube-proxy --cleanup` for the old mode "
            "(or reboot the node) after switching."))
