"""kube-proxy's behaviours by version: the one table. Every version cut-off svctrace knows is a row here,
with the version it arrived in (`since`) and, where it went away, the first version without it (`until`);
code asks `has(version, "feature")` and never compares version numbers itself.

Adding a kube-proxy release's change is one row here plus the branch that renders or reads it. The rows
cite the kube-proxy source they come from (pkg/proxy/{iptables,ipvs,nftables}/proxier.go of that release).
"""

from __future__ import annotations

from dataclasses import dataclass

from svctrace.model.version import Version, parse_version

# What svctrace assumes when nothing says which kube-proxy runs (no image tag, no /version, no flag).
DEFAULT_VERSION = "1.30"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    since: Version | None  # first version with it; None: always there (as far as svctrace models)
    until: Version | None  # first version without it; None: still there
    modes: tuple[str, ...]  # the proxy modes it concerns
    says: str  # one line for docs and notes

    def in_version(self, v: Version) -> bool:
        return (self.since is None or v >= self.since) and (self.until is None or v < self.until)


def _f(name: str, since: str | None, until: str | None, modes: str, says: str) -> Feature:
    return Feature(name, parse_version(since) if since else None, parse_version(until) if until else None,
                   tuple(modes.split(",")), says)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    _f("probability-10-decimals", "1.17", None, "iptables",
       "statistic probabilities printed with 10 decimals (5 before)"),
    _f("port-name-colon-optional", "1.19", None, "iptables,ipvs,nftables",
       "chain-name hash input `ns/name:port` drops the `:` for unnamed ports (always present before)"),
    _f("internal-traffic-policy-filter", "1.22", None, "iptables",
       "internalTrafficPolicy: Local filters endpoints in the SVL chain"),
    _f("ext-svl-chains", "1.24", None, "iptables",
       "KUBE-EXT-/KUBE-SVL- chains (KUBE-XLB- before)"),
    _f("proxy-firewall-chain", "1.25", None, "iptables",
       "KUBE-PROXY-FIREWALL; kube-proxy no longer programs KUBE-MARK-DROP"),
    _f("ipvs-filter-chain", "1.26", None, "ipvs",
       "KUBE-IPVS-FILTER rejects new connections to kube-ipvs0 addresses on ports no Service serves"),
    _f("localhost-nodeport-firewall", "1.27", None, "iptables",
       "KUBE-FIREWALL drops martian localhost NodePort traffic (route_localnet)"),
    _f("conntrack-liberal-no-invalid-drop", "1.29", None, "iptables",
       "with conntrack tcp_be_liberal set, no INVALID drop rule in KUBE-FORWARD"),
    _f("ipvs-out-filter-chain", "1.29", None, "ipvs",
       "KUBE-IPVS-OUT-FILTER: no access from the node to a LoadBalancer IP through IPVS"),
    _f("lb-ipmode-proxy", "1.30", None, "iptables,ipvs,nftables",
       "LoadBalancer ingress with ipMode: Proxy is not programmed on the node"),
    _f("ipvs-filter-external-ip-local", "1.30", None, "ipvs",
       "KUBE-IPVS-FILTER returns for KUBE-EXTERNAL-IP-LOCAL too"),
    _f("nft-cluster-ips-check-reject", "1.30", None, "nftables",
       "cluster-ips-check rejects packets to unserved ports of a cluster IP (ping included)"),
    _f("nft-post-dnat-filter", "1.34", None, "nftables",
       "nftables filter chains run after DNAT (post-dnat-filter layout)"),
    _f("nft-split-endpoints-check", "1.31", None, "nftables",
       "service-endpoints-check and nodeport-endpoints-check chains (one endpoints-check chain before)"),
    _f("nft-endpoint-chains", None, "1.36", "nftables",
       "one endpoint-* chain per endpoint (1.36: dnat to a numgen map, a hairpin-connections set; "
       "kubernetes PRs #135800, #136499)"),
)}


def has(version: str | Version | None, feature: str) -> bool:
    """Whether kube-proxy `version` (None: DEFAULT_VERSION) has `feature` (a key of FEATURES)."""
    v = parse_version(version if version is not None else DEFAULT_VERSION)
    return FEATURES[feature].in_version(v)
