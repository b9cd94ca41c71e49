from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from scheduler.models import WorkerHeartbeat


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and docker-compose: the database answers (200) or not (503).

    It also says how long ago beat's heartbeat last reached a worker, so an operator sees a
    stopped worker or beat without reading logs.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        beat = WorkerHeartbeat.objects.filter(name="worker").first()
    except Exception:  # noqa: BLE001 - any database failure means "not healthy"
        return JsonResponse({"database": "unavailable"}, status=503)
    age = (timezone.now() - beat.beat_at).total_seconds() if beat else None
    return JsonResponse(
        {"database": "ok", "worker_heartbeat_age_seconds": None if age is None else round(age)}
    )
