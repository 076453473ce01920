"""The node's connection tracking table: `conntrack -L` (plain) or `conntrack -L -o extended`, as a list of
flows with their original and reply tuples (docs/snapshots.md, `nodes/NAME/conntrack`).

A line is `[L3 L3NUM] PROTO PROTONUM [TIMEOUT] [STATE] key=value... [FLAGS] key=value... [FLAGS] ...`: the
first src/dst/sport/dport (ICMP: type/code/id) are the original direction, the second the reply direction.
After DNAT the reply's source is the backend; after SNAT the reply's destination is the translated source.
Lines that are not flows (conntrack's `N flow entries have been shown.` summary, blank lines) are skipped; a
line that starts like a flow but lacks its tuples is an error naming the file and line.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from svctrace.errors import InputError

PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58, "udplite": 136, "dccp": 33, "gre": 47}
L3 = ("ipv4", "ipv6")


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None


@dataclass(frozen=True)
class Flow:
    proto: str  # tcp / udp / ...
    orig: Tuple
    reply: Tuple
    state: str | None = None  # TCP state (ESTABLISHED, ...)
    timeout: int | None = None
    flags: tuple[str, ...] = ()  # UNREPLIED, ASSURED, ...
    line: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False)  # mark, zone, use, ...

    @property
    def dnat(self) -> bool:
        return self.reply.src != self.orig.dst or self.reply.sport != self.orig.dport

    def delete_command(self) -> str:
        """The `conntrack -D` that deletes this flow (and any other with the same original destination, the
        same protocol and the same backend): what kube-proxy itself runs for a removed UDP endpoint."""
        words = ["conntrack", "-D", "-p", self.proto, "--orig-dst", self.orig.dst]
        if self.orig.dport is not None:
            words += ["--orig-port-dst", str(self.orig.dport)]
        words += ["--reply-src", self.reply.src]
        return " ".join(shlex.quote(w) for w in words)


def _int(v: str, where: str, line: int, what: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise InputError(f"{what} {v!r} is not a number", source=where, line=line) from None


def parse_conntrack(text: str, where: str = "conntrack") -> list[Flow]:
    flows: list[Flow] = []
    for n, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if not words or "flow entries have been shown" in raw or words[0].startswith("conntrack"):
            continue
        i = 0
        if words[0] in L3:
            i = 2  # -o extended: "ipv4 2 tcp 6 ..."
        if i >= len(words) or (
            words[i] not in PROTOCOLS and not (i + 1 < len(words) and words[i + 1].isdigit())
        ):
            raise InputError(
                f"not a conntrack flow (expected `[ipv4 2] PROTO NUM ...`): {raw.strip()[:80]}",
                source=where,
                line=n,
            )
        proto = words[i]
        i += 2
        timeout = state = None
        flags: list[str] = []
        kv: list[tuple[str, str]] = []
        for w in words[i:]:
            if "=" in w:
                k, _, v = w.partition("=")
                kv.append((k, v))
            elif w.startswith("[") and w.endswith("]"):
                flags.append(w[1:-1])
            elif w.isdigit() and timeout is None and not kv:
                timeout = int(w)
            elif not kv and w.isupper():
                state = w
        srcs = [v for k, v in kv if k == "src"]
        dsts = [v for k, v in kv if k == "dst"]
        if len(srcs) < 2 or len(dsts) < 2:
            raise InputError(
                "a conntrack flow needs an original and a reply tuple (two src= and two dst=)",
                source=where,
                line=n,
            )
        # Each tuple's keys come between its src= and the next src=.
        split = [j for j, (k, _) in enumerate(kv) if k == "src"][1]
        first, second = dict(kv[:split]), dict(kv[split:])
        rest = {k: v for k, v in kv[split:] if k not in ("src", "dst", "sport", "dport")}
        flows.append(
            Flow(
                proto,
                _tuple(first, where, n),
                _tuple(second, where, n),
                state,
                timeout,
                tuple(flags),
                n,
                rest,
            )
        )
    return flows


def _tuple(d: dict[str, str], where: str, line: int) -> Tuple:
    sp, dp = d.get("sport"), d.get("dport")
    return Tuple(
        d["src"],
        d["dst"],
        _int(sp, where, line, "sport") if sp is not None else None,
        _int(dp, where, line, "dport") if dp is not None else None,
    )
