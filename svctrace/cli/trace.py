"""`svctrace trace`: one packet through one node's rules, no cluster needed."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import sys
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import typer

from svctrace.cli import app
from svctrace.cli.graphout import GRAPH_OUTPUTS, emit_graph
from svctrace.cli.output import Output, emit, option, parse_output
from svctrace.dataplane.contract import TraceResult
from svctrace.dataplane.detect import (
    HOST_FILE_NAMES,
    is_address_file,
    is_host_file,
    looks_like_ipset,
    sniff_input,
)
from svctrace.dataplane.ipset import parse_ipset
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.node import Dataplane
from svctrace.errors import InputError, SvctraceError
from svctrace.kubeproxy.versions import FEATURES
from svctrace.kubeproxy.walk import trace_dataplane
from svctrace.limits import MAX_DUMP, MiB
from svctrace.model.packet import NodeFacts, Packet
from svctrace.model.snapshot import NodeFiles, decode_text
from svctrace.model.version import parse_version

DEMO_DUMP = "kube-proxy-basic.iptables-save"
DEMO_LOCAL_IPS = ["192.168.0.2"]


# The formats `trace` prints (cli/output.py); `wide` adds the delivery column to the outcomes; dot, svg and
# mermaid draw the path as a graph (cli/graphout.py, docs/graphs.md).
FORMATS = ("text", "wide", "json", "yaml", "jsonpath", *GRAPH_OUTPUTS)


class Proto(StrEnum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"
    icmp = "icmp"


def read_input(path: str) -> tuple[str, str]:
    """(text, display name) of a file or of stdin ("-")."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_DUMP + 1)
        name = "<stdin>"
    else:
        p = Path(path)
        try:
            with p.open("rb") as fh:
                data = fh.read(MAX_DUMP + 1)
        except FileNotFoundError:
            raise InputError("no such file", source=path) from None
        except IsADirectoryError:
            raise InputError("is a directory, not a dump file", source=path) from None
        except PermissionError:
            raise InputError("permission denied", source=path) from None
        except OSError as e:
            raise InputError(f"cannot read it: {e.strerror}", source=path) from None
        name = path

    if len(data) > MAX_DUMP:
        raise InputError(f"larger than {MAX_DUMP // MiB} MiB (svctrace's limit MAX_DUMP, see docs/limits.md)",
                         source=name)

    def latin1(line: int) -> None:
        sys.stderr.write(f"svctrace: warning: {name}:{line}: not UTF-8; read as Latin-1\n")

    return decode_text(data, name, "this is binary data, not a text dump", line=True, latin1=latin1), name


NODE_DIR_FILES = ("iptables-save", "ip6tables-save", "iptables-legacy-save", "ip6tables-legacy-save", "nft.json", "nft",
                  "ipvsadm", "ipset", "ip-addr.json", "ip-addr", *HOST_FILE_NAMES)


def read_inputs(path: str) -> list[tuple[str, str]]:
    """A file (or stdin), or the dumps in a snapshot's nodes/NAME directory."""
    p = Path(path)
    if path != "-" and p.is_dir():
        found = [read_input(str(p / f)) for f in NODE_DIR_FILES if (p / f).is_file()]
        if not found:
            raise InputError(f"no dump in this directory (expected one of {', '.join(NODE_DIR_FILES[:7])})", source=path)
        return found
    return [read_input(path)]


def dataplane_of(inputs: list[tuple[str, str]], family: int, *, table: str | None = None) -> Dataplane:
    """Sniff each dump and load the dataplane they describe for a packet of this family (iptables, nftables,
    or IPVS with its iptables rules)."""
    kinds = [sniff_input(t, n) for t, n in inputs]
    nft = [x for x, k in zip(inputs, kinds, strict=True) if k == "nft"]
    ipvs = [x for x, k in zip(inputs, kinds, strict=True) if k == "ipvsadm"]
    ipt = [x for x, k in zip(inputs, kinds, strict=True) if k not in ("nft", "ipvsadm")]
    family_files = [(t, n) for t, n in ipt if not (family == 4 and n.endswith(("ip6tables-save",
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
        return Dataplane("ipvs", "", iname, iptables=ruleset, ipvs=load_ipvs(itext, iname))
    if nft:
        from svctrace.dataplane.nftables import load_nft

        if ruleset is not None:
            sys.stderr.write("svctrace: warning: an nftables ruleset and an iptables dump were given; walking the "
                             "nftables ruleset (iptables-nft rules appear in it as `ip filter`/`ip nat` tables)\n")
        text, name = nft[0]
        return Dataplane("nftables", "", name, nft=load_nft(text, name))
    if ruleset is None:
        raise InputError("no iptables or IPVS dump among the inputs")
    return Dataplane("iptables", "", ruleset.source, iptables=ruleset)


def trace_inputs(inputs: list[tuple[str, str]], pkt: Packet, facts: NodeFacts, *, table: str | None = None,
                 kube_version: str | None = None, chain: str | None = None) -> TraceResult:
    """Sniff each dump and walk the dataplane they describe (iptables, or IPVS with its iptables rules)."""
    return trace_dataplane(dataplane_of(inputs, pkt.family, table=table), pkt, facts, kube_version=kube_version,
                           chain=chain)


def demo_dump() -> tuple[str, str]:
    text = resources.files("svctrace.data").joinpath("examples", DEMO_DUMP).read_text()
    return text, f"demo:{DEMO_DUMP}"


@app.command("trace")
def trace_cmd(
    ctx: typer.Context,
    dump: list[str] = typer.Argument(None, help="Dumps of one node: iptables-save / -S / -L, ipvsadm -Sn/-Ln, "
                                     "ipset save (several files may be given), a snapshot's nodes/NAME directory, "
                                     "or - for stdin.", show_default=False),
    src: str | None = typer.Option(None, "--src", "-s", help="Source IP of the packet (default with --from-node: "
                                   "the first --local-ip)."),
    dst: str | None = typer.Option(None, "--dst", "-d", help="Destination IP of the packet (required, unless "
                                   "--batch)."),
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
    previous_endpoint: str | None = typer.Option(None, "--previous-endpoint", help="The endpoint (IP:PORT) the "
                                                 "returning client's previous connection went to: the sticky "
                                                 "answer (implies --returning-client)."),
    affinity_age: float | None = typer.Option(None, "--affinity-age", help="Seconds since the returning client's "
                                              "last new connection (default: fresh); past the affinity timeout "
                                              "it gets the normal split."),
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
    chain: str | None = typer.Option(None, "--chain", help="Answer for a packet that reaches this chain (a pasted "
                                     "KUBE-SVC-... chain); iptables dumps."),
    demo: bool = typer.Option(False, "--demo", help="Use the bundled example dump (node IP 192.168.0.2)."),
    batch: str | None = typer.Option(None, "--batch", help="Many packets, one load: a file (or - for stdin) with "
                                     "one JSON object per line, fields named like the flags (src, dst, proto, "
                                     "dport, ...; the flags give defaults); one JSON answer per line."),
    output: str = option(FORMATS),
) -> None:
    """Walk one packet through one node's dataplane (iptables, nftables or IPVS): every outcome, its probability and
    the rules that decided it."""
    out = parse_output(output, FORMATS)
    if dst is None and batch is None:
        raise _missing_option(ctx, "--dst")
    if demo and dump:
        raise InputError("give a DUMP or --demo, not both")
    if not demo and not dump:
        raise InputError("missing DUMP (a file, or - for stdin); try --demo for the bundled example")
    inputs = [demo_dump()] if demo else [x for d in dump for x in read_inputs(d)]
    if demo and not local_ip:
        local_ip = list(DEMO_LOCAL_IPS)
    try:
        facts = NodeFacts.make(local_ips=local_ip, route_localnet=route_localnet, returning_client=returning_client,
                               previous_endpoint=previous_endpoint, affinity_age=affinity_age)
    except ValueError as e:
        which = "--local-ip" if previous_endpoint is None or "IP:PORT" not in str(e) else "--previous-endpoint"
        which = "--affinity-age" if "affinity age" in str(e) else which
        raise InputError(f"{which}: {e}") from None
    extra = [read_input(str(ipset))] if ipset is not None else []
    ipset_inputs: list[tuple[str, str]] = []
    for itext, iname in [*extra, *[(t, n) for t, n in inputs if looks_like_ipset(t)]]:
        sets, _ = parse_ipset(itext, iname)
        facts.ipsets.update(sets)
        ipset_inputs.append((iname, f"ipset, {len(sets)} set{'s' * (len(sets) != 1)}"))
    inputs = [(t, n) for t, n in inputs if not looks_like_ipset(t)]
    if not inputs:
        raise InputError("only ipset dumps given: add the node's iptables-save or ipvsadm dump")
    addr = NodeFiles("", {Path(n).name: t for t, n in inputs if is_address_file(n)})
    if not local_ip and addr.files:  # a snapshot node directory's ip-addr says what the node owns
        from svctrace.dataplane.host import load_host

        host = load_host(addr)  # addresses as addresses: an IPVS node has one per Service (10k+)
        facts = NodeFacts.make(local_ips=host.local_addresses(), addresses=host.addresses or (),
                               route_localnet=route_localnet,
                               returning_client=returning_client, ipsets=facts.ipsets,
                               previous_endpoint=facts.previous_endpoint, affinity_age=affinity_age)
    facts = _with_host(facts, [(t, n) for t, n in inputs if is_address_file(n) or is_host_file(n)])
    inputs = [(t, n) for t, n in inputs if not is_address_file(n) and not is_host_file(n)]
    if batch is not None:
        if out.kind not in ("text", "json"):
            raise InputError(f"--batch prints one JSON object per line; -o {out.kind} does not apply to it")
        if batch == "-" and "-" in (dump or []):
            raise InputError("--batch - and DUMP - both read stdin: give one of them as a file")
        flags = {"src": src, "dst": dst, "proto": proto.value, "dport": dport, "sport": sport, "from_node": from_node,
                 "in_iface": iif, "out_iface": oif, "returning_client": returning_client,
                 "route_localnet": route_localnet, "kube_version": kube_version,
                 "previous_endpoint": facts.previous_endpoint, "affinity_age": affinity_age}
        raise typer.Exit(run_batch(inputs, batch, flags, facts, table=table))
    assert dst is not None
    pkt = make_packet(src, dst, proto.value, dport, sport, from_node, iif, oif, facts, kube_version)
    result = trace_inputs(inputs, pkt, facts, table=table, kube_version=kube_version, chain=chain)
    result.inputs += ipset_inputs

    def text(o: Output) -> None:
        from rich.console import Console

        from svctrace.render.text import render_trace

        render_trace(result, Console(highlight=False), wide=o.wide)

    def graph(fmt: str) -> None:
        from svctrace.browse.graph import trace_graph

        emit_graph(trace_graph(result), fmt, result.warnings)

    emit(out, result.to_json, result.warnings, text=text,
         renderers={fmt: functools.partial(graph, fmt) for fmt in GRAPH_OUTPUTS})
    raise typer.Exit(result.exit_code)


def _with_host(facts: NodeFacts, files: list[tuple[str, str]]) -> NodeFacts:
    """A node directory's network facts (sysctl, routes, ...): the walk decides interfaces, forwarding and
    rp_filter with them; a damaged file is a warning and its fact assumed."""
    if not any(is_host_file(n) for _, n in files):
        return facts
    import dataclasses

    from svctrace.dataplane.host import load_host
    from svctrace.errors import Warn

    nf = NodeFiles(Path(files[0][1]).parent.name, {Path(n).name: t for t, n in files})
    warns: list[Warn] = []
    host = load_host(nf, warns, where=str(Path(files[0][1]).parent))
    for w in warns:
        sys.stderr.write(f"svctrace: warning: {w}\n")
    return dataclasses.replace(facts, host=host)


def _missing_option(ctx: typer.Context, name: str) -> Exception:
    """The usage error click gives for a missing required option (--dst is required unless --batch): the same
    message and exit code as before --batch made it optional."""
    param = next(p for p in ctx.command.params if name in getattr(p, "opts", ()))
    missing: Any = getattr(sys.modules[typer.BadParameter.__module__], "MissingParameter")  # noqa: B009
    error: Exception = missing(ctx=ctx, param=param)
    return error


def make_packet(src: str | None, dst: str, proto: str, dport: int | None, sport: int | None, from_node: bool,
                iif: str | None, oif: str | None, facts: NodeFacts, kube_version: str | None) -> Packet:
    """The packet a question describes (flags, or a --batch line), checked as the flags are."""
    if src is None:
        if not from_node:
            raise InputError("missing --src (or --from-node with a --local-ip)")
        mine = sorted((ip for ip in facts.local_ips if not ip.is_loopback), key=str)
        if not mine:
            raise InputError("--from-node needs --src or a --local-ip to send from")
        src = str(mine[0])
    try:
        pkt = Packet.make(src=src, dst=dst, proto=proto, dport=dport, sport=sport,
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
    return pkt


# --batch: the fields of a line, with the type each takes (named like the flags, `_` for `-`).
BATCH_FIELDS: dict[str, tuple[type, ...]] = {
    "src": (str,), "dst": (str,), "proto": (str,), "dport": (int,), "sport": (int,), "from_node": (bool,),
    "local_ip": (list, str), "in_iface": (str,), "out_iface": (str,), "returning_client": (bool,),
    "route_localnet": (bool,), "kube_version": (str,), "previous_endpoint": (str,), "affinity_age": (int, float),
}


def batch_question(line: str, flags: dict[str, Any], base: NodeFacts) -> tuple[Packet, NodeFacts, str | None]:
    """A --batch line (a JSON object) as a packet and the node facts it is asked under; the flags give defaults."""

    try:
        doc = json.loads(line)
    except ValueError as e:
        raise InputError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object, like {\"src\": \"10.244.1.5\", \"dst\": \"10.96.0.10\", "
                         "\"proto\": \"udp\", \"dport\": 53}")
    for k, v in doc.items():
        kinds = BATCH_FIELDS.get(k)
        if kinds is None:
            raise InputError(f"unknown field {k!r} (fields: {', '.join(BATCH_FIELDS)})")
        if v is not None and (not isinstance(v, kinds) or (bool not in kinds and isinstance(v, bool))):
            raise InputError(f"{k}: expected {' or '.join(t.__name__ for t in kinds)}, got {json.dumps(v)}")
    q = {**flags, **{k: v for k, v in doc.items() if v is not None}}
    if q.get("dst") is None:
        raise InputError("missing dst")
    proto = str(q.get("proto") or "tcp")
    if proto not in Proto.__members__:
        raise InputError(f"proto: {proto!r} is not one of {', '.join(Proto.__members__)}")
    local = doc.get("local_ip")
    try:
        prev, age = q.get("previous_endpoint", base.previous_endpoint), q.get("affinity_age", base.affinity_age)
        locals_ = ([local] if isinstance(local, str) else [str(x) for x in local]) if local is not None else []
        facts = NodeFacts.make(local_ips=locals_, route_localnet=q["route_localnet"],
                               returning_client=bool(q["returning_client"]), ipsets=dict(base.ipsets),
                               previous_endpoint=prev, affinity_age=age, host=base.host)
        if local is None:  # the flags' addresses, as they are (an IPVS node has one per Service: 10k+)
            facts = dataclasses.replace(facts, local_ips=base.local_ips, addresses=base.addresses)
    except ValueError as e:
        which = "previous_endpoint" if "IP:PORT" in str(e) else "affinity_age" if "affinity age" in str(e) else (
            "local_ip")
        raise InputError(f"{which}: {e}") from None
    kube_version = q.get("kube_version")
    pkt = make_packet(q.get("src"), str(q["dst"]), proto, q.get("dport"), q.get("sport"),
                      bool(q.get("from_node")), q.get("in_iface"), q.get("out_iface"),
                      facts, kube_version)
    return pkt, facts, kube_version


def run_batch(inputs: list[tuple[str, str]], path: str, flags: dict[str, Any], base: NodeFacts, *,
              table: str | None = None) -> int:
    """`trace --batch`: the dump is loaded once (per address family); each line of `path` is one question, each
    answer one JSON line on stdout (a line that cannot be asked: {"line": N, "error": ...}). Returns the worst exit
    code."""
    stream = sys.stdin if path == "-" else None
    if stream is None:
        try:
            stream = open(path, encoding="utf-8")  # noqa: SIM115  (closed below)
        except OSError as e:
            raise InputError(f"cannot read it: {e.strerror}", source=path) from None
    loaded: dict[int, Dataplane] = {}
    seen: set[str] = set()
    worst = 0
    out = sys.stdout
    # A question's objects die with it by reference counting (it leaves no cycles: test_cli checks), but the
    # cyclic collector would keep walking the loaded ruleset and every rule parsed since (a tenth to a quarter of
    # a question's cost): the load is frozen and the collector paused until the batch ends.
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for no, line in enumerate(stream, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                pkt, facts, kube_version = batch_question(line, flags, base)
                dp = loaded.get(pkt.family)
                if dp is None:
                    dp = loaded[pkt.family] = dataplane_of(inputs, pkt.family, table=table)
                    gc.freeze()
                result = trace_dataplane(dp, pkt, facts, kube_version=kube_version)
            except SvctraceError as e:
                out.write(json.dumps({"line": no, "error": str(e)}) + "\n")
                worst = max(worst, e.exit_code)
                continue
            out.write(json.dumps(result.to_json()) + "\n")
            worst = max(worst, result.exit_code)
            for w in result.warnings:
                if str(w) not in seen:
                    seen.add(str(w))
                    sys.stderr.write(f"svctrace: warning: {w}\n")
            if path == "-":
                out.flush()  # an answer as soon as its question, for a program on the other end of a pipe
    finally:
        if gc_was:
            gc.freeze()  # what the questions parsed stays (the process ends): not a young generation to walk
            gc.enable()
        if stream is not sys.stdin:
            stream.close()
    return worst


__all__ = ["SvctraceError", "trace_cmd"]
