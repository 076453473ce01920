"""Knowledge of kube-proxy itself: how it names its iptables chains (see :mod:`svctrace.kubeproxy.names`)."""
