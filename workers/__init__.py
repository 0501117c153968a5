"""The Celery app: `celery -A workers worker`.  Tasks stay thin; the work is in migrator/."""

from workers.app import app

__all__ = ["app"]
