"""`python -m svctrace`: the same as the `svctrace` command."""

from svctrace.cli import main

main()
