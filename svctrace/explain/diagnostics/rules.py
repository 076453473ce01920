"""What the node's dataplane says against the API: rules missing or stale, nodes that disagree, two iptables
backends, another mode's leftovers, ping to a virtual IP, and answers that rest on an assumption."""

from __future__ import annotations

import re
from dataclasses import dataclass

from svctrace.dataplane.detect import modes_present
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import TABLES, RawRule, Ruleset
from svctrace.kubeproxy.names import svc_chain
from svctrace.kubeproxy.versions import FEATURES
from svctrace.model.cluster import Service

from .endpoints import selection
from .registry import Context, Diagnostic, check


@check("ping-virtual-ip", ["path"],
       "ICMP to a ClusterIP / external IP / LB IP: what this proxy mode does with it and why",
       "test_ping_differs_by_mode")
def ping_virtual_ip(ctx: Context) -> Diagnostic | None:
    exp, dp = ctx.exp, ctx.dp
    if exp is None or dp is None:
        return None
    proto = str(exp.destination.get("protocol") or "").lower()
    if proto not in ("icmp", "icmpv6") or exp.destination.get("via") not in ("cluster-ip", "external-ip",
                                                                              "load-balancer"):
        return None
    svc = exp.service
    ip = exp.destination["ip"]
    ports = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports)
    test = f"Test the Service with a port instead: `nc -zv {ip} {svc.ports[0].port if svc.ports else 80}` from a pod."
    answered = any(o.verdict == "accept" and o.endpoint is None and o.path and any(
        s.hook == "INPUT" for s in o.path) for o in exp.outcomes)
    ipvs_filter, nft_reject = FEATURES["ipvs-filter-chain"], FEATURES["nft-cluster-ips-check-reject"]
    if dp.mode == "ipvs":
        if answered or any(o.verdict == "accept" for o in exp.outcomes):
            what = (f"in IPVS mode kube-proxy puts every Service IP on the node's kube-ipvs0 interface, so the node "
                    f"itself answers ping to {ip} (before {ipvs_filter.since_text}, or without KUBE-IPVS-FILTER): a reply proves only that "
                    "the node is there, not that a backend is.")
        else:
            what = (f"in IPVS mode since {ipvs_filter.since_text}, KUBE-IPVS-FILTER rejects traffic to {ip} on ports the Service does not "
                    f"serve ({ports}), ping included.")
        return Diagnostic("ping-virtual-ip", "warning", f"ping to {ip}: {what}", test)
    if dp.mode == "nftables":
        return Diagnostic(
            "ping-virtual-ip", "warning",
            f"ping to {ip} is rejected: in nftables mode (kube-proxy {nft_reject.since_text}+) the cluster-ips-check chain rejects "
            f"traffic to a ClusterIP on anything but the Service's ports ({ports}), so ping gets an ICMP error "
            "at once instead of a reply.", test)
    return Diagnostic(
        "ping-virtual-ip", "warning",
        f"ping to {ip} gets no answer: in iptables mode a Service IP is not an address of any interface, only DNAT "
        f"rules for the Service's ports ({ports}). An ICMP echo request matches none of them, is not translated, "
        "and is routed on towards an address no host owns.",
        test + f" (In IPVS mode the node answers ping itself, before {ipvs_filter.since_text}; in nftables mode it is "
        "rejected.)")


# -- the Service port's rules against kube-proxy's endpoint selection -------------------------------------

@dataclass
class Programming:
    """What the node programs for the Service port, compared with what kube-proxy would program."""

    missing: Diagnostic | None = None
    stale: Diagnostic | None = None
    chain: str | None = None  # iptables: the service chain (for nodes-disagree)
    programmed: set[str] | None = None


def _programming(ctx: Context) -> Programming:
    def make() -> Programming:
        dp = ctx.dp
        if dp is None:
            return Programming()
        if dp.mode == "iptables" and dp.iptables is not None:
            return _iptables_programming(ctx, dp.iptables)
        if dp.mode == "ipvs":
            return _ipvs_programming(ctx)
        return Programming()

    got: Programming = ctx.memo("programming", make)
    return got


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


def _vip_rule(rs: Ruleset, svc: Service) -> bool:
    """Whether nat KUBE-SERVICES names one of the Service's cluster IPs (read only when its chain is missing:
    it reads every rule of the chain)."""
    services = rs.chain("nat", "KUBE-SERVICES")
    return services is not None and any(f"-d {ip}/" in r.text or f"-d {ip} " in r.text
                                        for ip in svc.cluster_ips if ip != "None" for r in services.raw)


def _iptables_programming(ctx: Context, rs: Ruleset) -> Programming:
    svc, port, node = ctx.svc, ctx.port, ctx.exp.node if ctx.exp is not None else None
    sel = selection(ctx)
    if port is None or svc.port_by(port.port) is None or svc.headless or sel is None:
        return Programming()
    if rs.cut is not None:  # a dump cut short: what is not in it may be after the cut (the walk says uncertain)
        return Programming()
    proto = port.protocol.lower()
    cluster_chain = svc_chain(svc.namespace, svc.name, port.name, proto)
    legacy_chain = svc_chain(svc.namespace, svc.name, port.name, proto, legacy_port_format=True)
    chain = cluster_chain if rs.chain("nat", cluster_chain) else (
        legacy_chain if rs.chain("nat", legacy_chain) else None)
    expected = list(sel.cluster_endpoints or ())
    if expected and chain is None and not _vip_rule(rs, svc):
        return Programming(missing=Diagnostic(
            "rules-missing", "error",
            f"the API has {svc.key}:{port.name or port.port} with {len(expected)} usable endpoint(s), but node "
            f"{node}'s rules have no {cluster_chain} chain and no KUBE-SERVICES rule for its cluster IP: kube-proxy "
            "has not programmed it.",
            "Check kube-proxy on that node (`kubectl -n kube-system logs` of its pod): iptables-restore failures, "
            "a crash loop, or a different proxy mode."))
    if chain is None:
        return Programming()
    programmed = _programmed_endpoints(rs, chain) or set()
    want = {e.endpoint for e in expected}
    out = Programming(chain=chain, programmed=programmed)
    if want != programmed and (want or programmed):
        extra = sorted(programmed - want)
        missing = sorted(want - programmed)
        parts = []
        if extra:
            why = []
            for ep in extra[:5]:
                v = sel.verdict(ep)
                why.append(f"{ep} ({v.cluster_reason})" if v is not None else f"{ep} (not in the API)")
            parts.append(f"DNATs to {', '.join(why)}")
        if missing:
            parts.append(f"lacks {', '.join(missing[:5])}")
        out.stale = Diagnostic(
            "rules-stale", "error",
            f"node {node}'s {chain} (for {svc.key}:{port.name or port.port}) " + " and ".join(parts) +
            ", compared with what kube-proxy would program from the API's endpoints.",
            "kube-proxy on this node is behind the API: look at its logs, and compare with another node "
            "(`svctrace explain ... --node OTHER`).")
    return out


def _ipvs_programming(ctx: Context) -> Programming:
    """IPVS: the virtual server's real servers (weight > 0) against kube-proxy's endpoint selection."""
    svc, port, dp = ctx.svc, ctx.port, ctx.dp
    sel = selection(ctx)
    if port is None or svc.port_by(port.port) is None or sel is None or dp is None or dp.ipvs is None:
        return Programming()
    vip = next((ip for ip in svc.cluster_ips if ip != "None"), None)
    vs = next((v for v in dp.ipvs.services if str(v.ip) == vip and v.port == port.port
               and v.protocol == port.protocol.lower()), None)
    expected = {e.endpoint for e in (sel.cluster_endpoints or ())}
    if vs is None:
        if not expected:
            return Programming()
        return Programming(missing=Diagnostic(
            "rules-missing", "error",
            f"the API has {svc.key}:{port.name or port.port} with {len(expected)} usable endpoint(s), but node "
            f"{dp.node}'s IPVS table has no virtual server {vip}:{port.port}/{port.protocol.lower()}.",
            "Check kube-proxy (IPVS mode) on that node: its logs, and `ipvsadm -Ln`."))
    programmed = {f"{r.ip}:{r.port}" for r in vs.reals if (r.weight or 0) > 0}
    if not expected or programmed == expected:
        return Programming()
    extra, missing = sorted(programmed - expected), sorted(expected - programmed)
    parts = ([f"sends to {', '.join(extra[:5])}"] if extra else []) + (
        [f"lacks {', '.join(missing[:5])}"] if missing else [])
    return Programming(stale=Diagnostic(
        "rules-stale", "error",
        f"node {dp.node}'s IPVS virtual server {vs.label} " + " and ".join(parts) +
        ", compared with what kube-proxy would program from the API's endpoints.",
        "kube-proxy on this node is behind the API: look at its logs."))


@check("rules-missing", ["path"], "the API has the Service port but the node's dataplane has no rules for it",
       "test_rules_missing")
def rules_missing(ctx: Context) -> Diagnostic | None:
    return _programming(ctx).missing


@check("rules-stale", ["path"], "the node's rules DNAT to endpoints the API no longer has, or lack ones it has",
       "test_rules_stale_and_nodes_disagree")
def rules_stale(ctx: Context) -> Diagnostic | None:
    return _programming(ctx).stale


MAX_CUTS = 4  # chains cut out of another node's dump before it is parsed whole (nodes_disagree)


@check("nodes-disagree", ["path"], "nodes' dataplanes program the same Service differently",
       "test_rules_stale_and_nodes_disagree")
def nodes_disagree(ctx: Context) -> Diagnostic | None:
    prog = _programming(ctx)
    if prog.chain is None or prog.programmed is None:
        return None
    chain, mine = prog.chain, prog.programmed
    node = ctx.exp.node if ctx.exp is not None else None
    others: dict[str, set[str]] = {}
    mine_nf = ctx.snap.nodes.get(node or "")
    for name, nf in ctx.snap.nodes.items():
        if name == node or not nf.has("iptables-save", empty=False):
            continue
        if mine_nf is not None and mine_nf.same("iptables-save", nf):
            continue  # (the deciding node's very dump programs the chain as it does: nothing to read or parse)
        text = nf.get("iptables-save") or ""
        # One question (explain) cuts the chain out of the other node's dump, which is quicker than parsing it
        # whole; but each cut reads the whole text, so a run that asks about many Services (the TUI's health
        # marks, `check`) parses the dump once after a few cuts and looks the chains up in it.
        cuts: list[int] = nf.parsed("iptables-save cuts", lambda _t, _p: [0], text="")
        cuts[0] += 1
        mini = None if nf.is_parsed("iptables-save") or cuts[0] > MAX_CUTS else nf.parsed(
            f"iptables-save {chain}", lambda t, source: _chains_alone(t, chain, source), text=text)
        if mini is not None:
            rs = mini
        else:
            try:
                rs = nf.parsed("iptables-save", load_ruleset, by_lines=True)
            except Exception:  # a damaged other dump must not spoil this answer
                continue
        own = ctx.dp.iptables if ctx.dp is not None else None
        if own is not None and _same_lines(own, rs, chain):
            continue  # the same rules program the same endpoints (and need not be parsed to say so)
        got = _programmed_endpoints(rs, chain)
        if got is not None and got != mine:
            others[name] = got
    if not others:
        return None
    detail = "; ".join(f"{n}: {', '.join(sorted(v)) or 'none'}" for n, v in sorted(others.items())[:3])
    return Diagnostic(
        "nodes-disagree", "warning",
        f"nodes program {chain} differently: {node}: {', '.join(sorted(mine)) or 'none'}; {detail}.",
        "The same Service port should have the same endpoints on every node (Local policies aside): a node "
        "whose kube-proxy is stuck answers differently.")


def _lines(rs: Ruleset, chain: str) -> list[str] | None:
    c = rs.chain("nat", chain)
    return None if c is None else [r.text for r in c.raw]


def _same_lines(own: Ruleset, other: Ruleset, chain: str) -> bool:
    """Whether another node's service chain and the KUBE-SEP chains it jumps to are, line for line, this node's
    (all _programmed_endpoints reads): then both program the same endpoints. Compares text, parses nothing of the
    other node's."""
    mine = _lines(own, chain)
    if mine is None or _lines(other, chain) != mine:
        return False
    own_chain = own.chain("nat", chain)
    assert own_chain is not None
    seps = {r.target.name for r in own_chain.rules if r.target is not None and r.target.name.startswith("KUBE-SEP-")}
    for sep in seps:
        lines = _lines(own, sep)
        if lines is None or _lines(other, sep) != lines:
            return False
    return True


# Another node's service chain without parsing its whole dump: the chain's lines and those of the KUBE-SEP
# chains it jumps to, cut out of the *nat table with str.find and parsed alone. Only for a dump a full parse
# reads plainly (every line a `-A`, a declaration, a table, COMMIT, a comment or blank; known tables; well-formed
# declarations; the chains' names only at the start of their own lines, after -j/-g or --name, inside *nat), so the
# parsed chains are the ones the full parse would give; anything else returns None (then the full parse).
_ODD_LINE = re.compile(r"\n(?!-A \S|:\S+[ \t]+(?:ACCEPT|DROP|-|QUEUE|RETURN)(?:[ \t]|\n|\Z)"
                       r"|\*(?:" + "|".join(TABLES) + r")\n|COMMIT|#|\n|\Z)")


def _nat_section(t: str) -> tuple[int, int] | None:
    """Where *nat's lines are in `t` (the dump after a leading newline), when the dump is plain."""
    if "\x00" in t or "\r" in t or _ODD_LINE.search(t):
        return None
    lo = t.find("\n*nat\n") + 5  # a second *nat would hold lines outside [lo, hi): _own_lines refuses those
    hi = t.find("\nCOMMIT", lo)
    if lo == 4 or hi == -1 or t.find("\n*", lo, hi) != -1:
        return None
    return lo, hi


def _own_lines(t: str, lo: int, hi: int, name: str) -> tuple[list[str], list[str]] | None:
    """A chain's declaration lines and rule lines inside t[lo:hi]; None when its name shows up anywhere else
    but in a jump."""
    decls: list[str] = []
    rules: list[str] = []
    pos = t.find(name)
    while pos != -1:
        end = pos + len(name)
        after = t[end:end + 1]
        if after not in (" ", "\n", ""):
            if not (after.isalnum() or after in "-_"):
                return None
        elif t.startswith("\n-A ", pos - 4) or t.startswith("\n:", pos - 2):
            if not lo <= pos < hi:
                return None
            start = t.rindex("\n", 0, pos) + 1
            stop = t.find("\n", pos)
            line = t[start:stop if stop != -1 else len(t)]
            if line[0] == ":":
                decls.append(line)
            elif " -A " in line:
                return None
            else:
                rules.append(line)
        elif not (t.startswith("-j ", pos - 3) or t.startswith("-g ", pos - 3) or t.startswith("--name ", pos - 7)):
            return None  # (--name: session affinity's `-m recent` list is named after the KUBE-SEP chain)
        pos = t.find(name, end)
    return decls, rules


def _chains_alone(text: str, chain: str, source: str) -> Ruleset | None:
    t = "\n" + text
    section = _nat_section(t)
    if section is None:
        return None
    lo, hi = section
    got = _own_lines(t, lo, hi, chain)
    if got is None:
        return None
    parts = [got]
    seps = list(dict.fromkeys(r.target.name for line in got[1] for r in parse_rule("nat", chain, RawRule(0, line))
                              if r.target is not None and r.target.name.startswith("KUBE-SEP-")))
    for sep in seps:
        if sep == chain:
            continue
        more = _own_lines(t, lo, hi, sep)
        if more is None:
            return None
        parts.append(more)
    return load_ruleset("\n".join(["*nat", *(d for p in parts for d in p[0]), *(r for p in parts for r in p[1]),
                                    "COMMIT"]), source)


# -- the node as a whole ------------------------------------------------------------------------------------

@check("mixed-iptables-backends", ["path"], "both iptables-legacy and iptables-nft hold KUBE-* rules",
       "test_mixed_backends_and_proxy_mode_mismatch")
def mixed_iptables_backends(ctx: Context) -> Diagnostic | None:
    nf = ctx.snap.nodes.get(ctx.dp.node or "") if ctx.dp is not None else None
    if nf is None:
        return None
    legacy = nf.get("iptables-legacy-save")
    if not legacy or "KUBE-" not in legacy:
        return None  # (before the other dump is read)
    nft = nf.get("iptables-save")
    if not (nft and "KUBE-" in nft):
        return None
    return Diagnostic(
        "mixed-iptables-backends", "error",
        f"node {ctx.exp.node if ctx.exp else None} has KUBE-* rules in both iptables-legacy and iptables-nft: the "
        "kernel runs both sets, and which one kube-proxy maintains depends on its image.",
        "Flush the stale backend's KUBE-* chains (`iptables-legacy-save | grep KUBE` to see them) and make the "
        "kubelet, kube-proxy and the CNI use one backend.")


@check("proxy-mode-mismatch", ["path"],
       "the configured mode and the programmed dataplane differ, or leftovers of another mode exist",
       "test_mixed_backends_and_proxy_mode_mismatch")
def proxy_mode_mismatch(ctx: Context) -> Diagnostic | None:
    dp = ctx.dp
    nf = ctx.snap.nodes.get(dp.node or "") if dp is not None else None
    if dp is None or nf is None:
        return None
    configured = (nf.get("proxy-mode") or "").strip() or ctx.snap.cluster.proxy.mode
    rs = dp.iptables
    # once per node and dump (it reads every chain's name): the same for every Service asked of this node
    modes: set[str] = nf.parsed(f"modes-present {rs.source if rs is not None else ''}",
                                lambda _t, _p: modes_present(nf, (c.name for c in rs.iter_chains())
                                                             if rs is not None else ()), text="")
    problems = []
    if configured and configured in ("iptables", "ipvs", "nftables") and modes and configured not in modes:
        problems.append(f"kube-proxy is configured for {configured} but the node holds {', '.join(sorted(modes))}-mode "
                        "rules")
    leftovers = sorted(modes - {dp.mode})
    if leftovers:
        problems.append(f"the node runs {dp.mode} mode and still holds {' and '.join(leftovers)}-mode rules "
                        "(KUBE-SVC chains, IPVS virtual servers or an `ip kube-proxy` table)")
    if not problems:
        return None
    return Diagnostic(
        "proxy-mode-mismatch", "warning", "; ".join(problems) + ".",
        "Leftovers of another mode keep matching packets; run `kube-proxy --cleanup` for the old mode "
        "(or reboot the node) after switching.")


@check("unknown-match", ["path"], "a rule on the path uses a match that cannot be evaluated offline",
       "test_unknown_match_is_diagnosed")
def unknown_match(ctx: Context) -> Diagnostic | None:
    uncertain = [o for o in ctx.exp.outcomes if not o.certain] if ctx.exp is not None else []
    if not uncertain:
        return None
    assumptions = sorted({a for o in uncertain for a in o.assumptions})
    return Diagnostic(
        "unknown-match", "warning",
        "part of the answer depends on something the dump does not say: " + "; ".join(assumptions[:4]) + ".",
        "Give what is missing (--ipset, the interface) or read the rules named in the warnings.")
