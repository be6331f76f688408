"""Wake-ups: after a guest session's write commits, tell the waiting side (chat.live) to re-read it.

A wake-up is only a hint: it carries the session's key and nothing else, and the
waiters read the messages from the database by their cursor. A lost wake-up
therefore costs a delay, never a message (the waiting side re-checks the
database while its channel is down).

Two channels, chosen by the cache:
- Redis (REDIS_URL set): one PUBLISH on settings.WAKEUP_CHANNEL (prefixed, so
  that several deployments or test runs sharing a Redis do not cross), through
  the cache's connection pool and socket timeouts: every live process on every
  machine subscribes to it.
- the embedded default: LOCAL_HUB, in this process; `make run` serves the
  waiters from the same process (uvicorn), so this reaches them.

Why Redis and not PostgreSQL's NOTIFY: README, "Real-time delivery" (measured).
This module is part of the sync core: it never imports chat.live.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.db import transaction
from django_redis import get_redis_connection
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisClusterException, RedisError

from chat import metrics

logger = logging.getLogger(__name__)

# What an unreachable or hung Redis raises (as chat.throttles.CACHE_DOWN; not imported
# from there: the limiter belongs to the HTTP layer, this to the core).
# RedisClusterException: a Redis Cluster that cannot be reached, or a slot without a primary.
CACHE_DOWN = (RedisError, RedisClusterException, ConnectionInterrupted, OSError)
# An unreachable channel is logged at most this often per process; every failure is counted.
FAILURE_LOG_INTERVAL = 60.0


class LocalHub:
    """Wake-ups within one process: listeners are called in the writer's thread.

    A listener on an event loop must hand over with loop.call_soon_threadsafe
    (chat.live does); it must not block, and an error in one does not stop the others.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener(session_key)` on every wake-up; returns the function that unsubscribes it."""
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [item for item in self._listeners if item is not listener]

        return unsubscribe

    def publish(self, session_key: str) -> None:
        for listener in self._listeners:  # a copy-on-write list: no lock needed to read it
            try:
                listener(session_key)
            except Exception:  # a broken listener must not fail a committed write
                logger.exception("wake-up listener failed")


LOCAL_HUB = LocalHub()


def uses_redis() -> bool:
    """True when wake-ups go through Redis (the default cache is Redis)."""
    return isinstance(caches["default"], RedisCache)


class _FailureLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.last_logged: float | None = None

    def report(self, error: Exception) -> None:
        with self.lock:
            now = time.monotonic()
            if self.last_logged is not None and now - self.last_logged < FAILURE_LOG_INTERVAL:
                return
            self.last_logged = now
        logger.error(
            "wake-up not published (%s: %s): waiters find the message by re-checking the database",
            type(error).__name__,
            error,
        )


_failures = _FailureLog()


def publish(session_key: str) -> None:
    """Wake the waiters of a guest session now (call after commit: see publish_on_commit).

    Never raises: the write it follows has committed; an unreachable channel is
    logged (once a minute) and counted.
    """
    if not uses_redis():
        LOCAL_HUB.publish(session_key)
        metrics.wakeups_published.inc()
        return
    try:
        get_redis_connection("default").publish(settings.WAKEUP_CHANNEL, session_key)
    except CACHE_DOWN as error:
        metrics.wakeup_publish_failures.inc()
        _failures.report(error)
    else:
        metrics.wakeups_published.inc()


def publish_on_commit(*, session_key: uuid.UUID | str) -> None:
    """Publish a wake-up for the session once the current transaction commits (at once outside one).

    A rolled-back write wakes nobody; a committed one is already readable when its
    waiters wake. Each write of a guest session is one transaction with one call.
    """
    transaction.on_commit(lambda: publish(str(session_key)))
