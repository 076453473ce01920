"""Which dataplane decides on a node (iptables, IPVS or nftables mode), read from its snapshot files.
`explain` asks for a Dataplane and never looks at file names again; `svctrace.kubeproxy.walk.trace_dataplane`
walks it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from svctrace.dataplane.detect import detect_mode, iptables_name, missing_file, usable
from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.iptables.rules import Ruleset
from svctrace.errors import InputError, Warn
from svctrace.model.snapshot import NodeFiles, Snapshot


@dataclass
class Dataplane:
    mode: str
    node: str  # the node whose files are used (may stand in for another)
    main_file: str  # path of the file that decides, for the answer's `rules`
    iptables: Ruleset | None = None
    ipvs: Any = None  # svctrace.dataplane.ipvs.IPVSTable
    nft: Any = None  # svctrace.dataplane.nftables.NftRuleset
    ipsets: dict[str, Any] = field(default_factory=dict)
    extra_local_ips: list[str] = field(default_factory=list)  # kube-ipvs0 and other interface addresses
    mode_source: str = ""


def node_addresses(nf: NodeFiles) -> list[str]:
    """Addresses from `ip -j addr` (or `ip -o addr` text); a damaged file gives none (load_host warns)."""
    from svctrace.dataplane.host import load_host

    return [str(ip) for ip in load_host(nf).local_addresses()]


def load_dataplane(snap: Snapshot, node: str, family: int) -> Dataplane:
    nf = snap.nodes[node]
    mode, where = detect_mode(snap, nf, family)
    mode = mode or "iptables"
    missing = missing_file(nf, mode, family)
    if missing is not None:
        raise InputError(f"node {node} runs kube-proxy in {mode} mode but its {missing} was not collected",
                         source=nf.path(missing))
    dp = Dataplane(mode=mode, node=node, main_file="", mode_source=where)
    has_ipt, ipt_name = iptables_name(nf, family)
    if has_ipt:
        dp.iptables = nf.parsed(ipt_name, load_ruleset, by_lines=True)
    if nf.get("ipset"):
        dp.ipsets = nf.parsed("ipset", parse_ipset)[0]
    dp.extra_local_ips = node_addresses(nf)
    if mode == "nftables":
        from svctrace.dataplane.nftables import load_nft

        fname = "nft.json" if nf.get("nft.json") else "nft"
        dp.nft = nf.parsed(fname, load_nft)
        dp.main_file = nf.path(fname)
    elif mode == "ipvs":
        from svctrace.dataplane.ipvs import load_ipvs

        dp.ipvs = nf.parsed("ipvsadm", load_ipvs)
        dp.main_file = nf.path("ipvsadm")
    else:
        dp.main_file = nf.path(ipt_name)
    return dp


def dataplane_for(snap: Snapshot, node: str | None, family: int, local_policy: bool, service: str,
                  warns: list[Warn]) -> Dataplane:
    """The deciding node's dataplane; another node's (with a warning) only when that cannot change the answer."""
    if node is not None and node in snap.nodes and usable(snap, node, family):
        return load_dataplane(snap, node, family)
    nf = snap.nodes.get(node or "")
    mode, _ = detect_mode(snap, nf, family) if nf is not None else (None, "")
    fname = missing_file(nf, mode, family) if nf is not None else (
        "iptables-save" if family == 4 else "ip6tables-save")
    missing = f"{snap.source}/nodes/{node}/{fname or 'iptables-save'}"
    order = list(snap.cluster.nodes)
    others = sorted((n for n in snap.nodes if n != node and usable(snap, n, family)),
                    key=lambda n: order.index(n) if n in order else len(order))
    if not others:
        raise InputError("no node in the snapshot has a dump of its dataplane: collect one with "
                         f"`ssh {node or 'NODE'} sudo iptables-save` (or `svctrace collect`)", source=missing)
    if local_policy:
        raise InputError(f"the deciding node {node} has no dump, and {service} has a Local traffic policy, so "
                         "another node's rules would give a different answer", source=missing)
    used = others[0]
    warns.append(Warn(f"node {node} has no {fname or 'dump'} in the snapshot; using {used}'s rules instead (kube-proxy "
                      "programs the same rules on every node except for Local traffic policies)", missing, None,
                      "snapshot"))
    return load_dataplane(snap, used, family)
