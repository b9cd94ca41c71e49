"""The app's URLs and /slow-stream/: LINES lines, one every PAUSE_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Iterator

from django.http import HttpRequest, StreamingHttpResponse
from django.urls import include, path

LINES = 6
PAUSE_SECONDS = 0.5


def _lines() -> Iterator[str]:
    for number in range(LINES):
        time.sleep(PAUSE_SECONDS)
        yield f"line {number}\n"


def slow(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_lines(), content_type="text/plain")


urlpatterns = [path("slow-stream/", slow), path("", include("config.urls"))]
