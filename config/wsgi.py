import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

from config.startup import (  # noqa: E402 - needs the settings loaded
    limit_lock_waits,
    limit_statement_time,
    require_secret_key,
)

require_secret_key()
limit_lock_waits()
limit_statement_time()
