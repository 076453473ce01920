"""What iptables' match and target extensions accept: option names, their aliases, how many arguments.

Taken from the iptables extensions' option tables (iptables 1.4 to 1.8, `extensions/libxt_*.c`),
limited to what kube-proxy, kubelet, Docker and the common CNIs write, plus the ones often seen
beside them. An extension not listed here still parses (options take the following
non-option words as arguments) but its match is reported as not understood.
"""

from __future__ import annotations

# module -> {option: number of arguments}
MATCH_OPTIONS: dict[str, dict[str, int]] = {
    "comment": {"--comment": 1},
    "tcp": {"--sport": 1, "--dport": 1, "--tcp-flags": 2, "--syn": 0, "--tcp-option": 1},
    "udp": {"--sport": 1, "--dport": 1},
    "udplite": {"--sport": 1, "--dport": 1},
    "sctp": {"--sport": 1, "--dport": 1, "--chunk-types": 2},
    "dccp": {"--sport": 1, "--dport": 1, "--dccp-types": 1, "--dccp-option": 1},
    "icmp": {"--icmp-type": 1},
    "icmp6": {"--icmpv6-type": 1},
    "multiport": {"--sports": 1, "--dports": 1, "--ports": 1},
    "statistic": {"--mode": 1, "--probability": 1, "--every": 1, "--packet": 1},
    "recent": {
        "--name": 1, "--set": 0, "--rcheck": 0, "--update": 0, "--remove": 0, "--seconds": 1,
        "--reap": 0, "--hitcount": 1, "--rttl": 0, "--mask": 1, "--rsource": 0, "--rdest": 0,
    },
    "addrtype": {"--src-type": 1, "--dst-type": 1, "--limit-iface-in": 0, "--limit-iface-out": 0},
    "mark": {"--mark": 1},
    "connmark": {"--mark": 1},
    "conntrack": {
        "--ctstate": 1, "--ctstatus": 1, "--ctproto": 1, "--ctorigsrc": 1, "--ctorigdst": 1,
        "--ctreplsrc": 1, "--ctrepldst": 1, "--ctorigsrcport": 1, "--ctorigdstport": 1,
        "--ctreplsrcport": 1, "--ctrepldstport": 1, "--ctexpire": 1, "--ctdir": 1,
    },
    "state": {"--state": 1},
    "set": {
        "--match-set": 2, "--return-nomatch": 0, "--update-counters": 0, "--update-subcounters": 0,
        "--packets-eq": 1, "--packets-lt": 1, "--packets-gt": 1, "--bytes-eq": 1, "--bytes-lt": 1,
        "--bytes-gt": 1, "--set": 2,
    },
    "physdev": {
        "--physdev-in": 1, "--physdev-out": 1, "--physdev-is-in": 0, "--physdev-is-out": 0,
        "--physdev-is-bridged": 0,
    },
    "iprange": {"--src-range": 1, "--dst-range": 1},
    "limit": {"--limit": 1, "--limit-burst": 1},
    "hashlimit": {
        "--hashlimit": 1, "--hashlimit-upto": 1, "--hashlimit-above": 1, "--hashlimit-burst": 1,
        "--hashlimit-mode": 1, "--hashlimit-name": 1, "--hashlimit-htable-size": 1,
        "--hashlimit-htable-max": 1, "--hashlimit-htable-expire": 1, "--hashlimit-htable-gcinterval": 1,
        "--hashlimit-srcmask": 1, "--hashlimit-dstmask": 1, "--hashlimit-rate-match": 0,
        "--hashlimit-rate-interval": 1,
    },
    "connlimit": {"--connlimit-upto": 1, "--connlimit-above": 1, "--connlimit-mask": 1,
                  "--connlimit-saddr": 0, "--connlimit-daddr": 0},
    "socket": {"--transparent": 0, "--nowildcard": 0, "--restore-skmark": 0},
    "owner": {"--uid-owner": 1, "--gid-owner": 1, "--socket-exists": 0, "--suppl-groups": 0},
    "pkttype": {"--pkt-type": 1},
    "length": {"--length": 1},
    "ttl": {"--ttl-eq": 1, "--ttl-gt": 1, "--ttl-lt": 1},
    "hl": {"--hl-eq": 1, "--hl-gt": 1, "--hl-lt": 1},
    "mac": {"--mac-source": 1},
    "devgroup": {"--src-group": 1, "--dst-group": 1},
    "rpfilter": {"--loose": 0, "--validmark": 0, "--accept-local": 0, "--invert": 0},
    "policy": {"--dir": 1, "--pol": 1, "--strict": 0, "--reqid": 1, "--spi": 1, "--proto": 1,
               "--mode": 1, "--tunnel-src": 1, "--tunnel-dst": 1, "--next": 0},
    "dscp": {"--dscp": 1, "--dscp-class": 1},
    "tos": {"--tos": 1},
    "helper": {"--helper": 1},
    "cgroup": {"--path": 1, "--cgroup": 1},
    "ipvs": {"--ipvs": 0, "--vproto": 1, "--vaddr": 1, "--vport": 1, "--vdir": 1, "--vmethod": 1,
             "--vportctl": 1},
    "connbytes": {"--connbytes": 1, "--connbytes-dir": 1, "--connbytes-mode": 1},
    "string": {"--algo": 1, "--from": 1, "--to": 1, "--string": 1, "--hex-string": 1, "--icase": 0},
    "u32": {"--u32": 1},
    "bpf": {"--bytecode": 1, "--object-pinned": 1},
    "time": {"--datestart": 1, "--datestop": 1, "--timestart": 1, "--timestop": 1, "--monthdays": 1,
             "--weekdays": 1, "--contiguous": 0, "--kerneltz": 0, "--utc": 0},
    "quota": {"--quota": 1},
    "nfacct": {"--nfacct-name": 1},
    "realm": {"--realm": 1},
    "ecn": {"--ecn-tcp-cwr": 0, "--ecn-tcp-ece": 0, "--ecn-ip-ect": 1},
    "frag": {"--fragid": 1, "--fraglen": 1, "--fragres": 0, "--fragfirst": 0, "--fragmore": 0,
             "--fraglast": 0},
    "ipv6header": {"--header": 1, "--soft": 0},
    "rt": {"--rt-type": 1, "--rt-segsleft": 1, "--rt-len": 1, "--rt-0-res": 0, "--rt-0-addrs": 1,
           "--rt-0-not-strict": 0},
    "ah": {"--ahspi": 1, "--ahlen": 1, "--ahres": 0},
    "esp": {"--espspi": 1},
    "cpu": {"--cpu": 1},
    "osf": {"--genre": 1, "--ttl": 1, "--log": 1},
    "cluster": {"--cluster-total-nodes": 1, "--cluster-local-node": 1, "--cluster-local-nodemask": 1,
                "--cluster-hash-seed": 1},
    "addrtype6": {},
}

MATCH_ALIASES: dict[str, str] = {
    "--source-port": "--sport",
    "--destination-port": "--dport",
    "--source-ports": "--sports",
    "--destination-ports": "--dports",
    "--icmp6-type": "--icmpv6-type",
    "--ctstates": "--ctstate",
    "--match-set-flags": "--match-set",
}

MODULE_ALIASES: dict[str, str] = {
    "icmpv6": "icmp6",
    "ipv6-icmp": "icmp6",
    "udp-lite": "udplite",
}

# Options of `-p PROTO` that load a match implicitly (iptables tries the protocol's extension).
PROTO_MODULE: dict[str, str] = {
    "tcp": "tcp", "udp": "udp", "sctp": "sctp", "dccp": "dccp", "icmp": "icmp", "icmpv6": "icmp6",
    "ipv6-icmp": "icmp6", "icmp6": "icmp6", "udplite": "udplite",
}

TARGET_OPTIONS: dict[str, dict[str, int]] = {
    "REJECT": {"--reject-with": 1},
    "DNAT": {"--to-destination": 1, "--random": 0, "--persistent": 0, "--random-fully": 0},
    "SNAT": {"--to-source": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
    "MASQUERADE": {"--to-ports": 1, "--random": 0, "--random-fully": 0},
    "REDIRECT": {"--to-ports": 1, "--random": 0},
    "NETMAP": {"--to": 1},
    "MARK": {"--set-xmark": 1, "--set-mark": 1, "--or-mark": 1, "--and-mark": 1, "--xor-mark": 1},
    "CONNMARK": {"--set-xmark": 1, "--set-mark": 1, "--save-mark": 0, "--restore-mark": 0,
                 "--nfmask": 1, "--ctmask": 1, "--mask": 1, "--and-mark": 1, "--or-mark": 1,
                 "--xor-mark": 1},
    "LOG": {"--log-level": 1, "--log-prefix": 1, "--log-tcp-sequence": 0, "--log-tcp-options": 0,
            "--log-ip-options": 0, "--log-uid": 0, "--log-macdecode": 0},
    "NFLOG": {"--nflog-group": 1, "--nflog-prefix": 1, "--nflog-range": 1, "--nflog-threshold": 1,
              "--nflog-size": 1},
    "ULOG": {"--ulog-nlgroup": 1, "--ulog-prefix": 1, "--ulog-cprange": 1, "--ulog-qthreshold": 1},
    "TRACE": {},
    "CHECKSUM": {"--checksum-fill": 0},
    "TCPMSS": {"--set-mss": 1, "--clamp-mss-to-pmtu": 0},
    "DSCP": {"--set-dscp": 1, "--set-dscp-class": 1},
    "TOS": {"--set-tos": 1, "--and-tos": 1, "--or-tos": 1, "--xor-tos": 1},
    "CLASSIFY": {"--set-class": 1},
    "SET": {"--add-set": 2, "--del-set": 2, "--map-set": 2, "--exist": 0, "--timeout": 1,
            "--map-mark": 0, "--map-prio": 0, "--map-queue": 0},
    "CT": {"--notrack": 0, "--helper": 1, "--ctevents": 1, "--expevents": 1, "--zone": 1,
           "--zone-orig": 1, "--zone-reply": 1, "--timeout": 1},
    "NOTRACK": {},
    "NFQUEUE": {"--queue-num": 1, "--queue-balance": 1, "--queue-bypass": 0, "--queue-cpu-fanout": 0,
                "--fail-open": 0},
    "TPROXY": {"--on-port": 1, "--on-ip": 1, "--tproxy-mark": 1},
    "TEE": {"--gateway": 1, "--oif": 1},
    "AUDIT": {"--type": 1},
    "SECMARK": {"--selctx": 1},
    "CONNSECMARK": {"--save": 0, "--restore": 0},
    "HMARK": {},
    "TTL": {"--ttl-set": 1, "--ttl-dec": 1, "--ttl-inc": 1},
    "HL": {"--hl-set": 1, "--hl-dec": 1, "--hl-inc": 1},
    "ACCEPT": {}, "DROP": {}, "RETURN": {}, "QUEUE": {},
}

# Options that appear with an argument in some iptables versions and without in others.
OPTIONAL_ARG = frozenset({"--to-ports"})

GENERIC_LONG = {
    "--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--protocol": "-p",
    "--in-interface": "-i", "--out-interface": "-o", "--fragment": "-f", "--jump": "-j", "--goto": "-g",
    "--match": "-m", "--append": "-A", "--insert": "-I", "--new-chain": "-N", "--policy": "-P",
    "--delete-chain": "-X", "--flush": "-F", "--set-counters": "-c", "--table": "-t",
}
