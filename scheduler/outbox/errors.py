"""How a delivery can fail, shared by the channels and the sweep that records outcomes."""

from __future__ import annotations


class TransientDeliveryError(Exception):
    """The provider may accept it later (timeout, 5xx, rate limit): retry with backoff."""


class PermanentDeliveryError(Exception):
    """It will never go (invalid number, no address): give up now."""


class Superseded(Exception):
    """An invite for a SEQUENCE the visit has moved past: a newer row sends the newer state."""


class NotNeeded(Exception):
    """Nothing to send any more (a visit done before its first invite went out, say): the row
    is cancelled, and the message says why."""
