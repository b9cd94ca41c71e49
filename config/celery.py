from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("scheduler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

if app.conf.broker_url == "filesystem://":
    # The laptop broker is a pair of folders; anything that enqueues (a management command,
    # a benchmark) must find them even before `make run` created them.
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = (app.conf.broker_transport_options or {}).get(key)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
