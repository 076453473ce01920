"""The iptables rules kube-proxy (iptables mode) programs on one node, recomputed from Kubernetes objects.

:func:`generate` takes Services, EndpointSlices (or v1 Endpoints) and Nodes as plain dicts (what
``kubectl get -o json`` prints) and a :class:`ProxyConfig`, and returns :class:`ProxyRules`:

* :func:`to_restore` — what kube-proxy hands ``iptables-restore --noflush`` (``RestoreAll``): the
  ``*filter`` then ``*nat`` sections, chain lines then rules, with kube-proxy's own option order and
  comment quoting.  By default the built-in chains and kube-proxy's jumps into its chains
  (``EnsureRule``'d separately by kube-proxy, not part of its restore input) are added, so the text
  loads into empty tables and reads like a whole node.
* :func:`to_save` — the same rules as ``iptables-save`` (iptables 1.8.9) prints them after loading:
  built-in chains first, then user chains sorted by name; ``-s``/``-d`` with a prefix length and
  before ``-p``; matches in the order they were loaded; comments quoted; ``MARK --or-mark X`` as
  ``--set-xmark X/X``; ``REJECT --reject-with icmp-port-unreachable``; ``recent`` with
  ``--mask``/``--rsource``; probabilities as the kernel stores them (``round(p * 2^31) / 2^31``,
  printed with 11 decimals).

Layout by ``ProxyConfig.kube_version``:

* **1.25+** — ``pkg/proxy/iptables/proxier.go`` ``syncProxyRules`` of **v1.28** (KUBE-SVC / KUBE-SVL /
  KUBE-EXT / KUBE-FW / KUBE-SEP, KUBE-PROXY-FIREWALL for loadBalancerSourceRanges, "has no (local)
  endpoints" REJECT / DROP in the filter table).  1.27+: kube-proxy writes its own KUBE-FIREWALL
  "block incoming localnet connections" rule (IPv4, localhost NodePorts on).  1.29+:
  ``conntrack_tcp_be_liberal`` drops the INVALID rule.
* **1.24** — the same layout, but a KUBE-FW chain ends in ``-j KUBE-MARK-DROP`` (no
  KUBE-PROXY-FIREWALL yet).  Not checked against 1.24's source: an approximation.
* **before 1.24** — the KUBE-XLB layout of v1.22's ``syncProxyRules`` (KUBE-SVC, KUBE-XLB for
  externalTrafficPolicy Local, KUBE-FW for every LoadBalancer IP ending in ``-j KUBE-MARK-DROP``,
  KUBE-SEP; masquerade rules inside KUBE-SVC; internalTrafficPolicy Local (1.22+) keeps only this
  node's endpoints for *all* traffic to the port, NodePorts included; no terminating endpoints; topology
  hints not modelled).
  Before 1.19 the port name of an unnamed port keeps its colon (``ns/name:``); before 1.17
  probabilities have 5 decimals instead of 10.

Rows of ``svctrace.kubeproxy.versions`` across layouts: KUBE-FORWARD's INVALID drop (1.14, the oldest version
modelled: older ones are refused), ``--random-fully`` when the node's iptables has it (1.16), KUBE-POSTROUTING
clearing the mark (1.19; one ``-m mark --mark ... -j MASQUERADE`` rule before), one KUBE-FORWARD conntrack rule
(1.23; two before), nfacct counters when the kernel has nfnetlink_acct (1.30 INVALID drops, 1.31 localhost
NodePorts). The local-traffic detector is ``--detect-local-mode``'s (ClusterCIDR, NodeCIDR, BridgeInterface,
InterfaceNamePrefix: ``ProxyConfig.local_detector``). The filter table's built-in jumps are 1.22's for every
version before 1.25 (not checked against 1.14-1.21 sources).

Normalisations (kube-proxy itself is not deterministic here): Services are processed sorted by
service port name (kube-proxy iterates a Go map, so the order of rules of *different* Services in
KUBE-SERVICES / KUBE-NODEPORTS / KUBE-EXTERNAL-SERVICES varies from run to run; kube-proxy's tests
sort them too); the node addresses matching ``nodePortAddresses`` keep the order of
``interface_addresses`` (kube-proxy: map order).

Pure standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from svctrace.dataplane.iptables.rules import BUILTIN_CHAINS
from svctrace.kubeproxy.config import IPAddr, NodePortAddresses, ProxyConfig, go_hex08, nodeport_addresses
from svctrace.kubeproxy.endpoints import (
    EndpointInfo,
    EndpointSelection,
    KubeObject,
    ServicePortInfo,
)
from svctrace.kubeproxy.names import (
    ext_chain,
    fw_chain,
    sep_chain,
    svc_chain,
    svl_chain,
    xlb_chain,
)
from svctrace.kubeproxy.plan import (
    NoEndpoints,
    PortPlan,
    Shared,
    collect_ports,
    node_context,
    plan_ports,
)
from svctrace.kubeproxy.render.common import (
    SAVE_TABLES,
    IptRule,
    SaveMemo,
    forward_accept_rules,
    iptables_save,
    masquerade_rules,
    quoted,
    user_and_builtin_chains,
)
from svctrace.kubeproxy.versions import has

__all__ = [
    "ProxyRules",
    "generate",
    "to_restore",
    "to_save",
]


KUBE_SERVICES: Final = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES: Final = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS: Final = "KUBE-NODEPORTS"
KUBE_POSTROUTING: Final = "KUBE-POSTROUTING"
KUBE_MARK_MASQ: Final = "KUBE-MARK-MASQ"
KUBE_MARK_DROP: Final = "KUBE-MARK-DROP"
KUBE_FORWARD: Final = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL: Final = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL: Final = "KUBE-FIREWALL"

LARGE_CLUSTER_ENDPOINTS: Final = 1000
_NEW = ("-m", "conntrack", "--ctstate", "NEW")
_NODEPORTS_COMMENT: Final = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'

# (table, target chain, source chain, comment, extra args): iptablesJumpChains, in order.  kube-proxy
# EnsureRule(Prepend)s each one, so in the end the *last* one for a built-in chain comes first.
_JUMPS_MODERN: Final = (
    ("filter", KUBE_EXTERNAL_SERVICES, "INPUT", "kubernetes externally-visible service portals", _NEW),
    ("filter", KUBE_EXTERNAL_SERVICES, "FORWARD", "kubernetes externally-visible service portals", _NEW),
    ("filter", KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports", ()),
    ("filter", KUBE_SERVICES, "FORWARD", "kubernetes service portals", _NEW),
    ("filter", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", _NEW),
    ("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules", ()),
    ("filter", KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", _NEW),
    ("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", _NEW),
    ("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", ()),
    ("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals", ()),
    ("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules", ()),
)


@dataclass(frozen=True)
class ProxyRules:
    """The result of :func:`generate`."""

    config: ProxyConfig
    #: table -> chain lines of kube-proxy's restore input, in its order (a chain may repeat: before
    #: 1.24 kube-proxy wrote a KUBE-FW chain line once per load-balancer IP).
    chains: dict[str, tuple[str, ...]]
    #: table -> rules of kube-proxy's restore input, in its order.
    rules: dict[str, tuple[IptRule, ...]]
    #: table -> the jumps from built-in chains (PREROUTING, INPUT, ...), in their final order.
    base_rules: dict[str, tuple[IptRule, ...]]
    #: table -> chains that exist but are not in the restore input (EnsureChain'd / the kubelet's).
    extra_chains: dict[str, tuple[str, ...]]
    #: table -> rules that are not kube-proxy's (the kubelet's, with ``kubelet_rules``).
    extra_rules: dict[str, tuple[IptRule, ...]] = field(default_factory=dict)
    #: The endpoint selection behind each Service port's rules, in processing order.
    selections: tuple[EndpointSelection, ...] = field(default=())
    large_cluster_mode: bool = False

    def all_chains(self, table: str) -> list[str]:
        """Built-in chains, then user chains sorted (iptables-save's order)."""
        return user_and_builtin_chains(table, (*self.chains.get(table, ()), *self.extra_chains.get(table, ())))

    def loaded_rules(self, table: str) -> list[IptRule]:
        """The rules of a table as loaded: base-chain jumps, the kubelet's, then kube-proxy's."""
        return [*self.base_rules.get(table, ()), *self.extra_rules.get(table, ()), *self.rules.get(table, ())]

    def chain_rules(self, table: str, chain: str) -> list[IptRule]:
        """The rules of one chain as loaded."""
        return [r for r in self.loaded_rules(table) if r.chain == chain]


# --------------------------------------------------------------------------- probabilities


def _probability(n: int, version: str) -> str:
    """``computeProbability``: ``fmt.Sprintf("%0.10f", 1.0/float64(n))`` (``%0.5f`` before 1.17)."""
    return f"{1.0 / n:.10f}" if has(version, "probability-10-decimals") else f"{1.0 / n:.5f}"


# --------------------------------------------------------------------------- generation


class _Builder:
    def __init__(self) -> None:
        self.chains: dict[str, list[str]] = {t: [] for t in SAVE_TABLES}
        self.rules: dict[str, list[IptRule]] = {t: [] for t in SAVE_TABLES}

    def chain(self, table: str, name: str) -> None:
        self.chains[table].append(name)

    def rule(self, table: str, chain: str, *args: str) -> None:
        self.rules[table].append(IptRule(table, chain, tuple(args)))

    def add(self, rules: Iterable[IptRule]) -> None:
        for r in rules:
            self.rules[r.table].append(r)


@dataclass
class _Ctx:
    cfg: ProxyConfig
    version: str
    legacy_names: bool
    large: bool
    mark: str
    node_ip: IPAddr | None

    def comment(self, text: str) -> tuple[str, ...]:
        """``appendServiceCommentLocked``: no comment in large-cluster mode."""
        return () if self.large else ("-m", "comment", "--comment", text)

    def if_local(self) -> tuple[str, ...]:
        """The local-traffic detector's IfLocal (``-s CIDR``, ``-i bridge``, ``-i prefix+``)."""
        d = self.cfg.local_detector()
        assert d is not None
        return d[0]

    def if_not_local(self) -> tuple[str, ...]:
        d = self.cfg.local_detector()
        assert d is not None
        return d[1]

    def probability(self, n: int) -> str:
        return _probability(n, self.version)

    def key(self) -> tuple[object, ...]:
        """What a Service port's rules read beside its plan (``_each_port``)."""
        cfg = self.cfg
        return (self.version, self.legacy_names, self.large, self.mark, cfg.masquerade_all, cfg.nfacct,
                cfg.is_ipv6, cfg.local_detector())


def _each_port(b: _Builder, plans: Sequence[PortPlan], write: Callable[[PortPlan], None], layout: tuple[object, ...],
               shared: Shared | None) -> None:
    """``write`` each plan's rules; with ``shared``, a plan whose rules an earlier node wrote (the same
    :meth:`PortPlan.key` and ``layout``: what else ``write`` reads) gets the same rules without writing them."""
    if shared is None:
        for plan in plans:
            write(plan)
        return
    blocks = shared.blocks
    chains, rules = b.chains, b.rules
    for plan in plans:
        key = ("iptables", layout, shared.key_of(plan))
        block = blocks.get(key)
        if block is not None:
            for t, cs, rs in block:
                chains[t].extend(cs)
                rules[t].extend(rs)
            continue
        marks = [(t, len(chains[t]), len(rules[t])) for t in SAVE_TABLES]
        write(plan)
        blocks[key] = [(t, chains[t][c:], rules[t][r:]) for t, c, r in marks]


def _node_ips_matching(cfg: ProxyConfig, addresses: NodePortAddresses) -> list[IPAddr]:
    """The node's addresses inside the ``--nodeport-addresses`` CIDRs; without ``interface_addresses``, the
    node IPs and the loopback addresses."""
    addrs = cfg.interface_addresses
    if addrs is None:
        addrs = (*cfg.node_ips, "127.0.0.1", "::1")
    return addresses.node_ips(addrs)


def generate(
    services: Iterable[KubeObject],
    endpoint_slices: Iterable[KubeObject] | None = None,
    config: ProxyConfig | None = None,
    *,
    nodes: Iterable[KubeObject] = (),
    endpoints: Iterable[KubeObject] | None = None,
    shared: Shared | None = None,
) -> ProxyRules:
    """kube-proxy's rules on ``config.node_name`` for these objects.

    A Service's endpoints come from its EndpointSlices; a Service with no slice at all falls back to
    its v1 Endpoints object in ``endpoints`` (old clusters).  ``nodes`` may hold any Node objects;
    the one named ``config.node_name`` gives the node's labels (topology zone) unless
    ``config.node_labels`` is set.  ``shared``: several nodes of one cluster rendered from the same objects
    share what is the same on each (:class:`~svctrace.kubeproxy.plan.Shared`).
    """
    if config is None:
        raise TypeError("generate() needs a ProxyConfig")
    cfg, labels = node_context(config.for_mode("iptables"), nodes)
    ports = collect_ports(services, endpoint_slices, endpoints, cfg, shared)
    total = sum(len(eps) for _, eps in ports)
    version = cfg.kube_version
    assert version is not None
    ctx = _Ctx(cfg=cfg, version=version, legacy_names=not has(version, "port-name-colon-optional"),
               large=total > LARGE_CLUSTER_ENDPOINTS, mark=cfg.mark, node_ip=cfg.node_ip)
    plans = plan_ports(ports, cfg, labels, shared)
    if not has(version, "ext-svl-chains"):
        return _generate_legacy(ctx, plans, shared)
    return _generate_modern(ctx, plans, shared)


def _base_rules(jumps: Iterable[tuple[str, str, str, str, tuple[str, ...]]],
                kubelet: Iterable[tuple[str, str, str]] = ()) -> dict[str, tuple[IptRule, ...]]:
    """Apply EnsureRule(Prepend) for each jump in order; the kubelet's jumps go last (so first)."""
    out: dict[str, list[IptRule]] = {t: [] for t in SAVE_TABLES}
    for table, dst, src, comment, extra in jumps:
        args = (*extra, "-m", "comment", "--comment", quoted(comment), "-j", dst)
        out[table].insert(0, IptRule(table, src, args))
    for table, dst, src in kubelet:
        out[table].insert(0, IptRule(table, src, ("-j", dst)))
    # Stable order: by built-in chain, keeping each chain's rule order.
    return {t: tuple(sorted(rs, key=lambda r: BUILTIN_CHAINS[t].index(r.chain))) for t, rs in out.items()}


def _kubelet_rules(ctx: _Ctx, b: _Builder, extra: dict[str, list[str]], *, mark_drop: bool,
                   localnet: bool) -> list[tuple[str, str, str]]:
    """The kubelet's KUBE-FIREWALL (and, before 1.25, KUBE-MARK-DROP) rules, as extra rules."""
    if mark_drop:
        extra["nat"].append(KUBE_MARK_DROP)
        drop = go_hex08(1 << 15)
        b.rule("nat", KUBE_MARK_DROP, "-j", "MARK", "--or-mark", drop)
        b.rule("filter", KUBE_FIREWALL, "-m", "comment", "--comment",
               quoted("kubernetes firewall for dropping marked packets"),
               "-m", "mark", "--mark", f"{drop}/{drop}", "-j", "DROP")
    if localnet:
        b.rule("filter", KUBE_FIREWALL, "-m", "comment", "--comment", quoted("block incoming localnet connections"),
               "--dst", "127.0.0.0/8", "!", "--src", "127.0.0.0/8",
               "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP")
    extra["filter"].append(KUBE_FIREWALL)
    # kubelet: EnsureRule(Prepend) OUTPUT first, then INPUT.
    return [("filter", KUBE_FIREWALL, "OUTPUT"), ("filter", KUBE_FIREWALL, "INPUT")]


def _write_service_to_endpoint_rules(ctx: _Ctx, b: _Builder, spn: str, sp: ServicePortInfo, chain: str,
                                     eps: Sequence[EndpointInfo]) -> None:
    """``writeServiceToEndpointRules`` (1.24+: per-endpoint ``"svc -> ip:port"`` comments)."""
    seps = [sep_chain(sp.namespace, sp.name, sp.port_name, sp.protocol, e.endpoint,
                      legacy_port_format=ctx.legacy_names) for e in eps]
    if sp.session_affinity_seconds is not None:
        for e, sep in zip(eps, seps, strict=True):
            b.rule("nat", chain, *ctx.comment(quoted(f"{spn} -> {e.endpoint}")),
                   "-m", "recent", "--name", sep, "--rcheck", "--seconds", str(sp.session_affinity_seconds),
                   "--reap", "-j", sep)
    n = len(eps)
    for i, (e, sep) in enumerate(zip(eps, seps, strict=True)):
        args: list[str] = list(ctx.comment(quoted(f"{spn} -> {e.endpoint}")))
        if i < n - 1:
            args += ["-m", "statistic", "--mode", "random", "--probability", ctx.probability(n - i)]
        b.rule("nat", chain, *args, "-j", sep)


def _write_endpoint_chain(ctx: _Ctx, b: _Builder, spn: str, sp: ServicePortInfo, e: EndpointInfo, sep: str) -> None:
    proto = sp.protocol.lower()
    b.chain("nat", sep)
    base = ctx.comment(spn)
    b.rule("nat", sep, *base, "-s", e.ip, "-j", KUBE_MARK_MASQ)
    args: list[str] = list(base)
    if sp.session_affinity_seconds is not None:
        args += ["-m", "recent", "--name", sep, "--set"]
    args += ["-m", proto, "-p", proto, "-j", "DNAT", "--to-destination", e.endpoint]
    b.rule("nat", sep, *args)


def _no_endpoints(verdict: NoEndpoints | None, spn: str) -> tuple[str, str]:
    """The filter rule's target and comment for traffic without an endpoint (``"", ""``: it has one)."""
    if verdict is None:
        return "", ""
    if verdict == "reject":
        return "REJECT", quoted(f"{spn} has no endpoints")
    return "DROP", quoted(f"{spn} has no local endpoints")


def _write_masquerade_chains(ctx: _Ctx, b: _Builder) -> None:
    """The nat chains every layout declares, KUBE-POSTROUTING's masquerade of marked packets and
    KUBE-MARK-MASQ (``syncProxyRules``: "Install the kubernetes-specific postrouting rules"); --random-fully
    when the node's iptables has it (1.16+), the mark cleared first (1.19+)."""
    for chain in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
        b.chain("nat", chain)
    v = ctx.version
    b.add(masquerade_rules(ctx.mark, bool(ctx.cfg.random_fully) and has(v, "masquerade-random-fully"),
                           clear_mark=has(v, "postrouting-clear-mark")))


def _write_forward_chain(ctx: _Ctx, b: _Builder, *, invalid_drop: bool) -> None:
    """KUBE-FORWARD: drop INVALID (1.14+; not when conntrack is liberal, 1.29+; counted in nfacct, 1.30+),
    accept marked and established traffic."""
    if invalid_drop and has(ctx.version, "forward-invalid-drop"):
        count = (("-m", "nfacct", "--nfacct-name", "ct_state_invalid_dropped_pkts")
                 if ctx.cfg.nfacct and has(ctx.version, "nfacct-ct-invalid") else ())
        b.rule("filter", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID", *count, "-j", "DROP")
    b.add(forward_accept_rules(ctx.mark, one_conntrack_rule=has(ctx.version, "forward-conntrack-one-rule")))


def _write_health_check_rule(b: _Builder, spn: str, sp: ServicePortInfo) -> None:
    """"Capture healthCheckNodePorts": accept the port kube-proxy's health check server listens on."""
    if sp.health_check_node_port:
        b.rule("filter", KUBE_NODEPORTS, "-m", "comment", "--comment", quoted(f"{spn} health check node port"),
               "-m", "tcp", "-p", "tcp", "--dport", str(sp.health_check_node_port), "-j", "ACCEPT")


def _generate_modern(ctx: _Ctx, plans: Sequence[PortPlan], shared: Shared | None) -> ProxyRules:
    cfg, version = ctx.cfg, ctx.version
    has_proxy_firewall = has(version, "proxy-firewall-chain")
    b = _Builder()
    extra: dict[str, list[str]] = {t: [] for t in SAVE_TABLES}
    np_addresses = nodeport_addresses(cfg, "iptables")
    localhost_nodeports = cfg.localhost_nodeports and np_addresses.contains_ipv4_loopback
    isv6 = cfg.is_ipv6
    detector = cfg.local_detector() is not None

    for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS):
        b.chain("filter", chain)
    if has_proxy_firewall:
        b.chain("filter", KUBE_PROXY_FIREWALL)
    _write_masquerade_chains(ctx, b)

    kube_proxy_firewall = not isv6 and localhost_nodeports and has(version, "localhost-nodeport-firewall")
    if kube_proxy_firewall:
        b.chain("filter", KUBE_FIREWALL)
        b.rule("filter", KUBE_FIREWALL, "-m", "comment", "--comment", quoted("block incoming localnet connections"),
               "-d", "127.0.0.0/8", "!", "-s", "127.0.0.0/8",
               "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP")

    def port(plan: PortPlan) -> None:
        sp = plan.service_port
        proto = sp.protocol.lower()
        spn = sp.service_port_name(legacy_port_format=ctx.legacy_names)
        names = (sp.namespace, sp.name, sp.port_name, sp.protocol)
        cluster_chain = svc_chain(*names, legacy_port_format=ctx.legacy_names)
        local_chain = svl_chain(*names, legacy_port_format=ctx.legacy_names)
        external_chain = ext_chain(*names, legacy_port_format=ctx.legacy_names)
        firewall_chain = fw_chain(*names, legacy_port_format=ctx.legacy_names)
        internal_chain = local_chain if plan.internal_local else cluster_chain
        external_policy_chain = local_chain if plan.external_local else cluster_chain
        # iptables writes the firewall chain only for a port with endpoints (nftables: always).
        uses_fw_chain = plan.has_endpoints and plan.filters_sources
        lb_chain = firewall_chain if uses_fw_chain else external_chain
        int_target, int_comment = _no_endpoints(plan.internal_no_endpoints, spn)
        ext_target, ext_comment = _no_endpoints(plan.external_no_endpoints, spn)

        dport = ("--dport", str(sp.port))
        # Capture the clusterIP.
        if plan.has_internal:
            b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} cluster IP"),
                   "-m", proto, "-p", proto, "-d", sp.cluster_ip, *dport, "-j", internal_chain)
        else:
            b.rule("filter", KUBE_SERVICES, "-m", "comment", "--comment", int_comment,
                   "-m", proto, "-p", proto, "-d", sp.cluster_ip, *dport, "-j", int_target)
        # Capture externalIPs.
        for eip in sp.external_ips:
            if plan.has_endpoints:
                b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} external IP"),
                       "-m", proto, "-p", proto, "-d", eip, *dport, "-j", external_chain)
            if not plan.has_external:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", ext_comment,
                       "-m", proto, "-p", proto, "-d", eip, *dport, "-j", ext_target)
        # Capture load-balancer ingress.
        for lbip in sp.load_balancer_vips:
            if plan.has_endpoints:
                b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} loadbalancer IP"),
                       "-m", proto, "-p", proto, "-d", lbip, *dport, "-j", lb_chain)
            if uses_fw_chain and has_proxy_firewall:
                b.rule("filter", KUBE_PROXY_FIREWALL, "-m", "comment", "--comment",
                       quoted(f"{spn} traffic not accepted by {firewall_chain}"),
                       "-m", proto, "-p", proto, "-d", lbip, *dport, "-j", "DROP")
        if not plan.has_external:
            for lbip in sp.load_balancer_vips:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", ext_comment,
                       "-m", proto, "-p", proto, "-d", lbip, *dport, "-j", ext_target)
        # Capture nodeports.
        if sp.node_port:
            if plan.has_endpoints:
                if localhost_nodeports and not isv6 and cfg.nfacct and has(version, "nfacct-localhost-nodeports"):
                    # Count localhost NodePort traffic (PR #125015): the same jump, for 127.0.0.0/8 first.
                    b.rule("nat", KUBE_NODEPORTS, "-m", "comment", "--comment", spn,
                           "-m", proto, "-p", proto, "-d", "127.0.0.0/8", "--dport", str(sp.node_port),
                           "-m", "nfacct", "--nfacct-name", "localhost_nps_accepted_pkts", "-j", external_chain)
                b.rule("nat", KUBE_NODEPORTS, "-m", "comment", "--comment", spn,
                       "-m", proto, "-p", proto, "--dport", str(sp.node_port), "-j", external_chain)
            if not plan.has_external:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", ext_comment,
                       "-m", "addrtype", "--dst-type", "LOCAL",
                       "-m", proto, "-p", proto, "--dport", str(sp.node_port), "-j", ext_target)
        # Capture healthCheckNodePorts.
        _write_health_check_rule(b, spn, sp)

        # Internal traffic handling.
        if plan.has_internal:
            args = ("-m", "comment", "--comment", quoted(f"{spn} cluster IP"),
                    "-m", proto, "-p", proto, "-d", sp.cluster_ip, *dport)
            if cfg.masquerade_all:
                b.rule("nat", internal_chain, *args, "-j", KUBE_MARK_MASQ)
            elif detector:
                b.rule("nat", internal_chain, *args, *ctx.if_not_local(), "-j", KUBE_MARK_MASQ)
        # External traffic handling.
        if plan.uses_external_chain:
            b.chain("nat", external_chain)
            if not plan.external_local:
                b.rule("nat", external_chain, "-m", "comment", "--comment",
                       quoted(f"masquerade traffic for {spn} external destinations"), "-j", KUBE_MARK_MASQ)
            else:
                if detector:
                    b.rule("nat", external_chain, "-m", "comment", "--comment",
                           quoted(f"pod traffic for {spn} external destinations"), *ctx.if_local(), "-j", cluster_chain)
                b.rule("nat", external_chain, "-m", "comment", "--comment",
                       quoted(f"masquerade LOCAL traffic for {spn} external destinations"),
                       "-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ)
                b.rule("nat", external_chain, "-m", "comment", "--comment",
                       quoted(f"route LOCAL traffic for {spn} external destinations"),
                       "-m", "addrtype", "--src-type", "LOCAL", "-j", cluster_chain)
            if plan.has_external:
                b.rule("nat", external_chain, "-j", external_policy_chain)
        # Firewall chain.
        if uses_fw_chain:
            b.chain("nat", firewall_chain)
            fw_args = ("-m", "comment", "--comment", quoted(f"{spn} loadbalancer IP"))
            for source in plan.allowed_sources:
                b.rule("nat", firewall_chain, *fw_args, "-s", source, "-j", external_chain)
            if has_proxy_firewall:
                b.rule("nat", firewall_chain, "-m", "comment", "--comment",
                       quoted(f"other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"))
            else:
                b.rule("nat", firewall_chain, *fw_args, "-j", KUBE_MARK_DROP)
        if plan.uses_cluster_chain:
            b.chain("nat", cluster_chain)
            _write_service_to_endpoint_rules(ctx, b, spn, sp, cluster_chain, plan.cluster_endpoints)
        if plan.uses_local_chain:
            b.chain("nat", local_chain)
            _write_service_to_endpoint_rules(ctx, b, spn, sp, local_chain, plan.local_endpoints)
        for e in plan.selection.all_reachable_endpoints:
            sep = sep_chain(*names, e.endpoint, legacy_port_format=ctx.legacy_names)
            _write_endpoint_chain(ctx, b, spn, sp, e, sep)

    _each_port(b, plans, port, (ctx.key(), has_proxy_firewall, localhost_nodeports), shared)

    # Finally, tail-call to the nodePorts chain.
    if np_addresses.match_all:
        dest: list[str] = ["-m", "addrtype", "--dst-type", "LOCAL"]
        if isv6:
            dest += ["!", "-d", "::1/128"]
        elif not localhost_nodeports:
            dest += ["!", "-d", "127.0.0.0/8"]
        b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", _NODEPORTS_COMMENT, *dest, "-j", KUBE_NODEPORTS)
    else:
        for ip in _node_ips_matching(cfg, np_addresses):
            if ip.is_loopback and (isv6 or not localhost_nodeports):
                continue
            b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", _NODEPORTS_COMMENT,
                   "-d", str(ip), "-j", KUBE_NODEPORTS)

    _write_forward_chain(ctx, b, invalid_drop=not (
        cfg.conntrack_tcp_be_liberal and has(version, "conntrack-liberal-no-invalid-drop")))

    jumps = [j for j in _JUMPS_MODERN if has_proxy_firewall or j[1] != KUBE_PROXY_FIREWALL]
    kubelet: list[tuple[str, str, str]] = []
    if not has_proxy_firewall:
        extra["nat"].append(KUBE_MARK_DROP)
    kb = _Builder()
    if cfg.kubelet_rules:
        kubelet = _kubelet_rules(ctx, kb, extra, mark_drop=not has_proxy_firewall,
                                 localnet=not isv6 and not kube_proxy_firewall)
    return _finish(ctx, b, kb, extra, _base_rules(jumps, kubelet), [p.selection for p in plans])


def _finish(ctx: _Ctx, b: _Builder, kubelet: _Builder, extra: dict[str, list[str]],
            base: dict[str, tuple[IptRule, ...]], selections: Sequence[EndpointSelection]) -> ProxyRules:
    extra_chains = {t: tuple(dict.fromkeys(c for c in extra[t] if c not in b.chains[t])) for t in SAVE_TABLES}
    return ProxyRules(
        config=ctx.cfg,
        chains={t: tuple(b.chains[t]) for t in SAVE_TABLES},
        rules={t: tuple(b.rules[t]) for t in SAVE_TABLES},
        base_rules=base,
        extra_chains=extra_chains,
        extra_rules={t: tuple(kubelet.rules[t]) for t in SAVE_TABLES},
        selections=tuple(selections),
        large_cluster_mode=ctx.large,
    )


# --------------------------------------------------------------------------- before 1.24 (KUBE-XLB)


def _generate_legacy(ctx: _Ctx, plans: Sequence[PortPlan], shared: Shared | None) -> ProxyRules:
    """v1.22 ``syncProxyRules``: KUBE-SVC / KUBE-XLB / KUBE-FW / KUBE-SEP."""
    cfg = ctx.cfg
    b = _Builder()
    extra: dict[str, list[str]] = {t: [] for t in SAVE_TABLES}
    isv6 = cfg.is_ipv6
    detector = cfg.local_detector() is not None
    for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS):
        b.chain("filter", chain)
    _write_masquerade_chains(ctx, b)

    # GetNodeAddresses: the zero CIDR (no nodePortAddresses) or the matching node IPs.
    np_addresses = nodeport_addresses(cfg, "iptables")
    node_addresses: list[str] = ["zero"] if np_addresses.match_all else [
        str(ip) for ip in _node_ips_matching(cfg, np_addresses)]

    def port(plan: PortPlan) -> None:
        # The decisions (plan.py, pre-1.24 endpoint filtering): the ready endpoints the port uses, and with
        # externalTrafficPolicy Local this node's ready ones.
        sp = plan.service_port
        ready = plan.cluster_endpoints
        has_endpoints = plan.has_endpoints
        local_external = plan.external_local
        proto = sp.protocol.lower()
        spn = sp.service_port_name(legacy_port_format=ctx.legacy_names)
        names = (sp.namespace, sp.name, sp.port_name, sp.protocol)
        chain = svc_chain(*names, legacy_port_format=ctx.legacy_names)
        xlb = xlb_chain(*names, legacy_port_format=ctx.legacy_names)
        fwc = fw_chain(*names, legacy_port_format=ctx.legacy_names)

        # Per-endpoint chains first.
        for e in ready:
            _write_endpoint_chain(ctx, b, spn, sp, e, sep_chain(*names, e.endpoint,
                                                                legacy_port_format=ctx.legacy_names))
        if has_endpoints:
            b.chain("nat", chain)
        if local_external:
            b.chain("nat", xlb)

        dport = ("--dport", str(sp.port))
        if has_endpoints:
            args: tuple[str, ...] = ("-m", "comment", "--comment", quoted(f"{spn} cluster IP"),
                                     "-m", proto, "-p", proto, "-d", sp.cluster_ip, *dport)
            if cfg.masquerade_all:
                b.rule("nat", chain, *args, "-j", KUBE_MARK_MASQ)
            elif detector:
                b.rule("nat", chain, *args, *ctx.if_not_local(), "-j", KUBE_MARK_MASQ)
            b.rule("nat", KUBE_SERVICES, *args, "-j", chain)
        else:
            b.rule("filter", KUBE_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} has no endpoints"),
                   "-m", proto, "-p", proto, "-d", sp.cluster_ip, *dport, "-j", "REJECT")

        for eip in sp.external_ips:
            if has_endpoints:
                args = ("-m", "comment", "--comment", quoted(f"{spn} external IP"),
                        "-m", proto, "-p", proto, "-d", eip, *dport)
                dest = xlb
                if not local_external:
                    dest = chain
                    if detector:
                        b.rule("nat", chain, *args, *ctx.if_not_local(), "-j", KUBE_MARK_MASQ)
                    else:
                        b.rule("nat", chain, *args, "-j", KUBE_MARK_MASQ)
                b.rule("nat", KUBE_SERVICES, *args, "-j", dest)
            else:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment",
                       quoted(f"{spn} has no endpoints"), "-m", proto, "-p", proto, "-d", eip, *dport, "-j", "REJECT")

        for ingress in sp.load_balancer_vips:
            if has_endpoints:
                b.chain("nat", fwc)
                b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} loadbalancer IP"),
                       "-m", proto, "-p", proto, "-d", ingress, *dport, "-j", fwc)
                fw_args = ("-m", "comment", "--comment", quoted(f"{spn} loadbalancer IP"))
                chosen = xlb
                if not local_external:
                    b.rule("nat", fwc, *fw_args, "-j", KUBE_MARK_MASQ)
                    chosen = chain
                if not sp.load_balancer_source_ranges:
                    b.rule("nat", fwc, *fw_args, "-j", chosen)
                else:
                    for src in sp.load_balancer_source_ranges:
                        b.rule("nat", fwc, *fw_args, "-s", src, "-j", chosen)
                    if plan.allow_from_node:
                        b.rule("nat", fwc, *fw_args, "-s", ingress, "-j", chosen)
                b.rule("nat", fwc, *fw_args, "-j", KUBE_MARK_DROP)
            else:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment",
                       quoted(f"{spn} has no endpoints"), "-m", proto, "-p", proto, "-d", ingress, *dport,
                       "-j", "REJECT")

        if sp.node_port and node_addresses:
            if has_endpoints:
                args = ("-m", "comment", "--comment", spn, "-m", proto, "-p", proto, "--dport", str(sp.node_port))
                if not local_external:
                    b.rule("nat", chain, *args, "-j", KUBE_MARK_MASQ)
                    b.rule("nat", KUBE_NODEPORTS, *args, "-j", chain)
                else:
                    loopback = "::1/128" if isv6 else "127.0.0.0/8"
                    b.rule("nat", KUBE_NODEPORTS, *args, "-s", loopback, "-j", KUBE_MARK_MASQ)
                    b.rule("nat", KUBE_NODEPORTS, *args, "-j", xlb)
            else:
                b.rule("filter", KUBE_EXTERNAL_SERVICES, "-m", "comment", "--comment", quoted(f"{spn} has no endpoints"),
                       "-m", "addrtype", "--dst-type", "LOCAL", "-m", proto, "-p", proto,
                       "--dport", str(sp.node_port), "-j", "REJECT")

        _write_health_check_rule(b, spn, sp)

        if not has_endpoints:
            return
        _write_legacy_lb_rules(ctx, b, spn, sp, chain, ready)
        if not local_external:
            return
        if detector:
            b.rule("nat", xlb, "-m", "comment", "--comment",
                   quoted("Redirect pods trying to reach external loadbalancer VIP to clusterIP"),
                   *ctx.if_local(), "-j", chain)
        b.rule("nat", xlb, "-m", "comment", "--comment", quoted(f"masquerade LOCAL traffic for {spn} LB IP"),
               "-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ)
        b.rule("nat", xlb, "-m", "comment", "--comment", quoted(f"route LOCAL traffic for {spn} LB IP to service chain"),
               "-m", "addrtype", "--src-type", "LOCAL", "-j", chain)
        if not plan.has_external:
            b.rule("nat", xlb, "-m", "comment", "--comment", quoted(f"{spn} has no local endpoints"),
                   "-j", KUBE_MARK_DROP)
        else:
            _write_legacy_lb_rules(ctx, b, spn, sp, xlb, plan.local_endpoints)

    _each_port(b, plans, port, (ctx.key(), bool(node_addresses)), shared)

    for address in node_addresses:
        if address == "zero":
            b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", _NODEPORTS_COMMENT,
                   "-m", "addrtype", "--dst-type", "LOCAL", "-j", KUBE_NODEPORTS)
            break
        b.rule("nat", KUBE_SERVICES, "-m", "comment", "--comment", _NODEPORTS_COMMENT,
               "-d", address, "-j", KUBE_NODEPORTS)

    _write_forward_chain(ctx, b, invalid_drop=True)

    extra["nat"].append(KUBE_MARK_DROP)  # iptablesEnsureChains
    jumps = [j for j in _JUMPS_MODERN if j[1] != KUBE_PROXY_FIREWALL]
    kubelet: list[tuple[str, str, str]] = []
    kb = _Builder()
    if cfg.kubelet_rules:
        kubelet = _kubelet_rules(ctx, kb, extra, mark_drop=True, localnet=not isv6)
    return _finish(ctx, b, kb, extra, _base_rules(jumps, kubelet), [p.selection for p in plans])


def _write_legacy_lb_rules(ctx: _Ctx, b: _Builder, spn: str, sp: ServicePortInfo, chain: str,
                           eps: Sequence[EndpointInfo]) -> None:
    """v1.22 ``writeServiceToEndpointRules``: comments are just the service port name."""
    seps = [sep_chain(sp.namespace, sp.name, sp.port_name, sp.protocol, e.endpoint,
                      legacy_port_format=ctx.legacy_names) for e in eps]
    if sp.session_affinity_seconds is not None:
        for sep in seps:
            b.rule("nat", chain, *ctx.comment(spn), "-m", "recent", "--name", sep, "--rcheck",
                   "--seconds", str(sp.session_affinity_seconds), "--reap", "-j", sep)
    n = len(seps)
    for i, sep in enumerate(seps):
        args: list[str] = list(ctx.comment(spn))
        if i < n - 1:
            args += ["-m", "statistic", "--mode", "random", "--probability", ctx.probability(n - i)]
        b.rule("nat", chain, *args, "-j", sep)


# --------------------------------------------------------------------------- output


def to_restore(rules: ProxyRules, *, base_chains: bool = True) -> str:
    """kube-proxy's ``iptables-restore`` input.

    ``base_chains=False``: exactly the bytes kube-proxy passes to ``RestoreAll`` (with
    ``--noflush``).  ``True`` (default): also the built-in chains, the chains kube-proxy only
    ``EnsureChain``s, the jumps from the built-in chains (and the kubelet's rules when
    ``kubelet_rules`` is set), each chain declared once, like the corpus's ``rules.restore-input``
    — text that loads into empty tables (without ``--noflush``) and stands for the whole node.
    """
    out: list[str] = []
    for table in SAVE_TABLES:
        out.append(f"*{table}")
        if base_chains:
            out.extend(f":{c} ACCEPT [0:0]" for c in BUILTIN_CHAINS[table])
        # Before 1.24 kube-proxy wrote a KUBE-FW chain line once per load-balancer IP: harmless with its
        # --noflush, refused by iptables-legacy-restore without it, so the standalone text has it once.
        chains = dict.fromkeys(rules.chains[table]) if base_chains else rules.chains[table]
        out.extend(f":{c} - [0:0]" for c in chains)
        if base_chains:
            out.extend(f":{c} - [0:0]" for c in rules.extra_chains[table])
            out.extend(r.restore_text() for r in rules.base_rules[table])
            out.extend(r.restore_text() for r in rules.extra_rules.get(table, ()))
        out.extend(r.restore_text() for r in rules.rules[table])
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def to_save(rules: ProxyRules, memo: SaveMemo | None = None) -> str:
    """The rules as ``iptables-save`` (1.8.9) prints them once loaded (with the base-chain jumps); ``memo``:
    see :data:`SaveMemo`."""
    chains = {t: rules.all_chains(t) for t in SAVE_TABLES}
    return iptables_save(chains, [r for t in SAVE_TABLES for r in rules.loaded_rules(t)], rules.config.is_ipv6,
                         memo)
