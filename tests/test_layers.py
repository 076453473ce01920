"""The core (model, netfilter, kubeproxy, errors) imports no UI and no network client."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("rich", "textual", "typer", "click", "kubernetes", "paramiko")
CORE = ("svctrace.model.packet", "svctrace.errors", "svctrace.dataplane.iptables", "svctrace.dataplane.iptables.walker",
        "svctrace.dataplane.iptables.parser", "svctrace.dataplane.iptables.listing", "svctrace.dataplane.ipset",
        "svctrace.dataplane.iptables.printer", "svctrace.kubeproxy", "svctrace.kubeproxy.catalog", "svctrace.kubeproxy.names",
        "svctrace.kubeproxy.endpoints", "svctrace.kubeproxy.render.iptables", "svctrace.model.cluster", "svctrace.model.snapshot",
        "svctrace.explain", "svctrace.explain.diagnostics", "svctrace.explain.hops")


def test_core_imports_no_ui_or_network_client() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the core pulled in: {out.stdout.strip()}"


def test_the_check_can_fail() -> None:
    """The same probe sees a forbidden import when there is one (the test above is not vacuous)."""
    code = "import sys, svctrace.render.text\nprint(','.join(sorted(m for m in sys.modules if m.split('.')[0] == 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "rich" in out.stdout
