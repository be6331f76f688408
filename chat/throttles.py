"""The rate limiter: fixed windows counted atomically in the cache, and their headers.

A view names the limits it spends with `throttle_scopes` (see chat.api.base.ApiView):

- "user": an authenticated caller spends RATE_LIMITS["user:<tier>"], one budget per
  user for every authenticated endpoint; a caller with no or invalid credentials
  spends RATE_LIMITS["anon"] per client IP instead.
- any other key of RATE_LIMITS listed in SCOPE_IDENTITIES, counted per the caller
  named there: the client IP or the URL's `session_key`.

Rates are read from settings on each request (DRF copies its throttle rates at
import, so override_settings never reaches them: DRF #6030), and the tier from
request.user, so a tier change applies to the user's next request.

Why not django-ratelimit (the design card's first choice): it spends a cache.add
and then a cache.incr per limit, so a guest poll (two limits) costs 4 Redis round
trips where issue 6 allows one (measured against Redis with django-ratelimit
4.1.0: 4 round trips for 2 limits); it reads time.time() directly, so window edges
cannot be tested with a fake clock; and it turns an unreachable Redis into a 500
(only socket.gaierror is caught). Our counter runs INCR and EXPIRE for every
limit of a request in one small Lua script: one round trip, exact counting, and
the X-RateLimit-* headers of every scope. django-ratelimit does guard the plain
Django views outside the API (/metrics, /api/schema/, the admin login:
chat.api.doors), where a round trip more costs nothing, with this module's
rates, failure log and signals.

On a Redis Cluster (REDIS_URL=redis+cluster://, chat.redis_cluster) a script may
only touch keys of one hash slot. Every counter of one caller carries that
caller's identity as its hash tag (Limit.key), so the counters of one caller are
counted together; a request that spends the budgets of two callers (a guest's
session key and its IP) sends one script per slot, pipelined: one round trip per
node at most, each count still exact.
"""

import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.exceptions import ImproperlyConfigured
from django.dispatch import Signal
from django_redis import get_redis_connection
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, RedisError

from chat.exceptions import RateLimitExceeded, ServiceUnavailable
from chat.json import utc_iso
from chat.net import client_identity
from chat.rates import Rate, parse_rate

logger = logging.getLogger(__name__)

# Sent on every 429 with `scope` (e.g. "user:free") and `request`; sender: the view class.
rate_limited = Signal()
# Sent each time the cache cannot be reached, with `error` and `fail_open`; sender: the view class.
limiter_failed = Signal()

USER = "user"
ANON = "anon"
IP = "ip"
SESSION_KEY = "session_key"

# Whom each scope counts. "user" is special: the tier's budget, or "anon" without credentials.
SCOPE_IDENTITIES = {
    ANON: IP,
    "guest_poll": SESSION_KEY,
    "guest_send": SESSION_KEY,
    "guest_create": IP,
    "guest_ip": IP,
}

# Identities that go into a cache key as they are; anything else is hashed.
PLAIN_IDENTITY_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# What an unreachable or hung cache raises (socket timeouts included): not a bug, an outage.
# RedisClusterException: a cluster that cannot be reached or has a slot without a
# live primary (during a failover), as redis-py's cluster client reports it.
CACHE_DOWN = (RedisError, RedisClusterException, ConnectionInterrupted, OSError)

# An unreachable cache is logged at most this often per process; every failure is signalled.
FAILURE_LOG_INTERVAL = 60.0


def rate_for(scope: str) -> Rate:
    """The scope's rate as the settings say now."""
    try:
        return parse_rate(settings.RATE_LIMITS[scope])
    except KeyError:
        raise ImproperlyConfigured(f"no rate limit {scope!r} in settings.RATE_LIMITS") from None


def counter_identity(value) -> str:
    """`value` as a short, cache-safe part of a key: itself when plain, else a hash."""
    text = str(value)
    if PLAIN_IDENTITY_RE.fullmatch(text):
        return text
    return "sha256-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class Limit:
    """One budget a request spends: `scope` names its rate; `bucket` and `identity` its counter.

    Every tier shares the bucket "user", so a tier change keeps the requests
    already counted in the window and only moves the limit.
    """

    scope: str
    bucket: str
    identity: str
    rate: Rate

    def window(self, now: float) -> tuple[int, int]:
        """The fixed window holding `now`, as epoch seconds: windows start on multiples of the period."""
        start = int(now // self.rate.period) * self.rate.period
        return start, start + self.rate.period

    def key(self, window_start: int) -> str:
        """The counter's key. `{identity}` is its Redis Cluster hash tag: one caller's counters share a slot."""
        return f"rl:{self.bucket}:{{{self.identity}}}:{self.rate.period}:{window_start}"


@dataclass(frozen=True)
class Usage:
    """One limit after counting this request."""

    scope: str
    limit: int
    count: int  # requests in the window, this one included
    period: int
    reset: int  # epoch seconds at which the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit


@dataclass(frozen=True)
class Decision:
    """Every limit a request spent, and what to tell the client."""

    usages: tuple[Usage, ...]
    now: float

    @property
    def allowed(self) -> bool:
        return not any(usage.exceeded for usage in self.usages)

    @property
    def binding(self) -> Usage:
        """The limit the headers show: fewest remaining, ties to the shorter window.

        On a 429 all the limits that refused have none remaining; of those, the one
        whose window ends last, so that Retry-After is when a retry can succeed.
        """
        refused = [usage for usage in self.usages if usage.exceeded]
        if refused:
            return max(refused, key=lambda usage: (usage.reset, usage.period))
        return min(self.usages, key=lambda usage: (usage.remaining, usage.period))

    @property
    def retry_after(self) -> int:
        """Whole seconds until the binding window ends, rounded up, at least 1."""
        return max(1, math.ceil(self.binding.reset - self.now))

    def headers(self) -> dict[str, str]:
        binding = self.binding
        headers = {
            "X-RateLimit-Limit": str(binding.limit),
            "X-RateLimit-Remaining": str(binding.remaining),
            "X-RateLimit-Reset": utc_iso(binding.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class Counter(Protocol):
    def incr_many(self, entries: Sequence[tuple[str, int]]) -> list[int]:
        """Add one to each key (made with a time-to-live in seconds when new); the new counts, in order."""


class RedisCounter:
    """Every counter of a request in one Lua script: one round trip however many limits apply.

    A script runs alone in Redis, so every server process sharing it sees one
    count and together they admit exactly the limit. EXPIRE goes with every INCR
    rather than only the first (the key belongs to one window, so re-arming it is
    harmless): no key is ever left without a time-to-live. A script rather than a
    MULTI/EXEC pipeline of the same commands, because it is one reply instead of
    2N + 2: measured here, 75 us a call against 93 us (a bare PING: 70 us).
    redis-py sends EVALSHA, and the script itself only after a Redis restart
    (NOSCRIPT). The raw client comes from django-redis, so the cache's socket
    timeouts apply to it.
    """

    SCRIPT = Script(
        None,
        b"""
        local counts = {}
        for i, key in ipairs(KEYS) do
            counts[i] = redis.call('INCR', key)
            redis.call('EXPIRE', key, ARGV[i])
        end
        return counts
        """,
    )

    def __init__(self, alias: str = "default"):
        self.alias = alias

    def incr_many(self, entries: Sequence[tuple[str, int]]) -> list[int]:
        cache = caches[self.alias]
        keys = [cache.make_key(key) for key, _ in entries]
        ttls = [ttl for _, ttl in entries]
        client = get_redis_connection(self.alias)
        if isinstance(client, RedisCluster):
            return self._incr_cluster(client, keys, ttls)
        return [int(count) for count in self.SCRIPT(keys=keys, args=ttls, client=client)]

    def _incr_cluster(self, client: RedisCluster, keys: list[str], ttls: list[int]) -> list[int]:
        """One script per hash slot, in one cluster pipeline: redis-py sends each node its scripts at once.

        EVAL rather than EVALSHA: the script is 150 bytes, and a replica promoted by a
        failover may never have loaded it (a NOSCRIPT inside a pipeline would fail
        the whole batch); Redis still compiles it once and caches it by its hash.
        """
        slots: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            slots.setdefault(client.keyslot(key), []).append(index)
        pipe = client.pipeline()
        for indexes in slots.values():
            # ClusterPipeline refuses .eval() (it cannot tell the slot in general); EVAL with keys it routes.
            pipe.execute_command(
                "EVAL", self.SCRIPT.script, len(indexes), *(keys[i] for i in indexes), *(ttls[i] for i in indexes)
            )
        counts = [0] * len(keys)
        for indexes, replies in zip(slots.values(), pipe.execute(), strict=True):
            for index, count in zip(indexes, replies, strict=True):
                counts[index] = int(count)
        return counts


class CacheCounter:
    """Any other Django cache (the in-process LocMemCache of development and tests): add, else incr.

    Exact within what the backend guarantees: LocMemCache holds a lock, so one
    process counts exactly; it is not shared between processes, which is why
    production uses Redis.
    """

    def __init__(self, cache: BaseCache):
        self.cache = cache

    def incr_many(self, entries: Sequence[tuple[str, int]]) -> list[int]:
        return [self._incr(key, ttl) for key, ttl in entries]

    def _incr(self, key: str, ttl: int) -> int:
        while True:
            if self.cache.add(key, 1, timeout=ttl):
                return 1
            try:
                return self.cache.incr(key)
            except ValueError:
                continue  # expired between add and incr: the window just ended, start it


def default_counter(alias: str = "default") -> Counter:
    cache = caches[alias]
    return RedisCounter(alias) if isinstance(cache, RedisCache) else CacheCounter(cache)


class RateLimiter:
    """Counts requests against limits. The clock and the counter are injectable for tests.

    Without a counter, the default cache's is taken on each call, so that
    override_settings(CACHES=...) reaches it.
    """

    def __init__(self, *, counter: Counter | None = None, clock: Callable[[], float] = time.time):
        self.counter = counter
        self.clock = clock

    def hit(self, limits: Sequence[Limit]) -> Decision:
        now = self.clock()
        entries, resets = [], []
        for limit in limits:
            start, end = limit.window(now)
            # A second past the window's end, so a slightly slow clock elsewhere finds the key.
            entries.append((limit.key(start), max(1, math.ceil(end - now)) + 1))
            resets.append(end)
        counts = (self.counter or default_counter()).incr_many(entries)
        usages = tuple(
            Usage(scope=limit.scope, limit=limit.rate.limit, count=count, period=limit.rate.period, reset=reset)
            for limit, count, reset in zip(limits, counts, resets, strict=True)
        )
        return Decision(usages=usages, now=now)

    def current_keys(self, limits: Sequence[Limit]) -> list[str]:
        """The counters of the windows running now (what reset_rate_limit deletes)."""
        now = self.clock()
        return list(dict.fromkeys(limit.key(limit.window(now)[0]) for limit in limits))


class FailureLog:
    """Logs an unreachable cache at most once per interval per process, with how many it held back."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.clock = clock
        self.lock = threading.Lock()
        self.last_logged: float | None = None
        self.held_back = 0

    def report(self, error: Exception, *, fail_open: bool) -> None:
        with self.lock:
            now = self.clock()
            if self.last_logged is not None and now - self.last_logged < self.interval:
                self.held_back += 1
                return
            held_back, self.held_back, self.last_logged = self.held_back, 0, now
        logger.error(
            "rate limiter cannot reach the cache (%s: %s); failing %s",
            type(error).__name__,
            error,
            "open: requests are served unlimited" if fail_open else "closed: requests get a 503",
            extra={"failures_not_logged": held_back},
        )


limiter = RateLimiter()
failures = FailureLog()


def limits_for_user(user) -> list[Limit]:
    """The user's counters under every tier's period (a tier change keeps the count when periods match)."""
    scopes = [scope for scope in settings.RATE_LIMITS if scope.startswith(USER + ":")]
    return [Limit(scope, USER, counter_identity(user.pk), rate_for(scope)) for scope in scopes]


def limits_for_identity(kind: str, value: str) -> list[Limit]:
    """Every limit that counts callers of `kind` (IP or SESSION_KEY) by `value`."""
    return [
        Limit(scope, scope, counter_identity(value), rate_for(scope))
        for scope, scope_kind in SCOPE_IDENTITIES.items()
        if scope_kind == kind and scope in settings.RATE_LIMITS
    ]


def limits_for_request(request, scopes: Sequence[str], url_kwargs: dict) -> list[Limit]:
    """The limits a request spends for `scopes` (a view's throttle_scopes)."""
    limits = []
    for declared in scopes:
        scope = declared
        if scope == USER:
            user = request.user
            if user.is_authenticated:
                tier_scope = f"{USER}:{user.tier}"
                limits.append(Limit(tier_scope, USER, counter_identity(user.pk), rate_for(tier_scope)))
                continue
            scope = ANON
        kind = SCOPE_IDENTITIES.get(scope)
        if kind == IP:
            identity = client_identity(request)
        elif kind == SESSION_KEY and SESSION_KEY in url_kwargs:
            identity = url_kwargs[SESSION_KEY]
        else:
            raise ImproperlyConfigured(
                f"throttle scope {declared!r} needs an entry in SCOPE_IDENTITIES"
                " (and a `session_key` URL argument when counted by session key)"
            )
        limits.append(Limit(scope, scope, counter_identity(identity), rate_for(scope)))
    return limits


def check(request, view) -> Decision | None:
    """Count the request against the view's throttle_scopes (see check_scopes)."""
    return check_scopes(request, view.throttle_scopes, url_kwargs=view.kwargs, sender=type(view))


def check_scopes(request, scopes: Sequence[str], *, url_kwargs: dict, sender) -> Decision | None:
    """Count the request against `scopes`; raise RateLimitExceeded when one is spent.

    The decision is kept on the Django request as `rate_limit` (for the response
    headers) and the binding scope as `rate_limit_scope` (for the request log).
    None when limiting is off, there are no scopes, or the cache is down and the
    limiter fails open. `sender` (the view) is what the signals are sent with.
    """
    if not settings.RATE_LIMIT_ENABLED or not scopes:
        return None
    limits = limits_for_request(request, scopes, url_kwargs)
    http_request = getattr(request, "_request", request)
    http_request.rate_limit_scope = limits[0].scope
    try:
        decision = limiter.hit(limits)
    except CACHE_DOWN as error:
        fail_open = settings.RATE_LIMIT_FAIL_OPEN
        failures.report(error, fail_open=fail_open)
        limiter_failed.send(sender=sender, error=error, fail_open=fail_open)
        if fail_open:
            return None
        raise ServiceUnavailable(headers={"Retry-After": "5"}) from None
    http_request.rate_limit = decision
    http_request.rate_limit_scope = decision.binding.scope
    if not decision.allowed:
        scope = decision.binding.scope
        logger.info("rate limit exceeded: %s", scope, extra={"rate_limit_scope": scope})
        rate_limited.send(sender=sender, scope=scope, request=http_request)
        raise RateLimitExceeded(details={"retry_after": decision.retry_after}, headers=decision.headers())
    return decision


def response_headers(request) -> dict[str, str]:
    """The rate-limit headers for the response to `request`; none if it was not counted."""
    decision = getattr(request, "rate_limit", None)
    return decision.headers() if decision is not None else {}
