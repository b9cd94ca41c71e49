"""The outside world for reminder tests: Twilio's HTTP API, faked at the HTTP layer."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

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
