"""kube-proxy's IPVS mode: read `ipvsadm` output and walk a packet through IPVS and the iptables
rules kube-proxy programs beside it. Pure: no UI, no network client."""

from svctrace.dataplane.ipvs.kubeproxy import infer_kube_ipsets, layout, parse_kube_version
from svctrace.dataplane.ipvs.model import IPVSTable, Lookup, RealServer, VirtualService
from svctrace.dataplane.ipvs.parser import load_ipvs, looks_like_ipvsadm
from svctrace.dataplane.ipvs.schedulers import Pick, Schedule, schedule
from svctrace.dataplane.ipvs.walker import trace

__all__ = [
    "IPVSTable",
    "Lookup",
    "Pick",
    "RealServer",
    "Schedule",
    "VirtualService",
    "infer_kube_ipsets",
    "layout",
    "load_ipvs",
    "looks_like_ipvsadm",
    "parse_kube_version",
    "schedule",
    "trace",
]
