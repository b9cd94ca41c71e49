from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, cast

from django.core.cache import cache as default_cache
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from scheduler.sparselog import Sparse

if TYPE_CHECKING:  # rest_framework.views imports this module: no cycle at run time
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# DRF's sliding window, in one round trip and atomically: the request times of the last
# `duration` seconds are a sorted set (score: the time); drop those at or before now - duration
# (DRF drops `<= now - duration` too), refuse when `limit` remain, else add this one. Returns
# {allowed, requests in the window, the oldest one's time (a string: Lua numbers would come
# back as integers)}.
SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - duration)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
    redis.call('ZADD', KEYS[1], now, ARGV[4])
    redis.call('EXPIRE', KEYS[1], math.ceil(duration))
    count = count + 1
    allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {allowed, count, oldest[2] or ARGV[1]}
"""


class CredentialRateThrottle(SimpleRateThrottle):
    """One budget per credential: an OAuth2 application (all its tokens together), else the
    signed-in person, else the client address.

    Counts live in Django's cache; deployments with several web processes configure a shared
    cache (Redis) so the budget is one per credential, not one per process. On Redis the
    window is one Lua script (one round trip, atomic: concurrent requests cannot both spend
    the last request of a budget) over a sorted set of request times, with DRF's rule; on any
    other cache it is DRF's own get-then-set of a list. A cache that does not answer (within
    settings.REDIS_CACHE_TIMEOUT_SECONDS) lets the request through unmetered.
    """

    scope = "credential"
    # Set by SimpleRateThrottle.__init__ from the rate (the stubs do not declare them).
    num_requests: int
    duration: int

    def get_cache_key(self, request: Request, view: APIView) -> str:
        application_id = getattr(request.auth, "application_id", None)
        if application_id is not None:
            ident = f"app-{application_id}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"addr-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return self._allow_request(request, view)
        except RedisError as exc:
            # The budget is fairness between site systems, not access control (the token and
            # the memberships are, and they live in the database): with the cache away the
            # request is served unmetered rather than refused, and said once a minute.
            _say_unmetered(exc)
            return True

    def _allow_request(self, request: Request, view: APIView) -> bool:
        backend = _redis_backend(self.cache)
        if backend is None or self.rate is None:
            return super().allow_request(request, view)
        key = self.get_cache_key(request, view)
        # Not DRF's key: that one holds a pickled list, this one a sorted set.
        redis_key = backend.make_and_validate_key(f"{key}:window")
        self.now = self.timer()
        allowed, count, oldest = _sliding_window(backend)(
            keys=[redis_key],
            args=[repr(self.now), self.duration, self.num_requests, _member(self.now)],
        )
        self._window = (int(count), float(oldest))
        return bool(allowed)

    def wait(self) -> float | None:
        window = getattr(self, "_window", None)
        if window is None:
            return super().wait()  # type: ignore[no-any-return]
        # DRF's: the time left until the oldest request leaves the window, spread over the
        # requests that will then be free.
        count, oldest = window
        available = self.num_requests - count + 1
        if available <= 0:
            return None
        return (self.duration - (self.now - oldest)) / float(available)


# Once a minute per process, not once a request.
UNMETERED_SAID = Sparse(60.0)


def _say_unmetered(exc: RedisError) -> None:
    if not UNMETERED_SAID.due():
        return
    logger.warning(
        "API rate budgets not checked: the cache is unavailable (%s); requests are served "
        "unmetered until it answers",
        type(exc).__name__,
    )


def _member(now: float) -> str:
    # Unique per request, even for two at the same instant (a frozen test clock).
    return f"{now!r}-{secrets.token_hex(6)}"


def _redis_backend(cache: Any) -> RedisCache | None:
    """The Redis cache behind `cache` (DRF's default is Django's proxy of the default cache,
    one backend object per thread), or None for any other kind."""
    backend = caches["default"] if cache is default_cache else cache
    return backend if isinstance(backend, RedisCache) else None


def _sliding_window(backend: RedisCache) -> Any:
    """The script, registered once per backend object on a client of its write pool (Django's
    `get_client` builds a new client object for every call)."""
    script = backend.__dict__.get("_sliding_window_script")
    if script is None:
        script = cast(Any, backend)._cache.get_client(write=True).register_script(SLIDING_WINDOW)
        backend.__dict__["_sliding_window_script"] = script
    return script
