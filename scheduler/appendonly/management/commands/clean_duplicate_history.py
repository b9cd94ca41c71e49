from __future__ import annotations

from scheduler.appendonly.management.commands import clean_old_history


class Command(clean_old_history.Command):
    """Replaces django-simple-history's command of the same name, which deletes history."""

    package_command = "clean_duplicate_history"
