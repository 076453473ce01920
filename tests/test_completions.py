"""Shell completion through typer's own mechanism: `svctrace completion bash` is sourced into a real bash,
which calls svctrace back (`_SVCTRACE_COMPLETE`) at each TAB with COMP_WORDS/COMP_CWORD, as bash does.

Expected names come from the snapshot itself (load_snapshot), or from the fake API server's objects, not
from the completion code. A plain `pip install` gets the same completion: tests/test_packaging.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeAPIServer

from svctrace.model.snapshot import load_snapshot

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
DEMO = load_snapshot("demo").cluster
BUNDLED = REPO / "svctrace" / "data" / "demo"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def bash_complete(
    line: str, *, env: dict[str, str] | None = None, bin_dir: Path = BIN, prog: str = "svctrace"
) -> list[str]:
    """What bash offers at the end of `line` (a trailing space: a new, empty word), or — with `|` in the line —
    at the word that holds the `|` (the words after it stay on the line, as when the cursor is moved back)."""
    words = shlex.split(line.replace("|", "\0"))
    cword = next((i for i, w in enumerate(words) if "\0" in w), None)
    if cword is None:
        if line.endswith(" "):
            words.append("")
        cword = len(words) - 1
    words = [w.replace("\0", "") for w in words]
    array = " ".join(shlex.quote(w) for w in words)
    script = (
        f"source <({prog} completion bash)\n"
        f"COMP_WORDS=({array}); COMP_CWORD={cword}; COMPREPLY=()\n"
        f"_{prog.replace('-', '_')}_completion {prog}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    e = {k: v for k, v in os.environ.items() if not k.startswith("_SVCTRACE") and k != "COMP_WORDS"}
    e["PATH"] = f"{bin_dir}{os.pathsep}{e.get('PATH', '')}"
    e.update(env or {})
    p = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, env=e, timeout=120
    )
    assert p.returncode == 0, p.stderr
    return [x for x in p.stdout.splitlines() if x]


@pytest.mark.slow
def test_completion_script_is_typers_and_names_the_command() -> None:
    for shell, needle in (
        ("bash", "_SVCTRACE_COMPLETE=complete_bash"),
        ("zsh", "_SVCTRACE_COMPLETE=complete_zsh"),
        ("fish", "_SVCTRACE_COMPLETE=complete_fish"),
    ):
        p = subprocess.run(
            [str(BIN / "svctrace"), "completion", shell], capture_output=True, text=True, timeout=60
        )
        assert p.returncode == 0 and needle in p.stdout, p.stderr
    p = subprocess.run(
        [str(BIN / "svctrace"), "completion", "tcsh"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2


@pytest.mark.slow
def test_bash_completes_commands_options_and_choices() -> None:
    assert {"explain", "trace", "tui", "collect", "simulate", "learn", "completion"} <= set(
        bash_complete("svctrace ")
    )
    assert bash_complete("svctrace trace dump --pro") == ["--proto"]
    assert sorted(bash_complete("svctrace trace dump --pr")) == ["--previous-endpoint", "--proto"]
    assert bash_complete("svctrace trace dump --proto ") == ["tcp", "udp", "sctp", "icmp"]
    assert bash_complete("svctrace completion ") == ["bash", "zsh", "fish"]


@pytest.mark.slow
def test_bash_completes_the_demos_names() -> None:
    services = sorted(s.name for s in DEMO.services.values() if s.namespace == "default")
    # the Service argument, with --demo AFTER the word being completed (the cursor moved back)
    assert bash_complete("svctrace explain svc/| --demo") == [f"svc/{n}" for n in services]
    assert bash_complete("svctrace explain svc/web-| --demo") == ["svc/web-nodeport"]
    assert bash_complete("svctrace explain svc/| --demo -n kube-system") == ["svc/kube-dns"]
    assert bash_complete("svctrace explain svc/web --demo --node ") == list(DEMO.nodes)
    namespaces = sorted({s.namespace for s in DEMO.services.values()} | {p.namespace for p in DEMO.pods})
    assert bash_complete("svctrace explain svc/web --demo -n ") == namespaces
    pods = [p.name for p in DEMO.pods if p.namespace == "default"]
    assert bash_complete("svctrace explain svc/web --demo --from pod/") == [f"pod/{p}" for p in pods]
    assert bash_complete("svctrace explain svc/web --demo --from node/") == [f"node/{n}" for n in DEMO.nodes]
    # --snapshot PATH works the same, for tui too (its first argument is the Service once a snapshot is named)
    assert bash_complete(f"svctrace tui --snapshot {BUNDLED} -n kube-system svc/") == ["svc/kube-dns"]
    assert bash_complete(f"svctrace explain --snapshot={BUNDLED} svc/pay") == ["svc/payment"]


@pytest.mark.slow
def test_bash_offers_nothing_rather_than_failing() -> None:
    """No snapshot and no cluster: no names (bash falls back to file names), no error, no traceback."""
    env = {"HOME": "/nonexistent", "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": ""}
    assert bash_complete("svctrace explain svc/", env=env) == []
    assert bash_complete("svctrace explain svc/ --snapshot /no/such/dir", env=env) == []
    assert bash_complete("svctrace explain svc/web --context ", env=env) == []


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeAPIServer, Path]]:
    with FakeAPIServer() as fake:
        kc = fake.write_kubeconfig(tmp_path / "kubeconfig", context="fake")
        yield fake, Path(kc)


@pytest.mark.slow
def test_bash_completes_from_the_current_context_and_lists_contexts(
    api: tuple[FakeAPIServer, Path], tmp_path: Path
) -> None:
    fake, kc = api
    env = {"KUBECONFIG": str(kc), "HOME": str(tmp_path)}
    objs = fake.objects("services")
    in_default = sorted(o["metadata"]["name"] for o in objs if o["metadata"]["namespace"] == "default")
    assert bash_complete("svctrace explain svc/", env=env) == [f"svc/{n}" for n in in_default]
    # the fake serves no Namespace objects (as for a user who may not list them): the Services' namespaces
    assert fake.objects("namespaces") == []
    namespaces = sorted({o["metadata"]["namespace"] for o in objs})
    assert bash_complete("svctrace explain svc/ -n ", env=env) == namespaces
    assert bash_complete("svctrace explain svc/| -n kube-system", env=env) == ["svc/kube-dns"]
    assert bash_complete("svctrace tui svc/web", env=env) == [f"svc/{n}" for n in in_default if n.startswith("web")]
    nodes = [o["metadata"]["name"] for o in fake.objects("nodes")]
    assert bash_complete("svctrace explain svc/web --node ", env=env) == nodes
    # contexts from the kubeconfig (no API call), for explain, tui and collect alike
    for cmd in ("explain svc/web", "collect"):
        assert bash_complete(f"svctrace {cmd} --context ", env=env) == ["fake"]
    assert bash_complete(f"svctrace tui --kubeconfig {kc} --context f", env={"HOME": str(tmp_path)}) == [
        "fake"
    ]


@pytest.mark.slow
def test_zsh_and_fish_get_the_same_names_through_typers_protocol() -> None:
    """What the zsh and fish scripts run at a TAB (their words up to the cursor in _TYPER_COMPLETE_ARGS)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("_SVCTRACE") and k != "COMP_WORDS"}
    zsh = subprocess.run(
        [str(BIN / "svctrace")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **base,
            "_SVCTRACE_COMPLETE": "complete_zsh",
            "_TYPER_COMPLETE_ARGS": "svctrace explain --demo svc/w",
        },
    )
    assert zsh.stdout.startswith("_arguments") and re.findall(r'"([^"]+)"', zsh.stdout) == [
        f"svc/{s.name}"
        for s in sorted(DEMO.services.values(), key=lambda s: s.name)
        if s.namespace == "default" and s.name.startswith("w")
    ]
    fish = subprocess.run(
        [str(BIN / "svctrace")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **base,
            "_SVCTRACE_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
            "_TYPER_COMPLETE_ARGS": "svctrace explain --demo --node ",
        },
    )
    assert fish.stdout.split() == list(DEMO.nodes)


@pytest.mark.slow
def test_bash_completes_each_commands_output_formats() -> None:
    assert bash_complete("svctrace check -A -o ") == ["text", "wide", "json", "yaml", "jsonpath="]
    assert bash_complete("svctrace explain svc/web --demo -o ") == [
        "text", "wide", "json", "yaml", "jsonpath=", "dot", "svg", "mermaid"]
    assert bash_complete("svctrace trace dump -o j") == ["json", "jsonpath="]
