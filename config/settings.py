"""One settings module, driven by environment variables.

With no environment at all it runs the laptop default: SQLite (WAL) under ./var/ and Celery's
filesystem broker under ./var/broker. DATABASE_URL and REDIS_URL switch to Postgres and Redis.

Every variable can come from a file instead (Docker or Kubernetes secrets): NAME_FILE=/run/secrets/x
is read in place of NAME (SECRET_KEY_FILE, DATABASE_URL_FILE, DATABASE_PASSWORD_FILE,
REDIS_URL_FILE, EMAIL_URL_FILE, TWILIO_AUTH_TOKEN_FILE, ...), one trailing newline stripped.

A deployment is a process given a SECRET_KEY: it gets HTTPS-only settings (redirect, HSTS, Secure
cookies, proxy headers), each overridable. Without one (the laptop, the test suite, the linters)
a development key is used, and the web app (config/wsgi.py) refuses to start with it unless
DEBUG=true (config/startup.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import environ
from celery.schedules import crontab
from environ.fileaware_mapping import FileAwareMapping

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var")))


class _SecretFiles(FileAwareMapping):
    """os.environ, where NAME_FILE (a mounted secret) is read in place of NAME; the file's
    trailing newline (`echo … > file` writes one) is not part of the secret."""

    def __getitem__(self, key: str) -> str:
        value = super().__getitem__(key)
        return value.removesuffix("\n").removesuffix("\r") if self.env.get(f"{key}_FILE") else value


class _Env(environ.Env):
    ENVIRON = _SecretFiles()


env = _Env(
    DEBUG=(bool, False),
    ALLOWED_HOSTS=(list, ["127.0.0.1", "localhost"]),
    CSRF_TRUSTED_ORIGINS=(list, []),
)

DEBUG = env("DEBUG")
# The laptop, the tests and the linters get a fixed development key so that they need nothing;
# a deployment sets SECRET_KEY (or SECRET_KEY_FILE). The web app, the Celery workers and beat
# refuse to start with the development key unless DEBUG=true (config/startup.py), and
# `check --deploy` names it.
DEVELOPMENT_SECRET_KEY = "insecure-local-development-key-change-me"  # noqa: S105  # nosec B105  # by design: refused outside DEBUG
SECRET_KEY = env.str("SECRET_KEY", default="") or DEVELOPMENT_SECRET_KEY
DEPLOYED = SECRET_KEY != DEVELOPMENT_SECRET_KEY and not DEBUG
ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "scheduler.apps.SchedulerAdminConfig",  # django.contrib.admin, start page as index
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "oauth2_provider",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Before simple_history: its clean-up commands are replaced by ones that refuse, and the
    # history tables refuse UPDATE and DELETE on Postgres (scheduler/appendonly).
    "scheduler.appendonly",
    "simple_history",
    # Logins: lockout after repeated failures, and second factors (TOTP) for staff.
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp_webauthn",
    "trials",
    "participants",
    "scheduler",
    "scheduler.api",
    "seeds",
]

MIDDLEWARE = [
    # First: probes call /healthz and /livez by IP, which ALLOWED_HOSTS rightly does not list.
    "scheduler.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # The Content-Security-Policy header on every response (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # A NUL in a query or form parameter is a 400 naming it, before anything reads the
    # parameter (Postgres would refuse it: a 500).
    "scheduler.middleware.NulParameterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The browser's Accept-Language (English or Japanese), for anyone without a choice of
    # their own; UserLanguageMiddleware then applies a signed-in person's choice.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): signed in with a second factor in this session.
    "django_otp.middleware.OTPMiddleware",
    "scheduler.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Idle sessions end; unblinded roles and user managers verify a second factor first.
    "scheduler.security.SessionIdleMiddleware",
    "scheduler.security.SecondFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# The audit trail is read-only for everyone: nobody reverts clinical records from history.
SIMPLE_HISTORY_REVERT_DISABLED = True
# The reason of a change is the coordinator's own words (up to 2,000 characters in the forms
# and the API): a text column, not simple-history's default varchar(100), which Postgres would
# refuse with a DataError.
SIMPLE_HISTORY_HISTORY_CHANGE_REASON_USE_TEXT_FIELD = True

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Searched before the apps' directories, where django.contrib.admin (listed first)
        # would win: scheduler's admin/base_site.html (the language switch) overrides the
        # admin's own and extends it.
        "DIRS": [BASE_DIR / "scheduler" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'scheduler.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web app, the worker and beat read while one of them writes; IMMEDIATE
    # takes the write lock at BEGIN so concurrent writers queue (busy timeout) instead of
    # failing with "database is locked" half-way through a transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
else:
    # Persistent connections are a deployment choice (docker-compose sets 60 s); the default
    # closes each request's connection, which the test suite's live server needs.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # libpq waits for a server that takes the connection and never answers (a failover behind
    # a proxy, a partition) for as long as the connection stays open: give up after
    # DATABASE_CONNECT_TIMEOUT seconds (the request then answers 503, config/errors.py), and
    # let TCP keepalives find a connection whose server vanished while it sat idle. An option
    # given in DATABASE_URL (?connect_timeout=15) wins.
    _database_options = DATABASES["default"].setdefault("OPTIONS", {})
    for _option, _value in {
        "connect_timeout": env.int("DATABASE_CONNECT_TIMEOUT", default=5),
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }.items():
        _database_options.setdefault(_option, _value)
# How long a web request waits for a row or table lock before it answers 503 with Retry-After
# (config/startup.py: limit_lock_waits; web only). 0: no limit.
WEB_LOCK_TIMEOUT_SECONDS = env.float("WEB_LOCK_TIMEOUT_SECONDS", default=10.0)
# How long each statement of a web request may run before Postgres cancels it and the request
# answers 503 with Retry-After (config/startup.py: limit_statement_time; web only). 0: none.
WEB_STATEMENT_TIMEOUT_SECONDS = env.float("WEB_STATEMENT_TIMEOUT_SECONDS", default=30.0)
# How long each statement of `manage.py migrate` waits for a lock before the migration rolls
# back and migrate tries again (scheduler/management/commands/migrate.py), and how many times
# it tries. 0: no limit (Django's own wait, as long as it takes).
MIGRATION_LOCK_TIMEOUT_SECONDS = env.float("MIGRATION_LOCK_TIMEOUT_SECONDS", default=5.0)
MIGRATION_LOCK_ATTEMPTS = env.int("MIGRATION_LOCK_ATTEMPTS", default=10)
# The password can stay out of DATABASE_URL (and so out of `docker inspect` and the process
# environment): DATABASE_PASSWORD_FILE names a mounted secret holding it alone.
if env.str("DATABASE_PASSWORD", default=""):
    DATABASES["default"]["PASSWORD"] = env.str("DATABASE_PASSWORD")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ----------------------------------------------------------------------------------------
# Logins and sessions (scheduler/security.py; README "Logins").
#
# Passwords: at least 12 characters, not like the user's name or email, not a common or an
# all-digit password.
PASSWORD_MIN_LENGTH = 12
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes counts failed sign-ins per username, wherever they come from (an attacker who
# rotates addresses is still locked out), and locks the account after AXES_FAILURE_LIMIT of
# them for AXES_COOLOFF_MINUTES after the last one; a successful sign-in resets the count.
# Each failure and lockout is in the admin (Access attempts, Access failures: user managers).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_MINUTES = env.int("AXES_COOLOFF_MINUTES", default=30)
AXES_COOLOFF_TIME = dt.timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username"]
# axes warns that a lock without the address can be dodged by rotating user agents; counting
# by username alone is what makes rotating addresses and user agents useless (the price: anyone
# can lock a known username for the cool-off, and a user manager can lift it).
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True
# The lockout page says until when, on the sign-in page's frame (scheduler/security.py).
AXES_LOCKOUT_CALLABLE = "scheduler.security.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429  # Too Many Requests
# Attempts refused while locked do not move the end of the lockout: it ends at the time the
# page says.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Never log the username axes saw (it can be a mistyped password); record_security_event
# writes the lockout without personal data.
AXES_VERBOSE = False
AXES_CLIENT_STR_CALLABLE = "scheduler.security.client_description"
# The client's address as axes (and the security audit) records it: the connection's, or behind
# the TLS proxy the one it puts in X-Forwarded-For (TRUST_PROXY_HEADERS below).
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

# Sessions end after SESSION_IDLE_MINUTES without a request (each request moves the end, at
# most once a minute: scheduler.security.SessionIdleMiddleware) and when the browser closes.
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=30)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
# How often a request moves the session's end (a database write): at most once a minute.
SESSION_REFRESH_SECONDS = 60
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Second factors (django-otp, TOTP): every staff user may enrol an authenticator app (the
# "Two-factor" link in the admin's header); these must, before any admin or API page:
# "unblinded" (a role that sees treatment arms of a blinded trial) and "user_managers"
# (whoever manages users and so grants every other role; superusers included).
OTP_REQUIRED_FOR = env.list("OTP_REQUIRED_FOR", default=["unblinded", "user_managers"])
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Trial visit scheduler")
# A user manager sees who enrolled and may delete a lost device, never its key.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
# Passkeys and security keys (WebAuthn, django-otp-webauthn) as the second factor, beside
# authenticator apps; never instead of the password (which django-axes counts). A passkey is
# bound to the relying party ID, the site's domain: changing it later makes everyone enrol
# again. The browser's origin must be one of WEBAUTHN_ORIGINS (https://, or http://localhost
# on a laptop). Both default to the first of ALLOWED_HOSTS that is a name, not an address.


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host not in ("", "*")
    return False


_WEBAUTHN_HOST = next(
    (host.lstrip(".") for host in ALLOWED_HOSTS if _is_name(host.lstrip("."))), "localhost"
)
OTP_WEBAUTHN_RP_ID = env.str("WEBAUTHN_RP_ID", default=_WEBAUTHN_HOST)
OTP_WEBAUTHN_RP_NAME = env.str("WEBAUTHN_RP_NAME", default="Trial visit scheduler")
OTP_WEBAUTHN_ALLOWED_ORIGINS = env.list(
    "WEBAUTHN_ORIGINS",
    default=(
        [f"https://{OTP_WEBAUTHN_RP_ID}"]
        if DEPLOYED
        else [f"http://{OTP_WEBAUTHN_RP_ID}:8000", f"https://{OTP_WEBAUTHN_RP_ID}"]
    ),
)
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False

# ----------------------------------------------------------------------------------------
# HTTPS behind a TLS-terminating proxy (Caddy in docker-compose). A deployment (SECRET_KEY
# set, DEBUG off) gets all of it by default; each can be turned off for a setup without the
# proxy. /healthz and /livez answer plain HTTP by IP for probes
# (scheduler.middleware.HealthCheckMiddleware, and exempt from the redirect should that
# middleware move).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=DEPLOYED)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|livez)$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if DEPLOYED else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# The preload directive only allows the domain's owner to submit it to browsers' preload list;
# SECURE_HSTS_PRELOAD=false where the domain's policy says otherwise.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=DEPLOYED)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=DEPLOYED)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=DEPLOYED)
# The proxy sets X-Forwarded-Proto and the Host the browser asked for; trusted only where a
# proxy that overwrites them is the only way in (TRUST_PROXY_HEADERS=false otherwise).
if env.bool("TRUST_PROXY_HEADERS", default=DEPLOYED):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy (django-csp 4): scripts only from this origin (the admin's, Swagger
# UI's from drf-spectacular-sidecar, served here), no plugins, no framing, forms post here only.
# Styles allow inline: the admin and our pages carry <style> blocks and style attributes, and
# Swagger UI sets styles from script; style injection is the lesser risk and scripts stay
# strict. The one inline handler (the timeline's Print link) is allowed by its hash alone.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": [
            "'self'",
            "'unsafe-hashes'",
            # The timeline's Print link: onclick="window.print(); return false;"
            "'sha256-aSx1rCOUfYYqn4Vxng+jS5F6gK1RQbKxVjGd2feTgnM='",
        ],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# The admin follows each person's choice (the language switch in its header, stored per user;
# see scheduler/i18n.py), else the browser's; participants' texts follow Participant.language.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ja", "日本語")]
# Instants are stored in UTC; local dates and times come from the site's or participant's zone.
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
# Deployments run collectstatic at image build and set STATIC_MANIFEST=true for hashed,
# compressed, cache-forever files; the laptop and the tests serve files straight from the apps.
STATIC_MANIFEST = env.bool("STATIC_MANIFEST", default=False)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST

# Celery: Redis when REDIS_URL is set, otherwise a broker made of files under ./var/broker.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
REDIS_BROKER_TIMEOUT_SECONDS = 2.0
# The cache's answers take a millisecond; one that takes longer than this is treated as away
# (the API's rate budget is then not checked, and feeds render their texts afresh).
REDIS_CACHE_TIMEOUT_SECONDS = 0.5
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Unacknowledged messages (acks_late) come back after this; the outbox sweep re-sends
        # anything lost sooner, so Redis never needs to hold a message long.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
        # A Redis that stops answering without closing its connections (a failover behind a
        # proxy, a network partition, a frozen server) held a publish, and the web request
        # behind it, for as long as the connection stayed open. Each read and connect now
        # gives up after REDIS_BROKER_TIMEOUT_SECONDS (more than the 1 s a worker's BRPOP
        # blocks for): a publish gives up after about 4 s (measured) and leaves its rows to
        # the outbox sweep, and a worker reconnects instead of waiting on a dead connection.
        "socket_timeout": REDIS_BROKER_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_BROKER_TIMEOUT_SECONDS,
    }
    if urlsplit(REDIS_URL).scheme == "rediss":
        # TLS to a managed Redis checks the server's certificate (the system's CAs), as the
        # cache's redis-py does. Given no ssl options, kombu connects with CERT_NONE: the
        # password and every task could be read by anyone in the path. The URL's own
        # `ssl_cert_reqs` / `ssl_ca_certs` (a private CA) win over this.
        CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
else:
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        # Exchange metadata; kombu's default is a relative "control" folder in the cwd.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The default 1 s poll moves about two messages a second; a laptop deserves better.
        "polling_interval": 0.05,
    }
# Django's cache holds the API's per-credential throttle counts: with REDIS_URL it is Redis, so
# every web process spends one budget per credential; otherwise this process's memory (a
# laptop runs one web process). The cache gets the next Redis database after the broker's,
# because clearing a Django cache flushes its whole database (CACHE_REDIS_URL overrides).
if REDIS_URL:
    _broker_redis = urlsplit(REDIS_URL)
    _broker_db = int(_broker_redis.path.strip("/") or 0)
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env.str(
                "CACHE_REDIS_URL",
                default=urlunsplit(_broker_redis._replace(path=f"/{_broker_db + 1}")),
            ),
            "KEY_PREFIX": "scheduler",
            # redis-py's default waits 5 s for a server that does not answer.
            "OPTIONS": {
                "socket_timeout": REDIS_CACHE_TIMEOUT_SECONDS,
                "socket_connect_timeout": REDIS_CACHE_TIMEOUT_SECONDS,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Periodic schedules are declared here, in one place, in UTC.
# Periodic control tasks get their own queue, so a backlog of invites never delays the sweep
# or the heartbeat. The outbox publishes each row to its kind's queue (scheduler/outbox/
# dispatch.py): participants' invites, reminders (and the welcome) and webhooks, so a backlog
# of one kind never delays another and a slow receiver never delays a reminder. The laptop's
# one worker consumes every queue (Procfile.dev); docker-compose runs a worker per group.
# Deployments name these queues in their worker commands: keep the names stable.
OUTBOX_QUEUES = {"invite": "invites", "reminder": "reminders", "webhook": "webhooks"}
CELERY_TASK_ROUTES = {
    "scheduler.heartbeat": {"queue": "control"},
    "scheduler.reminders_sweep": {"queue": "control"},
    "scheduler.api.idempotency_prune": {"queue": "control"},
    # Site systems' receivers can be slow; they get workers of their own in deployments.
    "scheduler.send_webhook": {"queue": OUTBOX_QUEUES["webhook"]},
}
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "scheduler-heartbeat": {"task": "scheduler.heartbeat", "schedule": 60.0},
    "reminders-sweep": {"task": "scheduler.reminders_sweep", "schedule": 60.0},
    # Daily at 03:15 UTC: Idempotency-Key records older than IDEMPOTENCY_KEEP_DAYS go.
    "api-idempotency-prune": {
        "task": "scheduler.api.idempotency_prune",
        "schedule": crontab(hour=3, minute=15),
    },
}
# How long a retried POST with the same Idempotency-Key still gets the first response.
IDEMPOTENCY_KEEP_DAYS = env.int("IDEMPOTENCY_KEEP_DAYS", default=7)

# Reminders (see scheduler/outbox/).
REMINDER_MAX_ATTEMPTS = env.int("REMINDER_MAX_ATTEMPTS", default=5)
REMINDER_BACKOFF_BASE_SECONDS = env.int("REMINDER_BACKOFF_BASE_SECONDS", default=60)
# The longest a retry waits for an answer's Retry-After (a webhook receiver's), if that is
# later than the backoff.
REMINDER_RETRY_AFTER_MAX_SECONDS = env.int("REMINDER_RETRY_AFTER_MAX_SECONDS", default=86400)
# A pending row enqueued this long ago without being claimed is enqueued again (its message
# may have been lost with Redis); a row "sending" this long is re-claimed (its worker died).
REMINDER_REQUEUE_AFTER_SECONDS = env.int("REMINDER_REQUEUE_AFTER_SECONDS", default=120)
REMINDER_SENDING_TIMEOUT_SECONDS = env.int("REMINDER_SENDING_TIMEOUT_SECONDS", default=300)
# The outbox publishes one message per batch of this many rows of a queue; a worker claims,
# sends and records a batch at once (scheduler/outbox/sweep.py). Webhooks go one a message.
REMINDER_BATCH_SIZE = max(env.int("REMINDER_BATCH_SIZE", default=100), 1)
# An outcome (sent, failed) the database could not take is kept in this folder (one fsynced
# file each) and retried with backoff for this long, then replayed by the next task or worker
# start (scheduler/outbox/outcomes.py). Workers keep it on a volume that outlives them.
REMINDER_OUTCOME_JOURNAL_DIR = env.path(
    "REMINDER_OUTCOME_JOURNAL_DIR", default=str(VAR_DIR / "outbox-journal")
)
REMINDER_OUTCOME_RETRY_SECONDS = env.int("REMINDER_OUTCOME_RETRY_SECONDS", default=900)
# A visit's calendar invite goes out this many days before its window opens (at enrollment,
# at once for every window opening sooner); at least 1, so it arrives before the window.
INVITE_LEAD_DAYS = max(env.int("INVITE_LEAD_DAYS", default=28), 1)
SMS_BACKEND = env.str("SMS_BACKEND", default="scheduler.outbox.sms.ConsoleSmsBackend")
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env.str("TWILIO_FROM_NUMBER", default="")
# Twilio's client waits for an API that never answers for as long as the connection stays
# open, holding a worker process for good: give up after this many seconds. A request that
# reached Twilio and got no answer may have sent the SMS, so it is parked as "unknown" for a
# person to decide, never sent again blindly.
TWILIO_TIMEOUT_SECONDS = env.int("TWILIO_TIMEOUT_SECONDS", default=30)

# Webhooks for site systems (scheduler/outbox/webhooks.py), sent through the same outbox.
# Fernet keys that encrypt subscription secrets at rest, comma-separated, newest first (older
# ones still decrypt during a rotation); generate one with
# `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
# Unset, a key derived from SECRET_KEY is used (laptops, tests).
WEBHOOK_SECRET_KEYS = env.list("WEBHOOK_SECRET_KEYS", default=[])
# Receivers are https; plain http only to this machine (127.0.0.1, ::1, localhost), and only
# when DEBUG or this says so (tests, a receiver on a laptop).
WEBHOOK_ALLOW_HTTP_LOOPBACK = env.bool("WEBHOOK_ALLOW_HTTP_LOOPBACK", default=DEBUG)
# Receivers are on the internet: an address that is not (loopback, link-local such as the
# cloud's metadata service, private, reserved, multicast) is refused when a site system
# subscribes and again, after resolving the name, when each event is sent (the request goes to
# the address checked). A deployment whose site systems sit on its own private network names
# those networks here, e.g. "10.20.0.0/16,fd00:20::/32".
WEBHOOK_ALLOWED_NETWORKS = env.list("WEBHOOK_ALLOWED_NETWORKS", default=[])
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env.float("WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_READ_TIMEOUT_SECONDS = env.float("WEBHOOK_READ_TIMEOUT_SECONDS", default=10.0)
# After a subscription's signing secret is rotated, deliveries carry a signature under the
# old secret too for this long (default 24 hours), so a site system can switch at any moment
# in between without refusing a delivery; then only the new secret signs.
WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = env.int(
    "WEBHOOK_SECRET_ROTATION_GRACE_SECONDS", default=24 * 3600
)

# Email: invites and reminders. The laptop default writes messages as files under
# var/mail (never to the console, which is a log); deployments set EMAIL_URL, e.g.
# smtp+tls://user:password@smtp.example.org:587
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="filemail://")
vars().update(EMAIL_CONFIG)
# Django's SMTP connection has no timeout of its own: a mail server that stops answering held
# a worker process for good. Timed out, a send is retried (as the same message, Message-ID).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
if EMAIL_CONFIG["EMAIL_BACKEND"].endswith("filebased.EmailBackend"):
    EMAIL_FILE_PATH = str(VAR_DIR / "mail")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="visits@scheduler.invalid")
# Where feed URLs point (shown to coordinators when they create a feed).
PUBLIC_URL = env.str("PUBLIC_URL", default="http://127.0.0.1:8000")

# The REST API for site systems (scheduler/api/). Machines authenticate with OAuth2 client
# credentials (django-oauth-toolkit), people with their admin session (browsable API).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First, so an anonymous request gets 401 with a Bearer challenge, not 403.
        "scheduler.api.auth.SiteSystemAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["scheduler.api.permissions.ApiAccess"],
    "DEFAULT_THROTTLE_CLASSES": ["scheduler.api.throttling.CredentialRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "credential": env.str("API_RATE_PER_CREDENTIAL", default="1200/minute"),
    },
    "DEFAULT_RENDERER_CLASSES": [
        "scheduler.api.jsonbodies.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["scheduler.api.jsonbodies.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "scheduler.api.pagination.Cursor",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "scheduler.api.errors.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DATE_INPUT_FORMATS": ["iso-8601"],
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Trial visit scheduler API",
    "DESCRIPTION": (
        "The REST API for site systems: trials and their schedules of activities, sites, "
        "participants, calendars and visits, and the visit lifecycle. Errors are RFC 9457 "
        "problem details (application/problem+json). Changes need If-Match; POSTs that create "
        "or act need an Idempotency-Key."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "VisitStatusEnum": "scheduler.models.ScheduledVisit.Status",
        "ParticipantStatusEnum": "participants.models.Participant.Status",
    },
    # OpenAPI 3.1: its `webhooks` section describes what we POST to site systems.
    "OAS_VERSION": "3.1.0",
    # Every event type we send, its payload and its signature headers (scheduler/api/schema.py).
    "WEBHOOKS": [
        "scheduler.api.schema.webhook_visit_booked",
        "scheduler.api.schema.webhook_visit_moved",
        "scheduler.api.schema.webhook_visit_done",
        "scheduler.api.schema.webhook_visit_missed",
        "scheduler.api.schema.webhook_visit_cancelled",
        "scheduler.api.schema.webhook_participant_enrolled",
        "scheduler.api.schema.webhook_participant_withdrawn",
    ],
    # The problem-details responses each operation can answer (scheduler/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "scheduler.api.schema.problem_responses",
        "scheduler.api.schema.webhook_headers",
    ],
}
OAUTH2_PROVIDER = {
    "SCOPES": {
        "read": "Read trials, sites, participants and calendars",
        "write": "Register and enroll participants, book and record visits",
    },
    "DEFAULT_SCOPES": ["read"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("API_TOKEN_EXPIRE_SECONDS", default=3600),
    # RFC 9700: tokens stored only as their SHA-256, bearer tokens only in the header, no
    # password or implicit grants.
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,  # nosec B105  # a setting name, no password
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,  # nosec B105  # a setting name
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,  # nosec B105  # a setting name
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    # Site systems use client credentials only; should another grant ever be enabled, it starts
    # compliant too (no "plain" PKCE, `iss` in the response, refresh replay revokes, https).
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,  # nosec B105  # a setting name
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
}

# No log line carries a feed token, contact details or health data: every handler lists both
# filters (config/logging.py), and every logger writes through these handlers only.
# The scrub goes first: the token redaction formats the message, database errors and all.
LOG_FILTERS = ["scrub_database_errors", "redact_feed_tokens"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        "redact_feed_tokens": {"()": "config.logging.RedactFeedTokens"},
        "scrub_database_errors": {"()": "config.logging.ScrubDatabaseErrors"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": LOG_FILTERS,
        }
    },
    "loggers": {
        # Django's loggers come with handlers of their own (an unfiltered console when
        # DEBUG, and mail_admins, whose report quotes the request's POST data): none here, so
        # their records go to the root's handler and its filters.
        "django": {"handlers": [], "level": "INFO"},
        "django.request": {"handlers": ["console"], "propagate": False},
        "django.server": {"handlers": ["console"], "propagate": False},
        # Query logging (DEBUG) interpolates every value written; the filter withholds the
        # SQL anyway should someone lower this.
        "django.db.backends": {"level": "INFO"},
        # Celery gives its task logger an unfiltered handler unless it already has one.
        "celery.task": {"handlers": ["console"], "propagate": False},
        # django-axes narrates every sign-in at INFO; failures and lockouts are our own
        # security events (scheduler.security), without the username.
        "axes": {"level": "WARNING"},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
# A Celery worker replaces the root handler with its own (to honour --logfile); config/celery.py
# puts the same filters on every handler it sets up, since its "Task … raised unexpected:
# IntegrityError(…)" lines would otherwise quote the driver's DETAIL.
