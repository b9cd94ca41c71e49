"""How a delivery can fail, shared by the channels and the sweep that records outcomes.

A failure's text is stored on its row (`Reminder.last_error`) and shown to coordinators, so it
never carries contact details: an SMS provider's or a mail server's reason often quotes the
number or the address ("The 'To' number +15551234567 is not a valid phone number", "550 5.1.1
<jane+trial@example.org>: Recipient address rejected"). Every error below scrubs its message
when it is raised (`scrub_contact_details`), whoever raises it, so neither the row nor a log
line that quotes the error can hold one; the provider's code and reason stay.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from smtplib import SMTPRecipientsRefused, SMTPResponseException, SMTPServerDisconnected

from django.conf import settings
from django.utils.http import parse_http_date

PHONE_NUMBER = "[phone number]"
EMAIL_ADDRESS = "[email address]"

# An address: a run of characters that are not delimiters around an "@" (any local part, plus
# tags, quotes and non-ASCII letters included), or a quoted local part ("jane doe"@host); a
# full stop that ends the sentence stays. Generous on purpose: a provider's text has no other
# use for an "@". A run starts only after a delimiter, so scrubbing stays linear in the text.
_DELIMITERS = r"\s<>()\[\]{},;:\"@"
_NOT_DELIMITER = rf"[^{_DELIMITERS}]"
_EMAIL = re.compile(
    rf"(?:\"[^\"\n]*\"|(?<!{_NOT_DELIMITER}){_NOT_DELIMITER}*)"
    rf"@(?:{_NOT_DELIMITER}*[^{_DELIMITERS}.])?"
)
# A number: digits with the separators people and providers write between them (spaces,
# no-break spaces, dots, dashes, slashes, brackets), optionally after a "+" or "(".
_SEPARATOR = r"[^\S\r\n]|[.\-\u2010-\u2015/()\[\]]"
_PHONE = re.compile(rf"[+(]*\d(?:(?:{_SEPARATOR}){{0,3}}\d)*")
# How many digits make a phone number: 7 (a national number without its area code), or 5
# after a "+" (the shortest international numbers). Fewer is a provider's code (Twilio's
# 21211, SMTP's 550 5.1.1) or an HTTP status, which a coordinator needs to act.
_PHONE_DIGITS = 7
_INTERNATIONAL_DIGITS = 5


def _phone_or_code(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(character.isdigit() for character in text)
    international = text.lstrip("(").startswith("+")
    if digits >= _PHONE_DIGITS or (international and digits >= _INTERNATIONAL_DIGITS):
        return PHONE_NUMBER
    return text


# A mail server's reply code with its enhanced status code ("550 5.1.10", RFC 3463): kept as
# it is, although it has as many digits as a short phone number.
_SMTP_STATUS = re.compile(r"(?<![\w.+(])[2-5]\d\d[ -][2-5]\.\d{1,3}\.\d{1,3}(?!\d)(?!\.\d)")


def scrub_contact_details(text: str) -> str:
    """`text` without the phone numbers and email addresses it quotes, each replaced by a
    placeholder; the rest (the provider's code and reason) as it was. Over-eager rather than
    leaky: any run of 7 digits or more (a date written 2026-02-20 included) is taken for a
    number."""
    text = _EMAIL.sub(EMAIL_ADDRESS, text)
    pieces, start = [], 0
    for status in _SMTP_STATUS.finditer(text):
        pieces += [_PHONE.sub(_phone_or_code, text[start : status.start()]), status.group()]
        start = status.end()
    pieces.append(_PHONE.sub(_phone_or_code, text[start:]))
    return "".join(pieces)


def smtp_reason(exc: BaseException) -> str:
    """What a mail server said when it refused a message, scrubbed: its reply code and text
    (for a refused recipient, each one's, without the address), else the error's kind."""
    replies: list[tuple[int, bytes | str]] = []
    if isinstance(exc, SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
    elif isinstance(exc, SMTPResponseException):
        replies = [(exc.smtp_code, exc.smtp_error)]
    said = [
        f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}".strip()
        for code, text in replies
    ]
    if isinstance(exc, SMTPServerDisconnected) and str(exc):
        # smtplib's own words, which say why ("Connection unexpectedly closed: timed out").
        said = [str(exc)]
    reason = type(exc).__name__
    if said:
        reason += ": " + "; ".join(dict.fromkeys(said))
    return scrub_contact_details(reason)


class DeliveryError(Exception):
    """A delivery outcome with a message that is stored and shown: scrubbed on the way in."""

    def __init__(self, message: object = "") -> None:
        super().__init__(scrub_contact_details(str(message)))


class TransientDeliveryError(DeliveryError):
    """The provider may accept it later (timeout, 5xx, rate limit): retry with backoff, or
    after `retry_after` if the provider said when (its Retry-After) and that is later."""

    def __init__(self, message: object = "", *, retry_after: dt.timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after(value: str | None, *, now: dt.datetime) -> dt.timedelta | None:
    """How long an answer's Retry-After header (RFC 9110 10.2.3) asks to wait: whole seconds
    or an HTTP date; at most REMINDER_RETRY_AFTER_MAX_SECONDS, so a receiver's typo or a
    date years ahead does not park a row for ever. None when there is none, it cannot be
    read, or it asks for no wait at all."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        wait = dt.timedelta(seconds=int(value) if len(value) <= 12 else 10**12)
    else:
        try:
            wait = dt.datetime.fromtimestamp(parse_http_date(value), tz=dt.UTC) - now
        except ValueError:
            return None
    if wait <= dt.timedelta(0):
        return None
    most = dt.timedelta(seconds=settings.REMINDER_RETRY_AFTER_MAX_SECONDS)
    return min(wait, most)


class ProviderSilent(TransientDeliveryError):
    """The provider took the connection and did not answer in time (nothing was sent): retry
    later, and do not try the rest of a batch now, which would wait as long for each row."""


def underlying(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or while handling, and so on: libraries report a
    socket timeout as their own error (smtplib "Connection unexpectedly closed: timed out",
    urllib3 a TLS handshake's as a read timeout)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        yield current
        seen.append(current)
        current = current.__cause__ or current.__context__


def timed_out(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised while handling, a socket timeout."""
    return any(isinstance(error, TimeoutError) for error in underlying(exc))


class PermanentDeliveryError(DeliveryError):
    """It will never go (invalid number, no address): give up now."""


class OutcomeUnknown(DeliveryError):
    """The request reached the provider and no answer came: it may or may not have been sent.
    Parked as "unknown" for a person to mark as sent or send again, never retried blindly."""


class Superseded(DeliveryError):
    """An invite for a SEQUENCE the visit has moved past: a newer row sends the newer state."""


class NotNeeded(DeliveryError):
    """Nothing to send any more (a visit done before its first invite went out, say): the row
    is cancelled, and the message says why."""
