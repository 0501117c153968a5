"""The `migrator` command: the core's command line with the Celery dispatcher handed in.

`command()` is the command as a process runs it (the console script, `python -m
workers.main`); `main()` is the same command line for a caller in a process of its own.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from migrator import dispatch
    from migrator.cli import main as cli_main
    from workers.dispatch import CeleryDispatcher

    dispatch.use(CeleryDispatcher())
    return cli_main(argv)


def command() -> int:
    """main() in a process of its own, with Python's cyclic garbage collector kept off what
    lives until the process ends.  The command's imports make some 50,000 objects (modules,
    classes, functions), none of them garbage: collecting while they come walks them
    again and again, and the collections while the interpreter shuts down walk them all
    once more (0.1 s of an empty `migrator run`'s 0.5 s, as much as the copy itself).  So
    the collector waits until the imports are done, then leaves what they made alone for
    good (gc.freeze), and leaves everything alone once the command has returned: the
    process ends, the operating system takes its memory back, and Python's exit still
    flushes the standard streams and runs the atexit handlers (logging's among them)."""
    gc.disable()
    try:
        import migrator.cli  # noqa: F401 -- what main() imports, made with the collector off
        import workers.dispatch  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(command())
