"""conntrack-stale against the kernel: real conntrack entries made by kube-proxy's rules in a network namespace,
dumped with the real `conntrack -L`, the endpoint then removed from the rules; svctrace must flag the flow still
pinned to the old endpoint (and only it), and the `conntrack -D` it prints must really delete it. The node
command that collects the table (svctrace.collect.commands.CONNTRACK) runs there too, with its cap."""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trouble
from kernellab import kernel_available

from svctrace.collect import commands
from svctrace.collect.commands import RunResult, collect_node
from svctrace.data import build_demo
from svctrace.dataplane.conntrack import parse_conntrack
from svctrace.explain import Request, explain
from svctrace.model.snapshot import load_snapshot

_OK, _WHY = kernel_available()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not _OK, reason=_WHY or "kernel lab unavailable")]

CLIENT = "10.244.1.70"  # other/client on node01
GONE = "10.244.0.9"  # a CoreDNS pod that has left


def sh(ns: str, *argv: str, check: bool = True, stdin: str | None = None) -> str:
    p = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30, input=stdin
    )
    if check and p.returncode:
        raise AssertionError(f"{shlex.join(argv)}: {p.stderr.strip()}")
    return p.stdout


@pytest.fixture
def node() -> Iterator[str]:
    ns = f"svct-ct-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        sh(ns, "ip", "link", "set", "lo", "up")
        # a black hole: a veth pair whose peer holds no address, so the packets stay UNREPLIED
        sh(ns, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        sh(ns, "ip", "link", "set", "d0", "up")
        sh(ns, "ip", "link", "set", "d1", "up")
        sh(ns, "ip", "addr", "add", f"{CLIENT}/24", "dev", "d0")
        sh(ns, "ip", "route", "add", "10.244.0.0/16", "dev", "d0")
        sh(ns, "ip", "route", "add", "10.96.0.0/12", "dev", "d0")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def objects_with_dns_endpoint(ip: str) -> list[dict[str, Any]]:
    objs = copy.deepcopy(trouble.objects())
    for o in objs:
        if (
            o["kind"] == "EndpointSlice"
            and o["metadata"]["labels"].get("kubernetes.io/service-name") == "kube-dns"
        ):
            o["endpoints"] = [
                {
                    "addresses": [ip],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "nodeName": "controlplane",
                }
            ]
    return objs


def send_udp(ns: str, sport: int) -> None:
    code = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{CLIENT}', {sport})); s.sendto(b'q', ('10.96.0.10', 53))"
    )
    sh(ns, "python3", "-c", code)


def flows_to_dns(ns: str, *args: str) -> list[tuple[int, str]]:
    """(client source port, backend) of the node's UDP flows to the kube-dns cluster IP."""
    out = sh(ns, "conntrack", "-L", *args, check=False)
    return sorted(
        (f.orig.sport or 0, f.reply.src)
        for f in parse_conntrack(out)
        if f.proto == "udp" and f.orig.dst == "10.96.0.10"
    )


def test_stale_udp_flow_is_flagged_and_the_printed_command_deletes_it(node: str, tmp_path: Path) -> None:
    before = objects_with_dns_endpoint(GONE)
    sh(node, "iptables-restore", "-w", "5", stdin=build_demo.node_dump(before, "node01"))
    send_udp(node, 40123)  # DNATed by KUBE-SEP to the endpoint of the time
    assert flows_to_dns(node) == [(40123, GONE)]
    # the endpoint leaves: the rules now DNAT to the live CoreDNS pods; a new flow goes there
    after = trouble.objects()
    sh(node, "iptables-restore", "-w", "5", stdin=build_demo.node_dump(after, "node01"))
    send_udp(node, 40999)
    live = flows_to_dns(node)
    assert live[0] == (40123, GONE) and live[1][0] == 40999 and live[1][1] in ("10.244.0.2", "10.244.0.3")
    for fmt in (("-o", "extended"), ()):
        table = sh(node, "conntrack", "-L", *fmt)
        snap = load_snapshot(str(trouble.write(tmp_path / ("ext" if fmt else "plain"), after, table)))
        exp = explain(snap, Request(target="svc/kube-system/kube-dns", source="pod/other/client"))
        d = next(x for x in exp.diagnostics if x.code == "conntrack-stale")
        assert f"1 UDP flow to 10.96.0.10:53 pinned to {GONE}" in d.message, fmt
    cmd = re.findall(r"`(conntrack -D [^`]+)`", d.hint)
    assert cmd == [f"conntrack -D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src {GONE}"]
    sh(node, *shlex.split(cmd[0]))
    assert flows_to_dns(node) == [live[1]]  # the stale flow is gone, the live one stays
    after_table = sh(node, "conntrack", "-L", "-o", "extended")
    snap = load_snapshot(str(trouble.write(tmp_path / "cleared", after, after_table)))
    exp = explain(snap, Request(target="svc/kube-system/kube-dns", source="pod/other/client"))
    assert "conntrack-stale" not in {x.code for x in exp.diagnostics}


def test_the_node_command_collects_the_table_and_caps_it(node: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sh(
        node,
        "iptables-restore",
        "-w",
        "5",
        stdin=build_demo.node_dump(objects_with_dns_endpoint(GONE), "node01"),
    )
    for sport in (40001, 40002, 40003):
        send_udp(node, sport)

    def run(script: str) -> RunResult:
        p = subprocess.run(
            ["ip", "netns", "exec", node, "sh", "-s"],
            input=script.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        return RunResult(p.returncode, p.stdout, p.stderr)

    keep = (commands.COMMANDS[0], commands.CONNTRACK)
    dump = collect_node(run, host="node01", transport="test", use_sudo=False, commands=keep)
    flows = parse_conntrack(dump.files["conntrack"].decode())
    assert sorted(f.orig.sport for f in flows if f.orig.dst == "10.96.0.10") == [40001, 40002, 40003]
    assert not [e for e in dump.errors if e.what == "conntrack"]
    monkeypatch.setattr(commands, "CONNTRACK_MAX_LINES", 2)
    dump = collect_node(run, host="node01", transport="test", use_sudo=False, commands=keep)
    assert (
        dump.files["conntrack"].count(b"\n") == 2
        and len(parse_conntrack(dump.files["conntrack"].decode())) == 2
    )
    (err,) = [e for e in dump.errors if e.what == "conntrack"]
    assert err.error.startswith("truncated: the first 2 of ") and "flows kept" in err.error
