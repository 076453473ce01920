"""Diagnostics with stable codes (docs/cli.md, docs/explain.md): one registered check per code.

registry.py holds the order and the runner; the checks live by what they read: service.py (the Service
object), endpoints.py (its endpoints on this path), rules.py (the node's dataplane), node.py (the node around the
rules: forwarding, routes, rp_filter, and the reply's way back).
"""

from svctrace.explain.diagnostics import endpoints, node, objects, policy, rules, service  # noqa: F401  (register the checks)
from svctrace.explain.diagnostics.registry import Check, Context, Diagnostic, checks, run

__all__ = ["Check", "Context", "Diagnostic", "checks", "run"]
