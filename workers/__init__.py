"""The Celery app: `celery -A workers worker`.  Tasks stay thin; the work is in migrator/.

`workers.app` (the Celery instance) is imported when first asked for, not with the package:
the `migrator` command imports `workers.main` for every command, and only `enqueue` (and
the commands that send forwarding jobs) need Celery.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.app import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
