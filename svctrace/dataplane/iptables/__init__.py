"""iptables: parse any dump, walk a packet through it. Pure: no UI, no network client."""

from svctrace.dataplane.contract import Outcome, PathStep, TraceResult
from svctrace.dataplane.iptables.parser import load_ruleset
from svctrace.dataplane.iptables.rules import Chain, Rule, Ruleset
from svctrace.dataplane.iptables.walker import trace

__all__ = ["Chain", "Outcome", "PathStep", "Rule", "Ruleset", "TraceResult", "load_ruleset", "trace"]
