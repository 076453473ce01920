"""The command line as a user runs it: real processes, exit codes, stdout/stderr discipline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
SVCTRACE = str(BIN / "svctrace") if (BIN / "svctrace").exists() else shutil.which("svctrace") or "svctrace"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"}
    env["COLUMNS"] = "120"
    return subprocess.run([SVCTRACE, *args], capture_output=True, text=True, input=stdin, env=env, timeout=60)


@pytest.mark.slow
def test_json_follows_the_spec() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80", "-o", "json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) == {"packet", "outcomes", "warnings", "notes"}
    assert doc["notes"] == []
    assert doc["packet"] == {"family": "ipv4", "protocol": "tcp", "src": "10.0.0.2", "sport": None,
                             "dst": "172.30.0.41", "dport": 80, "origin": "forwarded"}
    assert abs(sum(o["probability"] for o in doc["outcomes"]) - 1) < 1e-9
    for o in doc["outcomes"]:
        assert {"probability", "verdict", "dnat", "masquerade", "delivery", "certain", "path"} <= set(o)
        assert o["verdict"] == "accept" and o["delivery"] == "forward" and o["certain"] is True
        assert o["masquerade"] is False
        for step in o["path"]:
            assert {"table", "chain", "rule", "text", "action"} <= set(step)
            assert step["rule"] is None or step["rule"] >= 1
    assert sorted(o["dnat"] for o in doc["outcomes"]) == ["10.180.0.1:80", "10.180.1.2:80", "10.180.2.3:80"]
    first = doc["outcomes"][0]["path"][0]
    assert first["table"] == "nat" and first["chain"] == "PREROUTING" and first["rule"] == 1
    assert first["text"].startswith("-A PREROUTING") and first["action"] == "jump KUBE-SERVICES"


@pytest.mark.slow
def test_reject_exits_1_and_text_says_why() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.50", "--dport", "80")
    assert p.returncode == 1
    assert "REJECT" in p.stdout and "default/noep:http has no endpoints" in p.stdout
    assert "Verdict:" in p.stdout


def test_text_shows_percentages_and_printed_probability() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80")
    assert p.returncode == 0
    assert "33.3%" in p.stdout and "--probability 0.33333333349" in p.stdout
    assert "KUBE-SVC-*" in p.stdout  # the chain family is explained
    assert "load-balanced over 3 backends" in p.stdout


@pytest.mark.slow
def test_ping_to_a_cluster_ip_is_explained() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--proto", "icmp", "-o", "json")
    doc = json.loads(p.stdout)
    assert [o["dnat"] for o in doc["outcomes"]] == [None]
    assert len(doc["notes"]) == 1 and "ping (ICMP) to it never gets a reply" in doc["notes"][0]
    assert "default/web:http cluster IP (tcp/80)" in doc["notes"][0]
    # a packet to an address that is no Service gets no such note, but the hint with the Services the dump knows
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.99", "--proto", "icmp", "-o", "json")
    notes = json.loads(p.stdout)["notes"]
    assert len(notes) == 1 and "ping (ICMP)" not in notes[0] and p.returncode == 0
    assert "No kube-proxy rule of this dump mentions 172.30.0.99" in notes[0] and "172.30.0.41" in notes[0]


@pytest.mark.slow
def test_stdin_and_from_node_implied_by_local_source() -> None:
    dump = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "examples" / "kube-proxy-basic.iptables-save"
    p = run("trace", "-", "--src", "192.168.0.2", "--dst", "172.30.0.41", "--dport", "80", "--local-ip",
            "192.168.0.2", "-o", "json", stdin=dump.read_text())
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["packet"]["origin"] == "local"
    assert all(o["masquerade"] for o in doc["outcomes"])  # node IP is outside the cluster CIDR
    assert doc["outcomes"][0]["path"][0]["chain"] == "OUTPUT"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (("trace", "/nonexistent/dump", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--dport", "1"), None,
         "/nonexistent/dump: no such file"),
        (("trace", "-", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--dport", "1"), "*nat\n:PREROUTING BOGUS\n",
         "<stdin>:2: malformed chain declaration"),
        (("trace", "--demo", "--src", "1.1.1.1", "--dst", "::1", "--dport", "1"), None, "same IP family"),
        (("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41"), None, "missing --dport"),
        (("trace", "--demo", "--src", "nope", "--dst", "172.30.0.41", "--dport", "80"), None, "not an IP address"),
        (("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--proto", "icmp", "--dport", "80"), None,
         "ICMP has no ports"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(args: tuple[str, ...], stdin: str | None, needle: str) -> None:
    p = run(*args, stdin=stdin)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_usage_error_exit_2() -> None:
    p = run("trace", "--demo")
    assert p.returncode == 2 and "--dst" in p.stderr


@pytest.mark.slow
def test_json_stdout_is_only_json_with_warnings_on_stderr() -> None:
    p = run("trace", "-", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80", "-o", "json",
            stdin="-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X\n")
    json.loads(p.stdout)
    assert "warning:" in p.stderr


def test_kubectl_plugin_entry_point() -> None:
    exe = BIN / "kubectl-svctrace"
    if not exe.exists():
        pytest.skip("kubectl-svctrace is not installed next to this interpreter")
    p = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("svctrace ")


@pytest.mark.slow
def test_trace_reads_a_snapshot_node_directory() -> None:
    node01 = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "nodes" / "node01"
    p = run("trace", str(node01), "--src", "10.244.1.50", "--dst", "10.96.0.10", "--proto", "udp", "--dport", "53",
            "--local-ip", "192.168.56.11", "-o", "json")
    assert p.returncode == 0, p.stderr
    assert sorted(o["dnat"] for o in json.loads(p.stdout)["outcomes"]) == ["10.244.0.2:53", "10.244.0.3:53"]


@pytest.mark.slow
def test_trace_ipvs_with_its_iptables_rules_and_ipset() -> None:
    from conftest import WILD, need_corpus

    need_corpus()
    ipvs = WILD / "ipvsadm" / "009-ipvs-calico-vxlan-nodeport-after-switch-2022.txt"
    ipt = WILD / "iptables-save" / "028-ipvs-switch-calico-vxlan-stale-declared-chains.txt"
    p = run("trace", str(ipvs), str(ipt), "--src", "10.0.0.2", "--dst", "10.96.0.1", "--dport", "443", "-o", "json")
    assert p.returncode in (0, 1), p.stderr
    doc = json.loads(p.stdout)
    assert any(s["table"] == "ipvs" for o in doc["outcomes"] for s in o["path"])
    assert abs(sum(o["probability"] for o in doc["outcomes"]) - 1) < 1e-9
    only_ipset = run("trace", "-", "--src", "1.1.1.1", "--dst", "2.2.2.2", "--dport", "1",
                     stdin="create KUBE-CLUSTER-IP hash:ip,port family inet\n")
    assert only_ipset.returncode == 2 and "only ipset dumps" in only_ipset.stderr


@pytest.mark.slow
def test_trace_sniffs_nftables_rulesets() -> None:
    from conftest import CORPUS, need_corpus

    need_corpus()
    overall = CORPUS / "kube-proxy" / "nftables" / "overall"
    for form in ("ruleset.json", "ruleset.nft"):
        p = run("trace", str(overall / form), "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80",
                "--local-ip", "192.168.0.2", "-o", "json")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert [o["dnat"] for o in doc["outcomes"]] == ["10.180.0.1:80"]
        assert doc["outcomes"][0]["path"][0]["table"] == "ip kube-proxy"
    wrong = run("trace", str(overall / "ruleset.json"), "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "81",
                "--local-ip", "192.168.0.2", "-o", "json")
    assert wrong.returncode == 1 and [o["verdict"] for o in json.loads(wrong.stdout)["outcomes"]] == ["reject"]


@pytest.mark.slow
def test_tui_refuses_missing_paths_and_non_terminals_with_one_line() -> None:
    missing = run("tui", "/nonexistent/snap")
    assert missing.returncode == 2 and "/nonexistent/snap: no such snapshot or dump" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and missing.stdout == ""
    piped = run("tui", "--demo", stdin="")
    assert piped.returncode == 2 and "needs a terminal" in piped.stderr and piped.stdout == ""


@pytest.mark.slow
def test_a_file_that_is_no_archive_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "snap.tgz"
    junk.write_text("not an archive\n")
    p = run("explain", "svc/web", "--snapshot", str(junk))
    assert p.returncode == 2 and "not a readable .tar.gz snapshot" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("node", ["node01", "node03", "node04"])  # the demo's iptables, IPVS, nftables nodes
def test_trace_kube_version_reaches_every_mode(node: str) -> None:
    from svctrace.cli.trace import read_inputs, trace_inputs
    from svctrace.model.packet import NodeFacts, Packet

    d = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "nodes" / node
    facts = NodeFacts.make(local_ips=["192.168.56.11"])
    pkt = Packet.make(src="10.244.1.50", dst="10.96.0.10", proto="udp", dport=53, local_ips=facts.local_ips)
    inputs = [(t, n) for t, n in read_inputs(str(d)) if "/ip-addr" not in n and not n.endswith("/ipset")]
    assert trace_inputs(inputs, pkt, facts, kube_version="1.31").kube_version == "1.31"
    assert trace_inputs(inputs, pkt, facts).kube_version is None


def test_trace_rejects_a_bad_kube_version_in_every_mode() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2", "--dst", "172.30.0.41", "--dport", "80", "--kube-version", "latest")
    assert p.returncode == 2 and "--kube-version: not a Kubernetes version: 'latest'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# -- trace --batch: many questions on one load ----------------------------------------------------------------

BATCH = [
    {"src": "10.0.0.2", "dst": "172.30.0.41", "dport": 80},
    {"src": "10.244.1.5", "dst": "172.30.0.41", "proto": "udp", "dport": 53},
    {"from_node": True, "dst": "172.30.0.41", "dport": 80},
]


def test_batch_answers_each_line_as_one_question_would(tmp_path: Path) -> None:
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in BATCH))
    p = run("trace", "--demo", "--batch", str(qfile))
    answers = p.stdout.splitlines()
    assert len(answers) == len(BATCH), p.stderr
    codes = []
    for q, line in zip(BATCH, answers, strict=True):
        args = ["--from-node"] if q.get("from_node") else ["--src", str(q["src"])]
        one = run("trace", "--demo", *args, "--dst", str(q["dst"]), "--proto", str(q.get("proto", "tcp")),
                  "--dport", str(q["dport"]), "-o", "json")
        assert json.loads(line) == json.loads(one.stdout)
        codes.append(one.returncode)
    assert p.returncode == max(codes)


def test_batch_bad_lines_answer_with_their_number_and_the_run_goes_on() -> None:
    lines = ['{"src": "10.0.0.2", "dst": "172.30.0.41", "dport": 80}', "", "not json",
             '{"src": "10.0.0.2", "dst": "172.30.0.41", "dport": "80"}', '{"dst": "172.30.0.41", "port": 80}',
             '{"src": "10.0.0.2", "dst": "172.30.0.41"}', '{"src": "10.0.0.2", "dst": "172.30.0.41", "dport": 80}']
    p = run("trace", "--demo", "--batch", "-", stdin="\n".join(lines) + "\n")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    docs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [d.get("line") for d in docs] == [None, 3, 4, 5, 6, None]
    assert "not JSON" in docs[1]["error"] and "dport: expected int" in docs[2]["error"]
    assert "unknown field 'port'" in docs[3]["error"] and "missing --dport" in docs[4]["error"]
    assert docs[0] == docs[5] and docs[0]["outcomes"]


@pytest.mark.slow
def test_batch_previous_endpoint_and_affinity_age() -> None:
    q = {"src": "10.0.0.2", "dst": "172.30.0.60", "dport": 80, "previous_endpoint": "10.180.1.21:8080"}
    lines = [q, {**q, "affinity_age": 20000}, {**q, "previous_endpoint": "10.180.1.21"}]
    p = run("trace", "--demo", "--batch", "-", stdin="".join(json.dumps(x) + "\n" for x in lines))
    docs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [(o["dnat"], o["probability"]) for o in docs[0]["outcomes"]] == [("10.180.1.21:8080", 1.0)]
    assert sorted(o["probability"] for o in docs[1]["outcomes"]) == [0.5, 0.5]
    assert docs[2]["line"] == 3 and docs[2]["error"].startswith("previous_endpoint:") and p.returncode == 2


def test_dst_is_still_required_without_batch() -> None:
    p = run("trace", "--demo", "--src", "10.0.0.2")
    assert p.returncode == 2 and "Missing option '--dst'" in p.stderr


@pytest.mark.parametrize("node", [None, "node03", "node04"])  # the demo dump; the demo's IPVS and nftables nodes
def test_batch_questions_leave_no_garbage_cycles(node: str | None, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """run_batch pauses the cyclic collector for the questions: that is only sound while a question, answered or
    refused, leaves nothing that reference counting cannot free, in every mode."""
    import gc

    from svctrace.cli.trace import demo_dump, read_inputs, run_batch
    from svctrace.dataplane.detect import is_address_file, is_host_file, looks_like_ipset
    from svctrace.model.packet import NodeFacts

    qfile = tmp_path / "q.jsonl"
    lines = [*(json.dumps(q) for q in BATCH), "not json", '{"dst": "172.30.0.41", "port": 80}',
             '{"src": "10.0.0.2", "dst": "fd00::1", "dport": 80}',
             json.dumps({"src": "10.0.0.2", "dst": "172.30.0.60", "dport": 80, "previous_endpoint": "10.180.1.21:8080"})]
    qfile.write_text("\n".join(lines * 3) + "\n")
    flags = {"src": None, "dst": None, "proto": "tcp", "dport": None, "sport": None, "from_node": False,
             "in_iface": None, "out_iface": None, "returning_client": False, "route_localnet": None,
             "kube_version": None, "previous_endpoint": None, "affinity_age": None}
    base = NodeFacts.make(local_ips=["192.168.0.2"])
    inputs = [demo_dump()] if node is None else [
        (t, n) for t, n in read_inputs(str(Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "nodes" / node))
        if not (is_address_file(n) or is_host_file(n) or looks_like_ipset(t))]
    run_batch(inputs, str(qfile), flags, base)  # the first load's one-time objects
    gc.collect()
    was = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run_batch(inputs, str(qfile), flags, base)
        assert gc.collect() == 0, [type(o).__name__ for o in gc.garbage[:20]]
    finally:
        gc.set_debug(was)
        gc.garbage.clear()
        gc.unfreeze()
    assert gc.isenabled()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 * 3 * len(lines) and sum('"error"' in x for x in out) >= 2 * 3 * 2
