"""`svctrace tui`: an interactive browser of Services, chains and packet paths (docs/tui.md).

The data layer (`svctrace.browse.data`, `svctrace.browse.session`) does not import Textual; the app does,
and only when `run_tui` is called, so importing this package stays cheap for the CLI.
"""

from __future__ import annotations

from typing import Any


def run_tui(snapshot_path: str | None, target: str | None = None, namespace: str | None = None, *,
            opener: Any = None, source_title: str | None = None, node: str | None = None) -> int:
    """Run the app until the user quits. `snapshot_path`: a snapshot directory or .tar.gz, `demo`
    (also for None), or one node's iptables-save dump; or `opener` (progress, refresh) -> a snapshot path,
    for a live cluster (`source_title` names it while it loads). `target`: a Service to open at once
    (`svc/NAME`, `NS/NAME`, `NAME.NS`); `namespace`: show only this namespace; `node`: the node whose rules
    the screens show (default: the first worker with rules). Returns the exit code."""
    from svctrace.tui.app import SvctraceApp

    app = SvctraceApp(snapshot_path, target=target, namespace=namespace, opener=opener, source_title=source_title,
                      node=node)
    code = app.run()
    return app.return_code or int(code or 0)


__all__ = ["run_tui"]
