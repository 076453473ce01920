"""`svctrace tui`: the Textual application (k9s-like: `:` commands, `/` filter, enter drills down, esc goes back)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.actions import SkipAction
from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import get_current_worker

from svctrace.browse.data import ChainRef, RulesAdapter
from svctrace.browse.session import ServiceRow, Session, TraceRequest, open_session, resolve_service
from svctrace.errors import SvctraceError
from svctrace.tui.screens import (
    BrowserScreen,
    CommandScreen,
    CompareScreen,
    HelpScreen,
    ModeScreen,
    ServicesScreen,
    TraceScreen,
)
from svctrace.tui.widgets import ChainBrowser, VirtualTable

AdapterDone = Callable[[RulesAdapter | None, ChainRef | None, str | None], None]
# Where a live TUI's snapshot comes from: (progress, refresh) -> a snapshot path. The CLI passes the live
# collector (svctrace.collect.live.snapshot_for_screen, with its cache); `refresh` forces a new collection.
Opener = Callable[[Callable[[str], None], bool], str]


class Closed(KeyboardInterrupt):
    """Raised through a collection's progress when the TUI is closed or the load cancelled: the collector
    stops and deletes its debug pod on the way out."""

CSS = """
Screen { background: $background; }
.topbar { height: 1; background: $primary-background; color: $text; padding: 0 1; }
.title { height: 1; padding: 0 1; background: $boost; }
#progress-row { height: 1; display: none; padding: 0 1; }
#progress-row #status { width: auto; margin-right: 2; }
#progress-row ProgressBar { width: 40; }
.error-panel { display: none; border: round $error; padding: 0 1; margin: 1 2; height: auto; color: $text; }
#filter { dock: bottom; display: none; }
#filter.visible { display: block; }
#table { height: 1fr; }

#form { height: 2; padding: 0 1; background: $boost; }
.form-row { height: 1; }
.flabel { width: auto; padding: 0 1 0 0; color: $text-muted; }
#form Select { width: 22; margin-right: 1; }
#form #source { width: 52; }
#form #ip { width: 18; margin-right: 1; }
#form #proto, #form #client, #form #node { width: 16; }
#path { height: auto; max-height: 2; padding: 0 1; }
#body { height: 1fr; }
#side { width: 46; border-left: vkey $primary 50%; padding: 0 0 0 1; }
/* Narrow terminals (TraceScreen.narrow): one pane at full width, the outcomes or the rules; `o` switches. */
TraceScreen.narrow #side { width: 1fr; border-left: none; padding: 0 1; }
TraceScreen.narrow #form #source { width: 30; }
TraceScreen.narrow #form #ip { width: 16; }
TraceScreen.narrow #form Select { width: 19; }
TraceScreen.narrow #browser { display: none; }
TraceScreen.narrow.show-rules #browser { display: block; }
TraceScreen.narrow.show-rules #side { display: none; }
#outcomes:focus { background: $boost; }
#summary { height: auto; max-height: 7; }
.section { height: 1; margin-top: 1; }
#outcomes { height: auto; max-height: 14; border: none; padding: 0; background: $surface; }
#diags-scroll { height: 1fr; margin-top: 1; }

#sides { height: 1fr; max-height: 16; }
.side { width: 1fr; padding: 0 1; }
#sides #left { border-right: vkey $primary 50%; }
#diff { height: 1fr; border-top: hkey $primary 50%; border-title-align: left; }
#diff-detail { height: 5; padding: 0 1; border-top: hkey $primary 50%; }

HelpScreen, CommandScreen, ModeScreen, ChoiceScreen { align: center middle; background: $background 60%; }
#help-box { width: 96; max-width: 100%; height: 90%; border: round $primary; padding: 0 1; background: $surface; }
#command-box { dock: bottom; height: 3; width: 100%; }
#mode-box { width: 100; max-width: 100%; height: auto; max-height: 90%; border: round $primary; padding: 0 1; background: $surface; }
"""


class SvctraceApp(App[int]):
    """Services → trace / chains / side by side, on a snapshot bundle or one node's dump."""

    TITLE = "svctrace"
    CSS = CSS
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="app.help", key_display="?", tooltip="this screen"),
        Binding("colon", "command", "Command", id="app.command", key_display=":",
                tooltip="type a command: svc, node, chain, trace, compare, mode (below)"),
        Binding("ctrl+r", "reload", "Refresh", id="app.refresh", key_display="^r",
                tooltip="collect the live cluster again (live mode)"),
        Binding("escape", "go_back", "Back", id="app.back", show=False, tooltip="the screen before"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="leave svctrace (ctrl+q too)"),
    ]

    def __init__(self, path: str | None = None, target: str | None = None, namespace: str | None = None, *,
                 session: Session | None = None, opener: Opener | None = None, source_title: str | None = None,
                 node: str | None = None) -> None:
        """`path`: a snapshot, `demo` or one node's dump; or `opener`, which gives the snapshot's path (a live
        cluster, read through the CLI's collector); `source_title` names it while it loads."""
        super().__init__()
        self.path = path
        self.opener = opener
        self.source_title = source_title
        self.refreshing = False
        self.target = target
        self.namespace = namespace
        self.session: Session | None = session
        self.wanted_node = node  # --node: the node whose rules the screens show, once loaded
        self.node: str | None = None
        self.state = "loading"  # loading / ready / failed
        self.error: str | None = None
        self.services_screen = ServicesScreen()
        self.loaded_at: float | None = None
        self.messages: list[tuple[str, str]] = []  # (severity, text) of every notification, newest last

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None,
               markup: bool = False) -> None:
        """A toast, kept in `messages` too (a test or a bug report can read what the user was told)."""
        self.messages.append((str(severity), message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def action_help_quit(self) -> None:
        """ctrl+c (Textual's reminder that it does not quit), in plain words: Textual's own text is markup, and
        `notify` here shows text as it is."""
        keys = sorted(k for k, ab in self.active_bindings.items() if ab.binding.action in ("quit", "app.quit"))
        self.notify(f"press {' or '.join(keys or ['ctrl+q'])} to quit svctrace", title="Do you want to quit?")

    def get_default_screen(self) -> Screen[Any]:
        return self.services_screen

    def start_loading(self) -> None:
        """Called by the Service list once it is on screen (so that it can show the progress)."""
        if self.state == "loading" and not any(w.group == "load" for w in self.workers):
            self.run_worker(self._load, thread=True, exit_on_error=False, group="load", description="open the input")

    # -- errors never end as a traceback --
    def _handle_exception(self, error: Exception) -> None:
        if isinstance(error, SvctraceError):
            self.notify(str(error), severity="error", title="svctrace", timeout=8)
            return
        if self.is_headless or os.environ.get("SVCTRACE_DEBUG"):
            super()._handle_exception(error)  # tests and debugging see the real failure
            return
        self.notify(f"internal error: {type(error).__name__}: {error} (SVCTRACE_DEBUG=1 shows the traceback)",
                    severity="error", title="svctrace", timeout=12)

    def from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn on the event loop; quietly nothing when the app or the widget is gone."""
        def safe() -> None:
            with contextlib.suppress(NoMatches):  # the screen that asked was closed meanwhile
                fn(*args)

        with contextlib.suppress(RuntimeError):  # the app is gone
            self.call_from_thread(safe)

    # -- loading --
    def _load(self) -> None:
        started = time.monotonic()
        worker = get_current_worker()

        def progress(msg: str) -> None:
            if worker.is_cancelled:
                raise Closed("the TUI was closed")
            self.from_thread(self.services_screen.set_status, msg + "…")

        try:
            if self.session is not None:
                session = self.session
            else:
                path = self.opener(progress, self.refreshing) if self.opener is not None else self.path
                session = open_session(path, progress=progress)
            rows = session.services()
        except Closed:
            return
        except SvctraceError as e:
            self.from_thread(self._load_failed, str(e))
            return
        except Exception as e:  # an input we do not understand must not crash the terminal
            self.from_thread(self._load_failed, f"internal error: {type(e).__name__}: {e}")
            return
        self.from_thread(self._loaded, session, rows, time.monotonic() - started)

    def _load_failed(self, msg: str) -> None:
        self.state = "failed"
        self.error = msg
        self.services_screen.set_status("")
        self.services_screen.show_error(msg)
        self.services_screen.refresh_topbar()
        self.notify(msg, severity="error", title="cannot open", timeout=10)

    def _loaded(self, session: Session, rows: list[ServiceRow], took: float) -> None:
        if self.refreshing:
            self.notify(f"refreshed: {len(rows)} Services", timeout=4)
        self.refreshing = False
        if self.opener is not None and self.source_title:
            session.title = self.source_title  # not the cache directory's path
        self.session = session
        self.node = session.default_node()
        if self.wanted_node is not None:
            if self.wanted_node in session.node_names():
                self.node = self.wanted_node
            else:
                self.notify(f"no node {self.wanted_node} with rules (nodes: {', '.join(session.node_names())})",
                            severity="warning")
        self.state = "ready"
        self.loaded_at = time.monotonic()
        scr = self.services_screen
        scr.set_services(rows)
        scr.refresh_topbar()
        todo = [r for r in rows if r.health is None]
        if todo:
            scr.set_status(f"checking the Services' health: 0/{len(todo)}", (0, len(todo)))
            self.run_worker(lambda: self._health(session, todo), thread=True, exit_on_error=False, group="health",
                            description="health marks")
        else:
            scr.set_status("")
        if self.target:
            key = self.resolve_service(self.target)
            if key is None:
                self.notify(f"no Service {self.target}", severity="warning")
            else:
                scr.select(key)
                self.open_trace(key)

    def _health(self, session: Session, rows: list[ServiceRow]) -> None:
        worker = get_current_worker()
        last = time.monotonic()
        for i, r in enumerate(rows, 1):
            if worker.is_cancelled:
                return
            try:
                r.health, r.health_note = session.health(r.key)
            except SvctraceError as e:
                r.health, r.health_note = "unknown", str(e)
            except Exception as e:
                r.health, r.health_note = "unknown", f"internal error: {type(e).__name__}: {e}"
            now = time.monotonic()
            if now - last > 0.25 or i == len(rows):
                last = now
                self.from_thread(self._health_progress, i, len(rows))

    def _health_progress(self, done: int, total: int) -> None:
        scr = self.services_screen
        scr.health_updated()
        scr.set_status("" if done >= total else f"checking the Services' health: {done}/{total}",
                       None if done >= total else (done, total))

    # -- the rules of a node, parsed in a worker --
    def with_adapter(self, node: str, done: AdapterDone,
                     start: Callable[[RulesAdapter], ChainRef | None] | None = None) -> None:
        session = self.session
        if session is None:
            done(None, None, "still loading")
            return

        def work() -> None:
            try:
                adapter = session.adapter(node)
                ref = start(adapter) if start else None
            except SvctraceError as e:
                self.from_thread(done, None, None, str(e))
                return
            self.from_thread(done, adapter, ref, None)

        self.run_worker(work, thread=True, exit_on_error=False, group=f"adapter-{node}", description=f"rules of {node}")

    # -- navigation --
    def topbar_text(self) -> Text:
        t = Text()
        t.append(" svctrace ", style="bold reverse")
        t.append("  ")
        s = self.session
        if self.state == "loading":
            t.append(f"opening {self.source_title or self.path or 'demo'}…", style="italic")
            return t
        if self.state == "failed" or s is None:
            t.append("nothing open", style="bold red")
            return t
        t.append("source ", style="dim")
        t.append(s.title, style="bold")
        t.append("  node ", style="dim")
        t.append(self.node or "-", style="bold")
        mode = s.node_mode(self.node) if self.node else None
        if mode:
            t.append(f" {mode}", style="magenta")
        t.append(f"  ({len(s.node_names())} with rules)", style="dim")
        if self.namespace:
            t.append("  namespace ", style="dim")
            t.append(self.namespace, style="bold")
        return t

    def _can_open(self) -> bool:
        if self.session is None:
            self.notify("still loading…" if self.state == "loading" else f"nothing open: {self.error}",
                        severity="warning")
            return False
        return True

    def open_trace(self, key: str, request: TraceRequest | None = None) -> None:
        if self._can_open():
            self.push_screen(TraceScreen(key, request))

    def open_compare(self, key: str, request: TraceRequest | None = None, left: str | None = None,
                     right: str | None = None) -> None:
        if not self._can_open():
            return
        assert self.session is not None
        nodes = self.session.comparable_nodes()
        if len(nodes) < 2:
            self.notify(f"side by side needs two nodes with rules; this input has {', '.join(nodes) or 'none'}",
                        severity="warning")
            return
        self.push_screen(CompareScreen(key, request, left, right))

    def open_browser(self, node: str | None = None, start: ChainRef | str | None = None,
                     service: str | None = None) -> None:
        if not self._can_open():
            return
        node = node or self.node
        if node is None:
            self.notify("no node has rules in this input", severity="warning")
            return
        scr = self.screen
        if isinstance(scr, BrowserScreen) and scr.node == node and isinstance(start, str) and scr.goto_chain(start):
            return
        self.push_screen(BrowserScreen(node, start, service))

    def show_services(self, filter_text: str | None = None) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()
        if filter_text is not None:
            self.services_screen.set_filter(filter_text)

    def resolve_service(self, text: str) -> str | None:
        """A Service key from `ns/name`, `svc/name`, `name`, `name.ns[.svc...]`."""
        sel = self.services_screen.selected
        return resolve_service(self.services_screen.all_rows, text, [self.namespace, sel.namespace if sel else None])

    # -- actions --
    def action_go_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()
            return
        raise SkipAction()

    def action_help(self) -> None:
        scr = self.screen
        if isinstance(scr, HelpScreen):
            return
        sections: list[tuple[str, list[BindingType]]] = [("Everywhere", list(self.BINDINGS))]
        names = {ServicesScreen: "Service list", BrowserScreen: "Chain browser", TraceScreen: "Trace",
                 CompareScreen: "Side by side"}
        for cls, title in names.items():
            own = cls.__dict__.get("BINDINGS")  # not the ones inherited from Screen
            if isinstance(scr, cls) and own:
                sections.append((title, list(own)))
        if scr.query(ChainBrowser):
            sections.append(("Chain browser", list(ChainBrowser.BINDINGS)))
        sections.append(("Lists", list(VirtualTable.BINDINGS)))
        self.push_screen(HelpScreen(sections))

    def action_reload(self) -> None:
        """Read the input again: a live cluster is collected anew (past the cache), a snapshot or a dump is
        read from disk again. Back to the Service list, which shows the progress."""
        if self.state == "loading":
            self.notify("still loading…", severity="warning")
            return
        if self.opener is None and self.path is None:
            self.notify("nothing to refresh: this session was given, not read", severity="warning")
            return
        self.workers.cancel_group(self, "health")
        self.show_services()
        self.session = None
        self.state = "loading"
        self.refreshing = True
        self.services_screen.refresh_topbar()
        self.start_loading()

    def action_command(self) -> None:
        if isinstance(self.screen, CommandScreen):
            return
        nodes = self.session.node_names() if self.session else []
        sugg = ["svc", "mode", "refresh", "help", "quit", "chain KUBE-SERVICES", "chain KUBE-NODEPORTS"]
        sugg += [f"node {n}" for n in nodes]
        sugg += [f"trace {r.key}" for r in self.services_screen.all_rows[:500]]
        sugg += [f"compare {r.key}" for r in self.services_screen.all_rows[:500]]
        self.push_screen(CommandScreen(sugg), self._command_done)

    def _command_done(self, text: str | None) -> None:
        if text:
            self.run_command(text)

    def run_command(self, text: str) -> None:
        words = text.split()
        if not words:
            return
        cmd, args = words[0].lower(), words[1:]
        arg = " ".join(args)
        if cmd in ("svc", "svcs", "service", "services"):
            self.show_services(arg if args else None)
        elif cmd in ("node", "nodes", "no"):
            if not self._can_open():
                return
            assert self.session is not None
            if not args:
                self.action_mode()
            elif args[0] in self.session.node_names():
                self.node = args[0]
                self.services_screen.refresh_topbar()
                self.open_browser(node=args[0])
            else:
                self.notify(f"no node {args[0]} with rules (nodes: {', '.join(self.session.node_names())})",
                            severity="warning")
        elif cmd in ("chain", "ch", "chains"):
            self.open_browser(start=arg or None)
        elif cmd in ("trace", "tr", "explain"):
            key = self._service_arg(arg)
            if key:
                self.open_trace(key)
        elif cmd in ("compare", "diff", "sbs", "side"):
            key = self._service_arg(args[0] if args else "")
            if key:
                self.open_compare(key, None, args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
        elif cmd in ("mode", "modes"):
            self.action_mode()
        elif cmd in ("refresh", "reload", "r"):
            self.action_reload()
        elif cmd in ("help", "h", "?"):
            self.action_help()
        elif cmd in ("q", "q!", "quit", "exit"):
            self.exit(0)
        else:
            self.notify(f"unknown command :{cmd} (try :help)", severity="warning")

    def _service_arg(self, arg: str) -> str | None:
        if not arg:
            sel = self.services_screen.selected
            if sel is None:
                self.notify("which Service? (:trace NAME)", severity="warning")
            return sel.key if sel else None
        key = self.resolve_service(arg)
        if key is None:
            self.notify(f"no Service {arg}", severity="warning")
        return key

    def action_mode(self) -> None:
        if not self._can_open():
            return
        assert self.session is not None
        self.push_screen(ModeScreen(self.session.node_modes(), self.node), self._mode_done)

    def _mode_done(self, node: str | None) -> None:
        if node and self.session and node in self.session.node_names():
            self.node = node
            self.services_screen.refresh_topbar()
            self.open_browser(node=node)
        elif node:
            self.notify(f"node {node} has no rules the browser can read", severity="warning")
