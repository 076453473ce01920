"""`svctrace tui` opens what explain opens: `--snapshot PATH` (the same option, read the same way), `--demo`,
one node's dump, and a live cluster (`--context`/`--kubeconfig`) read through the same collector and cache
as live explain, collected again on ctrl+r.

The first tests run the installed command in a real terminal (a pty); the live ones drive the app against
tests/fakeapi.py (the real kubernetes client, a fake API server, debug pods whose exec runs in network
namespaces holding the demo nodes' rules: root only).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi import FakeAPIServer, NodeNamespaces, demo_node_ips, netns_available
from textual.pilot import Pilot
from textual.worker import WorkerState

from svctrace.cli.source import Source, screen_opener
from svctrace.collect import live
from svctrace.model.snapshot import load_snapshot
from svctrace.tui.app import SvctraceApp

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "svctrace" / "data" / "demo"  # a snapshot directory shipped in the package
SVCTRACE = Path(sys.executable).parent / "svctrace"


def run_in_terminal(args: list[str], wait_for: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    """Run `svctrace ARGS` in a pty of 120x40, wait until the screen shows `wait_for`, press q; the exit
    status and everything the program wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of its own
        env = {k: v for k, v in os.environ.items() if k != "SVCTRACE_DEBUG"}
        env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
        os.execve(str(SVCTRACE), [str(SVCTRACE), *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    deadline = time.monotonic() + timeout
    pressed = False
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            if not pressed and wait_for in out:
                time.sleep(0.5)
                os.write(fd, b"q")
                pressed = True
        else:
            os.kill(pid, 9)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [["--snapshot", str(BUNDLED)], [str(BUNDLED)], ["--demo"], ["--snapshot", "demo"]]
)
def test_tui_opens_a_bundled_snapshot_like_explain(args: list[str]) -> None:
    """`tui --snapshot PATH` (and the path as an argument, --demo, --snapshot demo): the Service list of
    that snapshot, in a real terminal; q quits with 0."""
    code, screen = run_in_terminal(["tui", *args], b"slow-start")
    assert code == 0, screen[-2000:]
    names = {s.name for s in load_snapshot(str(BUNDLED)).cluster.services.values()}
    for name in names:
        assert name.encode() in screen, name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--snapshot", "no-such-dir"], "no-such-dir: no such snapshot"),
        (["--demo", "--snapshot", str(BUNDLED)], "give --snapshot or --demo, not both"),
        (["--demo", "--context", "prod"], "--context reads a live cluster; not with --demo"),
        (
            ["--snapshot", str(BUNDLED), "--kubeconfig", "kc"],
            "--kubeconfig reads a live cluster; not with --snapshot",
        ),
    ],
)
def test_tui_source_errors_are_explains(args: list[str], needle: str) -> None:
    """The same one-line errors as explain, from the same option handling (exit 2, before any terminal)."""
    for cmd in (["tui", *args], ["explain", "svc/web", *args]):
        p = subprocess.run([str(SVCTRACE), *cmd], capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.splitlines()) == 1, (cmd, p.stderr)


# -- live ----------------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAPIServer, str]]:
    ok, why = netns_available()
    if not ok:
        pytest.skip(f"live TUI against the fake API server: {why}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    with NodeNamespaces(demo_node_ips(), legacy={"node02"}) as nodes, FakeAPIServer() as fake:
        fake.node_netns = dict(nodes.names)
        yield fake, str(fake.write_kubeconfig(tmp_path / "kubeconfig"))


async def loaded(pilot: Pilot[SvctraceApp], timeout: float = 90.0) -> None:
    app = pilot.app
    deadline = time.monotonic() + timeout
    while app.state == "loading" or any(
        w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers
    ):
        assert time.monotonic() < deadline, "the TUI stayed busy"
        await pilot.pause(0.1)


def reads(fake: FakeAPIServer) -> list[str]:
    return [
        r.path
        for r in fake.requests
        if r.method == "GET" and r.resource != "pods/exec" and "/pods/svctrace-" not in r.path
    ]


@pytest.mark.slow
@pytest.mark.kernel
def test_live_tui_reads_the_screen_through_explains_cache_and_refreshes(
    cluster: tuple[FakeAPIServer, str],
) -> None:
    fake, kc = cluster
    src = Source(None, kubeconfig=kc)
    demo = load_snapshot("demo")

    async def run(expect_collect: bool) -> SvctraceApp:
        app = SvctraceApp(opener=screen_opener(src, None, None), source_title=src.describe())
        async with app.run_test(size=(120, 40)) as pilot:
            before = len(fake.state.created_bodies)
            await loaded(pilot)
            assert app.state == "ready", app.error
            rows = app.services_screen.all_rows
            # every Service of every namespace, with the health explain gives on the demo snapshot
            assert sorted(r.key for r in rows) == sorted(demo.cluster.services)
            assert {r.key: r.health for r in rows}["default/payment"] == "error"
            assert {r.key: r.health for r in rows}["default/web"] == "ok"
            # the rules of one node, the one explain picks for a cluster-IP question with no --from
            assert app.session is not None and app.session.node_names() == ["node01"]
            assert "the current context" in str(app.topbar_text())
            assert (len(fake.state.created_bodies) > before) is expect_collect
            # ctrl+r collects again, past the cache
            n = len(fake.requests)
            await pilot.press("ctrl+r")
            await pilot.pause()
            await loaded(pilot)
            assert app.state == "ready" and len(fake.requests) > n
            assert sorted(r.key for r in app.services_screen.all_rows) == sorted(demo.cluster.services)
            assert any("refreshed" in m for _, m in app.messages)
            await pilot.press("q")
        return app

    asyncio.run(run(expect_collect=True))
    # what it read: the screen's objects, cluster-wide, and one node's dump through a debug pod
    got = reads(fake)
    assert (
        "/api/v1/services" in got
        and "/api/v1/pods" in got
        and "/apis/discovery.k8s.io/v1/endpointslices" in got
    )
    assert [b["spec"]["nodeName"] for b in fake.state.created_bodies] == ["node01", "node01"]
    assert fake.live_pods() == []
    # the same cache as live explain's questions; a second TUI within the minute does not touch the cluster
    entries = list(live.cache_root().iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    n = len(fake.requests)
    asyncio.run(run(expect_collect=False))
    assert len([r for r in fake.requests[n:] if r.resource != "pods/exec"]) > 0  # only the refresh read


@pytest.mark.slow
def test_live_tui_says_why_it_cannot_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cluster configured: the error panel names the reason (the collector's CollectError), no traceback."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)

    async def run() -> None:
        app = SvctraceApp(opener=screen_opener(Source(None), None, None), source_title="the current context")
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            assert app.state == "failed" and app.error is not None and "no cluster configured" in app.error

    asyncio.run(run())


@pytest.mark.slow
def test_node_option_chooses_the_node_the_screens_show() -> None:
    """--node (shared with explain): the node whose rules the TUI shows; an unknown one is said, not fatal."""

    async def run(node: str) -> SvctraceApp:
        app = SvctraceApp("demo", node=node)
        async with app.run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            assert app.state == "ready"
            await pilot.press("q")
        return app

    app = asyncio.run(run("node04"))
    assert app.node == "node04" and "nftables" in str(app.topbar_text())
    app = asyncio.run(run("nope"))
    assert app.node == "node01"  # the first worker with rules, as without --node
    assert any("no node nope with rules" in m for _, m in app.messages)


@pytest.mark.slow
def test_a_service_as_the_first_argument_is_the_target_live_too() -> None:
    """`svctrace tui svc/web` (live, no snapshot) opens that Service: it is not taken for a missing file."""
    p = subprocess.run(
        [str(SVCTRACE), "tui", "svc/web"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert p.returncode == 2 and "the TUI needs a terminal" in p.stderr and "no such snapshot" not in p.stderr
    p = subprocess.run(
        [str(SVCTRACE), "tui", "web"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60
    )
    assert (
        p.returncode == 2 and "web: no such snapshot or dump" in p.stderr
    )  # a bare word: a file that is not there
