"""`svctrace tui`: headless Pilot tests of every screen, SVG snapshots, and a 10k-Service dump.

Expected answers come from `explain()` / `trace()` and from the dumps themselves, not from the TUI's
own code. SVG snapshots live in tests/__snapshots__/test_tui/ (pytest-textual-snapshot); after a
deliberate change of the screens, look at the new pictures and accept them with
`pytest tests/test_tui.py --snapshot-update`.
"""

from __future__ import annotations

import asyncio
import functools
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual import events
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Input, Label, OptionList, Select, Static
from textual.worker import WorkerState

from svctrace.browse.data import ChainRef, RuleView
from svctrace.dataplane.contract import visible_steps
from svctrace.dataplane.iptables import load_ruleset
from svctrace.dataplane.ipvs import load_ipvs
from svctrace.dataplane.nftables import ir, load_nft
from svctrace.dataplane.nftables.printer import fmt_element
from svctrace.explain import ExplainedOutcome, Request, explain
from svctrace.kubeproxy.walk import trace_iptables as trace
from svctrace.model.packet import Packet
from svctrace.model.snapshot import load_snapshot
from svctrace.tui.app import SvctraceApp
from svctrace.tui.screens import (
    BrowserScreen,
    CommandScreen,
    CompareScreen,
    HelpScreen,
    ModeScreen,
    ServicesScreen,
    TraceScreen,
)
from svctrace.tui.widgets import ChainBrowser, ChoiceScreen, VirtualTable

REPO = Path(__file__).resolve().parents[1]
SIZE = (120, 40)
SNAP = load_snapshot("demo")


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run on its own event loop (no pytest plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def node_dump(node: str) -> str:
    text = SNAP.nodes[node].get("iptables-save")
    assert text
    return text


async def settle(pilot: Pilot[Any], timeout: float = 60.0) -> None:
    """Until no worker runs and a few refreshes pass quietly (workers start workers)."""
    app = pilot.app
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        assert time.monotonic() < deadline, "the app stayed busy"
        await pilot.pause()
        busy = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if busy:
            quiet = 0
            await app.workers.wait_for_complete(busy)
        else:
            quiet += 1


async def command(pilot: Pilot[Any], text: str) -> None:
    await pilot.press("colon")
    await pilot.pause()
    assert isinstance(pilot.app.screen, CommandScreen)
    pilot.app.screen.query_one("#command", Input).value = text
    await pilot.press("enter")
    await settle(pilot)


def plain(widget: Static) -> str:
    """The text a Static shows, whatever rich renderable it holds."""
    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(content)
    return console.export_text()


def severity_of(key: str) -> str:
    """The health mark explain's diagnostics call for: the worst over the Service's ports."""
    svc = SNAP.cluster.services[key]
    sevs: set[str] = set()
    for p in svc.ports:
        exp = explain(SNAP, Request(f"svc/{key}", port=str(p.port) if len(svc.ports) > 1 else None))
        sevs |= {d.severity for d in exp.diagnostics}
    return "error" if "error" in sevs else "warning" if "warning" in sevs else "ok"


async def to_outcomes(pilot: Pilot[Any], scr: TraceScreen) -> None:
    """`o` switches between the outcomes and the rules: press it when the outcomes do not have the focus."""
    if not scr.query_one("#outcomes", OptionList).has_focus:
        await pilot.press("o")
        await pilot.pause()
    assert scr.query_one("#outcomes", OptionList).has_focus


def outcome_prompts(scr: TraceScreen) -> list[str]:
    ol = scr.query_one("#outcomes", OptionList)
    return [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]


def check_outcomes(prompts: list[str], exp_outcomes: list[ExplainedOutcome]) -> None:
    assert len(prompts) == len(exp_outcomes)
    for text, o in zip(prompts, exp_outcomes, strict=True):
        assert o.verdict.upper() in text
        pct = "100%" if o.probability > 0.9995 else f"{o.probability * 100:.1f}%"
        assert pct in text
        for part in (o.endpoint, o.pod, o.endpoint_node):
            if part:
                assert part in text, (part, text)
        if o.verdict == "accept":
            assert f"masquerade {'yes' if o.masquerade else 'no'}" in text


# -- the Service list --------------------------------------------------------------------------------

@pytest.mark.slow
@run_async
async def test_service_list_health_navigate_filter() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        scr = app.services_screen
        table = scr.query_one("#table", VirtualTable)
        assert [r.key for r in table.rows] == list(SNAP.cluster.services)
        for row in table.rows:
            assert row.health == severity_of(row.key), row.key
        # docs/explain.md: payment selects no pod, slow-start has no ready pod
        assert {"default/payment", "default/slow-start"} <= {r.key for r in table.rows if r.health == "error"}

        await pilot.press("down", "down")
        assert table.cursor == 2 and scr.selected is not None and scr.selected.key == table.rows[2].key
        await pilot.press("end")
        assert table.cursor == len(table.rows) - 1
        await pilot.press("home")
        assert table.cursor == 0

        await pilot.press("slash")
        assert app.focused is scr.query_one("#filter", Input)
        await pilot.press("w", "e", "b")
        await pilot.pause(0.3)
        assert {r.key for r in table.rows} == {k for k in SNAP.cluster.services if "web" in k}
        await pilot.press("enter")
        assert app.focused is table
        assert "/web" in plain(scr.query_one("#title", Static))
        await pilot.press("escape")
        assert len(table.rows) == len(SNAP.cluster.services)

        scr.set_filter("payment")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TraceScreen) and app.screen.key == "default/payment"
        await pilot.press("escape")
        assert app.screen is scr


@pytest.mark.slow
@run_async
async def test_namespace_and_target_open_the_trace() -> None:
    app = SvctraceApp("demo", target="kube-dns", namespace="kube-system")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert {r.namespace for r in app.services_screen.rows} == {"kube-system"}
        assert isinstance(app.screen, TraceScreen) and app.screen.key == "kube-system/kube-dns"
        exp = explain(SNAP, Request("svc/kube-dns", namespace="kube-system"))
        check_outcomes(outcome_prompts(app.screen), exp.outcomes)


# -- the chain browser --------------------------------------------------------------------------------

@pytest.mark.slow
@run_async
async def test_browser_follow_jump_and_back_search() -> None:
    rs = load_ruleset(node_dump("node01"))
    services = rs.chain("nat", "KUBE-SERVICES")
    assert services is not None
    idx = next(i for i, r in enumerate(services.rules) if r.comment == "default/web:http cluster IP")
    target = services.rules[idx].target
    assert target is not None
    svc_chain = target.name

    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "chain KUBE-SERVICES")
        scr = app.screen
        assert isinstance(scr, BrowserScreen) and scr.node == "node01"
        b = scr.query_one(ChainBrowser)
        rules = b.query_one("#rules", VirtualTable)
        assert b.view is not None and b.view.ref == ChainRef("nat", "KUBE-SERVICES")
        assert [r.text for r in rules.rows] == [r.text for r in services.rules]
        assert app.focused is rules
        for _ in range(idx):
            await pilot.press("down")
        assert rules.cursor == idx

        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef("nat", svc_chain)
        target_chain = rs.chain("nat", svc_chain)
        assert target_chain is not None
        assert [r.text for r in rules.rows] == [r.text for r in target_chain.rules]
        assert svc_chain in plain(b.query_one("#crumbs", Static))

        sep = next(i for i, r in enumerate(target_chain.rules) if r.target and r.target.name.startswith("KUBE-SEP-"))
        rules.move_to(sep)
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef("nat", target_chain.rules[sep].target.name)  # type: ignore[union-attr]
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef("nat", svc_chain) and rules.cursor == sep
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef("nat", "KUBE-SERVICES") and rules.cursor == idx

        # a verdict is not a jump: nothing to follow, a message says why
        accept = [i for i, r in enumerate(rules.rows) if isinstance(r, RuleView) and r.jump is None]
        if accept:
            rules.move_to(accept[0])
            await pilot.press("enter")
            assert b.view.ref == ChainRef("nat", "KUBE-SERVICES")

        # search every rule: the hits are the dump's lines holding the text
        await pilot.press("slash")
        b.query_one("#search", Input).value = "10.244.2.11"
        await pilot.press("enter")
        await settle(pilot)
        want = [ln for ln in node_dump("node01").splitlines() if ln.startswith("-A") and "10.244.2.11" in ln]
        assert b.view.kind == "search" and len(b.view.hits) == len(want)
        assert sorted(h.text for h in b.view.hits) == sorted(want)
        first = b.view.hits[0]
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef(first.table, first.chain)
        assert isinstance(rules.row, RuleView) and rules.row.line == first.line
        await pilot.press("n")
        await settle(pilot)
        second = b.hits[1]
        assert b.view.ref == ChainRef(second.table, second.chain) and rules.row.line == second.line
        await pilot.press("escape")  # back to the results
        await settle(pilot)
        assert b.view.kind == "search"

        await pilot.press("t")  # another table
        await settle(pilot)
        assert b.table != "nat" or len(rs.tables) == 1
        while b.history:
            await pilot.press("escape")
            await settle(pilot)
        await pilot.press("escape")
        assert isinstance(app.screen, ServicesScreen)


@pytest.mark.slow
@run_async
async def test_counters_are_shown(tmp_path: Path) -> None:
    dump = tmp_path / "node01.iptables-save"
    dump.write_text("".join(f"[7:420] {ln}\n" if ln.startswith("-A") else ln + "\n"
                            for ln in node_dump("node01").splitlines()))
    app = SvctraceApp(str(dump))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.session is not None and app.session.kind == "dump"
        await command(pilot, "chain KUBE-SERVICES")
        b = app.screen.query_one(ChainBrowser)
        rules = b.query_one("#rules", VirtualTable)
        assert [c.key for c in rules.columns][2:4] == ["pkts", "bytes"]
        assert str(rules._cells(0)[2]) == "7"
        assert "7 packets, 420 bytes" in plain(b.query_one("#detail", Static))


# -- the trace --------------------------------------------------------------------------------------

@pytest.mark.slow
@run_async
async def test_trace_outcomes_match_explain_and_light_the_path() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.services_screen.select("default/web")
        await pilot.press("enter")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, TraceScreen)
        exp = explain(SNAP, Request("svc/web", namespace="default"))
        check_outcomes(outcome_prompts(scr), exp.outcomes)

        # the browser shows the deciding node's rules, the first outcome's DNAT rule selected
        b = scr.query_one(ChainBrowser)
        assert b.adapter is not None and b.adapter.node == exp.node
        path = [s for s in visible_steps(exp.outcomes[0].path) if s.rule is not None]
        dnat = next(s for s in path if s.action.startswith("DNAT"))
        rules = b.query_one("#rules", VirtualTable)
        assert b.view is not None and b.view.ref == ChainRef(dnat.table, dnat.chain)
        assert isinstance(rules.row, RuleView) and rules.row.index == dnat.rule
        assert rules._row_class is not None and rules._row_class(rules.row) == "hop"
        assert {(s.table, s.chain, s.rule) for s in path} == set(b.lit)
        await pilot.press("left_square_bracket")
        await settle(pilot)
        before = path[path.index(dnat) - 1]
        assert b.view.ref == ChainRef(before.table, before.chain) and rules.row.index == before.rule

        # another outcome lights its own path (the outcomes have the focus: `o` would switch to the rules)
        assert scr.query_one("#outcomes", OptionList).has_focus
        await pilot.press("down")
        await settle(pilot)
        path2 = [s for s in visible_steps(exp.outcomes[1].path) if s.rule is not None]
        assert {(s.table, s.chain, s.rule) for s in path2} == set(b.lit)

        # a pod that calls its own Service: hairpin masquerade
        pod = "pod/default/web-6d4f9c7b8-2lqzx"
        scr.query_one("#source", Select).value = pod
        await pilot.pause(0.2)
        await settle(pilot)
        exp2 = explain(SNAP, Request("svc/web", namespace="default", source=pod))
        check_outcomes(outcome_prompts(scr), exp2.outcomes)
        diags = plain(scr.query_one("#diags", Static))
        for d in exp2.diagnostics:
            assert d.code in diags


@pytest.mark.slow
@run_async
async def test_trace_local_policy_drop_and_its_hint() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_trace("default/frontend")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, TraceScreen)
        scr.query_one("#via", Select).value = "load-balancer"
        scr.query_one("#source", Select).value = "192.168.56.99"
        scr.query_one("#node", Select).value = "node02"
        await pilot.pause(0.2)
        await settle(pilot)
        exp = explain(SNAP, Request("svc/frontend", namespace="default", to="load-balancer", node="node02",
                                    source="192.168.56.99"))
        check_outcomes(outcome_prompts(scr), exp.outcomes)
        diags = plain(scr.query_one("#diags", Static))
        for d in exp.diagnostics:
            assert d.code in diags
            if d.severity == "error":
                assert d.hint.split()[0] in diags
        assert scr.view is not None and scr.view.node == "node02"
        assert scr.query_one(ChainBrowser).adapter.node == "node02"  # type: ignore[union-attr]


@pytest.mark.slow
@run_async
async def test_trace_errors_are_shown_not_raised(tmp_path: Path) -> None:
    snap_dir = tmp_path / "snap"
    with resources.as_file(resources.files("svctrace.data").joinpath("demo")) as demo:
        shutil.copytree(demo, snap_dir)
    (snap_dir / "nodes" / "node02" / "iptables-save").unlink()
    app = SvctraceApp(str(snap_dir))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_trace("default/frontend")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, TraceScreen)
        scr.query_one("#via", Select).value = "load-balancer"
        scr.query_one("#node", Select).value = "node01"
        await pilot.pause(0.2)
        await settle(pilot)
        assert scr.view is not None  # node01 still answers
        await command(pilot, "node node02")  # no dump: the browser says so
        assert isinstance(app.screen, TraceScreen)
        assert any("node02" in m for sev, m in app.messages if sev == "warning")


@pytest.mark.slow
@run_async
async def test_unreadable_input_is_an_error_panel(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"\x00\x01binary")
    for path in (str(tmp_path / "missing"), str(bad)):
        app = SvctraceApp(path)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert app.state == "failed" and app.error
            panel = app.services_screen.query_one("#error", Static)
            assert panel.display and app.error in plain(panel)
            assert any(sev == "error" for sev, _ in app.messages)
            await pilot.press("enter", "b", "s", "colon")  # nothing to open: told so, no crash
            await pilot.press("escape")
            assert any("nothing open" in m for _, m in app.messages)
            await pilot.press("q")
        assert app.return_code == 0


# -- side by side -------------------------------------------------------------------------------------

@pytest.mark.slow
@run_async
async def test_side_by_side_frontend_differs_between_node01_and_node02() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.services_screen.select("default/frontend")
        await pilot.press("s")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, CompareScreen) and scr.result is not None
        res = scr.result
        assert (res.left, res.right) == ("node01", "node02") and res.differ
        for node, view in ((res.left, res.left_view), (res.right, res.right_view)):
            assert view is not None
            exp = explain(SNAP, Request("svc/frontend", namespace="default", to=res.request.via, node=node,
                                        source=res.request.source))
            assert [(o.verdict, o.endpoint) for o in view.outcomes] == [(o.verdict, o.endpoint) for o in exp.outcomes]
            assert [d.code for d in view.diagnostics] == [d.code for d in exp.diagnostics]
        # lines marked as one node's only are in that node's dump and not in the other's
        left_only = [ln.text.split(None, 1)[1] for ln in res.left_rules if ln.side == "left"]
        right_only = [ln.text.split(None, 1)[1] for ln in res.right_rules if ln.side == "right"]
        assert left_only and right_only
        for line in left_only:
            assert line in node_dump("node01") and line not in node_dump("node02")
        for line in right_only:
            assert line in node_dump("node02") and line not in node_dump("node01")
        diff = scr.query_one("#diff", VirtualTable)
        await pilot.press("d")
        assert all(a.side != "both" for a, _ in diff.rows)
        await pilot.press("2")
        await settle(pilot)
        assert scr.result is not None and scr.result.right == "node03"  # the next node after node02


@pytest.mark.slow
@run_async
async def test_side_by_side_from_the_trace_keeps_the_request() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_trace("default/web-nodeport")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, TraceScreen)
        scr.query_one("#via", Select).value = "node-port"
        await pilot.pause(0.2)
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        cmp = app.screen
        assert isinstance(cmp, CompareScreen) and cmp.result is not None
        assert cmp.result.request.via == "node-port" and not cmp.result.differ


def test_the_browser_and_explain_share_each_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain browser reads a node's dumps through the snapshot's cache: the objects explain walks."""
    import svctrace.dataplane.iptables.parser as parser
    from svctrace.browse.adapters import IPVSAdapter, NftAdapter
    from svctrace.browse.data import IptablesAdapter
    from svctrace.browse.session import SnapshotSession
    from svctrace.dataplane.node import load_dataplane

    snap = load_snapshot("demo")
    calls: list[str] = []
    load = parser._Loader.load
    monkeypatch.setattr(parser._Loader, "load", lambda self: calls.append(self.source) or load(self))  # type: ignore[func-returns-value]
    session = SnapshotSession(snap)
    adapters = {n: session.adapter(n) for n in session.node_names()}
    for key in ("default/web", "default/frontend"):  # explain's questions, and each node's rules side by side
        session.health(key)
        session.compare(session.compare_request(key))
    monkeypatch.undo()
    assert calls and len(calls) == len(set(calls)), calls  # every dump parsed at most once
    ipt, ipvs, nft = adapters["node01"], adapters["node03"], adapters["node04"]
    assert isinstance(ipt, IptablesAdapter) and ipt.rs is load_dataplane(snap, "node01", 4).iptables
    dp = load_dataplane(snap, "node03", 4)
    assert isinstance(ipvs, IPVSAdapter) and ipvs.ipvs is dp.ipvs and ipvs.ipsets is dp.ipsets
    assert ipvs.iptables is not None and ipvs.iptables.rs is dp.iptables
    assert isinstance(nft, NftAdapter) and nft.rs is load_dataplane(snap, "node04", 4).nft


# -- IPVS and nftables nodes (the demo's node03 and node04) ------------------------------------------------

KP = "ip kube-proxy"


def node04_nft() -> ir.Table:
    """node04's kube-proxy table, read by the engine from the file explain walks (nft.json)."""
    return load_nft(SNAP.nodes["node04"].get("nft.json") or "").tables[KP]


@pytest.mark.slow
@run_async
async def test_browse_an_ipvs_node_virtual_servers_iptables_and_ipsets() -> None:
    ipvs = load_ipvs(SNAP.nodes["node03"].get("ipvsadm") or "")
    rs = load_ruleset(node_dump("node03"))
    ipset_lines = (SNAP.nodes["node03"].get("ipset") or "").splitlines()
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "node node03")
        scr = app.screen
        assert isinstance(scr, BrowserScreen) and scr.node == "node03"
        assert "node03 ipvs" in plain(scr.query_one("#topbar", Static))
        b = scr.query_one(ChainBrowser)
        assert b.adapter is not None and b.adapter.kind == "ipvs"
        assert "(ipvs)" in plain(b.query_one("#crumbs", Static))
        assert b.adapter.tables()[0] == "ipvs" and set(b.adapter.tables()) == {"ipvs", "ipsets", *rs.tables}
        chains = b.query_one("#chains", VirtualTable)
        rules = b.query_one("#rules", VirtualTable)
        # the ipvs table: one chain per virtual server, named as the paths name it
        assert b.table == "ipvs" and [c.name for c in chains.rows] == [vs.label for vs in ipvs.services]
        assert app.focused is chains
        vs = next(v for v in ipvs.services if v.port == 30080)  # web-nodeport's node port
        chains.move_to([v.label for v in ipvs.services].index(vs.label))
        await pilot.press("enter")
        await settle(pilot)
        assert b.view is not None and b.view.ref == ChainRef("ipvs", vs.label)
        assert [r.text for r in rules.rows] == [r.text for r in vs.reals] and len(vs.reals) == 3
        for row, real in zip(rules.rows, vs.reals, strict=True):
            assert real.endpoint in row.target_args and str(real.forward) == row.target

        # the iptables rules beside IPVS; a rule that matches an ipset leads to the set's members
        await command(pilot, "chain KUBE-SERVICES")
        services = rs.chain("nat", "KUBE-SERVICES")
        assert services is not None
        assert b.view.ref == ChainRef("nat", "KUBE-SERVICES")
        assert [r.text for r in rules.rows] == [r.text for r in services.rules]
        idx = next(i for i, r in enumerate(services.rules)
                   if r.target and r.target.name == "ACCEPT" and "--match-set KUBE-CLUSTER-IP " in r.text)
        rules.move_to(idx)
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef("ipsets", "KUBE-CLUSTER-IP")
        assert [r.text for r in rules.rows] == [ln for ln in ipset_lines if ln.startswith("add KUBE-CLUSTER-IP ")]
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef("nat", "KUBE-SERVICES") and rules.cursor == idx

        # search reads the three dumps
        b.search("10.244.2.11")
        await settle(pilot)
        want = [ln for f in ("ipvsadm", "iptables-save", "ipset") for ln in (SNAP.nodes["node03"].get(f) or "")
                .splitlines() if "10.244.2.11" in ln]
        assert b.view.kind == "search" and sorted(h.text for h in b.view.hits) == sorted(want)

        await command(pilot, "mode")
        assert isinstance(app.screen, ModeScreen)
        modes = {m.node: m for m in app.screen.modes}
        assert (modes["node03"].mode, modes["node04"].mode) == ("ipvs", "nftables")
        assert modes["node03"].browser.startswith("ipvs") and modes["node04"].browser == "nftables"


@pytest.mark.slow
@run_async
async def test_browse_an_nftables_node_follow_vmaps_and_back() -> None:
    kp = node04_nft()
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "node node04")
        scr = app.screen
        assert isinstance(scr, BrowserScreen)
        assert "node04 nftables" in plain(scr.query_one("#topbar", Static))
        b = scr.query_one(ChainBrowser)
        assert b.adapter is not None and b.adapter.kind == "nftables"
        chains = b.query_one("#chains", VirtualTable)
        rules = b.query_one("#rules", VirtualTable)
        assert b.view is not None and b.view.ref == ChainRef(KP, "services")  # kube-proxy's entry point
        services = kp.chains["services"].rules
        assert [r.text for r in rules.rows] == [r.text for r in services]
        # base chains first, with their hook; sets and maps by @name
        base = [c for c in kp.chains.values() if c.hook]
        assert [c.name for c in chains.rows[:len(base)]] == [c.name for c in base]
        for row, c in zip(chains.rows, base, strict=False):
            assert f"{c.type} {c.hook}" in str(b._chain_cell(row, "name"))
        assert {c.name for c in chains.rows if c.name.startswith("@")} == {"@" + n for n in kp.sets}

        # a verdict map lookup opens the map; an element's goto opens its chain; esc comes back
        i = next(i for i, r in enumerate(services) if "vmap @service-nodeports" in r.text)
        rules.move_to(i)
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, "@service-nodeports")
        elements = kp.sets["service-nodeports"].elements
        assert [r.text.split("{ ", 1)[1].rstrip(" }") for r in rules.rows] == [fmt_element(e) for e in elements]
        k = next(k for k, e in enumerate(elements) if "30080" in fmt_element(e))
        target = elements[k].data
        assert isinstance(target, ir.Verdict) and target.target
        rules.move_to(k)
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, target.target)
        assert [r.text for r in rules.rows] == [r.text for r in kp.chains[target.target].rules]
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, "@service-nodeports") and rules.cursor == k
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, "services") and rules.cursor == i

        # numgen's anonymous vmap: enter offers its endpoints' chains
        svc = next(n for n in kp.chains if n.startswith("service-") and "/web-nodeport/" in n)
        await command(pilot, f"chain {svc}")
        assert b.view.ref == ChainRef(KP, svc)
        j, vmap = next((j, s) for j, r in enumerate(kp.chains[svc].rules) for s in r.stmts
                       if isinstance(s, ir.Vmap) and isinstance(s.data, ir.AnonSet))
        assert isinstance(vmap.data, ir.AnonSet)
        ways = [e.data.target for e in vmap.data.elements if isinstance(e.data, ir.Verdict)]
        rules.move_to(j)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        assert [ref.chain for _label, ref in app.screen.choices] == ways
        await pilot.press("down", "enter")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, ways[1])
        await pilot.press("escape")
        await settle(pilot)
        assert b.view.ref == ChainRef(KP, svc) and rules.cursor == j

        # search: rules and map elements holding the text, or in a chain whose name holds it
        b.search("10.244.2.11")
        await settle(pilot)
        want = {(name, r.index) for name, c in kp.chains.items() for r in c.rules
                if "10.244.2.11" in name or "10.244.2.11" in r.text}
        want |= {("@" + name, n) for name, st in kp.sets.items() for n, e in enumerate(st.elements, 1)
                 if "10.244.2.11" in fmt_element(e)}
        assert b.view.kind == "search" and {(h.chain, h.index) for h in b.view.hits} == want
        hit = b.view.hits[0]
        await pilot.press("enter")
        await settle(pilot)
        assert b.view.ref == ChainRef(hit.table, hit.chain) and rules.row.index == hit.index

        # `b` on a Service, node04 being the current node: its service- chain
        await command(pilot, "svc")
        app.services_screen.select("default/web")
        await pilot.press("b")
        await settle(pilot)
        web = next(n for n in kp.chains if n.startswith("service-") and n.endswith("-default/web/tcp/http"))
        assert isinstance(app.screen, BrowserScreen)
        b2 = app.screen.query_one(ChainBrowser)
        assert b2.view is not None and b2.view.ref == ChainRef(KP, web)


@pytest.mark.slow
@run_async
async def test_trace_node_port_on_ipvs_and_nftables_nodes_lights_the_explained_path() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_trace("default/web-nodeport")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, TraceScreen)
        b = scr.query_one(ChainBrowser)
        rules = b.query_one("#rules", VirtualTable)
        for node, kind, table in (("node03", "ipvs", "ipvs"), ("node04", "nftables", KP)):
            scr.query_one("#via", Select).value = "node-port"
            scr.query_one("#node", Select).value = node
            await pilot.pause(0.2)
            await settle(pilot)
            exp = explain(SNAP, Request("svc/web-nodeport", namespace="default", to="node-port", node=node))
            assert exp.proxy_mode == kind
            check_outcomes(outcome_prompts(scr), exp.outcomes)
            assert scr.view is not None and scr.view.node == node
            assert b.adapter is not None and b.adapter.node == node and b.adapter.kind == kind
            for n, o in enumerate(exp.outcomes[:2]):
                if n:
                    await to_outcomes(pilot, scr)
                    await pilot.press("down")
                    await settle(pilot)
                path = [s for s in visible_steps(o.path) if s.rule is not None]
                assert {(s.table, s.chain, s.rule) for s in path} == set(b.lit)
                # the rule that picked the endpoint is open: IPVS's real server, nftables' DNAT
                pick = next(s for s in path if s.table == table and s.action.startswith(("IPVS", "DNAT")))
                assert b.view is not None and b.view.ref == ChainRef(pick.table, pick.chain)
                assert isinstance(rules.row, RuleView) and (rules.row.index, rules.row.text) == (pick.rule, pick.text)
                assert o.endpoint and o.endpoint in rules.row.text
            # every hop of the selected path lands on its rule, iptables tables included
            path = [s for s in visible_steps(exp.outcomes[1].path) if s.rule is not None]
            b.go_hop(0)
            await settle(pilot)
            for n, s in enumerate(path):
                if n:
                    await pilot.press("right_square_bracket")  # small chains open at once, no worker
                assert b.view.ref == ChainRef(s.table, s.chain), (node, s)
                assert isinstance(rules.row, RuleView) and (rules.row.index, rules.row.text) == (s.rule, s.text)
            await to_outcomes(pilot, scr)
            await pilot.press("up")


@pytest.mark.slow
@run_async
async def test_side_by_side_iptables_and_nftables_nodes_same_backends() -> None:
    kp = node04_nft()
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_compare("default/web-nodeport", None, "node01", "node04")
        await settle(pilot)
        scr = app.screen
        assert isinstance(scr, CompareScreen) and scr.result is not None
        res = scr.result
        assert (res.left, res.right) == ("node01", "node04") and res.request.via == "node-port"
        ends = []
        for node, view in ((res.left, res.left_view), (res.right, res.right_view)):
            assert view is not None
            exp = explain(SNAP, Request("svc/web-nodeport", namespace="default", to="node-port", node=node))
            assert sorted((o.verdict, o.endpoint) for o in view.outcomes) == sorted(
                (o.verdict, o.endpoint) for o in exp.outcomes)
            ends.append({o.endpoint for o in exp.outcomes})
        assert ends[0] == ends[1] and len(ends[0]) == 3 and not res.differ
        assert "both nodes answer the same" in plain(scr.query_one("#title", Static))
        # each side lists its own node's rules for the Service, in its own syntax
        left = [ln.text.split(None, 1)[1] for ln in res.left_rules if ln.side == "left"]
        right = [ln.text for ln in res.right_rules if ln.side == "right"]
        assert left and right
        assert all(line in node_dump("node01") for line in left)
        nft_rules = {f"add rule {KP} {name} {r.text}" for name, c in kp.chains.items() for r in c.rules}
        nft_elements = {f"add element {KP} {name} {{ {fmt_element(e)} }}" for name, st in kp.sets.items()
                        for e in st.elements}
        assert all(line in nft_rules | nft_elements for line in right)
        for endpoint in ends[1]:
            assert any(line.endswith(f"dnat to {endpoint}") for line in right)


# -- keys, help, commands ----------------------------------------------------------------------------------

def test_keys_are_declared_as_data() -> None:
    ids: set[str] = set()
    for cls in (SvctraceApp, ServicesScreen, TraceScreen, CompareScreen, ChainBrowser, VirtualTable, HelpScreen,
                CommandScreen, ModeScreen, ChoiceScreen):
        for b in cls.BINDINGS:
            assert isinstance(b, Binding), (cls, b)
            assert b.id and b.description, (cls, b)
            assert b.id not in ids, b.id
            ids.add(b.id)


@pytest.mark.slow
@run_async
async def test_help_lists_the_keys_of_the_screen() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = plain(app.screen.query_one(Static))
        for b in [*SvctraceApp.BINDINGS, *ServicesScreen.BINDINGS]:
            # What the key does, in words; not the binding's id (app.help, trace.run: for keymaps, not people).
            assert isinstance(b, Binding) and b.description in text and b.id and b.id not in text
        await pilot.press("escape")
        assert isinstance(app.screen, ServicesScreen)
        await command(pilot, "chain KUBE-SERVICES")
        await pilot.press("question_mark")
        await pilot.pause()
        text = plain(app.screen.query_one(Static))
        for b in ChainBrowser.BINDINGS:
            assert isinstance(b, Binding) and b.description in text


@pytest.mark.slow
@run_async
async def test_commands_node_mode_svc() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await command(pilot, "node node02")
        assert isinstance(app.screen, BrowserScreen) and app.screen.node == "node02" and app.node == "node02"
        b = app.screen.query_one(ChainBrowser)
        assert b.adapter is not None and b.adapter.node == "node02"
        assert "node02" in plain(b.query_one("#crumbs", Static))

        await command(pilot, "mode")
        assert isinstance(app.screen, ModeScreen)
        modes = {m.node: m.mode for m in app.screen.modes}
        assert modes == {n: (SNAP.nodes[n].get("proxy-mode") or "").strip() for n in SNAP.cluster.nodes}
        app.screen.query_one("#modes", VirtualTable).move_to(0)
        await pilot.press("enter")
        await settle(pilot)
        first = next(iter(SNAP.cluster.nodes))
        assert isinstance(app.screen, BrowserScreen) and app.screen.node == first

        await command(pilot, "svc slow")
        assert isinstance(app.screen, ServicesScreen)
        assert [r.key for r in app.services_screen.rows] == ["default/slow-start"]
        await command(pilot, "trace web")
        assert isinstance(app.screen, TraceScreen) and app.screen.key == "default/web"
        await command(pilot, "no-such-command")
        assert any("unknown command" in m for _, m in app.messages)
        await command(pilot, "compare frontend")
        assert isinstance(app.screen, CompareScreen)
        await command(pilot, "q")
    assert app.return_code == 0


# -- one node's dump, no cluster ----------------------------------------------------------------------------

@pytest.mark.slow
@run_async
async def test_a_single_dump_lists_services_and_traces() -> None:
    with resources.as_file(resources.files("svctrace.data").joinpath("examples", "kube-proxy-basic.iptables-save")) as p:
        text = p.read_text()
        app = SvctraceApp(str(p))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            keys = {r.key for r in app.services_screen.rows}
            assert {"default/web", "default/noep", "kube-system/dns"} <= keys  # docs/trace.md's table
            noep = next(r for r in app.services_screen.rows if r.key == "default/noep")
            assert noep.health == "error"
            app.open_trace("default/web")
            await settle(pilot)
            scr = app.screen
            assert isinstance(scr, TraceScreen) and scr.view is not None
            src = dict(scr.view.header)["From"].split()[0]
            want = trace(load_ruleset(text), Packet.make(src=src, dst="172.30.0.41", dport=80))
            assert sorted(o.endpoint or "" for o in scr.view.outcomes) == sorted(o.dnat or "" for o in want.outcomes)
            await pilot.press("s")  # one node: no side by side, but no crash either
            await settle(pilot)
            assert any("side by side" in m for _, m in app.messages)


# -- a big dump ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dump_10k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = REPO / "bench" / "out" / "kube-proxy-10k-seed1.iptables-save"  # bench/README.md's, when there
    if made.is_file() and made.stat().st_size > 20_000_000:
        return made
    out = tmp_path_factory.mktemp("bench") / "kube-proxy-10k.iptables-save"
    subprocess.run([sys.executable, str(REPO / "bench" / "gen_kube_proxy_dump.py"), "--services", "10000",
                    "-o", str(out)], check=True, cwd=REPO, timeout=120)
    return out


async def key_latency(app: SvctraceApp, key: str, char: str | None, done: Callable[[], bool]) -> float:
    """Seconds from a key press to `done()`, polling the event loop every 5 ms."""
    t0 = time.monotonic()
    app.post_message(events.Key(key, char))
    while not done():
        assert time.monotonic() - t0 < 30, f"{key} was not handled"
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


@pytest.mark.slow
@run_async
async def test_10k_service_dump_opens_and_scrolls_without_blocking(dump_10k: Path) -> None:
    app = SvctraceApp(str(dump_10k))
    async with app.run_test(size=SIZE) as pilot:
        # Reading and parsing 24 MB (~1-3 s) runs in a thread worker: keys are handled meanwhile.
        took = await key_latency(app, "question_mark", "?", lambda: isinstance(app.screen, HelpScreen))
        assert app.state == "loading", "the dump was parsed before the key: nothing was measured"
        assert took < 3.0
        row = app.services_screen.query_one("#progress-row")
        for _ in range(500):  # the first progress event may still be on its way from the worker
            if row.display or app.state != "loading":
                break
            await asyncio.sleep(0.01)
        assert row.display or app.state != "loading"  # while loading, a visible progress state
        assert str(app.services_screen.query_one("#status", Label).render()).startswith(("reading", "parsing"))
        await key_latency(app, "escape", None, lambda: isinstance(app.screen, ServicesScreen))
        started = time.monotonic()
        await settle(pilot, timeout=60)
        assert app.state == "ready" and time.monotonic() - started < 60
        table = app.services_screen.query_one("#table", VirtualTable)
        assert len(table.rows) == 10000
        await pilot.press("end")
        assert table.cursor == 9999
        await pilot.press("pageup")
        assert 9950 < table.cursor < 9999
        await pilot.press("home", "pagedown", "pagedown")
        assert table.cursor > 50

        # Opening nat (55k chains) and its KUBE-SERVICES (12k rules) parses in a worker too.
        await command_no_wait(pilot, "chain KUBE-SERVICES")
        browser = app.screen.query_one(ChainBrowser)

        def parsing() -> bool:
            return any(w.group == "browser" and w.state == WorkerState.RUNNING for w in app.workers)

        t0 = time.monotonic()
        while not (parsing() or browser.view is not None):
            assert time.monotonic() - t0 < 30
            await asyncio.sleep(0.005)
        took = await key_latency(app, "question_mark", "?", lambda: isinstance(app.screen, HelpScreen))
        assert took < 3.0
        await key_latency(app, "escape", None, lambda: isinstance(app.screen, BrowserScreen))
        await settle(pilot, timeout=60)
        rules = browser.query_one("#rules", VirtualTable)
        assert browser.view is not None and browser.view.ref == ChainRef("nat", "KUBE-SERVICES")
        assert len(rules.rows) > 10000
        await pilot.press("end")
        assert rules.cursor == len(rules.rows) - 1
        assert "KUBE-NODEPORTS" in plain(browser.query_one("#detail", Static))  # kube-proxy's last rule


async def command_no_wait(pilot: Pilot[Any], text: str) -> None:
    await pilot.press("colon")
    await pilot.pause()
    pilot.app.screen.query_one("#command", Input).value = text
    await pilot.press("enter")
    await pilot.pause()


# -- SVG snapshots (120x40) -----------------------------------------------------------------------------------

try:
    import pytest_textual_snapshot  # noqa: F401  (provides the snap_compare fixture)

    HAVE_SNAPSHOTS = True
except ImportError:
    HAVE_SNAPSHOTS = False
snapshot_test = pytest.mark.skipif(not HAVE_SNAPSHOTS, reason="pytest-textual-snapshot is not installed (dev extra)")

def snap_app() -> SvctraceApp:
    return SvctraceApp("demo")


@pytest.mark.slow
@snapshot_test
def test_snapshot_services(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(snap_app(), terminal_size=SIZE, run_before=settle)


@pytest.mark.slow
@snapshot_test
def test_snapshot_browser(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app = pilot.app
        assert isinstance(app, SvctraceApp)
        app.services_screen.select("default/web")
        await pilot.press("b")
        await settle(pilot)

    assert snap_compare(snap_app(), terminal_size=SIZE, run_before=before)


@pytest.mark.slow
@snapshot_test
def test_snapshot_trace(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app = pilot.app
        assert isinstance(app, SvctraceApp)
        app.services_screen.select("default/web")
        await pilot.press("enter")
        await settle(pilot)

    assert snap_compare(snap_app(), terminal_size=SIZE, run_before=before)


@pytest.mark.slow
@snapshot_test
def test_snapshot_side_by_side(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        app = pilot.app
        assert isinstance(app, SvctraceApp)
        app.services_screen.select("default/frontend")
        await pilot.press("s")
        await settle(pilot)

    assert snap_compare(snap_app(), terminal_size=SIZE, run_before=before)


@pytest.mark.slow
@snapshot_test
def test_snapshot_help(snap_compare) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(snap_app(), terminal_size=SIZE, run_before=before)


# -- issue 19: the TUI as a person meets it at 80x24 and 160x48 ------------------------------------------------

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}


async def open_web_trace(pilot: Pilot[Any]) -> TraceScreen:
    await settle(pilot)
    app = pilot.app
    assert isinstance(app, SvctraceApp)
    app.services_screen.select("default/web")
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, TraceScreen)
    return app.screen


@pytest.mark.slow
@snapshot_test
@pytest.mark.parametrize("size", list(SIZES))
def test_snapshot_trace_sizes(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await open_web_trace(pilot)

    assert snap_compare(snap_app(), terminal_size=SIZES[size], run_before=before)


@pytest.mark.slow
@snapshot_test
def test_snapshot_trace_rules_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """At 80 columns `o` shows the selected outcome's rules at the full width."""
    async def before(pilot: Pilot[Any]) -> None:
        await open_web_trace(pilot)
        await pilot.press("o")
        await settle(pilot)

    assert snap_compare(snap_app(), terminal_size=SIZES["80x24"], run_before=before)


@pytest.mark.slow
@snapshot_test
@pytest.mark.parametrize("size", list(SIZES))
def test_snapshot_help_sizes(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await open_web_trace(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(snap_app(), terminal_size=SIZES[size], run_before=before)


@pytest.mark.slow
@snapshot_test
@pytest.mark.parametrize("size", list(SIZES))
def test_snapshot_mode_sizes(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    async def before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await command(pilot, "mode")
        await pilot.press("n")  # a letter moves to a node, and reaches nothing underneath
        await pilot.pause()

    assert snap_compare(snap_app(), terminal_size=SIZES[size], run_before=before)


@pytest.mark.slow
@run_async
async def test_narrow_trace_gives_the_rules_the_full_width_and_o_switches() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        scr = await open_web_trace(pilot)
        b = scr.query_one(ChainBrowser)
        outcomes = scr.query_one("#outcomes", OptionList)
        assert scr.has_class("narrow") and outcomes.has_focus and outcomes.size.width >= 70
        assert not b.display  # the outcomes first, at the full width
        await pilot.press("o")
        await settle(pilot)
        rules = b.query_one("#rules", VirtualTable)
        assert rules.has_focus and not scr.query_one("#side").display and b.display
        assert rules.size.width >= 76, rules.size.width  # not squeezed beside the outcomes (was 34)
        await pilot.press("o")
        await pilot.pause()
        assert outcomes.has_focus and outcomes.size.width >= 70
    wide = SvctraceApp("demo")
    async with wide.run_test(size=SIZES["160x48"]) as pilot:
        scr = await open_web_trace(pilot)
        b = scr.query_one(ChainBrowser)
        assert not scr.has_class("narrow") and b.query_one("#rules", VirtualTable).size.width >= 100
        outcomes = scr.query_one("#outcomes", OptionList)
        assert outcomes.has_focus
        await pilot.press("o")  # wide: both panes stay; the focus moves to the rules, visibly
        await pilot.pause()
        assert b.query_one("#rules", VirtualTable).has_focus and outcomes.display


@pytest.mark.slow
@run_async
async def test_ctrl_c_says_how_to_quit_in_plain_words() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        _, text = app.messages[-1]
        assert "quit" in text and "[b]" not in text and "[/b]" not in text and " q " in f" {text} "
        assert app.is_running


@pytest.mark.slow
@run_async
async def test_mode_dialog_closes_on_q_and_keeps_typed_letters() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await settle(pilot)
        await command(pilot, "mode")
        assert isinstance(app.screen, ModeScreen)
        table = app.screen.query_one("#modes", VirtualTable)
        # Letters that are keys of the Service list underneath (s: side by side, b: chains, /: filter) do nothing
        # there; a letter moves to the next node whose name starts with it.
        await pilot.press("s", "b", "slash", "n")
        await settle(pilot)
        assert isinstance(app.screen, ModeScreen) and len(app.screen_stack) == 2
        assert not app.services_screen.query_one("#filter", Input).has_class("visible")
        names = [m.node for m in app.screen.modes]
        assert names.index(table.row.node) == names.index("node01") + 1  # from the current node to the next n…
        await pilot.press("n")
        await pilot.pause()
        assert names.index(table.row.node) == names.index("node01") + 2
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ServicesScreen) and app.is_running
        await command(pilot, "mode")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ServicesScreen)


@pytest.mark.slow
@run_async
async def test_submitting_the_ip_leaves_the_field_and_node_auto_matches_the_top_bar() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        scr = await open_web_trace(pilot)
        assert app.node == "node01"  # a pod client on a worker, as explain picks it
        ip = scr.query_one("#ip", Input)
        ip.focus()
        await pilot.press(*"192.168.56.99", "enter")
        await settle(pilot)
        assert not ip.has_focus and ip.value == "192.168.56.99"
        # an outside client: "node auto" lets explain pick the receiving node; the top bar names that node
        exp = explain(SNAP, Request("svc/web", namespace="default", source="192.168.56.99"))
        assert scr.view is not None and scr.view.node == exp.node == app.node
        assert f"node {exp.node} " in plain(scr.query_one("#topbar", Static))
        assert scr.query_one("#node", Select).value in ("", Select.BLANK)  # still "auto"
        await pilot.press("q")  # a key again, not a letter typed into the field
        await pilot.pause()
        assert ip.value == "192.168.56.99"
    assert app.return_code == 0


@pytest.mark.slow
@run_async
async def test_x_exports_the_path_on_screen(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from svctrace.browse.graph import explain_graph
    from svctrace.render.graph import to_dot

    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["160x48"]) as pilot:
        scr = await open_web_trace(pilot)
        scr.export_dir = str(tmp_path)
        await pilot.press("x")
        await pilot.pause()
        dot = tmp_path / "svctrace-default-web-cluster-ip-node01.dot"
        assert dot.is_file() and dot.read_text().startswith("digraph svctrace {")
        # the same picture `explain -o dot` draws for the question on screen
        exp = explain(SNAP, Request("svc/web", namespace="default", port="http", to="cluster-ip"))
        assert dot.read_text() == to_dot(explain_graph(exp))
        sev, text = app.messages[-1]
        assert str(dot) in text and sev == "information"
        if shutil.which("dot"):
            svg = tmp_path / "svctrace-default-web-cluster-ip-node01.svg"
            assert str(svg) in text
            ET.fromstring(svg.read_bytes())
        else:
            assert "install Graphviz" in text


@pytest.mark.slow
@run_async
async def test_ping_to_a_cluster_ip_is_no_answer_in_the_tui() -> None:
    app = SvctraceApp("demo")
    async with app.run_test(size=SIZES["160x48"]) as pilot:
        scr = await open_web_trace(pilot)
        scr.query_one("#proto", Select).value = "icmp"
        await pilot.pause(0.2)
        await settle(pilot)
        exp = explain(SNAP, Request("svc/web", namespace="default", proto="icmp"))
        assert [o.nowhere for o in exp.outcomes] == [True]
        prompts = outcome_prompts(scr)
        assert len(prompts) == 1 and "NO ANSWER" in prompts[0] and "ACCEPT" not in prompts[0]
