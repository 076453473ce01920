"""What the node does around kube-proxy's rules: forwarding off, another program's FORWARD policy, rp_filter, a
loopback NodePort the kernel refuses to route, no route, and replies that miss the node's conntrack (the same
bridge without br_netfilter, a hairpin without hairpin_mode, an asymmetric return). The walk and
`svctrace.dataplane.kernel.reply_path` decide; these checks name the cause and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .registry import Context, Diagnostic, check

if TYPE_CHECKING:
    from svctrace.explain import ExplainedOutcome


def _first(ctx: Context, cause: str) -> ExplainedOutcome | None:
    exp = ctx.exp
    if exp is None:
        return None
    return next((o for o in exp.outcomes if o.cause == cause), None)


def _node(ctx: Context) -> str:
    exp = ctx.exp
    return (exp.node if exp is not None else None) or "the node"


@check(
    "ip-forward-off",
    ["path"],
    "the node does not forward (net.ipv4.ip_forward = 0): packets for pods elsewhere are dropped after DNAT",
    "test_ip_forward_off",
)
def ip_forward_off(ctx: Context) -> Diagnostic | None:
    o = _first(ctx, "ip-forward-off")
    reason = o.reason if o is not None else None
    if reason is None:
        got = _reply(ctx, "ip-forward-off")  # IPVS sent the request itself; the reply needs forwarding
        if got is None:
            return None
        reason = f"{got[1]['why']}, so it is dropped"
    node = _node(ctx)
    return Diagnostic(
        "ip-forward-off",
        "error",
        f"On {node}, {reason}. Turn forwarding on: `sysctl -w net.ipv4.ip_forward=1` on {node} "
        "(and in /etc/sysctl.d/ so it survives a reboot).",
        f"`ssh {node} sysctl net.ipv4.ip_forward net.ipv4.conf.all.forwarding` should say 1",
    )


@check(
    "forward-policy-drop",
    ["path"],
    "the FORWARD chain's policy DROP (a container runtime's, e.g. Docker's) drops the packet: no rule accepts it",
    "test_forward_policy_drop",
)
def forward_policy_drop(ctx: Context) -> Diagnostic | None:
    exp = ctx.exp
    if exp is None:
        return None
    for o in exp.outcomes:
        last = o.path[-1] if o.path else None
        if (
            o.verdict != "drop"
            or last is None
            or last.rule is not None
            or last.hook != "FORWARD"
            or last.action != "policy DROP"
        ):
            continue
        node = _node(ctx)
        from svctrace.model.snapshot import infer_cluster_cidr

        cidr, _ = infer_cluster_cidr(ctx.snap)
        net = cidr or "<pod CIDR>"
        return Diagnostic(
            "forward-policy-drop",
            "error",
            f"The {last.table} FORWARD chain on {node} has policy DROP and no rule accepts this packet (kube-proxy's "
            "KUBE-FORWARD accepts only masqueraded or established traffic; a container runtime such as Docker "
            f"sets this policy). Accept pod traffic in FORWARD on {node}: `iptables -I FORWARD -s {net} -j ACCEPT` "
            f"and `iptables -I FORWARD -d {net} -j ACCEPT` (or your CNI's setting for it).",
            f"`ssh {node} sudo iptables -S FORWARD` shows the policy and who else writes there",
        )
    return None


@check(
    "rp-filter-drop",
    ["path"],
    "strict reverse-path filtering (rp_filter = 1) drops a packet whose source is routed out another interface",
    "test_rp_filter_drop",
)
def rp_filter_drop(ctx: Context) -> Diagnostic | None:
    o = _first(ctx, "rp-filter")
    if o is None:
        return None
    node = _node(ctx)
    return Diagnostic(
        "rp-filter-drop",
        "error",
        f"On {node}, {o.reason}. Make the route back to the client leave by the interface the "
        f"traffic comes in on, or set loose mode on {node}: `sysctl -w net.ipv4.conf.all.rp_filter=2` (and on "
        "that interface).",
        f"`ssh {node} ip route get <client address>` names the interface replies would use",
    )


@check(
    "no-route",
    ["path"],
    "the node has no usable route to the destination (no route, or an unreachable, prohibit or blackhole route)",
    "test_no_route",
)
def no_route(ctx: Context) -> Diagnostic | None:
    o = _first(ctx, "no-route")
    if o is None:
        return None
    node = _node(ctx)
    return Diagnostic(
        "no-route",
        "error",
        f"On {node}, {o.reason}. Add the route (the CNI normally installs one per pod CIDR) on "
        f"{node}, or remove the route that refuses it.",
        f"`ssh {node} ip route` lists the node's routes: every pod CIDR needs one",
    )


@check(
    "localhost-nodeport-martian",
    ["path"],
    "a NodePort on 127.0.0.1 from the node itself with route_localnet = 0: the kernel refuses to route it",
    "test_localhost_nodeport_martian",
)
def localhost_martian(ctx: Context) -> Diagnostic | None:
    o = _first(ctx, "output-martian")
    if o is None:
        return None
    node = _node(ctx)
    return Diagnostic(
        "localhost-nodeport-martian",
        "error",
        f"On {node}, {o.reason}. Use the node's own address instead of 127.0.0.1, or set "
        f"`sysctl -w net.ipv4.conf.all.route_localnet=1` on {node} (kube-proxy sets it itself unless "
        "--iptables-localhost-nodeports=false or it cannot write /proc/sys).",
        f"`ssh {node} sysctl net.ipv4.conf.all.route_localnet` should say 1 for localhost NodePorts",
    )


def _reply(ctx: Context, code: str) -> tuple[ExplainedOutcome, dict[str, object]] | None:
    exp = ctx.exp
    if exp is None:
        return None
    for want in (False, None):  # a certain loss first
        for o in exp.outcomes:
            if (
                o.reply is not None
                and o.reply.get("code") == code
                and o.reply.get("through_conntrack") is want
            ):
                return o, o.reply
    return None


@check(
    "reply-bypasses-conntrack",
    ["path"],
    "client and pod on one bridge whose frames skip iptables (br_netfilter off), not masqueraded: the reply "
    "comes from the pod's address",
    "test_reply_bypasses_conntrack",
)
def reply_bypasses(ctx: Context) -> Diagnostic | None:
    got = _reply(ctx, "reply-bypasses-conntrack")
    if got is None:
        return None
    o, r = got
    node = _node(ctx)
    sure = r.get("through_conntrack") is False
    return Diagnostic(
        "reply-bypasses-conntrack",
        "error" if sure else "warning",
        f"{str(r['why'])[0].upper()}{str(r['why'])[1:]}"
        + (
            f"; the client sees an answer from {o.endpoint} instead of the Service and drops it. "
            if sure
            else ". "
        )
        + f"Load br_netfilter and set net.bridge.bridge-nf-call-iptables=1 on {node} (`modprobe br_netfilter; "
        "sysctl -w net.bridge.bridge-nf-call-iptables=1`).",
        f"`ssh {node} sysctl net.bridge.bridge-nf-call-iptables` should say 1",
    )


@check(
    "hairpin-mode-off",
    ["path"],
    "a pod reaching itself through its Service behind a bridge whose port has hairpin_mode 0",
    "test_hairpin_mode_off",
)
def hairpin_off(ctx: Context) -> Diagnostic | None:
    got = _reply(ctx, "hairpin-mode-off")
    if got is None:
        return None
    _o, r = got
    node = _node(ctx)
    sure = r.get("through_conntrack") is False
    return Diagnostic(
        "hairpin-mode-off",
        "error" if sure else "warning",
        f"{str(r['why'])[0].upper()}{str(r['why'])[1:]}"
        + ("; the connection to itself never completes. " if sure else ". ")
        + f"Turn hairpin mode on for the pods' bridge ports on {node} (kubelet --hairpin-mode=hairpin-veth, or "
        'the CNI bridge plugin\'s "hairpinMode": true).',
        f"`ssh {node} grep . /sys/class/net/*/brport/hairpin_mode` shows each port",
    )


@check(
    "reply-asymmetric",
    ["path"],
    "the reply takes another path: not masqueraded to a pod on another node (client not behind "
    "this node), or the node's route back to the client leaves by another interface",
    "test_reply_asymmetric",
)
def reply_asymmetric(ctx: Context) -> Diagnostic | None:
    got = _reply(ctx, "reply-asymmetric")
    if got is None:
        return None
    o, r = got
    why = str(r["why"])
    if r.get("through_conntrack") is None:  # the node answers, by another interface
        node = _node(ctx)
        return Diagnostic(
            "reply-asymmetric",
            "warning",
            f"On {node}, {why}. Route the replies back the way the requests come (a policy rule: `ip rule add "
            f"from <that interface's address> lookup <a table whose default route leaves by it>`), or send the "
            "clients to the address of the interface their route leaves by.",
            f"`ssh {node} ip route get <client address>` names the interface replies leave by",
        )
    return Diagnostic(
        "reply-asymmetric",
        "error",
        f"{why[0].upper()}{why[1:]}; the client sees an answer from {o.endpoint} and drops "
        "it. Have kube-proxy masquerade this traffic (set clusterCIDR in its configuration, or masqueradeAll), or "
        "send the client to a node that has an endpoint with externalTrafficPolicy: Local.",
        "`svctrace explain` with --from set to the client shows whether the path masquerades",
    )


@check(
    "conntrack-table-full",
    ["path"],
    "the node's conntrack table is (nearly) full: new connections are dropped when it is",
    "test_conntrack_table_full",
)
def conntrack_full(ctx: Context) -> Diagnostic | None:
    exp = ctx.exp
    if exp is None or exp.node is None or exp.node not in ctx.snap.nodes:
        return None
    from svctrace.dataplane.host import load_host

    host = load_host(ctx.snap.nodes[exp.node])
    count = host.sysctl_int("net.netfilter.nf_conntrack_count")
    limit = host.sysctl_int("net.netfilter.nf_conntrack_max")
    if count is None or not limit or count < 0.9 * limit:
        return None
    node = exp.node
    # nf_conntrack_core.c __nf_conntrack_alloc: at nf_conntrack_max (after early_drop finds nothing to evict)
    # the new entry is refused, the packet dropped, and "nf_conntrack: table full, dropping packet" logged.
    return Diagnostic(
        "conntrack-table-full",
        "error" if count >= limit else "warning",
        f"On {node}, the conntrack table holds {count} of at most {limit} entries (net.netfilter.nf_conntrack_max): "
        "when it is full the kernel drops the first packet of every new connection, Service traffic included. "
        f"Raise the limit on {node} (`sysctl -w net.netfilter.nf_conntrack_max=...`, or kube-proxy's "
        "conntrack.maxPerCore) or find what fills the table.",
        f"`ssh {node} dmesg | grep 'table full'`; `conntrack -S` counts drops",
    )
