"""The SSH collector (svctrace.collect.ssh/commands/bundle).

Unit tests first (no root needed): host specs, the scrubber, backend detection, the framed script
output, the bundle writer, the node script run by a local ``sh``. Then the lab (tests/sshlab.py): real
``sshd`` servers in network namespaces made here, each node with real netfilter rules loaded by
``iptables-restore``; svctrace collects from them over real SSH and must bring back what each namespace
holds. Cases: several nodes at once, ProxyJump, unknown and changed host keys, a silent server and a
black hole (timeouts), sudo (a real sudo with a sudoers rule limited to the dump tools; and a user whose
sudo wants a password), no secrets in the bundle, a scale sanity bound.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from sshlab import KUBELET_HINTS, LabNode, SSHLab, lab_available, normalize_dump, sudo_available

from svctrace.collect import bundle, commands
from svctrace.collect.bundle import NodeDump, NodeError, scrub_json, scrub_text, write_bundle
from svctrace.collect.commands import COMMANDS, NodeCommand, RunResult, Variant, collect_node, detect_backend
from svctrace.collect.ssh import TRUST_FLAG, CollectResult, collect_nodes_ssh, collect_ssh, parse_host
from svctrace.model.snapshot import load_snapshot

DEMO = Path(__file__).resolve().parents[1] / "svctrace" / "data" / "demo" / "nodes"
CLUSTER = (DEMO.parent / "cluster.json").read_bytes()  # any valid cluster.json: the bundle must load
_LAB_OK, _LAB_WHY = lab_available()
needs_lab = [pytest.mark.kernel, pytest.mark.skipif(not _LAB_OK, reason=_LAB_WHY or "no SSH lab")]

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50In0.c2lnbmF0dXJlLXNpZw"
PLANTED = ("hunter2-lab", JWT, "AKIAABCDEFGHIJKLMNOP", "s3cr3t-configz-token", "lab-env-secret-41",
           "test-env-secret-77", "Bearer abcdefghijklmnop")


# ==================================================================================================
# unit tests


@pytest.mark.parametrize(("text", "want"), [
    ("10.0.0.1", ("10.0.0.1", None, None)),
    ("root@node-1:2222", ("node-1", "root", 2222)),
    ("ops@[fe80::1]:22", ("fe80::1", "ops", 22)),
    ("[2001:db8::5]", ("2001:db8::5", None, None)),
    ("2001:db8::5", ("2001:db8::5", None, None)),
    ("a.b@host", ("host", "a.b", None)),
])
def test_parse_host(text: str, want: tuple[str, str | None, int | None]) -> None:
    h = parse_host(text)
    assert (h.host, h.user, h.port) == want


@pytest.mark.parametrize("bad", ["", "a b", "@host", "host:0", "host:99999", "[::1", "[::1]x", "u@"])
def test_parse_host_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_host(bad)


def test_scrub_text_keeps_kube_proxy_rules_and_drops_secrets() -> None:
    demo = (DEMO / "node01" / "iptables-save").read_text()
    assert scrub_text(demo) == demo  # nothing in a real dump looks like a secret
    innocent = ('-A KUBE-SERVICES -d 10.96.0.7/32 -p tcp -m comment --comment "default/token:http cluster IP" '
                "-m tcp --dport 80 -j KUBE-SVC-TOKENPASSWORDAUTH\n"
                '-A KUBE-SEP-X -m comment --comment "auth/password-reset:https" -j DNAT --to 10.244.1.5:443\n'
                ":KUBE-SVC-SECRETTOKEN12345 - [0:0]\n")
    assert scrub_text(innocent) == innocent
    secret_lines = [
        "Authorization: Bearer abcdefghijklmnop",
        "curl -H 'authorization: Basic dXNlcjpwYXNzd29yZA=='",
        f"token: {JWT}",
        "password=hunter2",
        "export AWS_SECRET_ACCESS_KEY=abcd1234",
        "client-key-data: LS0tLS1CRUdJTg==",
        "https://admin:pa55@registry.example/v2/",
        "key AKIAABCDEFGHIJKLMNOP",
        "join with abcdef.0123456789abcdef",
    ]
    dropped: list[str] = []
    text = "keep me\n" + "\n".join(secret_lines) + "\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n" \
        "-----END OPENSSH PRIVATE KEY-----\nkeep me too\n"
    assert scrub_text(text, dropped, where="f") == "keep me\nkeep me too\n"
    assert len(dropped) == len(secret_lines) + 1
    assert all(d.startswith("f:line ") for d in dropped)
    assert not any("hunter2" in d or "AKIA" in d for d in dropped)  # reasons, never content


def test_scrub_json() -> None:
    doc = {"kubeproxy.config": {"mode": "iptables", "clientConnection": {"kubeconfig": "/var/lib/kp.conf",
                                                                         "token": "x"},
                                "note": f"Bearer {JWT}", "list": ["a", f"password={JWT}", "b"],
                                "automountServiceAccountToken": False}}
    dropped: list[str] = []
    clean = scrub_json(doc, dropped)
    assert clean == {"kubeproxy.config": {"mode": "iptables", "clientConnection": {"kubeconfig": "/var/lib/kp.conf"},
                                          "list": ["a", "b"], "automountServiceAccountToken": False}}
    assert sorted(dropped) == sorted(["$.kubeproxy.config.clientConnection.token: credential field",
                                      "$.kubeproxy.config.note: bearer token",
                                      "$.kubeproxy.config.list[1]: JSON web token"])
    assert bundle.scrub_file("x.json", json.dumps(doc).encode()) == (json.dumps(clean, indent=1) + "\n").encode()


def test_detect_backend() -> None:
    hint = b"*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n"
    rules = b"*nat\n:PREROUTING ACCEPT [0:0]\n[3:180] -A PREROUTING -j KUBE-SERVICES\n-A X -j Y\nCOMMIT\n"
    one = b"*filter\n-A INPUT -j KUBE-FIREWALL\nCOMMIT\n"
    assert detect_backend([hint, None], [rules, None])[0] == "nft"  # hints beat rule counts
    assert detect_backend([rules, None], [hint + rules, None])[0] == "legacy"
    assert detect_backend([one, None], [rules, None])[0] == "legacy"  # more rules in legacy
    assert detect_backend([rules, None], [one, None])[0] == "nft"
    assert detect_backend([b"", b""], [b"", b""])[0] == "nft"  # a tie goes to nft, as in iptables-wrappers
    assert detect_backend([None, None], [None, None], "iptables v1.8.7 (legacy)")[0] == "legacy"
    assert detect_backend([None, None], [None, None], "iptables v1.8.9 (nf_tables)")[0] == "nft"
    assert detect_backend([None, None], [None, None], "iptables v1.6.1")[0] == "legacy"
    assert detect_backend([None, None], [None, None], "")[0] is None
    assert commands.holds_rules(rules) and not commands.holds_rules(hint) and not commands.holds_rules(None)


def test_parse_output_frames_and_cut_short() -> None:
    n = "0123456789abcdef"
    tag = f"@@{n}"
    out = (f"motd junk\n{tag} out a.0\nline1\n@@other out x\n\n{tag} end a.0 0\n"
           f"{tag} skip b\n{tag} out c.1\nno newline\n{tag} end c.1 3\n"
           f"{tag} out c.10\n\n{tag} end c.10 0\n"
           f"{tag} out d.0\npartial").encode()
    err = f"{tag} err a.0\n\n{tag} end a.0\n{tag} err c.1\noops\n{tag} end c.1\n{tag} err d.0\nhalf".encode()
    p = commands.parse_output(n, out, err)
    a = p.outputs["a"][0]
    assert (a.stdout, a.exit_code, a.stderr, a.complete) == (b"line1\n@@other out x\n", 0, b"", True)
    assert p.skipped == {"b"}
    c1, c10 = p.outputs["c"]
    assert (c1.variant, c1.stdout, c1.exit_code, c1.stderr) == (1, b"no newline", 3, b"oops")
    assert (c10.variant, c10.stdout) == (10, b"")
    d = p.outputs["d"][0]
    assert not d.complete and d.stdout == b"partial" and d.stderr == b"half"


def _local_run(script: str) -> RunResult:
    p = subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, timeout=60, check=False)
    return RunResult(p.returncode, p.stdout, p.stderr)


def test_node_script_missing_tools_and_failures_are_recorded_per_file() -> None:
    cmds = (
        NodeCommand("hostname", None, (Variant(("echo", "Worker-7")),)),
        NodeCommand("iptables-version", None, (Variant(("echo", "iptables v1.8.9 (nf_tables)")),)),
        NodeCommand("iptables-save", None, (Variant(("printf", "*filter\\n-A INPUT -j ACCEPT\\nCOMMIT\\n")),)),
        NodeCommand("ipvsadm", "ipvsadm", (Variant(("no-such-tool-svctrace", "-Sn")),), hint="install it"),
        NodeCommand("ipset", "ipset", (Variant(("sh", "-c", "echo broken >&2; exit 3")),)),
        NodeCommand("ip-addr", "ip-addr.json", (Variant(("sh", "-c", "exit 1")),
                                                Variant(("echo", "1: lo inet 127.0.0.1/8"), file="ip-addr"))),
        NodeCommand("sysctl", "sysctl", (Variant(("echo", "x")),), when="false", skipped="not here"),
        NodeCommand("proxy-mode", "proxy-mode", (Variant(("sh", "-c", "printf 'password=hunter2\\niptables'")),)),
    )
    d = collect_node(_local_run, host="h", transport="test", use_sudo=False, commands=cmds)
    assert d.name == "worker-7" and d.ok and d.backend == "nft"
    assert d.files["iptables-save"] == b"*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"
    assert d.files["ip-addr"] == b"1: lo inet 127.0.0.1/8\n" and "ip-addr.json" not in d.files
    assert d.files["proxy-mode"] == b"iptables"  # the secret-looking line was dropped
    assert d.scrubbed == ["proxy-mode:line 1: credential assignment"]
    errs = {e.what: e for e in d.errors}
    assert errs["ipvsadm"].error.startswith("not installed") and errs["ipvsadm"].hint == "install it"
    assert errs["ipset"].exit_code == 3 and errs["ipset"].stderr == "broken"
    assert errs["sysctl"].error == "not collected: not here"
    assert set(errs) == {"ipvsadm", "ipset", "sysctl", "ip6tables-save"}


def test_a_missing_sudo_is_said_so() -> None:
    """Issue 17 #12: before, a node without sudo read "sudo refused". The real script runs, as a non-root
    login whose shell finds no sudo (dash's own words for it)."""
    def no_sudo(script: str) -> RunResult:
        script = script.replace('if [ 1 = 1 ] && [ "$U" != 0 ]; then SUDO="sudo -n"; fi',
                                'SUDO="sudo -n"; U=1000; sudo() { echo "sh: 1: sudo: not found" >&2; return 127; }')
        script = re.sub(r'(?m)^if command -v timeout .*$', "TMO=", script)  # `timeout sudo` would exec the real one
        assert "sudo() {" in script and "\nTMO=\n" in script
        return _local_run(script)

    cmds = tuple(c for c in COMMANDS if c.key in ("hostname", "uid", "iptables-nft-save", "iptables-save", "nft"))
    d = collect_node(no_sudo, host="h", transport="test", use_sudo=True, commands=cmds)
    assert not d.ok
    (err,) = [e for e in d.errors if e.what == "sudo"]
    assert err.error.startswith("not root, and sudo is not installed on the node: "), err.error
    assert "install sudo" in (err.hint or "") and "refused" not in err.error


def test_node_script_real_commands_parse(tmp_path: Path) -> None:
    """The real COMMANDS script is valid POSIX sh (dash) and frames every command."""
    script = commands.build_script("ab" * 16, COMMANDS, command_timeout=30)
    res = subprocess.run(["sh", "-n"], input=script.encode(), capture_output=True, check=False)
    assert res.returncode == 0, res.stderr
    assert [c.key for c in COMMANDS].count("nft") == 1 and len({c.key for c in COMMANDS}) == len(COMMANDS)
    assert all(" " not in c.key and "." not in c.key for c in COMMANDS)


def _dump(name: str, **files: bytes) -> NodeDump:
    return NodeDump(name, host=name, files={k.replace("_", "-"): v for k, v in files.items()}, ok=True,
                    backend="nft", errors=[NodeError("ipvsadm", "not installed")])


@pytest.mark.parametrize("suffix", ["", ".tar.gz"])
def test_write_bundle_atomic_private_and_loadable(tmp_path: Path, suffix: str) -> None:
    rules = (DEMO / "node01" / "iptables-save").read_bytes()
    nodes = [_dump("node01", iptables_save=rules, proxy_mode=b"iptables\n"), _dump("node02")]
    bundle.unique_names(nodes)
    meta = bundle.make_meta(nodes, context="lab", server_version="v1.30.0")
    assert meta["proxy_mode"] == "iptables" and meta["nodes"]["node01"] == {
        "transport": "ssh", "backend": "nft", "ok": True, "host": "node01", "errors": 1, "elapsed": 0.0}
    out = tmp_path / "w" / f"snap{suffix}"
    files = bundle.assemble(nodes, meta=meta, cluster=CLUSTER)
    assert "cluster.json" not in bundle.assemble(nodes)
    files["nodes/node02/proxy-mode"] = b"Authorization: Bearer abcdefghijklmnopqrstuvwxyz\n"
    dropped: list[str] = []
    write_bundle(out, files, dropped=dropped)
    assert dropped == ["nodes/node02/proxy-mode:line 1: Authorization header"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left behind
    with pytest.raises(FileExistsError):
        write_bundle(out, files)
    write_bundle(out, files, overwrite=True)
    assert [p.name for p in out.parent.iterdir()] == [out.name]
    if suffix:
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        with tarfile.open(out) as tf:
            modes = {m.name: stat.S_IMODE(m.mode) for m in tf.getmembers()}
        assert modes["nodes"] == 0o700 and modes["nodes/node01/iptables-save"] == 0o600
    else:
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        for p in out.rglob("*"):
            assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    snap = load_snapshot(str(out))
    assert snap.nodes["node01"].get("iptables-save") == rules.decode()
    assert snap.meta["context"] == "lab" and snap.cluster.services
    errs = json.loads(snap.nodes["node02"].get("errors.json") or "")
    assert errs["errors"] == [{"what": "ipvsadm", "error": "not installed"}]
    with pytest.raises(ValueError):
        write_bundle(tmp_path / "bad", {"../x": b""})


# ==================================================================================================
# the SSH lab


def _rules(name: str) -> str:
    return (DEMO / name / "iptables-save").read_text() + KUBELET_HINTS


LEAKY_RULES = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
               '-A INPUT -m comment --comment "password=hunter2-lab" -j ACCEPT\n'
               '-A INPUT -m comment --comment "Authorization: Bearer abcdefghijklmnop" -j ACCEPT\n'
               f'-A INPUT -m comment --comment "sa {JWT}" -j ACCEPT\n'
               '-A INPUT -m comment --comment "aws AKIAABCDEFGHIJKLMNOP" -j ACCEPT\n'
               '-A INPUT -m comment --comment "default/token:http" -j ACCEPT\n'
               "COMMIT\n") + KUBELET_HINTS
STALE_LEGACY = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n"


@pytest.fixture(scope="module")
def lab() -> Iterator[SSHLab]:
    if not _LAB_OK:
        pytest.skip(_LAB_WHY)
    with SSHLab() as lab:
        configz: dict[str, Any] = {"kubeproxy.config": {"mode": "iptables", "clusterCIDR": "10.244.0.0/16",
                                        "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf",
                                                             "token": "s3cr3t-configz-token"}}}
        lab.add_node("node-1", rules=_rules("controlplane"), kube_proxy=("iptables", configz))
        lab.add_node("node-2", rules=_rules("node01"), legacy_rules=STALE_LEGACY)
        lab.add_node("node-3", rules=_rules("node02"))
        bastion = lab.add_node("bastion")
        lab.add_node("node-hidden", rules=_rules("node01"), behind=bastion)
        lab.add_node("silent", kind="silent")
        lab.add_node("blackhole", kind="blackhole")
        lab.add_node("node-leaky", rules=LEAKY_RULES, kube_proxy=("iptables", configz),
                     sshd_extra="SetEnv SVCTRACE_LAB_SECRET=lab-env-secret-41\n")
        # a node whose command hangs: it accepts the session, never reads the script and never ends
        lab.add_node("node-hang", rules=_rules("node01"), sshd_extra="ForceCommand sleep 600\n")
        yield lab


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ~/.ssh, no agent, no /etc/ssh config of this machine leaks into a test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


class SSHOpts(TypedDict):
    known_hosts: str
    ssh_config: str


def _setup(lab: SSHLab, tmp_path: Path, nodes: list[LabNode] | None = None, config: str = "") -> SSHOpts:
    """A known_hosts file with ``nodes`` (default: all) and an SSH config (the lab's user key, root)."""
    kh = lab.known_hosts(tmp_path / "known_hosts", nodes if nodes is not None else list(lab.nodes.values()))
    cfg = lab.ssh_config(tmp_path / "ssh_config", config)
    return {"known_hosts": str(kh), "ssh_config": str(cfg)}


def _errors(res: CollectResult, name: str) -> list[dict]:
    assert res.out is not None
    return json.loads((res.out / "nodes" / name / "errors.json").read_text())["errors"]


def _same_rules(collected: bytes, node: LabNode, tool: str = "iptables-save") -> None:
    assert normalize_dump(collected.decode()) == normalize_dump(node.iptables_save(tool))


@pytest.mark.usefixtures("lab")
class TestLab:
    pytestmark = needs_lab

    def test_several_nodes_at_once(self, lab: SSHLab, tmp_path: Path) -> None:
        n = lab.nodes
        seen: list[tuple[str, str]] = []
        with lab.client():
            res = collect_ssh([n["node-1"].addr, n["node-2"].addr, n["node-3"].addr], out=str(tmp_path / "snap"),
                              progress=lambda h, m: seen.append((h, m)), cluster=CLUSTER, context="lab",
                              **_setup(lab, tmp_path))
        assert res.ok, res.summary()
        assert [d.name for d in res.nodes] == ["node-1", "node-2", "node-3"]  # from each host's hostname
        for d in res.nodes:
            _same_rules(d.files["iptables-save"], n[d.name])
            assert d.backend == "nft" and "hint chains" in (d.backend_reason or "")
            assert d.user == "root"
        # node-2 also holds (stale) legacy rules: both are collected
        _same_rules(res.nodes[1].files["iptables-legacy-save"], n["node-2"], "iptables-legacy-save")
        assert "iptables-legacy-save" not in res.nodes[0].files
        snap = load_snapshot(str(res.out))
        assert sorted(snap.nodes) == ["node-1", "node-2", "node-3"]
        assert snap.meta["proxy_mode"] == "iptables" and snap.meta["nodes"]["node-2"]["backend"] == "nft"
        assert snap.nodes["node-1"].get("proxy-mode") == "iptables"
        assert json.loads(snap.nodes["node-1"].get("configz.json") or "")["kubeproxy.config"]["mode"] == "iptables"
        for name in ("ip-addr.json", "ip-route.json", "nft.json"):
            json.loads(snap.nodes["node-3"].get(name) or "")
        assert f"{n['node-3'].addr}" in (snap.nodes["node-3"].get("ip-addr.json") or "")
        assert "net.ipv4.ip_forward = " in (snap.nodes["node-3"].get("sysctl") or "")
        errs = {e["what"]: e for e in _errors(res, "node-3")}
        assert errs["proxy-mode"]["error"].startswith("not collected: nothing listens on 127.0.0.1:10249")
        assert errs["configz.json"]["error"].startswith("not collected: kube-proxy's metrics endpoint")
        assert "ipvsadm" in errs
        assert {m for _, m in seen} >= {"connecting", "connected as root; collecting"}

    def test_proxy_jump(self, lab: SSHLab, tmp_path: Path) -> None:
        hidden, bastion = lab.nodes["node-hidden"], lab.nodes["bastion"]
        config = (f"Host hidden\n  HostName {hidden.addr}\n  ProxyJump bastion\n"
                  f"Host bastion\n  HostName {bastion.addr}\n"
                  "Host loop-a\n  ProxyJump loop-b\nHost loop-b\n  ProxyJump loop-a\n")
        opts = _setup(lab, tmp_path, config=config)
        with lab.client():
            res = collect_ssh(["hidden"], out=str(tmp_path / "snap"), timeout=5, **opts)
            direct = collect_nodes_ssh([hidden.addr], timeout=5, **opts)
            (loop,) = collect_nodes_ssh(["loop-a"], timeout=5, **opts)
        assert res.ok, res.summary()
        assert res.nodes[0].name == "node-hidden" and res.nodes[0].host == "hidden"
        _same_rules(res.nodes[0].files["iptables-save"], hidden)
        assert not direct[0].ok and direct[0].errors[0].what == "connect"  # not reachable without the jump
        assert not loop.ok and "ProxyJump loop" in loop.errors[0].error

    def test_proxy_command_and_agent(self, lab: SSHLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """ProxyCommand (`ssh -W` through the bastion) and authentication by a real ssh-agent."""
        hidden, bastion = lab.nodes["node-hidden"], lab.nodes["bastion"]
        kh = lab.known_hosts(tmp_path / "known_hosts", list(lab.nodes.values()))
        jump = (f"ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={kh} -i {lab.user_key} "
                f"-W %h:%p root@{bastion.addr}")
        cfg = tmp_path / "ssh_config"
        cfg.write_text(f"Host via-pc\n  HostName {hidden.addr}\n  User root\n  ProxyCommand {jump}\n")
        sock = tmp_path / "agent.sock"
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
            subprocess.run(["ssh-add", "-q", lab.user_key], env=env, check=True, capture_output=True)
            monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
            with lab.client():
                res = collect_nodes_ssh(["via-pc"], known_hosts=str(kh), ssh_config=str(cfg), timeout=10)
        finally:
            agent.terminate()
            agent.wait(5)
        assert res[0].ok, res[0].errors
        assert res[0].name == "node-hidden"  # the key came from the agent: the config names no IdentityFile
        _same_rules(res[0].files["iptables-save"], hidden)

    def test_command_timeout(self, lab: SSHLab, tmp_path: Path) -> None:
        with lab.client():
            (d,) = collect_nodes_ssh([lab.nodes["node-1"].addr], command_timeout=0.01, **_setup(lab, tmp_path))
        assert not d.ok and d.errors[-1].what == "timeout" and "collecting" in d.errors[-1].error

    def test_unknown_host_key_is_refused_unless_trusted(self, lab: SSHLab, tmp_path: Path) -> None:
        node = lab.nodes["node-1"]
        opts = _setup(lab, tmp_path, nodes=[lab.nodes["node-2"]])
        fp = subprocess.run(["ssh-keygen", "-lf", node.host_key_file + ".pub"], capture_output=True, text=True,
                            check=True).stdout.split()[1]
        with lab.client():
            refused = collect_ssh([node.addr], out=str(tmp_path / "a"), **opts)
            trusted = collect_ssh([node.addr], out=str(tmp_path / "b"), trust_new_host_keys=True, **opts)
            again = collect_ssh([node.addr], out=str(tmp_path / "c"), **opts)
        assert not refused.ok
        (err,) = _errors(refused, node.addr)
        assert err["what"] == "host-key" and "unknown host key" in err["error"] and fp in err["error"]
        assert f"ssh-keyscan -p 22 -t ed25519 {node.addr}" in err["hint"] and TRUST_FLAG in err["hint"]
        assert trusted.ok and again.ok, (trusted.summary(), again.summary())
        assert node.known_hosts_line in Path(opts["known_hosts"]).read_text()  # remembered, like accept-new

    def test_changed_host_key_is_always_refused(self, lab: SSHLab, tmp_path: Path) -> None:
        node = lab.nodes["node-1"]
        opts = _setup(lab, tmp_path, nodes=[])
        results = []
        for ktype in ("ed25519", "ecdsa"):  # another key of the same type; only a key of another type known
            other = tmp_path / f"other_{ktype}"
            subprocess.run(["ssh-keygen", "-q", "-t", ktype, "-N", "", "-f", str(other)], check=True)
            Path(opts["known_hosts"]).write_text(f"{node.addr} {other.with_suffix('.pub').read_text()}")
            with lab.client():
                for trust in (False, True):
                    results.append(collect_ssh([node.addr], out=str(tmp_path / f"{ktype}{trust}"),
                                               trust_new_host_keys=trust, **opts))
        for res in results:
            assert not res.ok
            (err,) = _errors(res, node.addr)
            assert err["what"] == "host-key" and "CHANGED" in err["error"] and "ssh-keygen -R" in err["hint"]
        assert node.host_pub not in Path(opts["known_hosts"]).read_text()

    def test_timeouts_are_bounded_and_recorded(self, lab: SSHLab, tmp_path: Path) -> None:
        n = lab.nodes
        t0 = time.monotonic()
        with lab.client():
            res = collect_ssh([n["silent"].addr, n["blackhole"].addr, n["node-3"].addr], out=str(tmp_path / "s"),
                              timeout=1.5, cluster=CLUSTER, **_setup(lab, tmp_path))
        elapsed = time.monotonic() - t0
        assert elapsed < 6, elapsed
        assert [d.ok for d in res.nodes] == [False, False, True]
        for name in (n["silent"].addr, n["blackhole"].addr):
            (err,) = _errors(res, name)
            assert err["what"] == "timeout", err
        assert 1.4 < res.nodes[0].elapsed < 4 and 1.4 < res.nodes[1].elapsed < 4
        assert load_snapshot(str(res.out)).nodes["node-3"].get("iptables-save")

    def test_a_hung_node_is_reported_and_the_others_collected(self, lab: SSHLab, tmp_path: Path) -> None:
        """Issue 17 #6: before, one node whose command hung held `collect --ssh` for 300 s (only connecting
        had an option); --command-timeout bounds each node's commands once connected."""
        n = lab.nodes
        t0 = time.monotonic()
        with lab.client():
            res = collect_ssh([n["node-hang"].addr, n["node-3"].addr], out=str(tmp_path / "h"), command_timeout=3,
                              **_setup(lab, tmp_path))
        elapsed = time.monotonic() - t0
        assert elapsed < 8, elapsed
        hung, good = res.nodes
        assert not hung.ok and good.ok and good.name == "node-3"
        (err,) = _errors(res, n["node-hang"].addr)
        assert err["what"] == "timeout" and "timed out after 3 s while collecting" in err["error"], err
        assert 2.9 < hung.elapsed < 6

    def test_command_timeout_from_the_command_line(self, lab: SSHLab, tmp_path: Path) -> None:
        """The same through `svctrace collect --ssh ... --command-timeout 3` (documented in docs/collect.md)."""
        n = lab.nodes
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        opts = _setup(lab, tmp_path)
        Path(home / ".ssh" / "config").write_text(Path(opts["ssh_config"]).read_text())
        Path(home / ".ssh" / "known_hosts").write_text(Path(opts["known_hosts"]).read_text())
        env = {k: v for k, v in os.environ.items() if k not in ("SVCTRACE_DEBUG", "SSH_AUTH_SOCK")} | {
            "HOME": str(home)}
        t0 = time.monotonic()
        with lab.client():
            p = subprocess.run([sys.executable, "-m", "svctrace", "collect", "--ssh", n["node-hang"].addr, "--ssh",
                                n["node-3"].addr, "--command-timeout", "3", "-o", str(tmp_path / "c.tgz")],
                               capture_output=True, text=True, env=env, timeout=60)
        assert time.monotonic() - t0 < 12
        assert p.returncode == 3, p.stderr
        assert f"{n['node-hang'].addr}: timed out after 3 s while collecting" in p.stderr, p.stderr
        assert "1/2 nodes collected" in p.stderr and "Traceback" not in p.stderr
        with tarfile.open(tmp_path / "c.tgz") as tf:
            names = tf.getnames()
        assert "nodes/node-3/iptables-save" in names and "nodes/node-hang/iptables-save" not in names, names

    @pytest.mark.skipif(not sudo_available(), reason="sudo is not installed (Debian: sudo)")
    def test_sudo_for_a_non_root_user(self, lab: SSHLab, tmp_path: Path) -> None:
        n = lab.nodes
        with lab.client():
            res = collect_ssh([f"ops@{n['node-2'].addr}", f"nopw@{n['node-3'].addr}"], out=str(tmp_path / "s"),
                              **_setup(lab, tmp_path))
        ops, nopw = res.nodes
        assert ops.ok and ops.user == "uid 5001" and ops.name == "node-2", ops.errors
        _same_rules(ops.files["iptables-save"], n["node-2"])  # sudo limited to the dump tools is enough
        assert "nft.json" in ops.files and "ip-addr.json" in ops.files
        assert not nopw.ok and nopw.name == "node-3"
        (err,) = _errors(res, "node-3")
        assert err["what"] == "sudo" and "a password is required" in err["error"] and "NOPASSWD" in err["hint"]

    def test_no_secrets_in_the_bundle(self, lab: SSHLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SVCTRACE_TEST_TOKEN", "test-env-secret-77")
        node = lab.nodes["node-leaky"]
        out = tmp_path / "leaky.tar.gz"
        with lab.client():
            res = collect_ssh([node.addr, lab.nodes["silent"].addr], out=str(out), timeout=1, **_setup(lab, tmp_path))
        assert res.nodes[0].ok, res.summary()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        blob = b""
        with tarfile.open(out) as tf:
            for m in tf.getmembers():
                assert stat.S_IMODE(m.mode) in (0o600, 0o700)
                f = tf.extractfile(m)
                blob += f.read() if f else b""
            names = tf.getnames()
        assert "nodes/node-leaky/iptables-save" in names and "nodes/node-leaky/configz.json" in names
        for secret in PLANTED:
            assert secret.encode() not in blob, secret
        for private in (Path(lab.user_key), Path(node.host_key_file)):
            body = [ln for ln in private.read_text().splitlines() if not ln.startswith("-----")]
            assert all(ln.encode() not in blob for ln in body)
        assert b"PRIVATE KEY" not in blob and b"SVCTRACE_LAB_SECRET" not in blob
        # only the secret-looking rules went; the rest, and a Service named "token", stay
        collected = normalize_dump(res.nodes[0].files["iptables-save"].decode())
        want = [ln for ln in normalize_dump(node.iptables_save()) if not any(s in ln for s in (*PLANTED, "AKIA"))]
        assert collected == want and any("default/token:http" in ln for ln in collected)
        with tarfile.open(out) as tf:
            member = tf.extractfile("nodes/node-leaky/errors.json")
            assert member is not None
            errs = json.loads(member.read())
        assert len([s for s in errs["scrubbed"] if s.startswith("iptables-save:")]) == 4
        assert "configz.json:$.kubeproxy.config.clientConnection.token: credential field" in errs["scrubbed"]

    def test_scale_sanity(self, lab: SSHLab, tmp_path: Path) -> None:
        """20 nodes at once against one: a generous bound only (bench/collect_ssh_scale.py measures)."""
        rules = _rules("node01")
        many = [lab.add_node(f"scale-{i:02d}", rules=rules) for i in range(20)]
        opts = _setup(lab, tmp_path, nodes=many)
        with lab.client():
            t0 = time.monotonic()
            one = collect_ssh([many[0].addr], out=str(tmp_path / "one"), **opts)
            t1 = time.monotonic() - t0
            t0 = time.monotonic()
            all20 = collect_ssh([m.addr for m in many], out=str(tmp_path / "all.tgz"), parallel=20, **opts)
            t20 = time.monotonic() - t0
        assert one.ok and all20.ok, all20.summary()
        assert sorted(d.name for d in all20.nodes) == [f"scale-{i:02d}" for i in range(20)]
        print(f"\nSSH collection: 1 node {t1:.2f} s, 20 nodes {t20:.2f} s ({t20 / t1:.1f}x)")
        assert t20 < 10 * t1 + 5, (t1, t20)


def test_bundle_bytes_roundtrip_is_readable(tmp_path: Path) -> None:
    """What collect writes can also be built in memory by tests (snapshot.bundle_bytes) and read back."""
    from svctrace.model.snapshot import bundle_bytes

    nodes = [_dump("n1", iptables_save=b"*filter\nCOMMIT\n")]
    files = {k: v.decode() for k, v in bundle.assemble(nodes, cluster=CLUSTER).items()}
    p = tmp_path / "b.tar.gz"
    p.write_bytes(bundle_bytes(files))
    snap = load_snapshot(str(p))
    assert snap.nodes["n1"].get("iptables-save") == "*filter\nCOMMIT\n"
