"""Which real server an IPVS scheduler picks for a new connection, as probabilities.

Every scheduler in net/netfilter/ipvs/ip_vs_*.c skips a destination whose weight is 0 (or that is
marked overloaded), so a weight-0 real server never gets a new connection; kube-proxy sets weight
0 on a terminating endpoint and removes it once its connections are gone (graceful termination).
With no usable destination the scheduler returns NULL and ip_vs_leave() answers the client with
ICMP port unreachable ("no destination available" in the kernel log).

Round robin and weighted round robin are deterministic sequences, not random draws; over many
connections each server gets its share, which is what a probability here means (as for iptables'
`--mode nth`). The load-based schedulers (lc, wlc, sed, nq, ovf, twos) choose from live connection
counts and the hashing ones (sh, mh, dh, lblc, lblcr) from addresses: their shares are shown
equal (or by weight) and marked uncertain with the assumption they rest on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svctrace.dataplane.ipvs.model import RealServer, VirtualService

KNOWN = {
    "rr": "round robin",
    "wrr": "weighted round robin",
    "lc": "least connections",
    "wlc": "weighted least connections",
    "sed": "shortest expected delay",
    "nq": "never queue",
    "sh": "source hashing",
    "mh": "maglev hashing",
    "dh": "destination hashing",
    "lblc": "locality-based least connections",
    "lblcr": "locality-based least connections with replication",
    "fo": "weighted failover",
    "ovf": "weighted overflow",
    "twos": "weighted random twos choice",
}


@dataclass(frozen=True)
class Pick:
    real: RealServer
    share: float  # long-run fraction of new connections (sums to 1 over a schedule's picks)


@dataclass
class Schedule:
    scheduler: str
    picks: list[Pick]
    certain: bool = True
    assumption: str | None = None  # what the shares assume when they are not certain
    notes: list[str] = field(default_factory=list)
    excluded: list[RealServer] = field(default_factory=list)  # weight 0: never picked for new connections
    # The share of new connections that find no destination although usable servers exist: sh gives the buckets
    # of a weight-0 server to no one else (IPVS then answers ICMP port unreachable).
    refused: float = 0.0


def schedule(vs: VirtualService) -> Schedule:
    """The shares of new connections among `vs`'s real servers."""
    sched = vs.scheduler or "?"
    sch = Schedule(sched, [])
    reals = vs.reals
    if any(r.weight is None for r in reals):
        sch.certain = False
        sch.assumption = ("the listing does not show weights (--stats/--rate); assumed all usable and equal "
                          "(kube-proxy writes weight 1, and 0 only for a terminating endpoint)")
    usable = [r for r in reals if r.weight is None or r.weight > 0]
    sch.excluded = [r for r in reals if r.weight is not None and r.weight <= 0]
    if sch.excluded:
        sch.notes.append(f"{len(sch.excluded)} real server(s) of {vs.label} have weight 0 "
                         f"({', '.join(r.endpoint for r in sch.excluded[:4])}): IPVS never picks them for a new "
                         "connection (kube-proxy sets weight 0 on a terminating endpoint until its connections "
                         "drain)")
    if not usable:
        return sch
    weights = [r.weight if r.weight is not None else 1 for r in usable]
    total_w = sum(weights)

    def equal() -> list[Pick]:
        return [Pick(r, 1 / len(usable)) for r in usable]

    def by_weight() -> list[Pick]:
        return [Pick(r, w / total_w) for r, w in zip(usable, weights, strict=True)]

    def uncertain(why: str) -> None:
        sch.certain = False
        sch.assumption = why if sch.assumption is None else f"{sch.assumption}; {why}"

    if vs.scheduler is None:
        sch.picks = equal()
        uncertain("the listing does not show the scheduler; assumed round robin (kube-proxy's default)")
    elif sched == "rr":  # ip_vs_rr.c: the next destination with weight > 0, whatever its weight
        sch.picks = equal()
    elif sched == "wrr":  # ip_vs_wrr.c: steps through weights by their gcd: shares follow weights
        sch.picks = by_weight()
    elif sched in ("lc", "nq"):
        sch.picks = equal()
        uncertain(f"{sched} ({KNOWN[sched]}) picks by live connection counts; shown as equal shares")
        _next_by_counts(vs, usable, sch)
    elif sched in ("wlc", "sed"):
        sch.picks = by_weight()
        uncertain(f"{sched} ({KNOWN[sched]}) picks by live connection counts; shown as shares by weight")
        _next_by_counts(vs, usable, sch)
    elif sched == "sh" and sch.excluded and "sh-fallback" not in vs.flags:
        # ip_vs_sh.c, ip_vs_sh_reassign: the 256 buckets are dealt to every real server in turn, `weight` buckets
        # each and one to a server of weight 0 (`if (++d_count >= weight)` moves on at once); ip_vs_sh_get returns
        # NULL for a bucket whose server has weight <= 0, and without sh-fallback nothing else is tried: a client
        # that hashes there gets "no destination available" (ICMP port unreachable), for as long as the weight-0
        # server stays. Shares over many clients, up to the last partial round of the deal.
        slots = [max(r.weight if r.weight is not None else 1, 1) for r in reals]
        total = sum(slots)
        sch.picks = [Pick(r, w / total) for r, w in zip(usable, weights, strict=True)]
        sch.refused = len(sch.excluded) / total
        sch.notes[-1] = (f"{len(sch.excluded)} real server(s) of {vs.label} have weight 0 "
                         f"({', '.join(r.endpoint for r in sch.excluded[:4])}): sh keeps their hash buckets, so "
                         f"the clients that hash there ({sch.refused:.0%} of the buckets) get \"connection refused\" "
                         "(ICMP port unreachable) until kube-proxy removes the server (ip_vs_sh_get, "
                         "net/netfilter/ipvs/ip_vs_sh.c; the sh-fallback flag would send them elsewhere)")
        uncertain("sh (source hashing): one real server per client address; which one, or none when the client's "
                  "bucket holds a weight-0 server, depends on the hash, so the shares are over many clients")
    elif sched in ("sh", "mh"):
        # ip_vs_sh.c / ip_vs_mh.c: a hash of the client address (and port with the sh-port/mh-port flag)
        # into a table filled by weight: one client always lands on the same server. mh leaves weight-0
        # servers out of its table (ip_vs_mh_populate); sh with sh-fallback looks past them.
        sch.picks = by_weight()
        per = "client address and port" if any(f.endswith("-port") for f in vs.flags) else "client address"
        uncertain(f"{sched} ({KNOWN[sched]}): one real server per {per}; which one depends on the hash, "
                  "so the shares are over many clients")
    elif sched in ("dh", "lblc", "lblcr"):
        sch.picks = equal()
        uncertain(f"{sched} ({KNOWN[sched]}) picks by the destination address (and load); "
                  "shown as equal shares")
    elif sched == "fo":  # ip_vs_fo.c: the usable destination with the highest weight (first on a tie)
        top = max(weights)
        best = [r for r, w in zip(usable, weights, strict=True) if w == top]
        sch.picks = [Pick(r, 1 / len(best)) for r in best]
        if len(best) > 1:
            uncertain("fo picks the first of the highest-weight servers in the kernel's order, which the "
                      "sorted listing does not show")
    elif sched == "ovf":  # ip_vs_ovf.c: the highest weight until its active connections exceed it
        top = max(weights)
        best = [r for r, w in zip(usable, weights, strict=True) if w == top]
        sch.picks = [Pick(r, 1 / len(best)) for r in best]
        uncertain("ovf sends to the highest-weight server until its active connections exceed its weight")
    else:
        sch.picks = by_weight()
        uncertain(f"scheduler {sched!r} is not modelled; shown as shares by weight")
    if vs.persistent is not None:
        sch.notes.append(f"{vs.label} is persistent (session affinity, {vs.persistent}s): the scheduler picks "
                         "for a client's first connection; its later connections within the timeout go to the "
                         "same real server")
    return sch


def _next_by_counts(vs: VirtualService, usable: list[RealServer], sch: Schedule) -> None:
    """With the connection counts of the listing (a snapshot), name the server the kernel's formula
    would pick next (ip_vs_dest_conn_overhead: active << 8 + inactive)."""
    if any(r.active is None or r.inactive is None for r in usable):
        return
    sched = sch.scheduler

    def cost(r: RealServer) -> tuple[int, int]:
        a, i = r.active or 0, r.inactive or 0
        w = r.weight if r.weight is not None else 1
        if sched == "lc":
            return (a << 8) + i, 1
        if sched in ("sed", "nq"):
            return a + 1, w
        return (a << 8) + i, w  # wlc

    if sched == "nq":
        idle = [r for r in usable if not r.active]
        if idle:
            names = ", ".join(r.endpoint for r in idle)
            sch.notes.append(f"by the counts in this listing, nq sends the next connection to an idle server: {names}")
            return
    best: list[RealServer] = []
    for r in usable:
        if not best:
            best = [r]
            continue
        c, w = cost(r)
        bc, bw = cost(best[0])
        if c * bw < bc * w:
            best = [r]
        elif c * bw == bc * w:
            best.append(r)
    if len(best) == 1:
        sch.notes.append(f"by the connection counts in this listing, {sched} would send the next new connection "
                         f"to {best[0].endpoint}")
    elif len(best) < len(usable):
        sch.notes.append(f"by the connection counts in this listing, {sched} would send the next new connection "
                         f"to one of {', '.join(r.endpoint for r in best)}")
