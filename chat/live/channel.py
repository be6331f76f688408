"""One wake-up subscriber per process, and the database re-check that covers for it while it is down."""

import asyncio
import logging
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from chat import metrics, redis_cluster, selectors, wakeups
from chat.api.errors import DATABASE_DOWN
from chat.live.db import Database
from chat.live.hub import Hub

logger = logging.getLogger(__name__)

# A write's updated_at is taken at the start of its transaction and read here on
# another machine's clock: look this far back before the last re-check.
RECHECK_MARGIN_SECONDS = 5.0
# Reconnecting to Redis: first after this, doubling up to the maximum.
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0
# A subscription silent this long pings Redis: a hung server (paused, partitioned) sends
# no error, and the re-check must start within 2 s of the channel going quiet.
IDLE_PING_SECONDS, PING_TIMEOUT = 1.0, 1.0


class Channel:
    """Feeds the hub: Redis pub/sub (REDIS_URL) or the in-process hub (the embedded default).

    While the Redis subscription is down (never connected yet, or lost), a
    re-check every LIVE_RECHECK_SECONDS asks the database which guest sessions
    were written lately and wakes their waiters, who re-read by their cursor; the
    subscriber reconnects with backoff. When it is back, every waiter wakes once
    more and one last re-check runs: what was written in the gap is found.
    """

    def __init__(self, hub: Hub, db: Database):
        self.hub = hub
        self.db = db
        self.up = False
        self._down_reported = False
        self._recheck_after_up = False
        self._tasks: list[asyncio.Task] = []
        self._unsubscribe = None

    async def start(self) -> None:
        if wakeups.uses_redis():
            self._tasks = [
                asyncio.create_task(self._subscribe_forever(), name="live-subscriber"),
                asyncio.create_task(self._recheck_while_down(), name="live-recheck"),
            ]
        else:
            loop = asyncio.get_running_loop()
            hub = self.hub
            # The writer's thread hands the key to the event loop.
            self._unsubscribe = wakeups.LOCAL_HUB.subscribe(lambda key: loop.call_soon_threadsafe(hub.notify, key))
            self.up = True

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _mark_up(self) -> None:
        if not self.up:
            logger.info("wake-up channel subscribed", extra={"channel": settings.WAKEUP_CHANNEL})
            self._recheck_after_up = True
        self.up = True
        self._down_reported = False
        self.hub.wake_all()

    def _mark_down(self, error: Exception) -> None:
        if not self._down_reported:
            self._down_reported = True
            metrics.live_channel_outages.inc()
            logger.error(
                "wake-up channel lost (%s: %s); re-checking the database every %s s until it is back",
                type(error).__name__,
                error,
                settings.LIVE_RECHECK_SECONDS,
            )
        self.up = False

    async def _subscribe_forever(self) -> None:
        delay = BACKOFF_START
        location = settings.CACHES["default"]["LOCATION"]
        timeout = settings.REDIS_SOCKET_TIMEOUT
        # A Redis Cluster broadcasts a classic PUBLISH to every node, so one plain
        # connection to any node hears every wake-up: the named one first, then the
        # others it reports, in turn, when one is lost.
        cluster = redis_cluster.is_cluster_url(location)
        nodes = [redis_cluster.node_url(location)] if cluster else [location]
        attempt = 0
        while True:
            client = aioredis.Redis.from_url(nodes[attempt % len(nodes)], socket_connect_timeout=max(timeout, 1.0))
            attempt += 1
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(settings.WAKEUP_CHANNEL)
                if cluster:
                    nodes = redis_cluster.all_node_urls(nodes[0], await client.execute_command("CLUSTER", "NODES"))
                # Up only once Redis answers: a hung server accepts the connection and the SUBSCRIBE.
                await asyncio.wait_for(client.ping(), PING_TIMEOUT)
                self._mark_up()
                delay = BACKOFF_START
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=IDLE_PING_SECONDS)
                    if message is None:
                        await asyncio.wait_for(client.ping(), PING_TIMEOUT)
                    elif message["type"] == "message":
                        self.hub.notify(message["data"].decode("ascii", "replace"))
            except (RedisError, OSError, TimeoutError) as error:
                self._mark_down(error)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _recheck_while_down(self) -> None:
        interval = settings.LIVE_RECHECK_SECONDS
        since = time.time()
        while True:
            await asyncio.sleep(interval)
            if self.up and not self._recheck_after_up:
                since = time.time()
                continue
            self._recheck_after_up = False
            started = time.time()
            try:
                keys = await self.db.run(
                    selectors.guest_sessions_written_since,
                    since=datetime.fromtimestamp(since - RECHECK_MARGIN_SECONDS, UTC),
                )
            except DATABASE_DOWN as error:
                logger.warning("re-check: database unavailable (%s)", type(error).__name__)
                continue
            since = started
            metrics.live_rechecks.inc()
            for key in keys:
                self.hub.notify(key)
