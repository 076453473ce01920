"""kube-proxy's behaviours by version: the one table. Every version cut-off svctrace knows is a row here,
with the version it arrived in (`since`) and, where it went away, the first version without it (`until`);
code asks `has(version, "feature")` and never compares version numbers itself.

Adding a kube-proxy release's change is one row here plus the branch that renders or reads it. The rows
cite the kube-proxy source they come from (pkg/proxy/{iptables,ipvs,nftables}/proxier.go of that release).
Which versions each mode's model covers, and what each assumes when given none, is `MODES` below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from svctrace.model.version import Version, parse_version, version_text

# What svctrace assumes when nothing says which kube-proxy runs (no image tag, no /version, no flag):
# `has(None, ...)`, `simulate` and every mode's generator. The newest release every mode's model covers
# (nftables' per-endpoint chains end before 1.36, see `nft-endpoint-chains`): today's clusters, in every
# mode. tests/test_versions.py checks that every mode models it and that no row starts after it.
DEFAULT_VERSION = "1.35"
# The release whose pkg/proxy the endpoint selection (kubeproxy/endpoints.py) and the iptables generator
# were written from, and so what they assume when a caller names no version.
REFERENCE_VERSION = "1.28"


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    since: Version | None  # first version with it; None: always there (as far as svctrace models)
    until: Version | None  # first version without it; None: still there
    modes: tuple[str, ...]  # the proxy modes it concerns
    says: str  # one line for docs and notes

    def in_version(self, v: Version) -> bool:
        return (self.since is None or v >= self.since) and (self.until is None or v < self.until)

    @property
    def since_text(self) -> str:
        """"1.26" for a feature since 1.26 ("" when it has always been there)."""
        return version_text(self.since) if self.since else ""

    @property
    def until_text(self) -> str:
        return version_text(self.until) if self.until else ""

    @property
    def span_text(self) -> str:
        """"1.26+", "before 1.36" or "1.31 to 1.35": the versions that have it."""
        if self.since and self.until:
            return f"{self.since_text} to {version_text((self.until[0], self.until[1] - 1))}"
        return f"{self.since_text}+" if self.since else f"before {self.until_text}" if self.until else "every version"


def _f(name: str, since: str | None, until: str | None, modes: str, says: str) -> Feature:
    return Feature(name, parse_version(since) if since else None, parse_version(until) if until else None,
                   tuple(modes.split(",")), says)


FEATURES: dict[str, Feature] = {f.name: f for f in (
    # pkg/proxy/iptables/proxier.go: KUBE-FORWARD `-m conntrack --ctstate INVALID -j DROP` (PR #74840, v1.14).
    # The oldest iptables layout svctrace writes (MODES below); wild dumps of 1.11 (tests/corpus/wild
    # iptables-save/005) have no such rule, a single-rule KUBE-POSTROUTING and no filter FORWARD jumps.
    _f("forward-invalid-drop", "1.14", None, "iptables",
       "KUBE-FORWARD drops packets conntrack marks INVALID"),
    # pkg/proxy/iptables/proxier.go: MASQUERADE --random-fully when the node's iptables has it (1.6.2+,
    # utiliptables HasRandomFully; PR #78547, v1.16). Whether a node's iptables has it is ProxyConfig.random_fully.
    _f("masquerade-random-fully", "1.16", None, "iptables,ipvs",
       "KUBE-POSTROUTING's MASQUERADE has --random-fully (when the node's iptables supports it)"),
    # pkg/proxy/iptables/proxier.go: `--detect-local-mode` (ClusterCIDR, NodeCIDR) beside --cluster-cidr (v1.18).
    _f("detect-local-node-cidr", "1.18", None, "iptables,ipvs,nftables",
       "--detect-local-mode NodeCIDR: local traffic is the node's podCIDR"),
    # pkg/proxy/iptables/proxier.go: KUBE-POSTROUTING returns unmarked packets and clears the mark before it
    # masquerades (`-m mark ! --mark M/M -j RETURN`, `-j MARK --xor-mark M`; PR #92035, v1.19); one rule
    # `-m mark --mark M/M -j MASQUERADE` before (wild dumps of 1.10/1.11 show it).
    _f("postrouting-clear-mark", "1.19", None, "iptables,ipvs",
       "KUBE-POSTROUTING clears the masquerade mark (RETURN if unmarked, --xor-mark) before MASQUERADE"),
    # pkg/proxy/util/localdetector.go NewDetectLocalByBridgeInterface / ByInterfaceNamePrefix
    # (KEP-2450; --detect-local-mode BridgeInterface and InterfaceNamePrefix, v1.23).
    _f("detect-local-interface", "1.23", None, "iptables,ipvs,nftables",
       "--detect-local-mode BridgeInterface / InterfaceNamePrefix: local traffic by incoming interface"),
    # pkg/proxy/iptables/proxier.go: one "kubernetes forwarding conntrack rule" in KUBE-FORWARD; two before
    # ("... pod source rule", "... pod destination rule"). Not checked against 1.23's source: the wild dumps show
    # two at v1.22.8 (iptables-save/001) and one from ~1.25 on (iptables-save/026).
    _f("forward-conntrack-one-rule", "1.23", None, "iptables",
       "KUBE-FORWARD has one conntrack RELATED,ESTABLISHED rule (pod source and destination rules before)"),
    # pkg/proxy/iptables/proxier.go computeProbability: "%0.10f", "%0.5f" before.
    _f("probability-10-decimals", "1.17", None, "iptables",
       "statistic probabilities printed with 10 decimals (5 before)"),
    # pkg/proxy/types.go ServicePortName.String(): no trailing ":" for an unnamed port.
    _f("port-name-colon-optional", "1.19", None, "iptables",
       "ServicePortName `ns/name:port` drops the `:` for an unnamed port (chain-name hashes, comments)"),
    # ServiceInternalTrafficPolicy beta, on by default (pkg/proxy/topology.go FilterEndpoints).
    _f("internal-traffic-policy-filter", "1.22", None, "iptables",
       "internalTrafficPolicy: Local keeps only this node's endpoints (the field is ignored before)"),
    # pkg/proxy/iptables/proxier.go servicePortPolicyLocalChainName / serviceExternalChainName.
    _f("ext-svl-chains", "1.24", None, "iptables",
       "KUBE-EXT-/KUBE-SVL- chains (KUBE-XLB- before)"),
    # pkg/proxy/iptables/proxier.go kubeProxyFirewallChain; KUBE-MARK-DROP left to the kubelet.
    _f("proxy-firewall-chain", "1.25", None, "iptables",
       "KUBE-PROXY-FIREWALL; kube-proxy no longer programs KUBE-MARK-DROP"),
    # pkg/proxy/ipvs/proxier.go kubeIPVSFilterChain and the KUBE-IPVS-IPS set (PR #108460, issue #72236).
    _f("ipvs-filter-chain", "1.26", None, "ipvs",
       "KUBE-IPVS-FILTER rejects new connections to kube-ipvs0 addresses on ports no Service serves"),
    # pkg/proxy/iptables/proxier.go: kube-proxy writes the "block incoming localnet connections" rule
    # itself (KEP-3178 IPTablesOwnershipCleanup); the kubelet's rule before.
    _f("localhost-nodeport-firewall", "1.27", None, "iptables",
       "KUBE-FIREWALL drops martian localhost NodePort traffic (route_localnet)"),
    # pkg/proxy/iptables/proxier.go: no "ctstate INVALID -j DROP" when nf_conntrack_tcp_be_liberal is set.
    _f("conntrack-liberal-no-invalid-drop", "1.29", None, "iptables",
       "with conntrack tcp_be_liberal set, no INVALID drop rule in KUBE-FORWARD"),
    # pkg/proxy/iptables/proxier.go: the INVALID drop counts in nfacct `ct_state_invalid_dropped_pkts`
    # (metric kubeproxy_iptables_ct_state_invalid_dropped_packets_total; PR #122812, v1.30) when the kernel has
    # nfnetlink_acct (ProxyConfig.nfacct).
    _f("nfacct-ct-invalid", "1.30", None, "iptables",
       "the KUBE-FORWARD INVALID drop counts in nfacct ct_state_invalid_dropped_pkts"),
    # pkg/proxy/iptables/proxier.go: a KUBE-NODEPORTS rule per NodePort for `-d 127.0.0.0/8` counting in nfacct
    # `localhost_nps_accepted_pkts` before the NodePort's own rule (PR #125015, v1.31), IPv4 with localhost
    # NodePorts on, when the kernel has nfnetlink_acct.
    _f("nfacct-localhost-nodeports", "1.31", None, "iptables",
       "localhost NodePorts count in nfacct localhost_nps_accepted_pkts (a KUBE-NODEPORTS -d 127.0.0.0/8 rule)"),
    # pkg/proxy/ipvs/proxier.go kubeIPVSOutFilterChain (PR #119791).
    _f("ipvs-out-filter-chain", "1.29", None, "ipvs",
       "KUBE-IPVS-OUT-FILTER: no access from the node to a LoadBalancer IP through IPVS"),
    # pkg/proxy/serviceport.go: LoadBalancerIPMode beta (on by default).
    _f("lb-ipmode-proxy", "1.30", None, "iptables,ipvs,nftables",
       "LoadBalancer ingress with ipMode: Proxy is not programmed on the node"),
    # pkg/proxy/ipvs/proxier.go writeIptablesRules (PR #121919; later 1.28/1.29 patches as a backport).
    _f("ipvs-filter-external-ip-local", "1.30", None, "ipvs",
       "KUBE-IPVS-FILTER returns for KUBE-EXTERNAL-IP-LOCAL too"),
    # pkg/proxy/nftables/proxier.go clusterIPsCheckChain.
    _f("nft-cluster-ips-check-reject", "1.30", None, "nftables",
       "cluster-ips-check rejects packets to unserved ports of a cluster IP (ping included)"),
    # pkg/proxy/nftables/proxier.go: service-endpoints-check / nodeport-endpoints-check instead of the
    # alpha layout's one endpoints-check chain (and its other base chains).
    _f("nft-split-endpoints-check", "1.31", None, "nftables",
       "separate service-endpoints-check and nodeport-endpoints-check chains (1.29 and 1.30 had one "
       "endpoints-check chain and other base chains)"),
    # pkg/proxy/nftables/proxier.go (PR #132456; cherry-picked to release-1.33 patches).
    _f("nft-post-dnat-filter", "1.34", None, "nftables",
       "nftables filter chains run after DNAT (post-dnat-filter layout)"),
    # pkg/proxy/nftables/proxier.go: 1.36 replaced them by `dnat ip to numgen ... map` and a
    # hairpin-connections set, without mark-for-masquerade (PRs #135800, #136499).
    _f("nft-endpoint-chains", None, "1.36", "nftables",
       "one endpoint-… chain per endpoint (1.36 dropped them: dnat ip to numgen map, hairpin-connections set)"),
    # The modes themselves (KEP-3866 nftables kube-proxy backend: alpha 1.29, beta 1.31, GA 1.33;
    # KEP-2087 / PR #112133: the userspace proxier removed in 1.26).
    _f("nft-mode-alpha", "1.29", None, "nftables", "the nftables mode exists (alpha, feature gate NFTablesProxyMode)"),
    _f("nft-mode-beta", "1.31", None, "nftables", "the nftables mode is beta (its feature gate on by default)"),
    _f("userspace-mode", None, "1.26", "iptables,ipvs,nftables",
       "a fourth mode, userspace, exists beside these (removed in 1.26)"),
)}


def has(version: str | Version | None, feature: str) -> bool:
    """Whether kube-proxy `version` (None: DEFAULT_VERSION) has `feature` (a key of FEATURES)."""
    try:
        return _has(version, feature)  # a renderer asks per Service port: the answer is remembered
    except TypeError:  # an unhashable version (a list): asked directly
        return _has.__wrapped__(version, feature)


@lru_cache(maxsize=4096)
def _has(version: str | Version | None, feature: str) -> bool:
    v = parse_version(version if version is not None else DEFAULT_VERSION)
    return FEATURES[feature].in_version(v)


@dataclass(frozen=True, slots=True)
class ModeModel:
    """What svctrace models of one proxy mode: the version its generator assumes when given none, and
    the features every modelled version has (a version without one has a layout svctrace does not write)."""

    mode: str
    default: str
    requires: tuple[str, ...] = ()

    def unmodelled(self, version: str | Version) -> Feature | None:
        """The first required feature `version` lacks (its `says` tells why), None when it is modelled."""
        v = parse_version(version)
        return next((FEATURES[f] for f in self.requires if not FEATURES[f].in_version(v)), None)

    @property
    def range_text(self) -> str:
        """The versions modelled: "1.31 to 1.35", "1.26+", or "every version"."""
        rows = [FEATURES[f] for f in self.requires]
        since = max((r.since for r in rows if r.since), default=None)
        until = min((r.until for r in rows if r.until), default=None)
        return Feature("range", since, until, (self.mode,), "").span_text


MODES: dict[str, ModeModel] = {m.mode: m for m in (
    ModeModel("iptables", DEFAULT_VERSION, ("forward-invalid-drop",)),
    ModeModel("ipvs", DEFAULT_VERSION, ("ipvs-filter-chain",)),
    ModeModel("nftables", DEFAULT_VERSION, ("nft-split-endpoints-check", "nft-endpoint-chains")),
)}
