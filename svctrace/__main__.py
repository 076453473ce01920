"""The `svctrace` entry point (also `python -m svctrace`): Ctrl-C is handled before anything heavy is imported.

Loading typer, rich and a command's modules takes a few hundred milliseconds; a Ctrl-C in that time used to
print a KeyboardInterrupt traceback. Here SIGINT first ends the process quietly (exit 130: nothing has been
done yet, so nothing needs cleaning), and once the command is loaded Python's own KeyboardInterrupt is back,
so that the commands' cleanups (collect deletes its debug pods) run. Only the standard library is imported
at module level.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module: `signal` imports enum, which alone takes a noticeable part of a start-up
import os
import sys


def _quiet_exit(signum: int, frame: object) -> None:
    try:
        os.write(2, b"svctrace: interrupted\n")
    finally:
        os._exit(130)


def main() -> None:
    old = _signal.getsignal(_signal.SIGINT)
    if old is _signal.default_int_handler:  # not when the caller ignores SIGINT (nohup, a background job)
        _signal.signal(_signal.SIGINT, _quiet_exit)
    from svctrace.cli import main as cli_main
    from svctrace.cli import prepare

    command = prepare(sys.argv[1:])
    if old is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    cli_main(command, prepared=True)


if __name__ == "__main__":
    main()
