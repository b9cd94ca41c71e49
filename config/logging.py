"""Log filters: capability tokens never reach the logs."""

from __future__ import annotations

import logging
import re

FEED_TOKEN = re.compile(r"(/feeds/(?:participant|site)/)[A-Za-z0-9_-]+")


class RedactFeedTokens(logging.Filter):
    """Replace the token in any feed URL a log record mentions (Django's "Not Found: /feeds/…",
    the development server's request lines) with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/feeds/" in message:
            record.msg = FEED_TOKEN.sub(r"\1<token>", message)
            record.args = None
        return True
