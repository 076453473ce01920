"""Widgets: a virtual table that renders only the rows on screen, and the chain browser."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from svctrace.browse.data import ChainInfo, ChainRef, RulesAdapter, RuleView, SearchHit, rule_index_for_line
from svctrace.browse.session import StepRef
from svctrace.errors import SvctraceError
from svctrace.tui import render


def deliver(widget: Widget, fn: Callable[..., object], *args: object) -> None:
    """From a worker thread: run fn(*args) on the event loop, unless the widget is gone meanwhile
    (its screen was closed) or the app has ended."""
    app = widget.app

    def run() -> None:
        if widget.is_attached:
            with contextlib.suppress(NoMatches):
                fn(*args)

    with contextlib.suppress(RuntimeError):
        app.call_from_thread(run)


@dataclass
class Column:
    key: str
    label: str
    width: int | None = None  # None: measured from the rows (up to max_width)
    max_width: int = 48
    flex: int = 0  # > 0: takes a share of the width left over
    justify: str = "left"
    ellipsis: str = "end"  # end / middle (keeps the tail of a long name: `endpoint-…__10.244.1.10/8080`)
    min_width: int = 0  # a flex column this narrow takes room from the measured columns


CellFn = Callable[[Any, str], Text | str]
RowClassFn = Callable[[Any], str | None]


class _RowMessage(Message):
    """A VirtualTable's message about one of its rows."""

    def __init__(self, table: VirtualTable, index: int) -> None:
        super().__init__()
        self.table = table
        self.index = index

    @property
    def control(self) -> VirtualTable:
        return self.table


class VirtualTable(ScrollView, can_focus=True):
    """A table over any sequence: only the rows on screen are rendered (a 100k-row chain scrolls
    as fast as a 10-row one). A cursor row, a fixed header line, row classes for highlighting."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "vtable--header", "vtable--cursor", "vtable--cursor-blur", "vtable--lit", "vtable--hop", "vtable--dim",
    }
    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
    }
    VirtualTable > .vtable--header { text-style: bold; color: $text-accent; background: $panel; }
    VirtualTable > .vtable--cursor { background: $block-cursor-background; color: $block-cursor-foreground; text-style: bold; }
    VirtualTable > .vtable--cursor-blur { background: $block-cursor-blurred-background; }
    VirtualTable > .vtable--lit { background: $warning 15%; }
    VirtualTable > .vtable--hop { background: $warning 40%; }
    VirtualTable > .vtable--dim { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", id="list.up", show=False),
        Binding("down,j", "cursor(1)", "Down", id="list.down", show=False),
        Binding("pageup", "page(-1)", "Page up", id="list.page-up", show=False),
        Binding("pagedown", "page(1)", "Page down", id="list.page-down", show=False),
        Binding("home", "edge(0)", "First", id="list.first", show=False),
        Binding("end", "edge(1)", "Last", id="list.last", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True, init=False)

    class Highlighted(_RowMessage):
        """The cursor moved to row `index`."""

    class Selected(_RowMessage):
        """Row `index` was chosen (enter or a click)."""

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.columns: list[Column] = []
        self.rows: Sequence[Any] = ()
        self._cell: CellFn = lambda row, key: str(row)
        self._row_class: RowClassFn | None = None
        self._cache: dict[int, list[Text]] = {}
        self._measured: dict[str, int] = {}
        self.empty_text = ""

    # -- data --
    def set_rows(self, columns: list[Column], rows: Sequence[Any], cell: CellFn, *, row_class: RowClassFn | None = None,
                 cursor: int = 0, empty: str = "") -> None:
        self.columns = columns
        self.rows = rows
        self._cell = cell
        self._row_class = row_class
        self._cache = {}
        self.empty_text = empty
        self._measure()
        self.virtual_size = Size(self.size.width, len(rows) + 1)
        self.set_reactive(VirtualTable.cursor, max(0, min(cursor, len(rows) - 1)))
        self.scroll_to(y=0, animate=False, immediate=True)
        self._keep_visible(center=True)
        self.call_after_refresh(self._keep_visible, True)  # again once the layout gave us a height
        self.refresh()
        self.post_message(self.Highlighted(self, self.cursor))

    def refresh_rows(self, measure: bool = False) -> None:
        """Cells may have changed (a health mark arrived, the lit path changed): render again."""
        self._cache = {}
        if measure:
            self._measure()
        self.refresh()

    def _measure(self) -> None:
        self._measured = {}
        sample = self.rows[:400] if len(self.rows) > 400 else self.rows
        for col in self.columns:
            if col.width is not None or col.flex:
                continue
            w = cell_len(col.label)
            for row in sample:
                v = self._cell(row, col.key)
                w = max(w, v.cell_len if isinstance(v, Text) else cell_len(v))
            self._measured[col.key] = min(w, col.max_width)

    def _widths(self, total: int) -> list[int]:
        fixed = [c.width if c.width is not None else self._measured.get(c.key, 0) for c in self.columns]
        gaps = max(0, len(self.columns) - 1)
        rest = max(0, total - sum(f for c, f in zip(self.columns, fixed, strict=True) if not c.flex) - gaps)
        flex_total = sum(c.flex for c in self.columns) or 1
        out = []
        for c, f in zip(self.columns, fixed, strict=True):
            out.append(max(3, rest * c.flex // flex_total) if c.flex else f)
        measured = sorted((j for j, c in enumerate(self.columns) if c.width is None and not c.flex),
                          key=lambda j: -out[j])
        for i, c in enumerate(self.columns):
            deficit = c.min_width - out[i] if c.flex else 0
            for j in measured:
                if deficit <= 0:
                    break
                give = min(deficit, max(0, out[j] - max(self.columns[j].min_width, 12)))
                out[j] -= give
                out[i] += give
                deficit -= give
        return out

    def _cells(self, index: int) -> list[Text]:
        got = self._cache.get(index)
        if got is None:
            row = self.rows[index]
            got = []
            for col in self.columns:
                v = self._cell(row, col.key)
                got.append(v if isinstance(v, Text) else Text(v))
            if len(self._cache) > 4000:
                self._cache = {}
            self._cache[index] = got
        return got

    @property
    def row(self) -> Any:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    # -- rendering --
    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            return self._line([Text(c.label) for c in self.columns], width,
                              self.get_component_rich_style("vtable--header"))
        index = self.scroll_offset.y + y - 1
        if index >= len(self.rows):
            if index == 0 and self.empty_text:
                t = Text(" " + self.empty_text, style="italic")
                return self._strip(t, width, base + self.get_component_rich_style("vtable--dim"))
            return Strip.blank(width, base)
        style = base
        klass = self._row_class(self.rows[index]) if self._row_class else None
        if klass:
            style = style + self.get_component_rich_style(f"vtable--{klass}")
        if index == self.cursor:
            style = style + self.get_component_rich_style("vtable--cursor" if self.has_focus else "vtable--cursor-blur")
        return self._line(self._cells(index), width, style)

    def _line(self, cells: list[Text], width: int, style: Style) -> Strip:
        line = Text(no_wrap=True, end="")
        for i, (col, w, cell) in enumerate(zip(self.columns, self._widths(width), cells, strict=False)):
            if i:
                line.append(" ")
            c = cell.copy()
            c.no_wrap = True
            if c.cell_len > w and col.ellipsis == "middle" and w > 8 and len(c) == c.cell_len:
                head = (w - 1) // 2
                c = Text.assemble(c[:head], "…", c[len(c) - (w - 1 - head):], no_wrap=True)
            if c.cell_len > w:
                c.truncate(w, overflow="ellipsis")
            pad = w - c.cell_len
            if col.justify == "right":
                line.append(" " * pad)
                line.append_text(c)
            else:
                line.append_text(c)
                line.append(" " * pad)
        return self._strip(line, width, style)

    def _strip(self, text: Text, width: int, style: Style) -> Strip:
        text.truncate(width, overflow="ellipsis", pad=True)
        text.stylize_before(style)
        return Strip(list(text.render(self.app.console)), width).crop_extend(0, width, style)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.rows) + 1)
        self._keep_visible()

    # -- the cursor --
    def watch_cursor(self, old: int, new: int) -> None:
        self._keep_visible()
        self.refresh()
        if old != new:
            self.post_message(self.Highlighted(self, new))

    def move_to(self, index: int, center: bool = False) -> None:
        if not self.rows:
            return
        index = max(0, min(index, len(self.rows) - 1))
        self.set_reactive(VirtualTable.cursor, index)
        self._keep_visible(center=center)
        if center:
            self.call_after_refresh(self._keep_visible, True)
        self.refresh()
        self.post_message(self.Highlighted(self, index))

    def _keep_visible(self, center: bool = False) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_offset.y)
        c = self.cursor
        if center and not top <= c < top + visible:
            self.scroll_to(y=max(0, c - visible // 2), animate=False, immediate=True)
        elif c < top:
            self.scroll_to(y=c, animate=False, immediate=True)
        elif c >= top + visible:
            self.scroll_to(y=c - visible + 1, animate=False, immediate=True)

    def action_cursor(self, step: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + step))

    def action_page(self, direction: int) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)
        self.action_cursor(direction * visible)

    def action_edge(self, end: int) -> None:
        if self.rows:
            self.cursor = len(self.rows) - 1 if end else 0

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if 0 <= index < len(self.rows):
            again = index == self.cursor
            self.cursor = index
            if again or event.chain >= 2:
                self.post_message(self.Selected(self, index))

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


# -- the chain browser ------------------------------------------------------------------------------

@dataclass
class View:
    kind: str  # chain / search
    ref: ChainRef | None = None
    cursor: int = 0
    query: str = ""
    hits: list[SearchHit] = field(default_factory=list)


SMALL = 1500  # rules: a chain this short is parsed on the spot, a longer one in a thread worker


class ChainBrowser(Vertical):
    """Tables → chains → rules of one node, through a `RulesAdapter`. `enter` follows a jump, `esc`
    goes back, `/` searches every rule; a trace's paths light up (`light`)."""

    DEFAULT_CSS = """
    ChainBrowser { height: 1fr; }
    ChainBrowser #crumbs { height: 1; padding: 0 1; background: $boost; text-wrap: nowrap; text-overflow: ellipsis; }
    ChainBrowser #panes { height: 1fr; }
    ChainBrowser #left { width: 36; border-right: vkey $primary 50%; }
    ChainBrowser.wide #left { width: 50; }
    ChainBrowser.narrow #left { display: none; }
    ChainBrowser #tables { height: 1; padding: 0 1; }
    ChainBrowser #chains { height: 1fr; }
    ChainBrowser #rules { width: 1fr; }
    ChainBrowser #detail { height: 6; padding: 0 1; border-top: hkey $primary 50%; }
    ChainBrowser #search { dock: bottom; display: none; }
    ChainBrowser #search.visible { display: block; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "follow", "Follow jump", id="browser.follow", tooltip="into the chain the selected rule jumps to"),
        Binding("escape,backspace", "back", "Back", id="browser.back", tooltip="the chain before"),
        Binding("slash", "search", "Search rules", id="browser.search", key_display="/",
                tooltip="find text in every rule of the node"),
        Binding("n", "next_hit(1)", "Next hit", id="browser.next-hit", show=False),
        Binding("N", "next_hit(-1)", "Previous hit", id="browser.prev-hit", show=False),
        Binding("t", "next_table", "Next table", id="browser.table", tooltip="nat, filter, mangle, raw… in turn"),
        Binding("c", "toggle_chains", "Chains pane", id="browser.chains-pane", tooltip="show or hide the list of chains"),
        Binding("left", "focus_chains", "Chains", id="browser.chains", show=False),
        Binding("right", "focus_rules", "Rules", id="browser.rules", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.adapter: RulesAdapter | None = None
        self.table: str | None = None
        self.view: View | None = None
        self.history: list[View] = []
        self.hits: list[SearchHit] = []
        self.hit_index = -1
        self.lit: dict[tuple[str, str, int], int] = {}  # (table, chain, rule) -> hop number in the selected path
        self.lit_other: set[tuple[str, str, int]] = set()  # rules on the other outcomes' paths
        self.lit_chains: set[tuple[str, str]] = set()
        self.hop: int | None = None
        self.hops: list[StepRef] = []
        self._chains: list[ChainInfo] = []
        self._rules: list[RuleView] = []
        self.status = "no node"
        self.take_focus = False  # focus the rules (or chains) once they are loaded

    def compose(self) -> ComposeResult:
        yield Static("", id="crumbs")
        with Horizontal(id="panes"):
            with Vertical(id="left"):
                yield Static("", id="tables")
                yield VirtualTable(id="chains")
            yield VirtualTable(id="rules")
        yield Static("", id="detail")
        yield Input(placeholder="search every rule (text, address, chain, comment) and press enter", id="search")

    # -- data --
    def set_adapter(self, adapter: RulesAdapter | None, start: ChainRef | None = None, status: str = "") -> None:
        self.adapter = adapter
        self.history = []
        self.hits = []
        self.status = status
        if adapter is None:
            self.query_one("#chains", VirtualTable).set_rows([Column("name", "CHAINS", flex=1)], [], str,
                                                              empty=status or "loading…")
            self.query_one("#rules", VirtualTable).set_rows([Column("text", "RULES", flex=1)], [], str,
                                                             empty=status or "loading…")
            self._crumbs()
            return
        # kube-proxy's nftables chain names and IPVS's virtual servers are long: the chain list gets more room
        self.set_class(adapter.kind in ("nftables", "ipvs"), "wide")
        tables = adapter.tables()
        if start is None or start.table not in tables:
            start = ChainRef(tables[0] if tables else "filter", "")
        self.show(View("chain", start), push=False)

    def show_chain(self, ref: ChainRef, line: int | None = None, push: bool = True, rule: int | None = None) -> None:
        """Open a chain; select the rule from `line` of the dump (or at position `rule`, 1-based)."""
        self.show(View("chain", ref, cursor=-1 if line is None else 0), push=push, line=line, rule=rule)

    def show(self, view: View, push: bool = True, line: int | None = None, rule: int | None = None) -> None:
        if self.adapter is None:
            return
        if push and self.view is not None:
            self.view.cursor = self.query_one("#rules", VirtualTable).cursor
            self.history.append(self.view)
        self.view = view
        if view.kind == "search":
            self._show_search(view)
            return
        assert view.ref is not None
        adapter, ref = self.adapter, view.ref
        info = adapter.chain_info(ref.table, ref.chain) if ref.chain else None
        table_changed = ref.table != self.table
        big = (info is not None and info.rule_count > SMALL) or (table_changed and adapter.rule_count() > 20 * SMALL)

        def load() -> tuple[list[ChainInfo] | None, list[RuleView]]:
            chains = adapter.chains(ref.table) if table_changed else None
            rules = adapter.rules(ref.table, ref.chain) if ref.chain else []
            return chains, rules

        def done(result: tuple[list[ChainInfo] | None, list[RuleView]]) -> None:
            if self.view is not view:
                return  # the user went elsewhere meanwhile
            chains, rules = result
            if chains is not None:
                self.table = ref.table
                self._chains = chains
            self._apply(view, rules, line, rule)

        if not big:
            try:
                done(load())
            except SvctraceError as e:
                self.app.notify(str(e), severity="error", title="rules")
            return
        rules_table = self.query_one("#rules", VirtualTable)
        rules_table.loading = True
        if table_changed:
            self.query_one("#chains", VirtualTable).loading = True
        self.status = f"parsing {ref.table} {ref.chain or ''}…"
        self._crumbs()

        def work() -> None:
            try:
                result = load()
            except SvctraceError as e:
                msg = str(e)
                deliver(self, self._failed, msg)
                return
            deliver(self, done, result)

        self.run_worker(work, thread=True, exclusive=True, group="browser", exit_on_error=False,
                        description=f"parse {ref}")

    def _failed(self, msg: str) -> None:
        self.query_one("#rules", VirtualTable).loading = False
        self.query_one("#chains", VirtualTable).loading = False
        self.status = msg
        self._crumbs()
        self.app.notify(msg, severity="error", title="rules")

    def _apply(self, view: View, rules: list[RuleView], line: int | None, rule: int | None) -> None:
        assert view.ref is not None
        self.status = ""
        self._rules = rules
        chains_t = self.query_one("#chains", VirtualTable)
        rules_t = self.query_one("#rules", VirtualTable)
        chains_t.loading = False
        rules_t.loading = False
        names = [c.name for c in self._chains]
        cpos = names.index(view.ref.chain) if view.ref.chain in names else 0
        if chains_t.rows is not self._chains:
            chains_t.set_rows(self._chain_columns(), self._chains, self._chain_cell, row_class=self._chain_class,
                              cursor=cpos, empty="no chains")
        else:
            chains_t.refresh_rows()
            chains_t.move_to(cpos, center=True)
        if line is not None:
            cursor = rule_index_for_line(rules, line)
        elif rule is not None:
            cursor = max(0, rule - 1)
        else:
            cursor = max(0, view.cursor)
        if not view.ref.chain:
            rules_t.set_rows(self._rule_columns(view.ref), [], self._rule_cell,
                             empty="pick a chain on the left (enter)")
        else:
            rules_t.set_rows(self._rule_columns(view.ref, rules), rules, self._rule_cell, row_class=self._rule_class,
                             cursor=cursor, empty=self._empty_text(view.ref))
        self._tables_bar()
        self._crumbs()
        self._detail()
        if self.take_focus or self.screen.focused is None:  # a loading table cannot hold the focus
            self.take_focus = False
            (rules_t if view.ref.chain else chains_t).focus()

    def _empty_text(self, ref: ChainRef) -> str:
        info = self.adapter.chain_info(ref.table, ref.chain) if self.adapter else None
        if info is not None and info.empty:
            return info.empty
        if info is not None and info.builtin:
            return "no rules: the chain's policy decides"
        return "no rules: the packet returns to the calling chain"

    def _meaning(self, table: str, chain: str | None) -> str | None:
        info = self.adapter.chain_info(table, chain) if self.adapter and chain else None
        return info.meaning if info else None

    def _show_search(self, view: View) -> None:
        rules_t = self.query_one("#rules", VirtualTable)
        rules_t.loading = False
        cols = [Column("where", "TABLE CHAIN", max_width=36), Column("text", f"RULES WITH “{view.query}”", flex=1)]
        rules_t.set_rows(cols, view.hits, self._hit_cell, cursor=view.cursor,
                         empty=f"no rule holds “{view.query}”")
        self._crumbs()
        self._detail()

    # -- columns and cells --
    def _chain_columns(self) -> list[Column]:
        return [Column("mark", " ", width=1), Column("name", "CHAIN", flex=1, ellipsis="middle"),
                Column("n", "RULES", width=5, justify="right")]

    def _chain_cell(self, c: ChainInfo, key: str) -> Text | str:
        if key == "mark":
            return Text("●", style="bold yellow") if (c.table, c.name) in self.lit_chains else ""
        if key == "name":
            style = "bold" if c.builtin else "#d7afff" if c.kind in ("set", "map", "vmap", "ipset") else ""
            t = Text(c.label or c.name, style=style)
            if c.policy and c.policy.upper() != "ACCEPT":
                t.append(f" ({c.policy})", style="bold red")
            if c.note:
                t.append(f" {c.note}", style="dim")
            return t
        return str(c.rule_count)

    def _chain_class(self, c: ChainInfo) -> str | None:
        return "lit" if (c.table, c.name) in self.lit_chains else None

    def _rule_columns(self, ref: ChainRef | None = None, rules: list[RuleView] | None = None) -> list[Column]:
        cols = [Column("mark", " ", width=3), Column("n", "#", width=4, justify="right")]
        if self.adapter is not None and self.adapter.has_counters:
            cols += [Column("pkts", "PKTS", width=5, justify="right"), Column("bytes", "BYTES", width=5,
                                                                                 justify="right")]
        heads = ("MATCHES", "TARGET", "COMMENT")
        if self.adapter is not None and ref is not None and ref.chain:
            heads = self.adapter.headings(ref.table, ref.chain)
        comments = rules is None or any(r.comment for r in rules)
        # No comment in the chain: the matches get the room, and so does the target when the matches are short
        # (a map's elements: `tcp . 30080` → `↷ external-GCGJYZ2R-default/web-nodeport/tcp/http`).
        need = max((sum(len(m.text) + 1 for m in r.matches) or 15 for r in (rules or [])[:400]), default=15)
        short = rules is not None and need <= 32
        cols += [Column("match", heads[0], flex=3, min_width=0 if comments else min(need, 30)),
                 Column("target", heads[1], max_width=48 if short and not comments else 30)]
        if comments:
            cols.append(Column("comment", heads[2], flex=2))
        return cols

    def _rule_cell(self, r: RuleView, key: str) -> Text | str:
        if key == "mark":
            hop = self.lit.get((r.table, r.chain, r.index))
            if hop is not None:
                return Text(f"{hop:>2}›", style="bold yellow")
            return Text(" • ", style="yellow") if (r.table, r.chain, r.index) in self.lit_other else ""
        if key == "n":
            return Text(str(r.index), style="dim")
        if key == "pkts":
            return render.counters(r)[0]
        if key == "bytes":
            return render.counters(r)[1]
        if key == "match":
            return render.rule_matches(r)
        if key == "target":
            return render.rule_target(r)
        return render.rule_comment(r)

    def _rule_class(self, r: RuleView) -> str | None:
        k = (r.table, r.chain, r.index)
        if k in self.lit:
            return "hop" if self.hop is not None and self.hops and self._hop_key(self.hop) == k else "lit"
        return "lit" if k in self.lit_other else None

    def _hit_cell(self, h: SearchHit, key: str) -> Text | str:
        if key == "where":
            return Text(f"{h.table} {h.chain}", style="bold")
        prefix = f"-A {h.chain} "
        text = h.text[len(prefix):] if h.text.startswith(prefix) else h.text
        text = text.removeprefix("add element ")
        t = Text(text)
        q = self.view.query if self.view is not None else ""
        if q:
            t.highlight_words([q], style="bold reverse", case_sensitive=False)
        return t

    # -- the bars --
    def _tables_bar(self) -> None:
        t = Text()
        for name in self.adapter.tables() if self.adapter else []:
            t.append(f" {name} ", style="reverse bold" if name == self.table else "dim")
        self.query_one("#tables", Static).update(t)

    def _crumbs(self) -> None:
        t = Text()
        if self.adapter is None:
            t.append(self.status or "loading…", style="italic")
            self.query_one("#crumbs", Static).update(t)
            return
        t.append(self.adapter.node, style="bold")
        t.append(f" ({self.adapter.kind})", style="dim")
        v = self.view
        if v is not None and v.kind == "search":
            t.append(" › ", style="dim")
            t.append(f"search “{v.query}”: {len(v.hits)}{'+' if len(v.hits) >= 1000 else ''} rules", style="bold")
        elif v is not None and v.ref is not None:
            t.append(" › ", style="dim")
            t.append(v.ref.table)
            if v.ref.chain:
                t.append(" › ", style="dim")
                t.append(self._label(v.ref.table, v.ref.chain), style="bold #5fafff")
                r = self.current_rule
                if r is not None:
                    t.append(f" › #{r.index}", style="bold")
                    if r.jump:
                        t.append(f" → {self._label(r.table, r.jump)}", style="#5fafff")
        if self.history:
            t.append(f"   esc: back ({len(self.history)})", style="dim")
        if self.hop is not None and self.hops:
            t.append(f"   hop {self.hop + 1}/{len(self.hops)}", style="bold yellow")
        if self.status:
            t.append(f"   {self.status}", style="italic yellow")
        self.query_one("#crumbs", Static).update(t)

    def _label(self, table: str, chain: str) -> str:
        """A chain as the chain list shows it (kube-proxy's nftables chains without their hash)."""
        info = self.adapter.chain_info(table, chain) if self.adapter else None
        return info.label or chain if info else chain

    @property
    def current_rule(self) -> RuleView | None:
        if self.view is None or self.view.kind != "chain":
            return None
        row = self.query_one("#rules", VirtualTable).row
        return row if isinstance(row, RuleView) else None

    def _detail(self) -> None:
        d = self.query_one("#detail", Static)
        if self.view is not None and self.view.kind == "search":
            row = self.query_one("#rules", VirtualTable).row
            if isinstance(row, SearchHit):
                d.update(Text.assemble((f"{row.table} {row.chain}", "bold"),
                                       (f"  {row.where or f'line {row.line}'}\n", "dim"),
                                       row.text, ("\nenter: open the rule in its chain", "dim")))
            else:
                d.update("")
            return
        r = self.current_rule
        if r is None:
            ref = self.view.ref if self.view else None
            m = self._meaning(ref.table, ref.chain) if ref else None
            d.update(Text.assemble((f"{ref.table} {ref.chain}: ", "bold"), (m, "dim")) if ref and m else "")
            return
        d.update(render.rule_detail(r, self._meaning(r.table, r.chain), self._meaning(r.table, r.jump)))

    # -- events --
    def on_virtual_table_highlighted(self, event: VirtualTable.Highlighted) -> None:
        event.stop()
        if event.table.id == "rules":
            self._crumbs()
            self._detail()

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        event.stop()
        event.table.focus()
        self.action_follow()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "search":
            return
        event.stop()
        query = event.value.strip()
        event.input.remove_class("visible")
        self.query_one("#rules", VirtualTable).focus()
        if query:
            self.search(query)

    def search(self, query: str) -> None:
        adapter = self.adapter
        if adapter is None:
            return
        self.status = f"searching “{query}”…"
        self._crumbs()

        def work() -> None:
            hits = adapter.search(query)
            deliver(self, self._searched, query, hits)

        self.run_worker(work, thread=True, exclusive=True, group="search", exit_on_error=False,
                        description=f"search {query}")

    def _searched(self, query: str, hits: list[SearchHit]) -> None:
        self.status = ""
        self.hits = hits
        self.hit_index = -1
        self.show(View("search", query=query, hits=hits))
        self.query_one("#rules", VirtualTable).focus()

    # -- actions --
    def action_follow(self) -> None:
        if self.adapter is None or self.view is None:
            return
        focused = self.app.focused
        chains_t = self.query_one("#chains", VirtualTable)
        if focused is chains_t:
            c = chains_t.row
            if isinstance(c, ChainInfo):
                self.show_chain(ChainRef(c.table, c.name))
                self.query_one("#rules", VirtualTable).focus()
            return
        if self.view.kind == "search":
            rules_t = self.query_one("#rules", VirtualTable)
            h = rules_t.row
            if isinstance(h, SearchHit):
                self.hit_index = rules_t.cursor
                self._open_hit(h)
            return
        r = self.current_rule
        if r is None:
            return
        if r.jump is None and r.branches:
            if len(r.branches) == 1:
                self._follow_to(r.branches[0][1])
                return
            lit = next((i for i, (_label, ref) in enumerate(r.branches)
                        if (ref.table, ref.chain) in self.lit_chains), 0)
            self.app.push_screen(ChoiceScreen(f"{r.chain} #{r.index} leads to", r.branches, lit),
                                 self._chosen)
            return
        if r.jump is None:
            what = {"accept": "a verdict: the packet is accepted here", "drop": "a verdict: dropped here",
                    "reject": "a verdict: rejected here", "return": "RETURN: back to the calling chain",
                    "nat": "address translation, then the verdict of the built-in chain",
                    "member": "a member of the set: nothing to follow",
                    "none": "no target: the rule only counts packets"}.get(r.target_kind, "not a jump")
            self.app.notify(f"{r.target or 'no target'}: {what}", title="nothing to follow", timeout=3)
            return
        self._follow_to(ChainRef(r.table, r.jump))

    def _follow_to(self, ref: ChainRef) -> None:
        if self.adapter is None:
            return
        target = self.adapter.find_chain(ref.chain, ref.table)
        if target is None or target != ref:
            self.app.notify(f"{ref.chain} is not in the dump (filtered or cut short)", severity="warning")
            return
        self.show_chain(target)
        self.query_one("#rules", VirtualTable).focus()

    def _chosen(self, ref: ChainRef | None) -> None:
        if ref is not None:
            self._follow_to(ref)

    def _open_hit(self, h: SearchHit, push: bool = True) -> None:
        ref = ChainRef(h.table, h.chain)
        if h.index is not None:
            self.show_chain(ref, rule=h.index, push=push)
        else:
            self.show_chain(ref, line=h.line, push=push)

    def action_back(self) -> None:
        search = self.query_one("#search", Input)
        if search.has_class("visible"):
            search.remove_class("visible")
            self.query_one("#rules", VirtualTable).focus()
            return
        if not self.history:
            raise SkipAction()
        view = self.history.pop()
        self.show(view, push=False)

    def action_search(self) -> None:
        if self.adapter is None:
            return
        search = self.query_one("#search", Input)
        search.add_class("visible")
        search.focus()

    def action_next_hit(self, step: int) -> None:
        if not self.hits:
            raise SkipAction()
        self.hit_index = (self.hit_index + step) % len(self.hits)
        h = self.hits[self.hit_index]
        self.status = f"hit {self.hit_index + 1}/{len(self.hits)}"
        self._open_hit(h, push=self.view is not None and self.view.kind == "search")

    def action_next_table(self) -> None:
        if self.adapter is None:
            return
        tables = self.adapter.tables()
        if not tables:
            return
        nxt = tables[(tables.index(self.table) + 1) % len(tables)] if self.table in tables else tables[0]
        self.show_chain(ChainRef(nxt, ""))
        self.query_one("#chains", VirtualTable).focus()

    def action_focus_chains(self) -> None:
        if self.has_class("narrow"):
            self.remove_class("narrow")
        self.query_one("#chains", VirtualTable).focus()

    def action_toggle_chains(self) -> None:
        self.toggle_class("narrow")
        if self.has_class("narrow"):
            self.query_one("#rules", VirtualTable).focus()

    def action_focus_rules(self) -> None:
        self.query_one("#rules", VirtualTable).focus()

    # -- the lit paths --
    def light(self, paths: list[list[StepRef]], selected: int | None) -> None:
        self.lit = {}
        self.lit_other = set()
        self.lit_chains = set()
        self.hops = []
        self.hop = None
        for i, path in enumerate(paths):
            for s in path:
                self.lit_chains.add((s.table, s.chain))
                if s.rule is None:
                    continue
                if i != selected:
                    self.lit_other.add((s.table, s.chain, s.rule))
        if selected is not None and 0 <= selected < len(paths):
            self.hops = [s for s in paths[selected] if s.rule is not None]
            for n, s in enumerate(self.hops, 1):
                assert s.rule is not None
                self.lit.setdefault((s.table, s.chain, s.rule), n)
        self.query_one("#chains", VirtualTable).refresh_rows()
        self.query_one("#rules", VirtualTable).refresh_rows()
        self._crumbs()

    def _hop_key(self, n: int) -> tuple[str, str, int]:
        s = self.hops[n]
        return (s.table, s.chain, s.rule or 0)

    def go_hop(self, n: int) -> None:
        """Show hop n (0-based) of the selected path: its chain, the rule selected."""
        if not self.hops:
            return
        n = max(0, min(n, len(self.hops) - 1))
        self.hop = n
        s = self.hops[n]
        self.show_chain(ChainRef(s.table, s.chain), rule=s.rule, push=False)


class ChoiceScreen(ModalScreen[ChainRef | None]):
    """Where a rule with several ways out (an anonymous verdict map, sets it matches on) goes: pick one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="choice.cancel"),
    ]
    DEFAULT_CSS = """
    ChoiceScreen #choice-box { width: 100; height: auto; max-height: 80%; border: round $primary;
                               padding: 0 1; background: $surface; }
    ChoiceScreen #choices { height: auto; max-height: 20; border: none; }
    """

    def __init__(self, title: str, choices: Sequence[tuple[str, ChainRef]], highlighted: int = 0) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.highlighted = highlighted

    def compose(self) -> ComposeResult:
        with Vertical(id="choice-box"):
            yield Static(Text(self.title_text, style="bold"))
            yield OptionList(*[Option(Text(label), id=str(i)) for i, (label, _ref) in enumerate(self.choices)],
                             id="choices")
            yield Static(Text("enter: open it   esc: cancel", style="dim"))

    def on_mount(self) -> None:
        ol = self.query_one("#choices", OptionList)
        ol.highlighted = max(0, min(self.highlighted, len(self.choices) - 1))
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.choices[event.option_index][1])

    def action_cancel(self) -> None:
        self.dismiss(None)

