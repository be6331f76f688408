"""The locked part of a write on PostgreSQL: one statement, `chat_session_write(...)`.

The function (chat/sql/session_write.sql, with the reasons for each
step) takes the session's row lock, checks who may write, upserts the messages
and moves the statistics and the usage ledger; the rows come in ready-made
(chat.services.writing). Sent outside a transaction, as a request sends it, the
statement is its own transaction: the lock is granted, used and released within
one round trip, and nothing of the application runs while it is held. Inside a
transaction (a test, a caller's atomic block) it joins it, and the lock lasts
until that commits.
"""

import time

from django.db import connection
from psycopg.types.datetime import TimestamptzLoader

from chat import metrics
from chat.exceptions import Conflict, Forbidden, NotFound
from chat.models import DEFAULT_TITLE, ChatMessage
from chat.services.writing import SessionWrite, after_write

WRITE_SQL = (
    "SELECT outcome, session_id, owner_id, guest_key, ids, stamps, written_at, waited, retried_content, "
    "retried_content_type FROM chat_session_write(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::text[], %s::text[])"
)


def write_sql(write: SessionWrite) -> list[ChatMessage]:
    """Run `write` as one statement; the stored messages in request order (a retry: the one first stored)."""
    prepared = write.prepared
    params = [
        write.session_id,
        write.session_key,
        write.user.pk if write.user is not None else None,
        write.new_title,
        write.title,
        write.first_title,
        DEFAULT_TITLE,
        write.retry_id,
        write.author.pk if write.author is not None else None,
        prepared.payload(),
        prepared.extras(),
        prepared.previews,
    ]
    autocommit = not connection.in_atomic_block
    with connection.cursor() as cursor:
        # psycopg's own (C) timestamptz loader; the connection's time zone is UTC.
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        started = time.perf_counter()
        cursor.execute(WRITE_SQL, params)
        row = cursor.fetchone()
        round_trip = time.perf_counter() - started
    outcome, session_id, owner_id, guest_key, ids, stamps, written_at, waited = row[:8]
    if outcome == "not_found":
        raise NotFound("Session not found")
    if outcome == "forbidden":
        raise Forbidden("This session belongs to someone else")
    if outcome == "conflict":
        raise Conflict("This id belongs to another message of the session", details={"id": [write.retry_id]})
    if autocommit:
        # The statement's time less its wait for the lock: from the grant to the reply,
        # the commit and both trips over the network included (an upper bound).
        metrics.observe_lock_hold(round_trip - waited.total_seconds())
    if outcome == "retry":
        stored = ChatMessage(
            id=ids[0],
            session_id=session_id,
            message_id=write.retry_id,
            role=write.prepared.rows[0].role,
            author=write.author,
            content=row[8],
            content_type=row[9],
            timestamp=stamps[0],
        )
        _mark_stored(stored)
        return [stored]
    rows = prepared.rows
    for message, pk, stamp in zip(rows, ids, stamps, strict=True):
        message.id = pk
        message.session_id = session_id
        message.timestamp = stamp
        message.created_at = written_at
        _mark_stored(message)
    after_write(source=write.source, saved=len(rows), guest_key=guest_key if owner_id is None else None)
    return rows


def _mark_stored(message: ChatMessage) -> None:
    """As bulk_create leaves what it saved: a row of the default database."""
    message._state.adding = False
    message._state.db = connection.alias
