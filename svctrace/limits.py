"""svctrace's resource budget: the largest input it reads, and how deep it follows. One home for every limit
(docs/limits.md is the user's view of this file; tests/test_limits.py checks the two agree).

Beyond a limit svctrace stops with a one-line error naming the file and the limit (exit 2), never by
running out of memory or stack. Standard library only; imports nothing of svctrace.
"""

from __future__ import annotations

MiB = 1024 * 1024

# -- reading files ----------------------------------------------------------------------------------------
MAX_DUMP = 512 * MiB  # one dump file given to `trace` (or stdin)
MAX_ARCHIVE = 1024 * MiB  # a snapshot .tar.gz on disk (compressed)
MAX_MEMBER = 256 * MiB  # one file of a snapshot (an archive member once decompressed, or a file)
MAX_TOTAL = 1024 * MiB  # all the files svctrace reads from one snapshot together, decompressed
MAX_MEMBERS = 100_000  # archive entries looked at (used or not)
MAX_JSON_DEPTH = 200  # nesting of cluster.json / meta.json / nft.json; Kubernetes objects nest about 12 deep
READ_CHUNK = MiB  # archives are read in chunks of this size, so a cap holds before memory is spent

# -- walking rules ---------------------------------------------------------------------------------------
MAX_DEPTH = 64  # chains entered by jump or goto on one path; nf_tables allows 16 (NFT_JUMP_STACK_SIZE)
MAX_BRANCHES = 20_000  # branches of one walk (random or undecidable matches)
MAX_STEPS = 2_000_000  # rules looked at in one walk

# -- messages --------------------------------------------------------------------------------------------
MAX_QUOTE = 120  # characters of input quoted in a message or warning; longer text ends in "…"
MAX_MESSAGE = 1000  # characters of one error or warning line
MAX_TREE_DEPTH = 48  # levels a printed path nests; deeper hops go on at the same level

# -- collecting ------------------------------------------------------------------------------------------
SSH_CONNECT_TIMEOUT = 30.0  # seconds to connect to a node (TCP, handshake, authentication, jumps)
SSH_COMMAND_TIMEOUT = 300.0  # seconds for one node's collection once connected (--command-timeout)
MAX_NODE_OUTPUT = 1024 * MiB  # bytes of output accepted from one node
