"""gunicorn's settings for the web app: docker-compose, Kubernetes and the image's own command
all start `gunicorn config.wsgi:application --bind=0.0.0.0:8000 --config=config/gunicorn.py`.

Threaded workers (gthread), not gunicorn's default sync worker. A sync worker tells the master
it is alive only between requests, so the master kills it once one response outlasts
`timeout`: a streamed export (a sponsor monitor's 600,000 visits take 45 s or more at 10,000
participants) stopped at 30 s, a cut-off file. A threaded worker's main loop reports every
second whatever its threads are sending, so `timeout` only restarts a worker that is truly
stuck. Threads also keep a slow reader (a phone on a poor network, a calendar feed poller)
from holding a whole process, and an idle keep-alive connection from Caddy or the Ingress
waits in that loop rather than in a thread.

Each thread that reads the database holds its own connection (kept CONN_MAX_AGE seconds), so
one web process opens at most `threads` connections and a pod `workers * threads`: the
README's "Database connections" adds up what a full scale-out asks of Postgres.
"""

from __future__ import annotations

import os

worker_class = "gthread"
# Two processes of four threads: eight requests at once per pod or compose web container.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# A worker whose main loop has not reported for this long is restarted (not a request limit).
timeout = 30
# Seconds a stopping worker (a rollout, a scale-in) lets its requests finish.
graceful_timeout = 30
# Caddy and the Ingress reuse their connections to gunicorn between requests. gunicorn must
# keep an idle one open longer than they do: closed first on this side, a proxy can send a
# request down it as it closes, and answer 502 (a POST is not retried). ingress-nginx keeps
# them 60 s (its upstream-keepalive-timeout), Caddy 60 s (deploy/Caddyfile).
keepalive = 75
# No control socket (gunicorn 25.1+ opens one in $HOME/.gunicorn for `gunicornc`, which can
# change the worker count or stop the server): nothing here uses it, the image's home is
# read-only in Kubernetes, and it would be one more way in.
control_socket_disable = True


def post_worker_init(worker: object) -> None:
    """Once a worker has loaded the app: import every view, then freeze what is loaded.

    Python's cyclic garbage collector walks every tracked object at its oldest generation:
    about 235,000 of them once the API has answered (Django, DRF, the views, the protocol
    catalogue), which stopped a worker for about 130 ms every few hundred requests, the API's
    p99. `gc.freeze()` moves what exists now to a generation it never walks (modules,
    classes, the URL patterns: they live as long as the process); what requests allocate is
    collected as before. Views are imported first (Django imports the URLconf on the first
    request) so that they are frozen too.
    """
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view
    gc.freeze()
