from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from scheduler.models import WorkerHeartbeat


class Command(BaseCommand):
    help = (
        "Exit non-zero when beat's heartbeat has not reached a worker recently "
        "(docker-compose's health check for beat)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-age", type=int, default=180, help="seconds (default 180)")

    def handle(self, *args: Any, max_age: int, **options: Any) -> None:
        beat = WorkerHeartbeat.objects.filter(name="worker").first()
        if beat is None:
            raise CommandError("no heartbeat yet: beat or the worker has not run")
        age = (timezone.now() - beat.beat_at).total_seconds()
        if age > max_age:
            raise CommandError(f"last heartbeat {age:.0f} s ago (more than {max_age} s)")
        self.stdout.write(f"heartbeat {age:.0f} s ago")
