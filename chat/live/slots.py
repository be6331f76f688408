"""Open-stream limits: at most LIVE_STREAMS_PER_KEY per guest session key and LIVE_STREAMS_PER_IP per client IP.

Counted across processes in Redis: per key and per IP a sorted set of the open
streams' ids, each scored with the moment it expires. A live process refreshes
its streams' scores every HEARTBEAT seconds and removes them when they end; a
process that dies leaves entries that expire within TTL seconds, so a crash
never holds a slot for good. On the embedded default, counted in this process.
Redis unreachable: the limit fails open (logged and counted, as the rate limiter).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection
from redis.commands.core import Script

from chat import throttles, wakeups
from chat.exceptions import RateLimitExceeded
from chat.live.db import Database

logger = logging.getLogger(__name__)

TTL = 60  # seconds an entry lives without a refresh
HEARTBEAT = 20  # seconds between refreshes
# A refused stream may retry after this long (a slot frees when another stream ends).
RETRY_AFTER = 5

# Both sets in one Redis Cluster slot ({streams}), so one script can touch both.
ACQUIRE = Script(
    None,
    b"""
    local now, expires, member = ARGV[1], ARGV[2], ARGV[3]
    for i, key in ipairs(KEYS) do
        redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
        if redis.call('ZCARD', key) >= tonumber(ARGV[3 + i]) then return i end
    end
    for i, key in ipairs(KEYS) do
        redis.call('ZADD', key, expires, member)
        redis.call('EXPIRE', key, ARGV[6])
    end
    return 0
    """,
)


def _keys(session_key: str, ip: str) -> list[str]:
    return [
        cache.make_key(f"live:{{streams}}:key:{session_key}"),
        cache.make_key(f"live:{{streams}}:ip:{throttles.counter_identity(ip)}"),
    ]


class RedisSlots:
    def acquire(self, stream_id: str, session_key: str, ip: str) -> int:
        """0: taken; 1: the key's streams are full; 2: the IP's are."""
        now = time.time()
        limits = [settings.LIVE_STREAMS_PER_KEY, settings.LIVE_STREAMS_PER_IP]
        client = get_redis_connection("default")
        return int(ACQUIRE(keys=_keys(session_key, ip), args=[now, now + TTL, stream_id, *limits, TTL], client=client))

    def release(self, stream_id: str, session_key: str, ip: str) -> None:
        pipe = get_redis_connection("default").pipeline(transaction=False)
        for key in _keys(session_key, ip):
            pipe.zrem(key, stream_id)
        pipe.execute()

    def refresh(self, streams: list[tuple[str, str, str]]) -> None:
        expires = time.time() + TTL
        pipe = get_redis_connection("default").pipeline(transaction=False)
        for stream_id, session_key, ip in streams:
            for key in _keys(session_key, ip):
                pipe.zadd(key, {stream_id: expires}, xx=True)
                pipe.expire(key, TTL)
        pipe.execute()


class LocalSlots:
    """One process's streams (the embedded default). Called on the event loop only."""

    def __init__(self):
        self.by_key: Counter[str] = Counter()
        self.by_ip: Counter[str] = Counter()

    def acquire(self, stream_id: str, session_key: str, ip: str) -> int:
        if self.by_key[session_key] >= settings.LIVE_STREAMS_PER_KEY:
            return 1
        if self.by_ip[ip] >= settings.LIVE_STREAMS_PER_IP:
            return 2
        self.by_key[session_key] += 1
        self.by_ip[ip] += 1
        return 0

    def release(self, stream_id: str, session_key: str, ip: str) -> None:
        self.by_key[session_key] -= 1
        self.by_ip[ip] -= 1
        if self.by_key[session_key] <= 0:
            del self.by_key[session_key]
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]

    def refresh(self, streams) -> None:
        pass


class Slots:
    def __init__(self, db: Database):
        self.db = db
        self.open: dict[str, tuple[str, str, str]] = {}
        self.store = RedisSlots() if wakeups.uses_redis() else LocalSlots()
        self._task: asyncio.Task | None = None

    async def _call(self, method, *args):
        if isinstance(self.store, LocalSlots):
            return method(*args)
        return await self.db.run(method, *args)

    def start(self) -> None:
        if isinstance(self.store, RedisSlots):
            self._task = asyncio.create_task(self._refresh_forever(), name="live-slots")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def hold(self, session_key: str, ip: str) -> AsyncIterator[None]:
        """A slot for one stream of `session_key` from `ip` while the block runs; RateLimitExceeded if none is free."""
        stream_id = uuid.uuid4().hex
        try:
            refused = await self._call(self.store.acquire, stream_id, session_key, ip)
        except throttles.CACHE_DOWN as error:
            throttles.failures.report(error, fail_open=True)
            refused = 0
        if refused:
            limit = settings.LIVE_STREAMS_PER_KEY if refused == 1 else settings.LIVE_STREAMS_PER_IP
            whose = "session key" if refused == 1 else "client IP"
            raise RateLimitExceeded(
                f"Too many open streams: at most {limit} per {whose}",
                details={"retry_after": RETRY_AFTER},
                headers={"Retry-After": str(RETRY_AFTER)},
            )
        self.open[stream_id] = (stream_id, session_key, ip)
        try:
            yield
        finally:
            del self.open[stream_id]
            try:
                await self._call(self.store.release, stream_id, session_key, ip)
            except throttles.CACHE_DOWN as error:  # the entry expires by itself
                logger.warning("stream slot not released (%s); it expires in %s s", type(error).__name__, TTL)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if not self.open:
                continue
            try:
                await self.db.run(self.store.refresh, list(self.open.values()))
            except throttles.CACHE_DOWN as error:
                logger.warning("stream slots not refreshed (%s)", type(error).__name__)
