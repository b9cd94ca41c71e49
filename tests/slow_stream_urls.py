"""The app's URLs, /slow-stream/ (LINES lines, one every PAUSE_SECONDS) and /gc-frozen/ (how many
objects the worker froze, config/gunicorn.py's `post_worker_init`)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import include, path

LINES = 6
PAUSE_SECONDS = 0.5


def _lines() -> Iterator[str]:
    for number in range(LINES):
        time.sleep(PAUSE_SECONDS)
        yield f"line {number}\n"


def slow(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_lines(), content_type="text/plain")


def frozen(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"frozen": gc.get_freeze_count()})


urlpatterns = [
    path("slow-stream/", slow),
    path("gc-frozen/", frozen),
    path("", include("config.urls")),
]
