"""A webhook receiver for the laptop demo (DEBUG only): `manage.py load_demo` subscribes the
Berlin site system to it, so `make run` shows deliveries going out and succeeding in the admin
(the reminders list, channel "webhook") with no outside service.

It checks each delivery's signature like a site system would, and records only the event
type and the message id, in the log: never the payload. Without DEBUG it is a 404.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from scheduler.webhooks import webhook_delivery_verify

logger = logging.getLogger(__name__)


def demo_receiver_url() -> str:
    """Where the demo subscription sends events: this app, at its public URL."""
    return settings.PUBLIC_URL.rstrip("/") + reverse("api:demo-webhook-receiver")


@csrf_exempt
@require_POST
def demo_webhook_receiver(request: HttpRequest) -> HttpResponse:
    if not settings.DEBUG:
        raise Http404("the demo webhook receiver runs only with DEBUG")
    verified = webhook_delivery_verify(
        url=demo_receiver_url(),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.body,
    )
    if verified is None:
        logger.warning("demo webhook receiver: a delivery whose signature did not verify")
        return HttpResponse(status=400)
    event_type, message_id = verified
    logger.info("demo webhook receiver: %s %s verified", event_type, message_id)
    return HttpResponse(status=204)
