"""The screens: Services, chain browser, trace, side by side, help, command line, modes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widgets import Footer, Input, Label, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option

from svctrace.browse.data import ChainRef, RulesAdapter
from svctrace.browse.session import (
    CompareLine,
    Comparison,
    NodeMode,
    ServiceRow,
    TraceOptions,
    TraceRequest,
    TraceView,
    short_rule,
)
from svctrace.errors import SvctraceError
from svctrace.tui import render
from svctrace.tui.widgets import ChainBrowser, Column, VirtualTable, deliver

if TYPE_CHECKING:
    from svctrace.tui.app import SvctraceApp


class Base(Screen[None]):
    """A screen with the app's top bar and footer."""

    @property
    def sapp(self) -> SvctraceApp:
        return cast("SvctraceApp", self.app)

    def topbar(self) -> Static:
        return Static(self.sapp.topbar_text(), id="topbar", classes="topbar")

    def refresh_topbar(self) -> None:
        for w in self.query("#topbar"):
            cast(Static, w).update(self.sapp.topbar_text())


# -- Services ----------------------------------------------------------------------------------------

class ServicesScreen(Base):
    """Every Service of the snapshot (or of the dump's comments), with a health mark."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "drill", "Trace", id="services.trace", tooltip="trace a packet to the selected Service"),
        Binding("b", "browse", "Chains", id="services.browse", tooltip="the node's chains, at the Service's own chain"),
        Binding("s", "compare", "Side by side", id="services.compare", tooltip="the Service on two nodes, their answers and rules"),
        Binding("slash", "filter", "Filter", id="services.filter", key_display="/",
                tooltip="show the Services whose name, namespace, type, IP or port contain the words"),
        Binding("escape", "clear_filter", "Clear filter", id="services.clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="services")
        self.all_rows: list[ServiceRow] = []
        self.rows: list[ServiceRow] = []
        self.filter_text = ""
        self._filter_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield self.topbar()
        yield Static("", id="title", classes="title")
        with Horizontal(id="progress-row"):
            yield Label("", id="status")
            yield ProgressBar(id="progress", show_eta=False, show_percentage=False)
        yield Static("", id="error", classes="error-panel")
        yield VirtualTable(id="table")
        yield Input(placeholder="filter: part of a name, namespace, type, IP or port; enter keeps it, esc clears",
                    id="filter")
        yield Footer()

    def on_mount(self) -> None:
        t = self.query_one("#table", VirtualTable)
        t.set_rows(self._columns(), [], self._cell, empty="loading…")
        t.loading = True
        t.focus()
        self._title()
        self.sapp.start_loading()

    # -- data --
    def _columns(self) -> list[Column]:
        return [Column("health", " ", width=1), Column("namespace", "NAMESPACE", max_width=20),
                Column("name", "NAME", max_width=32), Column("type", "TYPE", width=12),
                Column("ip", "CLUSTER-IP", max_width=16), Column("ports", "PORTS", flex=1),
                Column("eps", "ENDPOINTS", width=9, justify="right"), Column("note", "DIAGNOSTICS", max_width=30)]

    def _cell(self, r: ServiceRow, key: str) -> Text | str:
        if key == "health":
            return render.health_mark(r.health)
        if key == "namespace":
            return r.namespace
        if key == "name":
            return Text(r.name, style="bold")
        if key == "type":
            return r.type
        if key == "ip":
            return r.cluster_ip
        if key == "ports":
            return r.ports
        if key == "eps":
            style = "bold red" if r.endpoints.startswith("0") else ""
            return Text(r.endpoints, style=style)
        return Text(r.health_note, style="red" if r.health == "error" else "yellow" if r.health == "warning" else "dim")

    def set_services(self, rows: list[ServiceRow]) -> None:
        self.all_rows = rows
        self.query_one("#table", VirtualTable).loading = False
        self._apply_filter(keep=None)

    def _apply_filter(self, keep: str | None = None) -> None:
        t = self.query_one("#table", VirtualTable)
        current = keep or (t.row.key if isinstance(t.row, ServiceRow) else None)
        words = self.filter_text.lower().split()
        ns = self.sapp.namespace
        rows = [r for r in self.all_rows if (ns is None or r.namespace == ns)
                and all(w in r.search_text for w in words)]
        self.rows = rows
        cursor = next((i for i, r in enumerate(rows) if r.key == current), 0) if current else 0
        t.set_rows(self._columns(), rows, self._cell, cursor=cursor,
                   empty="no Service matches the filter" if self.all_rows else "no Services")
        self._title()

    def _title(self) -> None:
        ns = self.sapp.namespace or "all"
        t = Text()
        t.append(" Services", style="bold")
        t.append(f"({ns})", style="bold magenta")
        t.append(f"[{len(self.rows)}]", style="bold")
        if self.filter_text:
            t.append(f"  /{self.filter_text}", style="bold yellow")
        bad = sum(1 for r in self.rows if r.health == "error")
        warn = sum(1 for r in self.rows if r.health == "warning")
        if bad or warn:
            t.append("   ")
            t.append(f"✗ {bad}", style="bold red")
            t.append("  ")
            t.append(f"! {warn}", style="bold yellow")
        self.query_one("#title", Static).update(t)

    def health_updated(self) -> None:
        self.query_one("#table", VirtualTable).refresh_rows(measure=True)
        self._title()

    def set_status(self, text: str, progress: tuple[int, int] | None = None) -> None:
        self.query_one("#status", Label).update(Text(text, style="italic"))
        bar = self.query_one("#progress", ProgressBar)
        row = self.query_one("#progress-row")
        row.display = bool(text)
        if progress is None:
            bar.update(total=None)
        else:
            bar.update(total=progress[1], progress=progress[0])

    def show_error(self, text: str) -> None:
        err = self.query_one("#error", Static)
        err.update(Text.assemble(("error: ", "bold red"), text, ("\n: for a command, q to quit", "dim")))
        err.display = True
        t = self.query_one("#table", VirtualTable)
        t.loading = False
        t.set_rows(self._columns(), [], self._cell, empty="nothing open")

    @property
    def selected(self) -> ServiceRow | None:
        row = self.query_one("#table", VirtualTable).row
        return row if isinstance(row, ServiceRow) else None

    def select(self, key: str) -> bool:
        for i, r in enumerate(self.rows):
            if r.key == key:
                self.query_one("#table", VirtualTable).move_to(i, center=True)
                return True
        return False

    # -- actions --
    def action_drill(self) -> None:
        r = self.selected
        if r is not None:
            self.sapp.open_trace(r.key)

    def action_browse(self) -> None:
        r = self.selected
        self.sapp.open_browser(service=r.key if r else None)

    def action_compare(self) -> None:
        r = self.selected
        if r is not None:
            self.sapp.open_compare(r.key)

    def action_filter(self) -> None:
        f = self.query_one("#filter", Input)
        f.add_class("visible")
        f.value = self.filter_text
        f.focus()

    def action_clear_filter(self) -> None:
        f = self.query_one("#filter", Input)
        if not self.filter_text and not f.has_class("visible"):
            raise SkipAction()
        self.filter_text = ""
        f.value = ""
        f.remove_class("visible")
        self.query_one("#table", VirtualTable).focus()
        self._apply_filter()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        f = self.query_one("#filter", Input)
        f.value = self.filter_text
        self._apply_filter()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(0.12, self._apply_filter)

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        self._apply_filter()
        event.input.remove_class("visible")  # the title shows the filter, k9s-style
        self.query_one("#table", VirtualTable).focus()

    @on(VirtualTable.Selected, "#table")
    def _clicked(self, event: VirtualTable.Selected) -> None:
        self.action_drill()


# -- the chain browser -----------------------------------------------------------------------------

class BrowserScreen(Base):
    """One node's tables, chains and rules."""

    def __init__(self, node: str, start: ChainRef | str | None = None, service: str | None = None) -> None:
        super().__init__()
        self.node = node
        self.start = start
        self.service = service

    def compose(self) -> ComposeResult:
        yield self.topbar()
        yield ChainBrowser(id="browser")
        yield Footer()

    def on_mount(self) -> None:
        b = self.query_one(ChainBrowser)
        b.set_adapter(None, status=f"loading the rules of {self.node}…")
        self.sapp.with_adapter(self.node, self._ready, self._start_for)

    def _start_for(self, adapter: RulesAdapter) -> ChainRef | None:
        if isinstance(self.start, ChainRef):
            return self.start
        if isinstance(self.start, str):
            entry = adapter.entry()
            return adapter.find_chain(self.start, entry.table if entry else "nat")
        if self.service and self.sapp.session is not None:
            return self.sapp.session.service_chain(self.service, self.node)
        return adapter.entry()

    def _ready(self, adapter: RulesAdapter | None, start: ChainRef | None, error: str | None) -> None:
        b = self.query_one(ChainBrowser)
        if adapter is None:
            b.set_adapter(None, status=error or "no rules")
            return
        b.take_focus = True
        b.set_adapter(adapter, start)
        if isinstance(self.start, str) and start is None:
            self.app.notify(f"no chain {self.start} on {self.node}", severity="warning")

    def goto_chain(self, name: str) -> bool:
        b = self.query_one(ChainBrowser)
        if b.adapter is None:
            return False
        ref = b.adapter.find_chain(name, b.table)
        if ref is None:
            self.app.notify(f"no chain {name} on {self.node}", severity="warning")
            return True
        b.show_chain(ref)
        b.query_one("#rules", VirtualTable).focus()
        return True


# -- the trace ---------------------------------------------------------------------------------------

class TraceScreen(Base):
    """A packet to a Service: pick port and source, see the outcomes and their paths in the rules."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run", "Trace again", id="trace.run", tooltip="walk the packet again with the form's values"),
        Binding("s", "compare", "Side by side", id="trace.compare", tooltip="this question on two nodes"),
        Binding("o", "toggle_outcomes", "Outcomes/rules", id="trace.outcomes",
                tooltip="switch between the outcomes and the rules of the selected outcome's path"),
        Binding("x", "export", "Export picture", id="trace.export",
                tooltip="write the path on screen as a picture (.dot, and .svg with Graphviz) in the current directory"),
        Binding("f", "focus_form", "Form", id="trace.form", tooltip="go to the form: port, address, protocol, source, node"),
        Binding("right_square_bracket", "hop(1)", "Next hop", id="trace.next-hop", key_display="]",
                tooltip="the next rule on the selected outcome's path"),
        Binding("left_square_bracket", "hop(-1)", "Prev hop", id="trace.prev-hop", key_display="[",
                tooltip="the rule before"),
    ]

    def __init__(self, key: str, request: TraceRequest | None = None) -> None:
        super().__init__()
        self.key = key
        self.initial = request
        self.export_dir = "."  # where `x` writes the picture
        self.exported: list[Path] = []  # the files `x` wrote last
        self.options: TraceOptions | None = None
        self.view: TraceView | None = None
        self.selected = 0
        self._ready = False
        self._run_timer: Timer | None = None
        self._last: TraceRequest | None = None

    def compose(self) -> ComposeResult:
        yield self.topbar()
        yield Static(Text(f" Trace {self.key}", style="bold"), id="title", classes="title")
        with Vertical(id="form"):
            with Horizontal(classes="form-row"):
                yield Label("port", classes="flabel")
                yield Select([], id="port", allow_blank=True, compact=True, prompt="-")
                yield Label("to", classes="flabel")
                yield Select([], id="via", allow_blank=True, compact=True, prompt="-")
                yield Label("proto", classes="flabel")
                yield Select([], id="proto", allow_blank=True, compact=True, prompt="-")
                yield Label("client", classes="flabel", id="client-label")
                yield Select([("new", "new"), ("returning", "returning")], id="client", value="new",
                             allow_blank=False, compact=True)
            with Horizontal(classes="form-row"):
                yield Label("from", classes="flabel")
                yield Select([], id="source", allow_blank=True, compact=True, prompt="-")
                yield Label("or IP", classes="flabel")
                yield Input(placeholder="e.g. 192.168.56.99", id="ip", compact=True)
                yield Label("node", classes="flabel")
                yield Select([], id="node", allow_blank=True, compact=True, prompt="-")
        yield Static("", id="path")
        with Horizontal(id="body"):
            yield ChainBrowser(id="browser", classes="narrow")
            with Vertical(id="side"):
                yield Static("", id="summary")
                yield Static(Text("Outcomes", style="bold underline"), classes="section")
                yield OptionList(id="outcomes")
                with VerticalScroll(id="diags-scroll"):
                    yield Static("", id="diags")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ChainBrowser).set_adapter(None, status="tracing…")
        session = self.sapp.session
        if session is None:
            return
        try:
            opts = session.options(self.key)
        except SvctraceError as e:
            self._error(str(e))
            return
        self.options = opts
        req = self.initial or opts.default

        def fill(sel_id: str, options: list[tuple[str, str]], value: str | None) -> None:
            sel = self.query_one(f"#{sel_id}", Select)
            sel.set_options(options)
            values = [v for _, v in options]
            if value is not None and value in values:
                sel.value = value
            elif options:
                sel.value = options[0][1]

        fill("port", opts.ports, req.port)
        fill("via", opts.vias, req.via)
        fill("proto", opts.protos, req.proto or "")
        src_values = [v for _, v in opts.sources]
        if req.source and req.source not in src_values:
            fill("source", opts.sources, "")
            self.query_one("#ip", Input).value = req.source
        else:
            fill("source", opts.sources, req.source or "")
        fill("node", opts.nodes, req.node or "")
        self.query_one("#client", Select).value = "returning" if req.returning_client else "new"
        self.query_one("#client", Select).display = opts.affinity
        self.query_one("#client-label", Label).display = opts.affinity
        self._ready = True
        self.query_one("#outcomes", OptionList).focus()
        self.action_run()

    def request(self) -> TraceRequest:
        def val(sel_id: str) -> str | None:
            v = self.query_one(f"#{sel_id}", Select).value
            return None if v is Select.BLANK or v in ("", None) else str(v)

        ip = self.query_one("#ip", Input).value.strip()
        return TraceRequest(self.key, port=val("port"), via=val("via"), source=ip or val("source"), proto=val("proto"),
                            node=val("node"), returning_client=val("client") == "returning")

    @on(Select.Changed)
    def _changed(self, event: Select.Changed) -> None:
        if self._ready and self.request() != self._last:
            if self._run_timer is not None:
                self._run_timer.stop()
            self._run_timer = self.set_timer(0.05, self.action_run)

    @on(Input.Submitted, "#ip")
    def _ip(self, event: Input.Submitted) -> None:
        self.action_run()
        self.show_rules(False)  # out of the field: the keys are keys again (q quits, o switches)

    def action_run(self) -> None:
        session = self.sapp.session
        if session is None or not self._ready:
            return
        req = self.request()
        self._last = req
        self.query_one("#summary", Static).update(Text("tracing…", style="italic"))

        def work() -> None:
            try:
                view = session.trace(req)
            except SvctraceError as e:
                deliver(self, self._error, str(e), req)
                return
            deliver(self, self._traced, view)

        self.run_worker(work, thread=True, exclusive=True, group="trace", exit_on_error=False,
                        description=f"trace {req}")

    def _error(self, msg: str, req: TraceRequest | None = None) -> None:
        if req is not None and req != self._last:
            return
        self.view = None
        self.query_one("#summary", Static).update(Text.assemble(("cannot trace: ", "bold red"), msg))
        self.query_one("#outcomes", OptionList).clear_options()
        self.query_one("#diags", Static).update("")
        self.app.notify(msg, severity="error", title="trace")

    def _traced(self, view: TraceView) -> None:
        if view.request != self._last:
            return  # an older request finished after a newer one was asked
        self.view = view
        if view.node is not None and view.node != self.sapp.node:
            # "node auto" picked this node's rules (an outside client arrives at the first node that can decide):
            # the top bar names the node whose rules are on screen.
            self.sapp.node = view.node
            self.sapp.services_screen.refresh_topbar()
            self.refresh_topbar()
        head = Table.grid(padding=(0, 1))
        head.add_column(style="bold", no_wrap=True)
        head.add_column()
        for k, v in view.header:
            if k != "Service":
                head.add_row(k, v)
        self.query_one("#summary", Static).update(head)
        ol = self.query_one("#outcomes", OptionList)
        ol.clear_options()
        ol.add_options([Option(render.outcome_text(i, o), id=f"o{i}") for i, o in enumerate(view.outcomes)])
        if not view.outcomes:
            ol.add_option(Option(Text("no packet path: nothing is proxied (see below)", style="italic"),
                                 disabled=True))
        self.query_one("#diags", Static).update(self._diags(view))
        self.selected = 0
        if view.outcomes:
            ol.highlighted = 0
        if view.node is None:
            self.query_one(ChainBrowser).set_adapter(None, status="no rules decide this (DNS only)")
            return
        browser = self.query_one(ChainBrowser)
        if browser.adapter is not None and browser.adapter.node == view.node:
            self._light()
            return
        self.sapp.with_adapter(view.node, self._adapter_ready)

    def _adapter_ready(self, adapter: RulesAdapter | None, start: ChainRef | None, error: str | None) -> None:
        browser = self.query_one(ChainBrowser)
        browser.set_adapter(adapter, start, status=error or "")
        self._light()

    def _diags(self, view: TraceView) -> RenderableType:
        parts: list[RenderableType] = []
        if view.diagnostics:
            parts.append(Text("Diagnostics", style="bold underline"))
            parts += [render.diag_text(d) for d in view.diagnostics]
        if view.hops:
            parts.append(Text("What happens", style="bold underline"))
            n = 0
            for h in view.hops:
                if h.startswith("  •"):
                    parts.append(Text("  • " + h.strip()[1:].strip()))
                else:
                    n += 1
                    parts.append(Text(f"{n}. {h}"))
        for i in view.inferred:
            parts.append(Text(f"inferred: {i}", style="dim"))
        for w in view.warnings[:6]:
            parts.append(Text(f"warning: {w}", style="yellow"))
        return Group(*parts)

    def _light(self) -> None:
        if self.view is None:
            return
        browser = self.query_one(ChainBrowser)
        if browser.adapter is None:
            return
        paths = [o.path for o in self.view.outcomes]
        browser.light(paths, self.selected if paths else None)
        if paths and browser.hops:
            # Open the rule that decided this outcome: the DNAT (or IPVS's pick of a real server), else the last hop.
            hops = browser.hops
            pick = next((i for i, s in enumerate(hops) if s.action.startswith(("DNAT", "IPVS"))), len(hops) - 1)
            browser.go_hop(pick)
        self._path()

    def _path(self) -> None:
        """The selected outcome's hops in one line; `[` and `]` walk them in the browser."""
        b = self.query_one(ChainBrowser)
        t = Text("path ", style="bold")
        if not b.hops:
            t.append("(no rule on the way)", style="dim")
        for n, s in enumerate(b.hops):
            if n:
                t.append(" › ", style="dim")
            chain = s.chain if len(s.chain) <= 18 else s.chain[:13] + "…"
            label = f"{n + 1} {chain} #{s.rule}"
            if s.action.startswith(("DNAT", "ACCEPT", "DROP", "REJECT", "MASQUERADE", "IPVS")):
                label += " " + s.action.split()[0].rstrip(":")
            t.append(label, style="bold reverse" if n == b.hop else "yellow")
        self.query_one("#path", Static).update(t)

    @on(OptionList.OptionHighlighted, "#outcomes")
    def _outcome(self, event: OptionList.OptionHighlighted) -> None:
        idx = event.option_index
        if self.view is None or not 0 <= idx < len(self.view.outcomes):
            return
        if idx != self.selected or not self.query_one(ChainBrowser).hops:
            self.selected = idx
            self._light()

    @on(OptionList.OptionSelected, "#outcomes")
    def _outcome_selected(self, event: OptionList.OptionSelected) -> None:
        self.selected = event.option_index
        self._light()
        self.show_rules(True)

    def action_hop(self, step: int) -> None:
        b = self.query_one(ChainBrowser)
        if not b.hops:
            return
        cur = b.hop if b.hop is not None else -1
        b.go_hop(max(0, min(len(b.hops) - 1, cur + step)))
        self._path()

    def action_compare(self) -> None:
        self.sapp.open_compare(self.key, self.request())

    NARROW = 110  # below this width the rules and the outcomes share the screen in turn

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < self.NARROW, "narrow")

    def show_rules(self, rules: bool) -> None:
        """Focus the rules (and, on a narrow screen, show them in place of the outcomes) or the outcomes."""
        self.set_class(rules, "show-rules")
        if rules:
            self.query_one(ChainBrowser).query_one("#rules", VirtualTable).focus()
        else:
            self.query_one("#outcomes", OptionList).focus()

    def action_toggle_outcomes(self) -> None:
        self.show_rules(self.query_one("#outcomes", OptionList).has_focus)

    def action_focus_outcomes(self) -> None:
        self.show_rules(False)

    def action_export(self) -> None:
        """The path on screen as the picture `-o dot` / `-o svg` draw, written beside where svctrace runs."""
        exp = self.view.explanation if self.view is not None else None
        if exp is None:
            self.app.notify("nothing to export: no trace on screen", severity="warning")
            return
        from svctrace.browse.graph import explain_graph
        from svctrace.render.graph import GraphvizMissing, to_dot, to_svg

        graph = explain_graph(exp)
        parts = [self.key.replace("/", "-"), str(exp.destination.get("via") or ""), exp.rules_node or exp.node or ""]
        base = str(Path(self.export_dir) / ("svctrace-" + "-".join(p for p in parts if p)))
        dot, svg = Path(base + ".dot"), Path(base + ".svg")  # not with_suffix: a node name may hold dots
        try:
            dot.write_text(to_dot(graph))
            written = [dot]
            try:
                svg.write_text(to_svg(graph))
                written.append(svg)
                missing = ""
            except GraphvizMissing:
                missing = " (no .svg: install Graphviz for it)"
        except OSError as e:
            self.app.notify(f"cannot write {dot}: {e.strerror}", severity="error", title="export")
            return
        self.exported = written
        self.app.notify(f"wrote {' and '.join(str(p) for p in written)}{missing}", title="export")

    def action_focus_form(self) -> None:
        self.query_one("#port", Select).focus()


# -- side by side -------------------------------------------------------------------------------------

class CompareScreen(Base):
    """The same request on two nodes, side by side: outcomes and diagnostics above, the Service's
    rules below, aligned line by line (− only on the left node, + only on the right)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "cycle(0)", "Left node", id="compare.left", tooltip="another node on the left"),
        Binding("2", "cycle(1)", "Right node", id="compare.right", tooltip="another node on the right"),
        Binding("d", "only_diff", "Only differences", id="compare.diff", tooltip="hide the rule lines both nodes share"),
    ]

    def __init__(self, key: str, request: TraceRequest | None = None, left: str | None = None,
                 right: str | None = None) -> None:
        super().__init__()
        self.key = key
        self.request = request
        self.left = left
        self.right = right
        self.result: Comparison | None = None
        self.only_diff = False
        self._asked = 0

    def compose(self) -> ComposeResult:
        yield self.topbar()
        yield Static(Text(f" Side by side {self.key}", style="bold"), id="title", classes="title")
        with Horizontal(id="sides"):
            with VerticalScroll(id="left", classes="side"):
                yield Static("comparing…", id="left-body")
            with VerticalScroll(id="right", classes="side"):
                yield Static("", id="right-body")
        yield VirtualTable(id="diff")
        yield Static("", id="diff-detail")
        yield Footer()

    def on_mount(self) -> None:
        diff = self.query_one("#diff", VirtualTable)
        diff.set_rows(self._diff_columns("", ""), [], self._diff_cell, empty="…")
        diff.focus()
        self.run()

    def run(self) -> None:
        session = self.sapp.session
        if session is None:
            return
        req = self.request or session.compare_request(self.key)
        left, right = self.left, self.right
        self._asked += 1
        asked = self._asked

        def work() -> None:
            try:
                res = session.compare(req, left, right)
            except SvctraceError as e:
                deliver(self, self._error, str(e), asked)
                return
            deliver(self, self._done, res, asked)

        self.query_one("#left-body", Static).update(Text("comparing…", style="italic"))
        self.run_worker(work, thread=True, exclusive=True, group="compare", exit_on_error=False)

    def _error(self, msg: str, asked: int) -> None:
        if asked != self._asked:
            return
        self.query_one("#left-body", Static).update(Text.assemble(("cannot compare: ", "bold red"), msg))
        self.app.notify(msg, severity="error", title="side by side")

    def _done(self, res: Comparison, asked: int) -> None:
        if asked != self._asked:
            return  # an older question answered after a newer one was asked
        self.result = res
        self.left, self.right = res.left, res.right
        self._draw()

    def _draw(self) -> None:
        res = self.result
        if res is None:
            return
        verdict = Text(" these nodes answer differently" if res.differ else " both nodes answer the same",
                       style="bold yellow" if res.differ else "bold green")
        self.query_one("#title", Static).update(Text.assemble((f" Side by side {self.key}", "bold"), "  ", verdict))
        self.query_one("#left-body", Static).update(self._side(res.left, res.left_view, res.left_error))
        self.query_one("#right-body", Static).update(self._side(res.right, res.right_view, res.right_error))
        pairs = [(a, b) for a, b in zip(res.left_rules, res.right_rules, strict=True)
                 if not self.only_diff or a.side != "both"]
        changed = sum(1 for a, _ in zip(res.left_rules, res.right_rules, strict=True) if a.side != "both")
        self.query_one("#diff", VirtualTable).set_rows(
            self._diff_columns(res.left, res.right), pairs, self._diff_cell, row_class=self._diff_class,
            empty="no difference" if self.only_diff else "no rule names this Service")
        modes = [self.sapp.session.node_mode(n) if self.sapp.session else None for n in (res.left, res.right)]
        across = (f" ({modes[0]} on {res.left}, {modes[1]} on {res.right}: each in its own syntax)"
                  if modes[0] and modes[1] and modes[0] != modes[1] else "")
        self.query_one("#diff", VirtualTable).border_title = (
            f"the Service's rules: {changed} line(s) differ{across}" + ("  (d: all lines)" if self.only_diff else
                                                                        "  (d: only differences)"))

    def _diff_columns(self, left: str, right: str) -> list[Column]:
        return [Column("l", f"{left} (− only here)" if left else "", flex=1),
                Column("r", f"{right} (+ only here)" if right else "", flex=1)]

    def _diff_cell(self, pair: tuple[CompareLine, CompareLine], key: str) -> Text:
        line = pair[0] if key == "l" else pair[1]
        if line.side == "gap":
            return Text("  ·", style="dim")
        mark, style = {"both": ("  ", ""), "left": ("− ", "bold red"), "right": ("+ ", "bold green")}.get(
            line.side, ("  ", ""))
        t = Text(mark, style=style)
        body = Text(short_rule(line.text))
        if line.side != "both":
            body.stylize(style)
        t.append_text(body)
        return t

    def _diff_class(self, pair: tuple[CompareLine, CompareLine]) -> str | None:
        return "lit" if pair[0].side != "both" else None

    @on(VirtualTable.Highlighted, "#diff")
    def _diff_row(self, event: VirtualTable.Highlighted) -> None:
        """The selected line in full, as each node's dump has it."""
        row = event.table.row
        res = self.result
        if res is None or not isinstance(row, tuple):
            self.query_one("#diff-detail", Static).update("")
            return
        t = Text()
        for node, line in ((res.left, row[0]), (res.right, row[1])):
            if t:
                t.append("\n")
            t.append(f"{node}: ", style="bold")
            t.append(line.text if line.side != "gap" else "(no such rule)",
                     style={"left": "red", "right": "green", "gap": "dim"}.get(line.side, ""))
        self.query_one("#diff-detail", Static).update(t)

    def _side(self, node: str, view: TraceView | None, error: str | None) -> RenderableType:
        parts: list[RenderableType] = [Text(f" node {node} ", style="bold reverse")]
        if error:
            parts.append(Text.assemble(("cannot trace: ", "bold red"), error))
        if view is not None:
            head = Table.grid(padding=(0, 1))
            head.add_column(style="bold", no_wrap=True)
            head.add_column()
            for k, v in view.header:
                if k in ("From", "To"):
                    head.add_row(k, v)
            parts.append(head)
            for i, o in enumerate(view.outcomes):
                parts.append(render.outcome_text(i, o))
            for d in view.diagnostics:
                parts.append(render.diag_text(d))
        return Group(*parts)

    def action_cycle(self, side: int) -> None:
        session = self.sapp.session
        if session is None or self.result is None:
            return
        nodes = session.comparable_nodes()
        cur = self.left if side == 0 else self.right
        other = self.right if side == 0 else self.left
        i = nodes.index(cur) if cur in nodes else -1
        for _ in nodes:
            i = (i + 1) % len(nodes)
            if nodes[i] != other:
                break
        if side == 0:
            self.left = nodes[i]
        else:
            self.right = nodes[i]
        self.run()

    def action_only_diff(self) -> None:
        self.only_diff = not self.only_diff
        self._draw()


# -- help, command line, modes ----------------------------------------------------------------------------

COMMANDS: list[tuple[str, str]] = [
    (":svc [FILTER]", "the Service list (optionally filtered)"),
    (":node NAME", "the chain browser on a node"),
    (":chain NAME", "open a chain (name or prefix) in the browser"),
    (":trace NAME", "trace a Service (ns/name or name)"),
    (":compare NAME [N1 N2]", "the Service on two nodes, side by side"),
    (":mode", "each node's kube-proxy mode and dumps"),
    (":refresh", "read the input again (live: collect anew)"),
    (":help", "this screen"),
    (":q", "quit"),
]


def binding_rows(sections: list[tuple[str, list[BindingType]]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold #5fafff", no_wrap=True)
    t.add_column()
    t.add_column(style="dim")
    for title, bindings in sections:
        t.add_row(Text(title, style="bold underline"), "", "")
        for b in bindings:
            if not isinstance(b, Binding):
                continue
            keys = b.key_display or ", ".join(_pretty_key(k) for k in b.key.split(","))
            t.add_row(keys, b.description, b.tooltip)  # what the key does; the id is for keymaps, not people
    return t


def _pretty_key(k: str) -> str:
    return {"slash": "/", "question_mark": "?", "colon": ":", "escape": "esc", "left_square_bracket": "[",
            "right_square_bracket": "]"}.get(k, k)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        cmds = Table.grid(padding=(0, 2))
        cmds.add_column(style="bold #5fafff", no_wrap=True)
        cmds.add_column()
        for c, d in COMMANDS:
            cmds.add_row(c, d)
        with VerticalScroll(id="help-box"):
            yield Static(Group(Text("svctrace — keys", style="bold"), Text(""), binding_rows(self.sections),
                               Text(""), Text("Commands (type : first)", style="bold underline"), cmds,
                               Text(""), Text("esc closes", style="dim")))

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)


class CommandScreen(ModalScreen[str | None]):
    """k9s's command line: `:` then a command and enter."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="command.cancel")]

    def __init__(self, suggestions: list[str]) -> None:
        super().__init__()
        self.suggestions = suggestions

    def compose(self) -> ComposeResult:
        with Vertical(id="command-box"):
            yield Input(placeholder="svc | node NAME | chain NAME | trace NAME | compare NAME | mode | help | q",
                        id="command", suggester=SuggestFromList(self.suggestions, case_sensitive=False))

    def on_mount(self) -> None:
        self.query_one("#command", Input).focus()

    @on(Input.Submitted, "#command")
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":"))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ModeScreen(ModalScreen[str | None]):
    """Each node's kube-proxy mode and which adapter reads its rules; enter opens its chains."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "cancel", "Close", id="mode.close"),
        Binding("enter", "pick", "Browse node", id="mode.pick"),
    ]

    def __init__(self, modes: list[NodeMode], current: str | None) -> None:
        super().__init__()
        self.modes = modes
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="mode-box"):
            yield Static(Text("Nodes and proxy modes", style="bold"))
            yield VirtualTable(id="modes")
            yield Static(Text("enter: browse the node's rules   a letter: the next node it starts   q, esc: close",
                              style="dim"))

    def on_mount(self) -> None:
        t = self.query_one("#modes", VirtualTable)
        cols = [Column("cur", " ", width=1), Column("node", "NODE", max_width=20), Column("mode", "MODE", max_width=14),
                Column("browser", "BROWSER", max_width=24), Column("dumps", "DUMPS", flex=1)]

        def cell(m: NodeMode, key: str) -> Text | str:
            if key == "cur":
                return Text("●", style="bold yellow") if m.node == self.current else ""
            return {"node": m.node, "mode": m.mode, "browser": m.browser, "dumps": ", ".join(m.dumps) or "-"}[key]

        names = [m.node for m in self.modes]
        t.styles.height = min(len(self.modes) + 1, 30)
        t.set_rows(cols, self.modes, cell, cursor=names.index(self.current) if self.current in names else 0)
        t.focus()

    def on_key(self, event: events.Key) -> None:
        """q closes; another letter jumps to the next node whose name starts with it; no typed key reaches
        anything else while the dialog is open."""
        if event.character is None or not event.is_printable:
            return
        event.stop()
        event.prevent_default()
        if event.character == "q":
            self.action_cancel()
            return
        table = self.query_one("#modes", VirtualTable)
        names = [m.node for m in self.modes]
        start = table.cursor if isinstance(table.cursor, int) else 0
        for i in list(range(start + 1, len(names))) + list(range(0, start + 1)):
            if names[i].lower().startswith(event.character.lower()):
                table.move_to(i)
                return

    def action_pick(self) -> None:
        row = self.query_one("#modes", VirtualTable).row
        self.dismiss(row.node if isinstance(row, NodeMode) else None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(VirtualTable.Selected)
    def _clicked(self, event: VirtualTable.Selected) -> None:
        self.action_pick()


__all__ = ["BrowserScreen", "CommandScreen", "CompareScreen", "HelpScreen", "ModeScreen", "ServicesScreen",
           "TraceScreen"]
