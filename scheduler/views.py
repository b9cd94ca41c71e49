from __future__ import annotations

from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.views.decorators.http import require_GET

from scheduler.calendars.feeds import (
    feed_by_token,
    feed_version,
    participant_feed_ical,
    site_feed_ical,
)
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


@require_GET
def calendar_feed(request: HttpRequest, kind: str, token: str) -> HttpResponse:
    """A subscribable feed. Unknown and revoked tokens get the same bare 404."""
    feed = feed_by_token(token=token, kind=kind)
    if feed is None:
        raise Http404
    version = feed_version(feed)
    last_modified = int(version.last_modified.timestamp()) if version.last_modified else None
    unchanged = get_conditional_response(request, etag=version.etag, last_modified=last_modified)
    if unchanged is not None:
        return unchanged
    now = timezone.now()
    content = (
        participant_feed_ical(feed.participant, stamp=now)
        if feed.participant is not None
        else site_feed_ical(feed.site, stamp=now)  # type: ignore[arg-type]
    )
    response = HttpResponse(content, content_type="text/calendar; charset=utf-8")
    response["ETag"] = version.etag
    if last_modified is not None:
        response["Last-Modified"] = http_date(last_modified)
    # A capability URL: keep it out of shared caches, search engines and Referer headers.
    response["Cache-Control"] = "private, max-age=300"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response
