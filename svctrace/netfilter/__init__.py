"""iptables: parse any dump, walk a packet through it. Pure: no UI, no network client."""

from svctrace.netfilter.parser import load_ruleset, sniff_format
from svctrace.netfilter.rules import Chain, Rule, Ruleset
from svctrace.netfilter.walker import Outcome, PathStep, TraceResult, trace

__all__ = ["Chain", "Outcome", "PathStep", "Rule", "Ruleset", "TraceResult", "load_ruleset", "sniff_format", "trace"]
