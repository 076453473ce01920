"""Secrets never reach cluster.json (issue 17 #5): the kube-proxy DaemonSet's command line in every form a
manifest writes it — flags split or joined, a shell string (`sh -c "kube-proxy ... --some-secret VALUE"`),
a secret flag at the end of one string and its value in the next, environment assignments, URLs with a
password — is kept without the secret values, and what svctrace reads from it (`--proxy-mode`,
`--cluster-cidr`) stays."""

from __future__ import annotations

import json

import pytest

from svctrace.collect.bundle import scrub_file
from svctrace.collect.kube import dump_list, slim

SECRET = "S3CR3T-VAL"

FORMS: list[tuple[str, list[str], list[str]]] = [  # (case, command, args)
    ("flag=value", ["kube-proxy"], [f"--token={SECRET}1", "--proxy-mode=ipvs"]),
    ("flag value", ["kube-proxy"], ["--token", f"{SECRET}2", "--proxy-mode=ipvs"]),
    ("sh -c with a space", ["sh", "-c"], [f"kube-proxy --proxy-mode=ipvs --some-secret {SECRET}3 --v=2"]),
    ("sh -c with =", ["/bin/sh", "-c", f"exec kube-proxy --kubeconfig-token={SECRET}4 --proxy-mode=ipvs"], []),
    ("sh -c quoted value", ["sh", "-c", f"kube-proxy --password '{SECRET}5 with spaces' --proxy-mode=ipvs"], []),
    ("sh -c double quoted", ["sh", "-c", f'kube-proxy --api-key="{SECRET}6" --proxy-mode=ipvs'], []),
    ("flag ends a string, value in the next", ["sh", "-c", "kube-proxy --proxy-mode=ipvs --token", f"{SECRET}7"], []),
    ("env assignment in the shell", ["sh", "-c", f"export API_TOKEN={SECRET}8; kube-proxy --proxy-mode=ipvs"], []),
    ("env assignment word", ["env", f"KUBE_PASSWORD={SECRET}9", "kube-proxy", "--proxy-mode=ipvs"], []),
    ("URL with a password", ["kube-proxy"], [f"--master=https://admin:{SECRET}10@10.0.0.1:6443", "--proxy-mode=ipvs"]),
    ("shell URL with a password", ["sh", "-c", f"kube-proxy --master=https://u:{SECRET}11@h --proxy-mode=ipvs"], []),
    ("unbalanced quotes", ["sh", "-c", f"kube-proxy --secret {SECRET}12 --proxy-mode=ipvs 'oops"], []),
    ("single dash", ["kube-proxy"], ["-token", f"{SECRET}13", "--proxy-mode=ipvs"]),
    ("bearer header in a string", ["sh", "-c", f"curl -H 'Authorization: Bearer {SECRET}14abcdef' x; "
                                               "kube-proxy --proxy-mode=ipvs"], []),
    ("nested shell", ["sh", "-c", f"sh -c 'kube-proxy --client-secret {SECRET}15 --proxy-mode=ipvs'"], []),
    ("tab separated", ["sh", "-c", f"kube-proxy\t--token\t{SECRET}16\t--proxy-mode=ipvs"], []),
]


def _daemonset(command: list[str], args: list[str]) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "spec": {"template": {"metadata": {"labels": {"k8s-app": "kube-proxy"}}, "spec": {"containers": [{
                "name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.30.0", "command": command,
                "args": args, "env": [{"name": "TOKEN", "value": f"{SECRET}-env"}]}]}}}}


@pytest.mark.parametrize(("case", "command", "args"), FORMS, ids=[f[0] for f in FORMS])
def test_no_secret_reaches_cluster_json(case: str, command: list[str], args: list[str]) -> None:
    """Before: the shell-string forms (`sh -c "... --some-secret VALUE"`) were written whole, secret and all."""
    kept = slim(_daemonset(command, args))
    assert kept is not None
    text = scrub_file("cluster.json", dump_list([kept]).encode()).decode()
    assert SECRET not in text, text
    ct = json.loads(text)["items"][0]["spec"]["template"]["spec"]["containers"][0]
    words = " ".join(ct.get("command", []) + ct.get("args", []))
    assert "--proxy-mode=ipvs" in words, words  # what svctrace reads is still there
    assert "kube-proxy" in words


def test_harmless_shell_strings_are_kept_as_written() -> None:
    cmd = ["sh", "-c", "exec kube-proxy --config=/var/lib/kube-proxy/config.conf --hostname-override=${NODE_NAME}"]
    kept = slim(_daemonset(cmd, []))
    assert kept is not None
    assert kept["spec"]["template"]["spec"]["containers"][0]["command"] == cmd


@pytest.mark.parametrize("line", [f"kube-proxy --some-secret {SECRET}", f"run -token '{SECRET}'",
                                  f'x --client-secret "{SECRET}" y', f"--password\t{SECRET}"])
def test_secret_flags_are_scrubbed_from_any_text(line: str) -> None:
    """The bundle's scrubber (every file, every JSON field) knows a credential flag with its value after a
    blank too, so that no other field carries one either."""
    assert scrub_file("proxy-mode", f"ok\n{line}\n".encode()) == b"ok\n"
    assert SECRET not in scrub_file("x.json", json.dumps({"a": [line, "ok"]}).encode()).decode()


@pytest.mark.parametrize("line", ["-A KUBE-SERVICES -m comment --comment \"ns/token-svc:http\" -j X",
                                  "my-secret-service 10.0.0.1", "--secret-name  -x"])
def test_harmless_lines_are_kept(line: str) -> None:
    assert scrub_file("proxy-mode", f"{line}\n".encode()) == f"{line}\n".encode()
