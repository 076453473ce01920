"""Each hop of a walk as one plain sentence a CKA student can learn from."""

from __future__ import annotations

import re

from svctrace.dataplane.contract import Outcome, PathStep, TraceResult, visible_steps
from svctrace.kubeproxy.names import CHAIN_PREFIXES, FAMILIES, chain_family, nft_chain_owner
from svctrace.model.cluster import Cluster, Service, ServicePort


def _pct(p: float) -> str:
    return f"{p * 100:.0f}%" if p >= 0.9995 else f"{p * 100:.1f}%"


def _visible(path: list[PathStep]) -> list[PathStep]:
    return visible_steps(path)


def _pod_of(cluster: Cluster, endpoint: str) -> str:
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    p = cluster.pod_by_ip(host)
    return f" (pod {p.key} on {p.node_name})" if p is not None else ""


def sentence(s: PathStep, cluster: Cluster, packet_desc: str, share: float | None,
             passed_fw: frozenset[str] = frozenset()) -> str:
    c = s.comment or ""
    act = s.action
    target = s.target or ""
    where = f"{s.table} {s.chain}"
    if s.table.endswith(" kube-proxy"):  # nftables mode: kube-proxy's own table
        said = _nft_sentence(s, target, cluster, packet_desc, share)
        if said:
            return said
    if s.chain in ("PREROUTING", "OUTPUT") and target == "KUBE-SERVICES":
        first = "arriving" if s.chain == "PREROUTING" else "sent by the node"
        return f"{s.chain} ({s.table}) hands every packet {first} to KUBE-SERVICES."
    if s.chain == "KUBE-SERVICES" and chain_family(target) in FAMILIES:
        svcname, _, kind = c.partition(" ")
        what = {"cluster IP": "the cluster IP", "external IP": "an external IP", "loadbalancer IP":
                "the load-balancer IP"}.get(kind, kind or "an address")
        return f"KUBE-SERVICES matched {packet_desc}, {what} of {svcname}; on to {target}."
    if s.chain == "KUBE-SERVICES" and target == "KUBE-NODEPORTS":
        return "The destination is one of the node's own addresses, so KUBE-SERVICES' last rule sends it to KUBE-NODEPORTS."
    if s.chain == "KUBE-NODEPORTS" and target:
        return f"KUBE-NODEPORTS matched the node port of {c or 'a Service'}; on to {target}."
    if target == "KUBE-MARK-MASQ":
        return f"{where} marks the packet for masquerade: {masq_words(s) }."
    if chain_family(target) == "SEP":
        ep = c.split("->", 1)[1].strip() if "->" in c else ""
        odds = f" with probability {_pct(share)}" if share is not None and share < 0.9995 else ""
        printed = f" (--probability {s.probability})" if s.probability else ""
        return f"{s.chain} picks endpoint {ep or target}{odds}{printed}."
    if chain_family(target) in ("SVC", "SVL") and chain_family(s.chain) in ("EXT", "FW", "XLB"):
        return f"{s.chain} passes it on to {target}" + (f" ({c})." if c else ".")
    if chain_family(target) == "EXT" and chain_family(s.chain) == "FW":
        return f"{s.chain}: the source is in loadBalancerSourceRanges, on to {target}."
    if act.startswith("DNAT to "):
        ep = act[len("DNAT to "):]
        return f"{s.chain} rewrites the destination to {ep}{_pod_of(cluster, ep)}."
    if act.startswith("REJECT"):
        return f"{where} rejects it ({act[len('REJECT with '):] if 'with' in act else 'icmp-port-unreachable'})" + (
            f": “{c}”." if c else ".")
    if act == "DROP":
        return f"{where} drops it" + (f": “{c}”." if c else ".")
    if act.startswith("policy DROP"):
        return f"No rule accepted it and the {where} policy is DROP."
    if act.startswith("MASQUERADE"):
        return f"{where} masquerades it: the source becomes the node's own address on the way out."
    if act.startswith("no target") and chain_family(s.chain) == "FW":
        if s.chain in passed_fw:
            ext = CHAIN_PREFIXES["EXT"] + s.chain[len(CHAIN_PREFIXES["FW"]):]
            return (f"{s.chain}: the source is in loadBalancerSourceRanges, but {ext} has no endpoint for it on "
                    "this node, so the packet stays untranslated" + (f" (“{c}”)." if c else "."))
        return f"{s.chain}: the source is not in loadBalancerSourceRanges" + (f" (“{c}”)." if c else ".")
    if act == "ACCEPT":
        return f"{where} accepts it" + (f" (“{c}”)." if c else ".")
    if target:
        return f"{where} rule {s.rule} jumps to {target}" + (f" (“{c}”)." if c else ".")
    return f"{where} rule {s.rule}: {act}" + (f" (“{c}”)." if c else ".")


def _nft_object(chain: str) -> str:
    """`service-GCGJYZ2R-default/web/tcp/http` -> `default/web:http (tcp)`."""
    o = nft_chain_owner(chain)
    if o is None or o.kind == "local":
        return chain
    return f"{o.namespace}/{o.name}" + (f":{o.port_name}" if o.port_name else "") + f" ({o.protocol})"


def _nft_sentence(s: PathStep, target: str, cluster: Cluster, desc: str, share: float | None) -> str | None:
    if s.chain in ("nat-prerouting", "nat-output") and target == "services":
        who = "arriving" if s.chain == "nat-prerouting" else "sent by the node"
        return f"{s.chain} hands every packet {who} to the `services` verdict map."
    if s.chain == "services" and target:
        kind = target.split("-", 1)[0]
        what = {"service": "a cluster IP", "external": "an external destination (NodePort, external IP or LB)",
                "firewall": "a load-balancer IP with source ranges"}.get(kind, "an entry")
        return f"The `services` map matched {desc}, {what} of {_nft_object(target)}; on to {target}."
    if target == "mark-for-masquerade":
        return f"{s.chain} marks the packet for masquerade (replies must come back through this node)."
    if s.chain.startswith("service-") and target.startswith("endpoint-"):
        ep = target.split("__", 1)[1].replace("/", ":") if "__" in target else target
        odds = f" with probability {_pct(share)}" if share is not None and share < 0.9995 else ""
        return f"{s.chain} picks endpoint {ep}{odds} (numgen random mod N: exactly 1/N each)."
    if s.chain.startswith("external-") and target.startswith("service-"):
        return f"{s.chain} passes it on to {target}."
    if s.chain.startswith("endpoint-") and s.action.startswith("DNAT to "):
        ep = s.action[len("DNAT to "):]
        return f"{s.chain} rewrites the destination to {ep}{_pod_of(cluster, ep)}."
    if s.chain == "masquerading" and s.action.startswith("MASQUERADE"):
        return "masquerading masquerades it: the source becomes the node's own address on the way out."
    return None


def masq_words(s: PathStep) -> str:
    t = s.text
    c = s.comment or ""
    m = re.search(r"!\s+-s\s+(\S+)", t)
    if m:
        return f"the source is outside the cluster CIDR {m.group(1)}, so replies must come back through this node"
    if chain_family(s.chain) == "SEP" and re.search(r"(?<![!])\s-s\s", " " + t):
        return "the pod is talking to itself through the Service (hairpin), so it must not see its own address"
    if "--src-type LOCAL" in t:
        return "the node itself sent it, to an external address of the Service"
    if chain_family(s.chain) in ("EXT", "XLB", "FW") or "external" in c:
        return "external traffic with externalTrafficPolicy Cluster is masqueraded so replies come back through this node"
    if "localnet" in c or "127.0.0.0/8" in t:
        return "traffic to a localhost NodePort must be masqueraded"
    return c or "a rule asked for it"


def masquerade_reason(o: Outcome) -> str | None:
    for s in o.path:
        if s.action.startswith("jump KUBE-MARK-MASQ") or s.action.startswith("jump KUBE-MARK-MASQ "):
            return f"{s.table} {s.chain} rule {s.rule}: {masq_words(s)}"
    for s in o.path:
        if s.action.startswith(("MASQUERADE", "SNAT")):
            return f"{s.table} {s.chain} rule {s.rule}" + (f" (“{s.comment}”)" if s.comment else "")
    return None


def _bookkeeping(s: PathStep) -> bool:
    """Mark-setting and mark-clearing hops: the masquerade sentence already says what they do."""
    if s.chain in ("KUBE-MARK-MASQ", "KUBE-MARK-DROP", "mark-for-masquerade"):
        return True
    if s.chain == "masquerading" and s.action.startswith("MARK"):
        return True
    if s.chain == "nat-postrouting" and s.action == "jump masquerading":
        return True
    if s.chain == "KUBE-POSTROUTING" and s.action.startswith("MARK"):
        return True
    return s.chain == "POSTROUTING" and s.action == "jump KUBE-POSTROUTING"


def hop_sentences(result: TraceResult, cluster: Cluster, svc: Service, port: ServicePort | None) -> list[str]:
    """The hops every outcome shares, then one line per branch (most likely first)."""
    pkt = result.packet
    desc = f"{pkt.dst}:{pkt.dport}/{pkt.proto}" if pkt.has_ports else f"{pkt.dst} ({pkt.proto})"
    outs = result.outcomes
    if not outs:
        return []
    paths = [[s for s in _visible(o.path) if not _bookkeeping(s)] for o in outs]
    # Firewall chains whose source check passed (the jump on to KUBE-EXT may be hidden as a no-op).
    fw = frozenset(s.chain for o in outs for s in o.path
                   if chain_family(s.chain) == "FW" and s.action.startswith("jump " + CHAIN_PREFIXES["EXT"]))
    common = 0
    while all(len(p) > common for p in paths) and len({(p[common].chain, p[common].rule, p[common].action)
                                                          for p in paths}) == 1:
        common += 1
    lines = [sentence(s, cluster, desc, None, fw) for s in paths[0][:common]]
    if len(outs) > 1:
        for o, p in zip(outs, paths, strict=True):
            rest = [sentence(s, cluster, desc, o.probability, fw) for s in p[common:]]
            if rest:
                lines.append("  • " + " ".join(rest))
    else:
        lines += [sentence(s, cluster, desc, None, fw) for s in paths[0][common:]]
    if not lines:
        lines.append(f"No rule on the node translates {desc}: it is {'delivered locally' if outs[0].delivery == 'local' else 'routed on unchanged'}.")
    return lines
