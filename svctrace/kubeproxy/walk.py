"""kube-proxy's walk: the dataplane walkers, told what kube-proxy does where a dump is silent (`HINTS`: its marks,
its endpoint chains; in IPVS mode its jumps, its ipsets and, by version, KUBE-IPVS-FILTER), with kube-proxy's
notes added after the walk. Every face that walks a node's rules (explain, `svctrace trace`, the TUI) comes here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from svctrace.dataplane.contract import Hints, TraceResult
from svctrace.dataplane.iptables import trace as iptables_trace
from svctrace.dataplane.iptables.parser import parse_rule
from svctrace.dataplane.iptables.rules import BUILTIN_CHAINS, Chain, RawRule, Rule, Ruleset, Table
from svctrace.errors import InputError, Warn
from svctrace.kubeproxy.ipvs_sets import (
    INFERRED_SETS,
    infer_kube_ipsets,
    ipset_names_in_rules,
    node_layout,
    once,
    own_addresses,
)
from svctrace.kubeproxy.names import nft_chain_owner
from svctrace.kubeproxy.notes import affinity_notes, iptables_notes
from svctrace.kubeproxy.versions import has
from svctrace.model.packet import IPAddress, NodeFacts, Packet
from svctrace.model.version import parse_version, version_text

if TYPE_CHECKING:  # the IPVS and nftables modules load when a trace of that mode runs (start-up of iptables traces)
    from svctrace.dataplane.ipvs.model import IPVSTable
    from svctrace.dataplane.ipvs.walker import Silent
    from svctrace.dataplane.nftables import NftRuleset
    from svctrace.dataplane.nftables import Table as NftTable
    from svctrace.dataplane.node import Dataplane

# --iptables-masquerade-bit (default 14): KUBE-MARK-MASQ ORs in 1<<14 (pkg/proxy/iptables/proxier.go,
# masqueradeMark); KUBE-MARK-DROP ORs in 1<<15 (kubelet's --iptables-drop-bit, pkg/kubelet/kubelet_network_linux.go).
MASQUERADE_MARK = 1 << 14
DROP_MARK = 1 << 15

# `-A KUBE-SVC-X -m comment --comment "ns/svc:port -> 10.0.0.1:80" ... -j KUBE-SEP-Y` (pkg/proxy/iptables/proxier.go)
_SEP_COMMENT = re.compile(r"->\s*(\[?[0-9a-fA-F.:]+\]?:\d+)")


def missing_endpoint(chain: str, comment: str | None) -> tuple[IPAddress, int] | None:
    """The endpoint a kube-proxy endpoint chain that is not in the dump DNATs to: from the comment of the rule that
    jumps to a KUBE-SEP- chain, or from an nftables endpoint- chain's name."""
    if chain.startswith("KUBE-SEP-"):
        m = _SEP_COMMENT.search(comment or "")
        if m is None:
            return None
        host, _, port = m.group(1).rpartition(":")
        try:
            return ipaddress.ip_address(host.strip("[]")), int(port)
        except ValueError:
            return None
    # nftables mode's endpoint chains: endpoint-<hash>-<ns>/<svc>/<proto>/<port>__<ip>/<port>
    # (pkg/proxy/nftables/proxier.go, servicePortEndpointChainNameBase); IPv6 colons written as dots.
    owner = nft_chain_owner(chain)
    if owner is None or owner.kind != "endpoint" or not owner.endpoint:
        return None
    ip, _, port = owner.endpoint.rpartition("/")
    if not port.isdigit():
        return None
    for cand in (ip, ip.replace(".", ":")):
        try:
            return ipaddress.ip_address(cand), int(port)
        except ValueError:
            continue
    return None


def route_localnet(rules: Ruleset | NftRuleset) -> tuple[bool, str]:
    """kube-proxy (iptables mode) turns route_localnet on for localhost NodePorts and then blocks incoming localnet
    connections in KUBE-FIREWALL (pkg/proxy/iptables/proxier.go); that rule says it is on. nft shows the
    rule without its comment; kube-proxy's nftables mode never turns it on."""
    if not isinstance(rules, Ruleset):  # an nftables ruleset
        return (any(("localnet" in (r.comment or "")) or "ip daddr 127.0.0.0/8" in r.text
                    for t in rules.tables.values() for c in [t.chains.get("KUBE-FIREWALL")] if c is not None
                    for r in c.rules),
                "kube-proxy's nftables mode does not turn it on")
    c = rules.chain("filter", "KUBE-FIREWALL")
    on = c is not None and any("block incoming localnet connections" in r.text for r in c.raw)
    return on, "inferred: no kube-proxy 'block incoming localnet connections' rule"


def localnet_firewall(chain: str, text: str) -> bool:
    """kube-proxy's (iptables mode) localnet rule in KUBE-FIREWALL: `-d 127.0.0.0/8 ... -m conntrack ! --ctstate
    RELATED,ESTABLISHED,DNAT -j DROP` (pkg/proxy/iptables/proxier.go, "block incoming localnet connections"),
    which nft prints as `ct status dnat`."""
    return chain == "KUBE-FIREWALL" and "127.0.0.0/8" in text


ASSUMED = "svctrace: assumed"  # the comment prefix of the rules the completions add to a paste (HINTS.assumed)
HINTS = Hints(writer="kube-proxy", route_localnet=route_localnet,
              mark_chains={"KUBE-MARK-MASQ": MASQUERADE_MARK, "mark-for-masquerade": MASQUERADE_MARK,
                           "KUBE-MARK-DROP": DROP_MARK},
              hairpin_mark=MASQUERADE_MARK, endpoint=missing_endpoint,
              # ClientIP affinity in iptables mode: `-m recent --name KUBE-SEP-X` (pkg/proxy/iptables/proxier.go)
              affinity_chains="KUBE-SEP-", negated_ctstate=localnet_firewall, assumed=ASSUMED)


HOOKED = "svctrace: assumed kube-proxy jump"  # comment of the jumps _complete_kube_hooks adds to a partial dump
# kube-proxy's IPVS mode where a dump is silent. Since 1.26 (versions "ipvs-filter-chain") KUBE-IPVS-FILTER (filter
# INPUT) rejects new connections to a kube-ipvs0 address that match no virtual server (pkg/proxy/ipvs/proxier.go,
# writeIptablesRules: RETURN for KUBE-CLUSTER-IP, KUBE-LOAD-BALANCER, KUBE-EXTERNAL-IP(-LOCAL) dst,dst and
# KUBE-HEALTH-CHECK-NODE-PORT dst, then `-m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT`).
@cache
def ipvs_silent() -> Silent:
    """What kube-proxy's IPVS mode does where a dump is silent (built on the first IPVS trace)."""
    from svctrace.dataplane.ipvs.walker import FilterRule, Silent

    return Silent(
    device="kube-ipvs0", hooked=HOOKED, jump_says="kube-proxy's",
    inferred="kube-proxy's ipsets hold what the IPVS table implies (no `ipset save` given): virtual servers on "
             "non-node addresses taken as ClusterIPs, NodePorts recognised by port range",
    no_iptables="no iptables rules were given: kube-proxy's KUBE-SERVICES marks, KUBE-POSTROUTING masquerade "
                "and filter rules were not walked (source NAT and filtering unknown)",
    no_nat="the iptables dump has no nat table: kube-proxy's masquerade rules were not walked",
    filter=FilterRule(
        "KUBE-IPVS-FILTER",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
        note="not in the dump: kube-proxy 1.26+ writes this rule",
        reason="KUBE-IPVS-FILTER rejects it: {dst} is a Service address on {device} and no virtual server serves "
               "this protocol/port",
        unknown="kube-proxy is 1.26 or later, so KUBE-IPVS-FILTER rejects traffic to a Service address on a port "
                "it does not serve",
        warning="the kube-proxy version is not known and the filter table is not in the dump: shown with and "
                "without KUBE-IPVS-FILTER (1.26+)"))


def __getattr__(name: str) -> Any:
    if name == "IPVS_SILENT":
        return ipvs_silent()
    raise AttributeError(name)


# (chain, type, hook, priority, [(rule, chain it needs)])
_KUBE_PROXY_BASE: list[tuple[str, str, str, str, list[tuple[str, str]]]] = [
    ("nat-prerouting", "nat", "prerouting", "dstnat", [("jump services", "services")]),
    ("nat-output", "nat", "output", "dstnat", [("jump services", "services")]),
    ("nat-postrouting", "nat", "postrouting", "srcnat", [("jump masquerading", "masquerading")]),
    ("filter-prerouting", "filter", "prerouting", "dstnat - 10", [("ct state new jump firewall-check",
                                                                   "firewall-check")]),
    ("filter-input", "filter", "input", "dstnat - 10", [
        ("ct state new jump nodeport-endpoints-check", "nodeport-endpoints-check"),
        ("ct state new jump service-endpoints-check", "service-endpoints-check")]),
    ("filter-forward", "filter", "forward", "dstnat - 10", [
        ("ct state new jump service-endpoints-check", "service-endpoints-check"),
        ("ct state new jump cluster-ips-check", "cluster-ips-check")]),
    ("filter-output", "filter", "output", "dstnat - 10", [
        ("ct state new jump service-endpoints-check", "service-endpoints-check"),
        ("ct state new jump firewall-check", "firewall-check")]),
    ("filter-output-post-dnat", "filter", "output", "dstnat + 10", [("ct state new jump cluster-ips-check",
                                                                      "cluster-ips-check")]),
]
_MASQUERADING = ["meta mark & 0x00004000 == 0x00000000 return", "meta mark set meta mark ^ 0x00004000",
                 "masquerade fully-random"]
_IPTABLES_NAT = [("PREROUTING", "prerouting", "dstnat", "KUBE-SERVICES"),
                 ("OUTPUT", "output", "dstnat", "KUBE-SERVICES"),
                 ("POSTROUTING", "postrouting", "srcnat", "KUBE-POSTROUTING")]




def complete_nft(rs: NftRuleset) -> NftRuleset:
    """Fill in what a trimmed paste left out, where what is left says whose it is (once per ruleset; returns it).

    A `nft list table ip kube-proxy` always has base chains; a paste without any was trimmed. kube-proxy writes the
    same skeleton on every node (pkg/proxy/nftables/proxier.go): nat-prerouting and nat-output jump to `services`,
    nat-postrouting to `masquerading`, filter chains jump to the *-check chains. An iptables-nft `table ip nat`
    pasted chain by chain (`nft list chain nat KUBE-SERVICES`) lacks PREROUTING/OUTPUT/POSTROUTING, which jump to
    KUBE-SERVICES and KUBE-POSTROUTING (pkg/proxy/iptables/proxier.go, iptablesJumpChains)."""
    if rs.cache.get("kube-proxy-completed"):
        return rs
    rs.cache["kube-proxy-completed"] = True
    for t in list(rs.tables.values()):
        if t.name == "kube-proxy" and t.family in ("ip", "ip6") and t.chains and \
                not any(c.is_base for c in t.chains.values()):
            _kube_proxy(rs, t)
        elif t.name == "nat" and t.family in ("ip", "ip6"):
            _iptables_nat(rs, t)
    return rs


def _kube_proxy(rs: NftRuleset, t: NftTable) -> None:
    from svctrace.dataplane.nftables.complete import add_chain, add_rule, jump_targets

    added: list[str] = []
    if "services" not in t.chains and "service-ips" not in t.sets:
        # A service chain pasted alone (`nft list chain ip kube-proxy service-...`, with or without its endpoint
        # chains): answer for a packet that reaches it.
        targets = jump_targets(t)
        roots = [n for n, c in t.chains.items() if n not in targets and c.rules
                 and (o := nft_chain_owner(n)) is not None and o.kind in ("service", "external")]
        if len(roots) == 1:
            c = add_chain(t, "services")
            add_rule(t, c, f'jump {roots[0]} comment "{ASSUMED}: if a packet reaches {roots[0]} (the paste has '
                           'no services chain)"')
            added.append("services")
    if "services" not in t.chains and "service-ips" in t.sets:
        c = add_chain(t, "services")
        add_rule(t, c, ("ip6" if t.family == "ip6" else "ip") + " daddr . meta l4proto . th dport vmap @service-ips")
        ipx = "ip6" if t.family == "ip6" else "ip"
        if "service-nodeports" in t.sets and "nodeport-ips" in t.sets:
            add_rule(t, c, f"{ipx} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports")
        elif "service-nodeports" in t.sets:  # --nodeport-addresses matches all: no nodeport-ips set
            local = "ip6 daddr != ::1" if ipx == "ip6" else "ip daddr != 127.0.0.0/8"
            add_rule(t, c, f"fib daddr type local {local} meta l4proto . th dport vmap @service-nodeports")
        added.append("services")
    if "masquerading" not in t.chains:
        c = add_chain(t, "masquerading")
        for text in _MASQUERADING:
            add_rule(t, c, text)
        added.append("masquerading")
    if "mark-for-masquerade" not in t.chains and "mark-for-masquerade" in jump_targets(t):
        c = add_chain(t, "mark-for-masquerade")
        add_rule(t, c, "meta mark set meta mark | 0x00004000")
        added.append("mark-for-masquerade")
    for name, typ, hook, prio, rules in _KUBE_PROXY_BASE:
        present = [(text, need) for text, need in rules if need in t.chains]
        if not present or name in t.chains:
            continue
        c = add_chain(t, name, typ, hook, prio)
        for text, _ in present:
            add_rule(t, c, text)
        added.append(name)
    if added:
        rs.warnings.append(Warn(
            f"table {t.key} has no base chains in this dump (trimmed?): assumed kube-proxy's usual "
            f"{', '.join(added)}; outcomes that go through them are marked uncertain", rs.source, t.line,
            "assumed-chains"))


def _iptables_nat(rs: NftRuleset, t: NftTable) -> None:
    from svctrace.dataplane.nftables.complete import add_chain, add_rule

    hooks = {c.hook for c in t.chains.values() if c.is_base}
    added: list[str] = []
    for name, hook, prio, target in _IPTABLES_NAT:
        if hook in hooks or target not in t.chains or name in t.chains:
            continue
        c = add_chain(t, name, "nat", hook, prio)
        add_rule(t, c, f"counter jump {target}")
        added.append(f"{name} -> {target}")
    if added:
        rs.warnings.append(Warn(
            f"table {t.key} (iptables-nft) is pasted without its base chains: assumed kube-proxy's "
            f"{'; '.join(added)}; outcomes that go through them are marked uncertain", rs.source, t.line,
            "assumed-chains"))


# Chains kube-proxy's wiring reaches (never a root of a paste): pkg/proxy/iptables/proxier.go
_WIRED = frozenset({"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-MARK-DROP",
                    "KUBE-FORWARD", "KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-EXTERNAL-SERVICES",
                    "KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"})
_JUMP = re.compile(r"\s-[jg]\s+(\S+)")
_SERVED = re.compile(r"\s-d\s+([0-9a-fA-F.:]+)(?:/(?:32|128))?\s+-p\s+(tcp|udp|sctp)\b.*?\s--dport\s+(\d+)\b")


def _skeleton(version: str) -> Ruleset:
    """What kube-proxy `version` writes on a node with no Services: its built-in jumps, KUBE-SERVICES' last rule
    (KUBE-NODEPORTS), KUBE-POSTROUTING, KUBE-MARK-MASQ (kubeproxy.render.iptables, the one home of them)."""
    from svctrace.dataplane.iptables import load_ruleset
    from svctrace.kubeproxy.config import ProxyConfig
    from svctrace.kubeproxy.render.iptables import generate, to_save

    return load_ruleset(to_save(generate([], [], ProxyConfig(node_name="node", kube_version=version))),
                        f"kube-proxy {version}")


def _is_paste(t: Table) -> bool:
    """A table pasted chain by chain (`iptables -t nat -S | grep KUBE`): no built-in chain declared or filled."""
    return all(c.decl_line is None and not c.raw for c in t.chains.values() if c.builtin)


def complete_iptables(rs: Ruleset, version: str | None = None, chain: str | None = None) -> Ruleset:
    """A paste of kube-proxy's chains without their wiring, completed with the wiring of kube-proxy `version`
    (None: the iptables model's default): nat PREROUTING/OUTPUT -> KUBE-SERVICES, KUBE-NODEPORTS last in
    KUBE-SERVICES, POSTROUTING -> KUBE-POSTROUTING and its masquerade, the filter jumps to the chains pasted. A
    paste without KUBE-SERVICES answers for a packet that reaches its one root chain (a KUBE-SVC- chain and its
    KUBE-SEP- chains); `chain` names the chain the packet is assumed to reach, in any dump. Every added rule says
    what it assumes (HINTS.assumed), so every outcome through it is uncertain. Once per ruleset (cached)."""
    from svctrace.kubeproxy.versions import MODES

    v = version or MODES["iptables"].default
    key = ("kube-proxy-wiring", v, chain)
    done = rs.cache.get(key)
    if isinstance(done, Ruleset):
        return done
    if MODES["iptables"].unmodelled(v) is not None:
        v = MODES["iptables"].default
    if chain is not None and not any(chain in t.chains for t in rs.tables.values()):
        raise InputError(f"--chain {chain}: no such chain in the dump", source=rs.source)
    tables = dict(rs.tables)
    said = f"kube-proxy {v}'s wiring" + ("" if version else " (no --kube-version given)")
    for tname in ("nat", "filter"):
        t = rs.tables.get(tname)
        if t is None or not any(c.name.startswith("KUBE-") and c.raw for c in t.chains.values()):
            continue
        entry = chain if chain is not None and chain in t.chains else None
        if not _is_paste(t) and entry is None:
            continue
        new = _wire(rs, t, _skeleton_for(v).tables.get(tname), said, entry)
        if new is not None:
            tables[tname] = new
    out = rs if tables == rs.tables else dataclasses.replace(rs, tables=tables, cache={})
    rs.cache[key] = out
    return out


def _skeleton_for(version: str) -> Ruleset:
    rs = _SKELETONS.get(version)
    if rs is None:
        rs = _SKELETONS[version] = _skeleton(version)
    return rs


_SKELETONS: dict[str, Ruleset] = {}


def _wire(rs: Ruleset, t: Table, skel: Table | None, said: str, entry: str | None) -> Table | None:
    """The pasted table `t` with kube-proxy's wiring from `skel` added where the paste lacks it (None: nothing)."""
    chains = dict(t.chains)
    jumped = {m.group(1) for c in t.chains.values() for raw in c.raw for m in _JUMP.finditer(raw.text)}
    adds: list[tuple[str, str, bool, str]] = []  # (chain, rule text, first, what it wires)

    def put(name: str, texts: list[str], *, first: bool = False) -> None:
        old = chains.get(name)
        c = Chain(t.name, name, policy=old.policy if old else ("ACCEPT" if name in BUILTIN_CHAINS[t.name] else None),
                  decl_line=old.decl_line if old else None)
        added = [RawRule(0, x) for x in texts]
        c.raw = [*added, *(old.raw if old else [])] if first else [*(old.raw if old else []), *added]
        c._parse = _parser(rs.family)
        chains[name] = c

    def assumed(text: str, why: str) -> str:
        """A skeleton rule with the assumption as its comment (any comment of its own replaced)."""
        body = re.sub(r'\s*-m comment --comment "[^"]*"', "", text)
        head, _, rest = body.partition(" -j ")
        return f'{head} -m comment --comment "{ASSUMED}: {why}"' + (f" -j {rest}" if rest else "")

    if entry is not None:  # --chain: the packet is assumed to reach it, from where the table's packets start
        for hook in [h for h in BUILTIN_CHAINS[t.name] if h in ("PREROUTING", "OUTPUT", "INPUT", "FORWARD")]:
            put(hook, [assumed(f"-A {hook} -j {entry}", f"the packet reaches {entry} (--chain)")], first=True)
        return Table(t.name, chains, t.line)
    if skel is None:
        return None
    roots = [c.name for c in t.chains.values() if c.raw and not c.builtin and c.name not in _WIRED
             and c.name not in jumped]
    kube = [r for r in roots if r.startswith("KUBE-")]
    if t.name == "nat" and "KUBE-SERVICES" not in t.chains and len(kube) == 1:
        put("KUBE-SERVICES", [assumed(f"-A KUBE-SERVICES -j {kube[0]}",
                                      f"if a packet reaches {kube[0]} (the paste has no KUBE-SERVICES)")])
    elif t.name == "nat" and "KUBE-SERVICES" not in t.chains and kube:
        # Several chains nothing jumps to: each is reached by the address and port its own rules name (a KUBE-SVC
        # chain's masquerade rule: `! -s CIDR -d <clusterIP>/32 -p tcp --dport 80 -j KUBE-MARK-MASQ`); the rest
        # by no packet svctrace can name (--chain names one).
        texts, blind = [], []
        for r in kube:
            m = next((m for raw in t.chains[r].raw if (m := _SERVED.search(raw.text))), None)
            if m is None:
                blind.append(r)
                continue
            ip, proto, port = m.group(1), m.group(2), m.group(3)
            texts.append(assumed(f"-A KUBE-SERVICES -d {ip} -p {proto} -m {proto} --dport {port} -j {r}",
                                 f"the paste has no KUBE-SERVICES: {r} serves {ip} {proto}/{port}, as its own "
                                 "rules say"))
        if blind:
            texts.append(assumed("-A KUBE-SERVICES", "the paste has no KUBE-SERVICES: the packet reaches none of "
                                 f"{', '.join(blind[:4])}{', ...' if len(blind) > 4 else ''} (--chain names one)"))
        put("KUBE-SERVICES", texts)
    for c in skel.chains.values():
        for raw in c.raw:
            m = _JUMP.search(raw.text)
            target = m.group(1) if m else ""
            if c.builtin and target in chains and chains[target].raw and target not in jumped:
                adds.append((c.name, raw.text, False, f"{c.name} -> {target}"))
            elif (c.name == "KUBE-SERVICES" and target == "KUBE-NODEPORTS" and "KUBE-NODEPORTS" in chains
                  and "KUBE-NODEPORTS" not in jumped and "KUBE-SERVICES" in chains):
                adds.append((c.name, raw.text, False, "KUBE-NODEPORTS last in KUBE-SERVICES"))
    post = skel.chains.get("KUBE-POSTROUTING")
    if t.name == "nat" and "KUBE-POSTROUTING" not in chains and "KUBE-SERVICES" in chains and post is not None:
        adds += [("KUBE-POSTROUTING", raw.text, False, "") for raw in post.raw]
        adds.append(("POSTROUTING", "-A POSTROUTING -j KUBE-POSTROUTING", False,
                     "POSTROUTING -> KUBE-POSTROUTING masquerade"))
    if adds:
        why = f"{said}, not in the paste: " + ", ".join(dict.fromkeys(w for *_, w in adds if w))
        for name in dict.fromkeys(a[0] for a in adds):
            put(name, [assumed(text, why) for n, text, _, _ in adds if n == name])
    if chains == t.chains:
        return None
    return Table(t.name, chains, t.line)


def trace_iptables(rs: Ruleset, pkt: Packet, node: NodeFacts | None = None, *,
                   kube_version: object = None, chain: str | None = None) -> TraceResult:
    """kube-proxy's iptables mode (or any iptables rules): every fate of `pkt`, with kube-proxy's notes.
    `kube_version` is recorded, and a paste without kube-proxy's wiring gets that version's (complete_iptables;
    `chain`: the chain the packet is assumed to reach). A dump cut short makes every outcome uncertain."""
    version = None
    if kube_version is not None:
        try:
            version = version_text(parse_version(kube_version))  # type: ignore[arg-type]
        except ValueError as e:
            raise InputError(str(e)) from None
    walked = complete_iptables(rs, version, chain)
    result = iptables_trace(walked, pkt, node, HINTS)
    if walked is not rs:
        from svctrace.kubeproxy.versions import MODES

        as_if = (f"the packet reached {chain}" if chain else
                 f"kube-proxy {version or MODES['iptables'].default}'s jumps were there")
        result.warnings.append(Warn(
            f"the dump does not show kube-proxy's wiring into these chains (a paste?): walked as if {as_if}; "
            "every outcome through them is uncertain", rs.source, None, "assumed-chains"))
    _mark_cut(result, rs.cut)
    result.ruleset = rs
    result.notes, result.nowhere = iptables_notes(walked, pkt, result.outcomes)
    result.notes += affinity_notes(result.outcomes, walked, node or NodeFacts(), None)
    result.kube_version = kube_version
    return result


def trace_nft(rs: NftRuleset, pkt: Packet, node: NodeFacts | None = None, *,
              kube_version: object = None) -> TraceResult:
    """kube-proxy's nftables mode (or any nftables ruleset): every fate of `pkt`, with kube-proxy's notes.
    `kube_version` is recorded: kube-proxy's nftables rules show all that depends on it."""
    from svctrace.dataplane.nftables import trace as nft_trace
    from svctrace.kubeproxy.notes import nft_notes

    result = nft_trace(complete_nft(rs), pkt, node, HINTS)
    result.notes, result.nowhere = nft_notes(rs, pkt, result.outcomes)
    result.notes += affinity_notes(result.outcomes, rs, node or NodeFacts(), None)
    result.kube_version = kube_version
    _mark_cut(result, rs.cut)
    return result


def _mark_cut(result: TraceResult, cut: tuple[int, str] | None) -> None:
    """A dump cut short: every outcome is uncertain, the first assumption says where the dump ends."""
    if cut is None:
        return
    result.cut = f"{cut[1]}; the rules after it are not known"
    for o in result.outcomes:
        o.certain = False
        if result.cut not in o.assumptions:
            o.assumptions.insert(0, result.cut)


def trace_ipvs(ipvs_table: IPVSTable, iptables_ruleset: Ruleset | None, packet: Packet, node: NodeFacts | None = None,
               *, kube_version: object = None) -> TraceResult:
    """Every fate of `packet` on a node in IPVS mode, with probabilities summing to 1.

    `iptables_ruleset` is the node's iptables-save (kube-proxy's companion rules), or None when only
    the IPVS table is known. `node.ipsets` (from `ipset save`) decides `-m set`; the sets it lacks
    are inferred from the IPVS table. `kube_version` ("1.26", "v1.29.2", (1, 26)) decides what
    kube-proxy does where the dump is silent (KUBE-IPVS-FILTER when the filter table is missing).
    """
    from svctrace.dataplane.ipvs.walker import IPVSContext, walk
    from svctrace.kubeproxy.notes import ipvs_notes

    node = node or NodeFacts()
    try:
        version = None if kube_version is None else parse_version(kube_version)  # type: ignore[arg-type]
    except ValueError as e:
        raise InputError(str(e)) from None
    given = iptables_ruleset is not None
    rs = iptables_ruleset if iptables_ruleset is not None else Ruleset(source="<no iptables rules>",
                                                                       family=packet.family)
    if given and rs.rule_count and rs.family != packet.family:
        raise InputError(f"the packet is IPv{packet.family} but the iptables dump holds IPv{rs.family} rules",
                         source=rs.source)
    lay = node_layout(ipvs_table, node)
    warnings: list[Warn] = list(ipvs_table.warnings) + (list(rs.warnings) if given else [])
    if given:
        rs, added = once(ipvs_table, "hooks", (rs,), lambda: _complete_kube_hooks(rs))
        if added:
            warnings.append(Warn(f"nothing in the dump jumps to {', '.join(added)} (a partial paste): walked as if "
                                 "kube-proxy's jumps were there (certain: false)", rs.source, None, "missing-chain"))
    filters = None if version is None else has(version, "ipvs-filter-chain")
    ctx = IPVSContext(ipvs_table, lay.vips, filters, "" if version is None else
                      f"kube-proxy {version[0]}.{version[1]} writes KUBE-IPVS-FILTER (the filter table is not in the "
                      "dump)", says=ipvs_silent())
    ipsets = dict(node.ipsets)
    if given:
        names = once(ipvs_table, "ipset-names", (rs,),
                     lambda: ipset_names_in_rules([raw.text for c in rs.iter_chains() for raw in c.raw]))
        missing = {n for n in names if n not in ipsets and n in INFERRED_SETS}
        if missing:
            ipsets.update(infer_kube_ipsets(ipvs_table, own_addresses(ipvs_table, node), missing))
            ctx.inferred = missing
            warnings.append(Warn(f"no `ipset save` for {', '.join(sorted(missing))}: inferred from the IPVS table "
                                 "(ClusterIPs = virtual servers on non-node addresses; outcomes that depend on "
                                 "them are certain: false)", ipvs_table.source, None, "ipset-inferred"))
        unknown = sorted(n for n in names if n not in ipsets)
        if unknown:
            warnings.append(Warn(f"ipsets {', '.join(unknown)} are neither given nor kube-proxy IPVS sets svctrace "
                                 "can infer: matches on them are shown both ways", rs.source, None, "ipset"))
        ctx.no_nat = "nat" not in rs.tables
        has_filter_chain = rs.chain("filter", "KUBE-IPVS-FILTER") is not None
        if "filter" not in rs.tables:
            ctx.synthetic_filter = True
        elif version is not None and filters and not has_filter_chain:
            warnings.append(Warn(f"kube-proxy {version[0]}.{version[1]} writes a KUBE-IPVS-FILTER chain but the "
                                 "filter table of the dump has none", rs.source, None, "version"))
        elif version is not None and not filters and has_filter_chain:
            warnings.append(Warn(f"the dump has KUBE-IPVS-FILTER, which kube-proxy writes only since 1.26, but "
                                 f"the version given is {version[0]}.{version[1]}", rs.source, None, "version"))
    else:
        ctx.synthetic_filter = True
    local = once(ipvs_table, "local-ips", (node.local_ips,), lambda: frozenset(node.local_ips | ipvs_table.addresses()))
    eff = dataclasses.replace(node, local_ips=local, ipsets=ipsets)
    outcomes, walk_warnings, (facts, assumed) = walk(ctx, rs, packet, eff, HINTS)
    notes = ipvs_notes(ctx, lay, version, given, packet, outcomes)
    n = len(ipvs_table.services)
    result = TraceResult(packet, outcomes, warnings + walk_warnings, rs, notes, nowhere=ctx.node_stack,
                         kube_version=kube_version, facts=facts, assumed=assumed,
                         inputs=[(ipvs_table.source, f"{ipvs_table.format}, {n} virtual service{'s' * (n != 1)}")])
    _mark_cut(result, rs.cut if given else None)
    return result


def trace_dataplane(dp: Dataplane, pkt: Packet, facts: NodeFacts, kube_version: str | None = None, *,
                    chain: str | None = None) -> TraceResult:
    """Walk a node's dataplane (as `load_dataplane` read it) the way its kube-proxy mode decides; every mode is
    given `kube_version` and records it on the result. `chain` (iptables mode): the chain the packet is assumed
    to reach ("if a packet reaches this chain")."""
    facts.ipsets.update(dp.ipsets)
    if chain is not None and dp.mode != "iptables":
        raise InputError(f"--chain is for iptables dumps; this node runs {dp.mode} mode")
    if dp.mode == "ipvs":
        return trace_ipvs(dp.ipvs, dp.iptables, pkt, facts, kube_version=kube_version)
    if dp.mode == "nftables":
        return trace_nft(dp.nft, pkt, facts, kube_version=kube_version)
    assert dp.iptables is not None
    return trace_iptables(dp.iptables, pkt, facts, kube_version=kube_version, chain=chain)


def _complete_kube_hooks(rs: Ruleset) -> tuple[Ruleset, list[str]]:
    """A paste of some chains only (`iptables -t nat -L KUBE-SERVICES`) has kube-proxy's chains but not
    the built-in rules that reach them. Add kube-proxy's jumps (pkg/proxy/ipvs/proxier.go,
    iptablesJumpChain: nat OUTPUT and PREROUTING -> KUBE-SERVICES, nat POSTROUTING -> KUBE-POSTROUTING,
    filter INPUT -> KUBE-IPVS-FILTER) to a copy when nothing jumps to a chain that has rules."""
    wanted = {"nat": {"PREROUTING": "KUBE-SERVICES", "OUTPUT": "KUBE-SERVICES", "POSTROUTING": "KUBE-POSTROUTING"},
              "filter": {"INPUT": "KUBE-IPVS-FILTER"}}
    tables = dict(rs.tables)
    added: list[str] = []
    for tname, hooks in wanted.items():
        t = rs.tables.get(tname)
        if t is None:
            continue
        texts = [raw.text for c in t.chains.values() for raw in c.raw]
        chains = dict(t.chains)
        for hook, target in hooks.items():
            tc = t.chains.get(target)
            if tc is None or not len(tc) or any(re.search(rf"\s-[jg]\s+{target}(\s|$)", x) for x in texts):
                continue
            old = t.chains.get(hook)
            c = Chain(tname, hook, policy=old.policy if old else "ACCEPT", decl_line=old.decl_line if old else None)
            c.raw = [RawRule(0, f'-A {hook} -m comment --comment "{HOOKED}" -j {target}'), *(old.raw if old else [])]
            c._parse = _parser(rs.family)
            chains[hook] = c
            if target not in added:
                added.append(target)
        if chains != t.chains:
            tables[tname] = Table(tname, chains, t.line)
    if not added:
        return rs, []
    return dataclasses.replace(rs, tables=tables), added


def _parser(family: int) -> Callable[[Chain], list[Rule]]:
    def parse(chain: Chain) -> list[Rule]:
        rules: list[Rule] = []
        for raw in chain.raw:
            for r in parse_rule(chain.table, chain.name, raw, family):
                r.index = len(rules) + 1
                rules.append(r)
        return rules

    return parse
