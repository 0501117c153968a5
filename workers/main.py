"""The `migrator` command: the core's command line with the Celery dispatcher handed in."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from migrator import dispatch
from migrator.cli import main as cli_main
from workers.dispatch import CeleryDispatcher


def main(argv: Sequence[str] | None = None) -> int:
    dispatch.use(CeleryDispatcher())
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
