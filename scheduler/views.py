from __future__ import annotations

from django.db import connection
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import get_conditional_response
from django.utils.http import http_date, url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST, require_safe

from scheduler.calendars.feeds import (
    FeedCache,
    feed_by_token,
    feed_trial_ids,
    feed_version,
    participant_feed_ical,
    site_feed_chunks,
)
from scheduler.i18n import UnknownLanguage, user_language_set
from scheduler.models import WorkerHeartbeat


def livez(request: HttpRequest) -> JsonResponse:
    """This web process answers requests (200); reads nothing, not even the database.

    What the proxy in front (Caddy's active health check) and Kubernetes' probes ask. They
    must not ask about the database: every web process shares it, so while it is away they
    would take every process out of service at once, and the proxy or the Ingress would
    answer its own bare 503 in place of ours (a page and an API problem that say to retry,
    with Retry-After: config/errors.py), and a liveness probe would restart processes that a
    restart cannot mend. A process too busy or stuck to answer this fails it.
    """
    return JsonResponse({"process": "ok"})


def healthz(request: HttpRequest) -> JsonResponse:
    """Health for people and docker-compose's status: the database answers (200) or not (503).

    It also says how long ago beat's heartbeat last reached a worker, so an operator sees a
    stopped worker or beat without reading logs. Not for taking a process out of service:
    that is `livez`.
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


@require_safe
def calendar_feed(
    request: HttpRequest, kind: str, token: str
) -> HttpResponse | StreamingHttpResponse:
    """A subscribable feed (GET, and HEAD: the same headers, no body, nothing rendered).
    Unknown and revoked tokens get the same bare 404."""
    feed = feed_by_token(token=token, kind=kind)
    if feed is None:
        raise Http404
    now = timezone.now()
    texts_cache = FeedCache()  # the request's: a cache away is waited for once
    version = feed_version(feed, texts_cache=texts_cache)
    last_modified = int(version.last_modified.timestamp()) if version.last_modified else None
    unchanged = get_conditional_response(request, etag=version.etag, last_modified=last_modified)
    if unchanged is not None:
        # RFC 9110 15.4.5: a 304 carries the ETag and Cache-Control a 200 would have.
        unchanged["ETag"] = version.etag
        unchanged["Cache-Control"] = "private, max-age=300"
        return unchanged
    content_type = "text/calendar; charset=utf-8"
    response: HttpResponse | StreamingHttpResponse
    if request.method == "HEAD":
        # Streamed (empty), so no Content-Length is set: a GET's is not known unrendered.
        response = StreamingHttpResponse(iter(()), content_type=content_type)
    elif feed.participant is not None:
        response = HttpResponse(
            participant_feed_ical(feed.participant, stamp=now, texts_cache=texts_cache),
            content_type=content_type,
        )
    else:
        # A site feed can hold tens of thousands of events: streamed, a chunk of rows at a time.
        response = StreamingHttpResponse(
            site_feed_chunks(
                feed.site,  # type: ignore[arg-type]
                trials=feed_trial_ids(feed),
                stamp=now,
                texts_cache=texts_cache,
            ),
            content_type=content_type,
        )
    response["ETag"] = version.etag
    if last_modified is not None:
        response["Last-Modified"] = http_date(last_modified)
    # A capability URL: keep it out of shared caches, search engines and Referer headers.
    response["Cache-Control"] = "private, max-age=300"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


@require_POST
def language_switch(request: HttpRequest) -> HttpResponse:
    """The admin header's language switch: store the reader's language, back to the same page.

    Only the site's languages (en, ja) are taken; anything else is a 400 that says which are.
    CSRF-protected like every POST. `next` must be a page of this site, else the admin's
    start page.
    """
    try:
        user_language_set(
            user=request.user,
            language=request.POST.get("language", ""),
            session=request.session,
        )
    except UnknownLanguage as refusal:
        return HttpResponseBadRequest(f"{refusal}\n", content_type="text/plain; charset=utf-8")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = reverse("admin:index")
    return HttpResponseRedirect(back)
