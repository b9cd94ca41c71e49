"""SMS: a small backend interface, a console backend for development, and Twilio.

Backends raise TransientDeliveryError (retry later), PermanentDeliveryError (give up) or
OutcomeUnknown (sent, and no answer came: a person decides). They never log the number or the
text. A provider's reason often quotes the number ("The 'To' number +15551234567 is not a
valid phone number"): the errors scrub it when raised (scheduler/outbox/errors.py), so the
stored and shown reason keeps the words, not the number.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from scheduler.outbox.errors import (
    OutcomeUnknown,
    PermanentDeliveryError,
    ProviderSilent,
    TransientDeliveryError,
    timed_out,
    underlying,
)

logger = logging.getLogger(__name__)


class SmsBackend(Protocol):
    def send(self, *, to: str, body: str, reference: str) -> str:
        """Send one message; return the provider's message id."""


class ConsoleSmsBackend:
    """Development: accepts every message and logs only its reference."""

    def send(self, *, to: str, body: str, reference: str) -> str:
        logger.info("sms %s accepted by the console backend (%d characters)", reference, len(body))
        return f"console-{reference}"


class TwilioSmsBackend:
    """Twilio's Messages API, through Twilio's own client library."""

    def __init__(self, http_client: Any = None) -> None:
        from twilio.rest import Client

        self.client = Client(
            settings.TWILIO_ACCOUNT_SID,
            settings.TWILIO_AUTH_TOKEN,
            http_client=http_client if http_client is not None else twilio_http_client(),
        )
        self.sender = settings.TWILIO_FROM_NUMBER

    def send(self, *, to: str, body: str, reference: str) -> str:
        from requests.exceptions import ReadTimeout
        from twilio.base.exceptions import TwilioRestException, TwilioServiceException

        try:
            message = self.client.messages.create(to=to, from_=self.sender, body=body)
        except (TwilioRestException, TwilioServiceException) as exc:
            # 429 and 5xx may pass later; other 4xx (a bad number, say) never will. Anything
            # else Twilio's library raises is retried by reminder_send, then given up on.
            # `from None`: Twilio's own exception quotes the number, and a traceback would
            # print it. A service exception is an RFC 9457 problem (Twilio's newer answer to
            # the same errors): not a TwilioRestException, its words are title and detail.
            if isinstance(exc, TwilioServiceException):
                words = ": ".join(part for part in (exc.title, exc.detail) if part)
            else:
                words = exc.msg
            if exc.status == 429 or exc.status >= 500:
                raise TransientDeliveryError(f"Twilio {exc.status}: {words}") from None
            raise PermanentDeliveryError(f"Twilio {exc.status}: {words}") from None
        except ReadTimeout as exc:
            if _in_tls_handshake(exc):
                # urllib3 calls a TLS handshake that timed out a read timeout: nothing went.
                raise ProviderSilent(
                    "Twilio did not answer: no connection within the timeout"
                ) from None
            # The request went out; Twilio may have created the message before going quiet.
            raise OutcomeUnknown(
                f"Twilio did not answer within {settings.TWILIO_TIMEOUT_SECONDS} s: the SMS "
                "may or may not have gone; mark it as sent or send it again"
            ) from None
        except OSError as exc:  # refused, unreachable, no connection within the timeout
            kind = ProviderSilent if timed_out(exc) else TransientDeliveryError
            raise kind(f"Twilio unreachable: {type(exc).__name__}") from exc
        except json.JSONDecodeError:
            # Twilio's library reads the body only of a 2xx answer: the message was created,
            # and something on the way (a proxy's page, a cut body) hid its id. Sent again it
            # would arrive twice: a person decides, as after a timeout.
            raise OutcomeUnknown(
                "Twilio accepted the SMS but its answer could not be read: it has most likely "
                "gone; mark it as sent or send it again"
            ) from None
        return str(message.sid)


def _in_tls_handshake(exc: BaseException) -> bool:
    return any(
        isinstance(error, TimeoutError) and "handshake" in str(error) for error in underlying(exc)
    )


def twilio_http_client() -> Any:
    """Twilio's own HTTP client, giving up after TWILIO_TIMEOUT_SECONDS (its default waits
    for as long as the connection stays open)."""
    from twilio.http.http_client import TwilioHttpClient

    return TwilioHttpClient(timeout=settings.TWILIO_TIMEOUT_SECONDS)


def sms_backend() -> SmsBackend:
    backend: SmsBackend = import_string(settings.SMS_BACKEND)()
    return backend
