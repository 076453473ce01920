"""Collectors: they read a live cluster and write snapshot bundles (docs/snapshots.md).

* ``svctrace.collect.bundle``: bundle writing (directory or ``.tar.gz``, atomic, owner-only) and the secret
  scrubber (``scrub_text``, ``scrub_json``, ``scrub_file``); ``NodeDump``/``NodeError``. Standard library.
* ``svctrace.collect.commands``: what runs on a node and which bundle file each output goes to;
  ``collect_node(run)`` for any transport that can run a shell script. Standard library.
* ``svctrace.collect.ssh``: ``collect_ssh`` / ``collect_nodes_ssh`` over SSH (paramiko).
* ``svctrace.collect.kube``, ``svctrace.collect.debugpod``: the Kubernetes API side (kubernetes).

Importing this package imports neither paramiko nor kubernetes; import the submodule you need.
"""
