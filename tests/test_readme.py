"""The README's examples run as they are, from the top of the repository, on files the repository ships, and
show something true and interesting: a translation to a pod, a rejection and why, a lesson list, rules —
never a packet that meets no rule ("ACCEPT, not translated", what an address no bundled dump knows gives).

The examples that need a live cluster are in their own block; the test checks that each of them does (no
snapshot, no dump) instead of running it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def commands() -> list[str]:
    out = []
    for block in SH_BLOCK.findall(README):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith(("svctrace ", "kubectl svctrace ")):
                out.append(line)
    return out


def needs_a_cluster(cmd: str) -> bool:
    argv = shlex.split(cmd)
    if argv[0] == "kubectl":
        argv = argv[1:]
    sub = argv[1]
    if sub == "collect":
        return True
    if sub in ("explain", "tui"):
        return "--demo" not in argv and "--snapshot" not in argv
    return False


RUNNABLE = [c for c in commands() if not needs_a_cluster(c)]
LIVE = [c for c in commands() if needs_a_cluster(c)]

# What each example must show: a pattern its output holds (beyond the generic checks below).
SHOWS: list[tuple[str, str]] = [
    ("explain svc/web -n default --snapshot", r"web-6d4f9c7b8-\w+"),  # the pods behind it, by name
    ("explain svc/frontend", r"loadBalancerSourceRanges"),  # the source range that refuses the client
    ("explain kube-dns", r"coredns-\w+"),
    ("explain svc/payment", r"no endpoints|selector-matches-no-pods|no pod"),
    ("--proto udp --dport 53", r"DNAT to 10\.244\.0\.[23]:53|ACCEPT\s+to 10\.244\.0\.2:53"),
    ("--dst 10.96.50.50", r"REJECT"),
    ("--local-ip 192.168.56.12 -o json", r'"dnat": "10\.244\.'),
    ("--from-node", r"DNAT to 192\.168\.56\.10:6443"),
    ("nodes/node03", r"ACCEPT\s+10\.244\.\d+\.\d+:8080"),
    ("nodes/node04", r"ACCEPT\s+10\.244\.\d+\.\d+:8080"),
    ("learn --list", r"clusterip"),
    ("simulate", r"dnat to 10\.244\."),
    ("kubectl svctrace explain", r"web-6d4f9c7b8-\w+"),
    ("check -A --demo", r"payment"),  # the worst first: the Service without endpoints
    ("jsonpath=", r"^payment slow-start$"),
    ("-o mermaid", r"flowchart TB[\s\S]*web-6d4f9c7b8"),
    ("learn drill --list", r"netpol-port"),
]


def run(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SVCTRACE_DEBUG",) and not k.startswith("FORCE_COLOR")
    }
    env.update({"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    env.update(env_extra or {})
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_the_readme_has_examples_of_both_kinds() -> None:
    assert len(RUNNABLE) >= 10 and any("trace" in c for c in RUNNABLE), RUNNABLE
    # the live ones: explain and tui without a snapshot, and collect
    assert {shlex.split(c)[1] for c in LIVE} == {"explain", "tui", "collect"}, LIVE
    for cmd in RUNNABLE:
        assert any(key in cmd for key, _ in SHOWS) or cmd.startswith("svctrace tui"), (
            f"a README example without an expectation here: {cmd}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in RUNNABLE if not c.startswith("svctrace tui")])
def test_readme_example_runs_on_bundled_files_and_shows_something(cmd: str) -> None:
    argv = shlex.split(cmd)
    env_extra = None
    if argv[0] == "kubectl":
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip(
                "kubectl is not installed (.ci/run installs Debian's kubernetes-client when it is missing)"
            )
        argv[0] = kubectl
        env_extra = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        }  # where pip put kubectl-svctrace
    else:
        argv[0] = str(BIN / "svctrace")
    p = run(argv, env_extra)
    out = p.stdout + p.stderr
    assert p.returncode in (0, 1), out  # 1: some outcome is dropped or rejected (the example says why)
    assert p.stdout.strip(), out
    assert "not translated" not in out, f"{cmd}: a packet no rule knows\n{out}"
    for key, pattern in SHOWS:
        if key in cmd:
            assert re.search(pattern, out, re.M), f"{cmd}: expected /{pattern}/ in\n{out}"
    if cmd.endswith("-o json"):
        doc = json.loads(p.stdout)
        assert doc["outcomes"] and all(o["dnat"] for o in doc["outcomes"])


@pytest.mark.slow
def test_readme_tui_example_opens_the_demo() -> None:
    from test_tui_sources import run_in_terminal

    [cmd] = [c for c in RUNNABLE if c.startswith("svctrace tui")]
    code, screen = run_in_terminal(shlex.split(cmd)[1:], b"slow-start")
    assert code == 0 and b"payment" in screen and b"kube-dns" in screen


def test_readme_links_stay_inside_the_repository() -> None:
    """Every relative link names a file of the repository (in every clone and in the sdist), none leaves it,
    and no link or example names a path of the machine it was written on."""
    links = re.findall(r"\]\(([^)]+)\)", README)
    assert links
    for link in links:
        if link.startswith(("https://", "http://", "#")):
            continue
        target = (REPO / link.split("#")[0]).resolve()
        assert target.is_relative_to(REPO) and target.exists(), link
    assert not re.search(r"(?<![\w.])/(work|tmp|root|home)/", README)
