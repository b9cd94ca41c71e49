"""The outside world for reminder tests: Twilio's HTTP API, faked at the HTTP layer, and a mail
server that counts its connections."""

from __future__ import annotations

import json
import logging
import smtplib
from typing import Any, ClassVar

from django.core.mail.backends import locmem
from twilio.http import HttpClient
from twilio.http.response import Response

from scheduler.outbox.sms import TwilioSmsBackend


class FakeTwilioHttp(HttpClient):
    """Answers Twilio's Messages API from a script of status codes, recording each request."""

    script: ClassVar[list[int]] = []
    requests: ClassVar[list[dict[str, Any]]] = []

    def __init__(self) -> None:
        super().__init__(logging.getLogger("fake-twilio"), False)

    def request(
        self,
        method: str,
        uri: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = False,
    ) -> Response:
        status = self.script.pop(0) if self.script else 201
        self.requests.append(
            {"method": method, "uri": uri, "data": dict(data or {}), "status": status}
        )
        if status >= 400:
            return Response(status, json.dumps({"message": "Service unavailable", "code": 20500}))
        return Response(
            status, json.dumps({"sid": f"SM{len(self.requests):032d}", "status": "queued"})
        )


class FakeTwilioBackend(TwilioSmsBackend):
    def __init__(self) -> None:
        super().__init__(http_client=FakeTwilioHttp())


class CountingMailBackend(locmem.EmailBackend):
    """Django's test mailbox, counting the connections opened to it; the sends numbered in
    `refused` (1 for the first since the counts were reset) fail as when an SMTP server hangs
    up."""

    opened: ClassVar[int] = 0
    sends: ClassVar[int] = 0
    refused: ClassVar[set[int]] = set()

    @classmethod
    def reset(cls, refused: set[int] | None = None) -> None:
        cls.opened, cls.sends, cls.refused = 0, 0, refused or set()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_open = False

    def open(self) -> bool:
        if self.is_open:
            return False
        type(self).opened += 1
        self.is_open = True
        return True

    def close(self) -> None:
        self.is_open = False

    def send_messages(self, messages: Any) -> int:
        type(self).sends += 1
        if not self.is_open:  # what the SMTP backend does: a connection for this call alone
            type(self).opened += 1
        if type(self).sends in type(self).refused:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        return int(super().send_messages(messages))
