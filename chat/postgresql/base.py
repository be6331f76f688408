"""Django's PostgreSQL backend, with a health check that sends nothing when the connection is idle and sound.

Connections are kept between requests (CONN_MAX_AGE) and checked before the first
query of each request (CONN_HEALTH_CHECKS), so that one the server has dropped (a
restart, a failover, pg_terminate_backend, an idle timeout) is replaced instead of
failing that request. Django checks with `SELECT 1`: one more round trip for every
request, the second query of a guest poll that needs one (bench/README.md).

A server that ends a connection says so first: it sends an error (`FATAL: terminating
connection ...`) and closes its side, so the client's socket becomes readable. A
connection that is idle (no transaction), that psycopg still holds as OK and whose
socket has nothing to read is therefore sound as far as any check can tell, and is
used without asking; anything else (a readable socket, a transaction left open, a
connection psycopg knows is broken) gets Django's `SELECT 1`. What neither check
sees — a peer gone without a word (a cable cut, a host powered off) — makes the
request's query fail either way: it answers 503, and the broken connection is
closed after it.
"""

import select

import psycopg
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper
from psycopg import pq


class DatabaseWrapper(PostgresDatabaseWrapper):
    def is_usable(self) -> bool:
        if self.connection is None:
            return False
        pgconn = self.connection.pgconn
        if pgconn.status != pq.ConnStatus.OK:
            return False
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return super().is_usable()
        try:
            poller = select.poll()  # not select.select: a live process's descriptors go past 1024
            poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
            pending = poller.poll(0)
        except (OSError, ValueError, psycopg.Error):  # no socket (psycopg: OperationalError)
            return False
        if not pending:
            return True
        # Something arrived unasked: the server's goodbye, or a notice. Django's check decides.
        return super().is_usable()
