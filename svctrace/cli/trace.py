"""`svctrace trace`: one packet through one node's rules, no cluster needed."""

from __future__ import annotations

import sys
from enum import StrEnum
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from svctrace.cli import app, emit_json
from svctrace.dataplane.contract import TraceResult
from svctrace.dataplane.detect import is_address_file, looks_like_ipset, sniff_input
from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.node import Dataplane, node_addresses
from svctrace.errors import InputError, SvctraceError
from svctrace.kubeproxy.versions import FEATURES
from svctrace.kubeproxy.walk import trace_dataplane
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import NodeFiles, decode_text
from svctrace.model.version import parse_version

DEMO_DUMP = "kube-proxy-basic.iptables-save"
DEMO_LOCAL_IPS = ["192.168.0.2"]


class Output(StrEnum):
    text = "text"
    json = "json"


class Proto(StrEnum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"
    icmp = "icmp"


def read_input(path: str) -> tuple[str, str]:
    """(text, display name) of a file or of stdin ("-")."""
    if path == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise InputError("no such file", source=path) from None
        except IsADirectoryError:
            raise InputError("is a directory, not a dump file", source=path) from None
        except PermissionError:
            raise InputError("permission denied", source=path) from None
        except OSError as e:
            raise InputError(f"cannot read it: {e.strerror}", source=path) from None
        name = path

    def latin1(line: int) -> None:
        sys.stderr.write(f"svctrace: warning: {name}:{line}: not UTF-8; read as Latin-1\n")

    return decode_text(data, name, "this is binary data, not a text dump", line=True, latin1=latin1), name


NODE_DIR_FILES = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save", "nft.json", "nft",
                  "ipvsadm", "ipset", "ip-addr.json", "ip-addr")


def read_inputs(path: str) -> list[tuple[str, str]]:
    """A file (or stdin), or the dumps in a snapshot's nodes/NAME directory."""
    p = Path(path)
    if path != "-" and p.is_dir():
        found = [read_input(str(p / f)) for f in NODE_DIR_FILES if (p / f).is_file()]
        if not found:
            raise InputError(f"no dump in this directory (expected one of {', '.join(NODE_DIR_FILES[:7])})", source=path)
        return found
    return [read_input(path)]


def trace_inputs(inputs: list[tuple[str, str]], pkt: Packet, facts: NodeFacts, *, table: str | None = None,
                 kube_version: str | None = None) -> TraceResult:
    """Sniff each dump and walk the dataplane they describe (iptables, or IPVS with its iptables rules)."""
    kinds = [sniff_input(t, n) for t, n in inputs]
    nft = [x for x, k in zip(inputs, kinds, strict=True) if k == "nft"]
    ipvs = [x for x, k in zip(inputs, kinds, strict=True) if k == "ipvsadm"]
    ipt = [x for x, k in zip(inputs, kinds, strict=True) if k not in ("nft", "ipvsadm")]
    family_files = [(t, n) for t, n in ipt if not (pkt.family == 4 and n.endswith(("ip6tables-save",
                                                                                    "ip6tables-legacy-save")))]
    ruleset = None
    if family_files:
        if len(family_files) > 1:
            names = ", ".join(n for _, n in family_files)
            sys.stderr.write(f"svctrace: warning: several iptables dumps ({names}); walking the first (the kernel "
                             "runs every backend's rules: see explain's mixed-iptables-backends)\n")
        text, name = family_files[0]
        ruleset = load_ruleset(text, name, table)
    if ipvs:
        from svctrace.dataplane.ipvs import load_ipvs

        itext, iname = ipvs[0]
        dp = Dataplane("ipvs", "", iname, iptables=ruleset, ipvs=load_ipvs(itext, iname))
    elif nft:
        from svctrace.dataplane.nftables import load_nft

        if ruleset is not None:
            sys.stderr.write("svctrace: warning: an nftables ruleset and an iptables dump were given; walking the "
                             "nftables ruleset (iptables-nft rules appear in it as `ip filter`/`ip nat` tables)\n")
        text, name = nft[0]
        dp = Dataplane("nftables", "", name, nft=load_nft(text, name))
    elif ruleset is None:
        raise InputError("no iptables or IPVS dump among the inputs")
    else:
        dp = Dataplane("iptables", "", ruleset.source, iptables=ruleset)
    return trace_dataplane(dp, pkt, facts, kube_version=kube_version)


def demo_dump() -> tuple[str, str]:
    text = resources.files("svctrace.data").joinpath("examples", DEMO_DUMP).read_text()
    return text, f"demo:{DEMO_DUMP}"


@app.command("trace")
def trace_cmd(
    dump: list[str] = typer.Argument(None, help="Dumps of one node: iptables-save / -S / -L, ipvsadm -Sn/-Ln, "
                                     "ipset save (several files may be given), a snapshot's nodes/NAME directory, "
                                     "or - for stdin.", show_default=False),
    src: str | None = typer.Option(None, "--src", "-s", help="Source IP of the packet (default with --from-node: "
                                   "the first --local-ip)."),
    dst: str = typer.Option(..., "--dst", "-d", help="Destination IP of the packet."),
    proto: Proto = typer.Option(Proto.tcp, "--proto", "-p", help="Protocol."),
    dport: int | None = typer.Option(None, "--dport", help="Destination port (tcp, udp, sctp)."),
    sport: int | None = typer.Option(None, "--sport", help="Source port, when a rule depends on it."),
    local_ip: list[str] = typer.Option([], "--local-ip", help="An address the node owns (repeatable). What "
                                       "`-m addrtype LOCAL` and routing-to-self see; 127.0.0.0/8 and ::1 always are."),
    from_node: bool = typer.Option(False, "--from-node", help="The node itself sends the packet (enters at OUTPUT). "
                                   "Implied when --src is one of the --local-ip."),
    iif: str | None = typer.Option(None, "--in-iface", help="Interface the packet arrives on, when rules match "
                                   "interfaces (else both cases are shown)."),
    oif: str | None = typer.Option(None, "--out-iface", help="Interface the packet leaves by, when rules match it."),
    returning_client: bool = typer.Option(False, "--returning-client", help="The client connected before: show "
                                          "the session-affinity path (-m recent --rcheck hits)."),
    ipset: Path | None = typer.Option(None, "--ipset", help="An `ipset save` dump, to decide -m set matches."),
    table: str | None = typer.Option(None, "--table", "-t", help="Table of a dump with no *table header "
                                     "(iptables -t nat -S)."),
    route_localnet: bool | None = typer.Option(None, "--route-localnet/--no-route-localnet",
                                               help="net.ipv4.conf.all.route_localnet on the node (default: inferred "
                                               "from kube-proxy's rules)."),
    kube_version: str | None = typer.Option(None, "--kube-version", help="kube-proxy version, where behaviour "
                                            "differs and the dump does not say (IPVS ping before/after "
                                            f"{FEATURES['ipvs-filter-chain'].since_text}); every mode's walk is given "
                                            "it."),
    demo: bool = typer.Option(False, "--demo", help="Use the bundled example dump (node IP 192.168.0.2)."),
    output: Output = typer.Option(Output.text, "--output", "-o", help="Output format."),
) -> None:
    """Walk one packet through one node's dataplane (iptables, nftables or IPVS): every outcome, its probability and
    the rules that decided it."""
    if demo and dump:
        raise InputError("give a DUMP or --demo, not both")
    if not demo and not dump:
        raise InputError("missing DUMP (a file, or - for stdin); try --demo for the bundled example")
    inputs = [demo_dump()] if demo else [x for d in dump for x in read_inputs(d)]
    if demo and not local_ip:
        local_ip = list(DEMO_LOCAL_IPS)
    try:
        facts = NodeFacts.make(local_ips=local_ip, route_localnet=route_localnet, returning_client=returning_client)
    except ValueError as e:
        raise InputError(f"--local-ip: {e}") from None
    extra = [read_input(str(ipset))] if ipset is not None else []
    for itext, iname in [*extra, *[(t, n) for t, n in inputs if looks_like_ipset(t)]]:
        sets, _ = parse_ipset(itext, iname)
        facts.ipsets.update(sets)
    inputs = [(t, n) for t, n in inputs if not looks_like_ipset(t)]
    if not inputs:
        raise InputError("only ipset dumps given: add the node's iptables-save or ipvsadm dump")
    addr = NodeFiles("", {Path(n).name: t for t, n in inputs if is_address_file(n)})
    if not local_ip and addr.files:  # a snapshot node directory's ip-addr says what the node owns
        facts = NodeFacts.make(local_ips=node_addresses(addr), route_localnet=route_localnet,
                               returning_client=returning_client, ipsets=facts.ipsets)
    inputs = [(t, n) for t, n in inputs if not is_address_file(n)]
    if src is None:
        if not from_node:
            raise InputError("missing --src (or --from-node with a --local-ip)")
        mine = sorted((ip for ip in facts.local_ips if not ip.is_loopback), key=str)
        if not mine:
            raise InputError("--from-node needs --src or a --local-ip to send from")
        src = str(mine[0])
    try:
        pkt = Packet.make(src=src, dst=dst, proto=proto.value, dport=dport, sport=sport,
                          origin="local" if from_node else None, iif=iif, oif=oif, local_ips=facts.local_ips)
    except ValueError as e:
        raise InputError(str(e)) from None
    if pkt.has_ports and dport is None:
        raise InputError(f"missing --dport: a {pkt.proto} packet has a destination port")
    if kube_version is not None:
        try:
            parse_version(kube_version)
        except ValueError as e:
            raise InputError(f"--kube-version: {e}") from None
    result = trace_inputs(inputs, pkt, facts, table=table, kube_version=kube_version)
    if output is Output.json:
        emit_json(result.to_json(), result.warnings)
    else:
        from svctrace.render.text import render_trace

        render_trace(result, Console(highlight=False))
    raise typer.Exit(result.exit_code)


__all__ = ["SvctraceError", "trace_cmd"]
