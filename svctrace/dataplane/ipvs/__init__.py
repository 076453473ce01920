"""IPVS: read `ipvsadm` output and walk a packet through IPVS and the iptables rules beside it (kube-proxy's
side of IPVS mode, its ipsets and version, is `svctrace.kubeproxy.walk.trace_ipvs`). Pure: no UI, no network
client."""

from svctrace.dataplane.ipvs.model import IPVSTable, Lookup, RealServer, VirtualService
from svctrace.dataplane.ipvs.parser import load_ipvs, looks_like_ipvsadm
from svctrace.dataplane.ipvs.schedulers import Pick, Schedule, schedule
from svctrace.dataplane.ipvs.walker import IPVSContext, walk

__all__ = [
    "IPVSContext",
    "IPVSTable",
    "Lookup",
    "Pick",
    "RealServer",
    "Schedule",
    "VirtualService",
    "load_ipvs",
    "looks_like_ipvsadm",
    "schedule",
    "walk",
]
