"""Dataplanes: the kernel's rules as data, and the walks through them."""
