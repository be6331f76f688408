"""Reads that may lag go to a PostgreSQL streaming replica, but a caller never reads older data than it wrote.

DATABASE_REPLICA_URL adds the database alias "replica" (chatsite.settings). The
selectors whose reads may lag (guest polls, the session list, and those of search,
usage, export, the streams' catch-up) ask `read_alias(caller=...)` which database to
read: the replica when that is safe, else the primary ("default"). Everything else,
every write included, stays on the primary (PrimaryRouter).

Read-your-writes, by WAL position rather than by a pinning period: after a write
the primary's WAL insert position (pg_current_wal_insert_lsn) is recorded in the
cache, for a few times the allowed lag, for the user who wrote (chat.api.base) and
for a guest session that was written (its guest, and every waiter woken by the
write, must find it: chat.services.messages). A read for that caller goes to the
replica only once the replica has replayed up to that position
(pg_last_wal_replay_lsn), else to the primary. Unlike
"pin the caller to the primary for N seconds" this is exact however far the replica
lags, and a caller goes back to the replica as soon as it has caught up (usually
milliseconds later), not N seconds later. Cost, only with a replica: a write request
one query and one cache write more; a lagging read one cache read more, and one
replica query when the last known replay position is older than the caller's write.

The replica itself is checked at most once a second per process (its replay
position against the primary's write position, sampled each time, which gives
the lag in seconds). A replica that does not answer, or lags more than
REPLICA_MAX_LAG_SECONDS, is skipped: its reads go to the primary, logged on each
change of state and counted (chat_replica_fallbacks). A replica that fails in the
middle of a read is retried on the primary at once (`read`).

Why polling stays gap-free on a replica: a replica replays commits in the
primary's commit order, so any snapshot of it equals a past snapshot of the
primary, where the session's row lock makes message ids commit in order
(chat.services.messages); a poll on a lagging replica returns fewer messages,
never a later one before an earlier one.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.core.cache import caches
from django.db import DatabaseError, connections, transaction
from django_redis.cache import RedisCache
from django_redis.exceptions import ConnectionInterrupted
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, RedisError

from chat import metrics

logger = logging.getLogger(__name__)

PRIMARY = "default"
REPLICA = "replica"

# A cache that is down means no marks can be read: the primary, to be safe.
CACHE_DOWN = (RedisError, RedisClusterException, ConnectionInterrupted, OSError)

T = TypeVar("T")


class PrimaryRouter:
    """Every query on the primary unless a selector names the replica (`.using(read_alias(...))`)."""

    def db_for_read(self, model, **hints):
        instance = hints.get("instance")
        return instance._state.db if instance is not None and instance._state.db else PRIMARY

    def db_for_write(self, model, **hints):
        return PRIMARY  # never the replica, even for an instance that was read there

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica is a copy of the primary: the same rows

    def allow_migrate(self, db, app_label, **hints):
        return db == PRIMARY


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


def user_caller(user) -> str:
    return owner_caller(user.pk)


def owner_caller(user_id: int) -> str:
    """The caller whose writes a read of user `user_id`'s own data must see (the user's mark)."""
    return f"u:{user_id}"


def guest_caller(session_key) -> str:
    return f"g:{session_key}"


def lsn_to_int(text: str) -> int:
    """A PostgreSQL LSN ('16/B374D848') as an integer: byte position in the WAL."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


# --------------------------------------------------------------------------- callers' marks


class WriteMarks:
    """Each caller's latest write position, in the cache, kept only ever growing.

    Two writes of one caller can record their positions out of order (two
    workers); a mark only grows, so the later write is never forgotten. On Redis a
    small script compares and sets in one step (LSNs as numbers: exact below 2^53
    bytes of WAL, 8 PiB); other caches (development) get and set.
    """

    SCRIPT = Script(
        None,
        b"""
        local current = tonumber(redis.call('GET', KEYS[1]) or '0')
        if tonumber(ARGV[1]) > current then
            redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
        end
        return 1
        """,
    )

    def key(self, caller: str) -> str:
        # The caller is the hash tag: on a Redis Cluster the mark lives beside its limits.
        return f"rw:{{{caller}}}"

    def record(self, callers: list[str], lsn: int, ttl: int) -> None:
        cache = caches["default"]
        if isinstance(cache, RedisCache):
            client = cache.client.get_client(write=True)
            for caller in callers:
                client.eval(self.SCRIPT.script, 1, cache.make_key(self.key(caller)), lsn, ttl)
            return
        for caller in callers:
            if (cache.get(self.key(caller)) or 0) < lsn:
                cache.set(self.key(caller), lsn, timeout=ttl)

    def get(self, caller: str) -> int | None:
        cache = caches["default"]
        if isinstance(cache, RedisCache):
            raw = cache.client.get_client(write=False).get(cache.make_key(self.key(caller)))
            return int(raw) if raw is not None else None
        return cache.get(self.key(caller))


marks = WriteMarks()


def mark_ttl() -> int:
    """How long a mark matters: after that, a usable replica has replayed the write anyway."""
    return int(2 * settings.REPLICA_MAX_LAG_SECONDS + 2 * settings.REPLICA_CHECK_SECONDS) + 1


def note_write_on_commit(callers: list[str]) -> None:
    """note_write(callers) once the current transaction commits (at once outside one).

    Registered before a write's wake-up (chat.wakeups.publish_on_commit), so a
    waiter woken by it finds the mark and reads a replica only once it has the write.
    """
    if replica_configured():
        transaction.on_commit(lambda: note_write(callers))


def note_write(callers: list[str]) -> None:
    """After a write by `callers` committed: remember the primary's WAL position for them."""
    if not replica_configured() or not callers:
        return
    try:
        with connections[PRIMARY].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            lsn = lsn_to_int(cursor.fetchone()[0])
        marks.record(callers, lsn, mark_ttl())
    except CACHE_DOWN as error:
        # Without a mark the caller could read the replica before it has the write:
        # readers check the cache too, and send everyone to the primary while it is down.
        logger.warning("read-your-writes mark not recorded (%s: %s)", type(error).__name__, error)


# --------------------------------------------------------------------------- the replica's state


@dataclass
class ReplicaState:
    usable: bool = False
    reason: str = "unchecked"  # why not usable: down, behind
    replay_lsn: int = 0
    lag_seconds: float | None = None
    checked_at: float = float("-inf")  # time.monotonic()


class ReplicaMonitor:
    """This process's view of the replica, refreshed at most every REPLICA_CHECK_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.state = ReplicaState()
        self.lock = threading.Lock()
        # (time, primary write position) samples: the lag is how long ago the primary
        # was where the replica is now.
        self.samples: deque[tuple[float, int]] = deque(maxlen=120)

    def current(self) -> ReplicaState:
        if self.clock() - self.state.checked_at >= settings.REPLICA_CHECK_SECONDS and self.lock.acquire(blocking=False):
            try:
                self._check()
            finally:
                self.lock.release()
        return self.state

    def replay_lsn(self) -> int | None:
        """The replica's replay position now (one query), or None if it does not answer."""
        try:
            with connections[REPLICA].cursor() as cursor:
                cursor.execute("SELECT pg_last_wal_replay_lsn()::text")
                value = cursor.fetchone()[0]
        except DatabaseError as error:
            self.mark_down(error)
            return None
        if value is None:  # not a replica at all (a primary named as replica): never usable
            self._set(ReplicaState(usable=False, reason="down", checked_at=self.clock()), "it is not in recovery")
            return None
        lsn = lsn_to_int(value)
        self.state.replay_lsn = max(self.state.replay_lsn, lsn)
        return lsn

    def _check(self) -> None:
        now = self.clock()
        try:
            with connections[PRIMARY].cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn()::text")
                primary_lsn = lsn_to_int(cursor.fetchone()[0])
        except DatabaseError:
            return  # the primary's own trouble; the request will meet it
        self.samples.append((now, primary_lsn))
        replay = self.replay_lsn()
        if replay is None:
            return
        if replay >= primary_lsn:
            lag = 0.0
        else:
            caught_up_at = [at for at, lsn in self.samples if lsn <= replay]
            lag = now - max(caught_up_at) if caught_up_at else now - self.samples[0][0]
        usable = lag <= settings.REPLICA_MAX_LAG_SECONDS
        state = ReplicaState(
            usable=usable, reason="" if usable else "behind", replay_lsn=replay, lag_seconds=lag, checked_at=now
        )
        self._set(state, f"{lag:.1f} s behind the primary")

    def mark_down(self, error: Exception) -> None:
        connections[REPLICA].close()  # a broken connection is not reused
        self._set(
            ReplicaState(usable=False, reason="down", checked_at=self.clock()), f"{type(error).__name__}: {error}"
        )

    def _set(self, state: ReplicaState, detail: str) -> None:
        previous, self.state = self.state, state
        metrics.replica_lag_seconds.set(state.lag_seconds if state.lag_seconds is not None else -1)
        if not state.usable and (previous.usable or previous.reason != state.reason):
            logger.error("read replica skipped (%s): reads that may lag go to the primary", detail)
        elif not previous.usable and state.usable and previous.reason != "unchecked":
            logger.warning("read replica usable again (%s)", detail)


monitor = ReplicaMonitor()


def read_alias(*, caller: str | None) -> str:
    """Where a read that may lag should go for `caller`: "replica" when it is safe, else "default"."""
    if not replica_configured():
        return PRIMARY
    state = monitor.current()
    if not state.usable:
        metrics.replica_fallbacks.labels(state.reason).inc()
        return PRIMARY
    if caller is not None:
        try:
            mark = marks.get(caller)
        except CACHE_DOWN:
            metrics.replica_fallbacks.labels("cache_down").inc()
            return PRIMARY
        if mark is not None and state.replay_lsn < mark:
            replay = monitor.replay_lsn()
            if replay is None or replay < mark:
                metrics.replica_fallbacks.labels("recent_write" if replay is not None else "down").inc()
                return PRIMARY
    metrics.replica_reads.inc()
    return REPLICA


def read(*, caller: str | None, run: Callable[[str], T]) -> T:
    """`run(alias)` on the database read_alias picks; a replica that fails meanwhile: again on the primary."""
    alias = read_alias(caller=caller)
    if alias == PRIMARY:
        return run(alias)
    try:
        return run(alias)
    except DatabaseError as error:
        monitor.mark_down(error)
        metrics.replica_fallbacks.labels("down").inc()
        return run(PRIMARY)
