"""The app's settings with one URL more, for tests/test_web_server.py: a response that streams
for longer than gunicorn's worker timeout (tests/slow_stream_urls.py)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "tests.slow_stream_urls"
