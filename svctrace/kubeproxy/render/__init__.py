"""What kube-proxy programs, rendered per mode (iptables, IPVS, nftables)."""
