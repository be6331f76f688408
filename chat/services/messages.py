"""Every write of messages, and the locked part of it that the ORM runs.

The API, the guest endpoints, the admin and the management commands all write
through here, so the rules that make the data trustworthy live in one place:

- a write to a session holds that session's row lock for its whole transaction,
  which serialises writers (exact statistics, and message ids that commit in
  order, so a guest poller never skips one);
- the statistics and the usage ledger move in the same transaction, by deltas,
  at a cost that does not grow with the length of the session;
- everything that needs no lock is done before it is taken (chat.services.writing).

`session_write` runs a prepared write on one of two engines with one contract:
on PostgreSQL one statement (chat.services.write_sql), elsewhere (SQLite, the
embedded default) the ORM below. tests/test_session_write_paths.py runs the same
writes through both on PostgreSQL and compares what they leave.
"""

import time
import uuid
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from chat import metrics
from chat.exceptions import Conflict, Forbidden, NotFound
from chat.models import ChatMessage, ChatSession
from chat.services.usage import USAGE_FIELDS, usage_record, usage_retire_sessions
from chat.services.write_sql import write_sql
from chat.services.writing import (
    PREVIEW_LENGTH,
    TITLE_LENGTH,
    PreparedRows,
    SessionWrite,
    after_write,
    new_message_id,
    rows_prepare,
    shorten,
    title_for,
)

__all__ = [
    "PREVIEW_LENGTH",
    "TITLE_LENGTH",
    "guest_session_lock",
    "last_message_fields",
    "messages_save",
    "new_message_id",
    "session_delete",
    "session_lock",
    "session_lock_or_create",
    "session_messages_write",
    "session_write",
    "shorten",
    "title_for",
]

# Every column a re-saved message replaces (last write wins). `created_at` and the
# integer `id` (the polling cursor) stay as first stored.
UPSERT_FIELDS = [
    "role",
    "content",
    "content_type",
    "model",
    "original_model",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "user_message_id",
    "elapsed_time",
    "completion_id",
    "timestamp",
    "error",
    "error_message",
    "error_code",
    "retry_after",
    "suggestions",
    "extra",
    "author",
]


def last_message_fields(newest: ChatMessage | None, *, preview: str | None = None) -> dict[str, Any]:
    """A session's "last" statistics from its newest message (None: it has none).

    `preview`: the newest message's preview, when it was made before the lock.
    """
    if newest is not None and preview is None:
        preview = shorten(newest.content, PREVIEW_LENGTH)
    return {
        "last_model": newest.model if newest else None,
        "last_message_preview": preview,
        "last_message_timestamp": newest.timestamp if newest else None,
        "last_message_id": newest.pk if newest else None,
        "last_role": newest.role if newest else None,
    }


def session_lock(*, session_id: str) -> ChatSession | None:
    """The session, its row locked until the transaction ends; None if unknown."""
    return ChatSession.objects.select_for_update().filter(pk=session_id).first()


def guest_session_lock(*, session_key: uuid.UUID) -> ChatSession | None:
    """The guest session of `session_key`, its row locked until the transaction ends; None if unknown.

    One statement: PostgreSQL re-checks the WHERE clause on the row it locks, so
    a session purged or given an owner meanwhile is not returned.
    """
    return ChatSession.objects.select_for_update().filter(session_key=session_key, user__isnull=True).first()


def session_lock_or_create(*, session_id: str, user, title: str) -> tuple[ChatSession, bool]:
    """The session, locked, and whether this transaction made it; made for `user` first if it does not exist.

    Two requests creating the same new session race safely: the insert that
    loses is a no-op (ON CONFLICT DO NOTHING), and both then wait on one row lock.
    The winner is told by the session_key it wrote (a new UUID4). A session
    deleted between that insert and the lock is simply made again.
    """
    while True:
        session = session_lock(session_id=session_id)
        if session is not None:
            return session, False
        now, key = timezone.now(), uuid.uuid4()
        ChatSession.objects.bulk_create(
            [ChatSession(id=session_id, user=user, title=title, session_key=key, created_at=now, updated_at=now)],
            ignore_conflicts=True,
        )
        session = session_lock(session_id=session_id)
        if session is not None:
            return session, session.session_key == key


def session_messages_write(
    *,
    session: ChatSession,
    prepared: PreparedRows,
    source: str,
    title: str | None = None,
    new_session: bool = False,
) -> list[ChatMessage]:
    """The ORM's locked part: upsert the prepared rows into `session` and move its statistics.

    The caller holds the session's row lock in the current transaction. A message
    whose id exists in the session replaces it; a missing timestamp keeps the
    stored one (or is the receipt time for a new message).
    `new_session`: this transaction made the session, so nothing is stored in it yet.

    The time is read here, under the lock: read before waiting for it, a writer
    that waited would set an `updated_at` older than the one it waited for.
    """
    rows = prepared.rows
    now = timezone.now()
    # Asked whatever message_count says (a statistic, not the truth); skipped only
    # for a session this transaction made, which no one else can see yet.
    existing: dict[str, ChatMessage] = {}
    if not new_session:
        existing = {
            m.message_id: m
            for m in ChatMessage.objects.filter(session=session, message_id__in=[r.message_id for r in rows]).only(
                "id", "message_id", "timestamp", *USAGE_FIELDS
            )
        }
    for row in rows:
        row.session = session
        row.created_at = now
        if row.timestamp is None:
            previous = existing.get(row.message_id)
            row.timestamp = previous.timestamp if previous else now
    ChatMessage.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["session", "message_id"],
        update_fields=UPSERT_FIELDS,
    )

    last: dict[str, Any] | None
    if existing:
        # A replaced message may have been the newest and moved back in time:
        # ask the (session, timestamp, id) index, one row.
        last = last_message_fields(ChatMessage.objects.filter(session=session).order_by("-timestamp", "-id").first())
    else:
        # Only inserts: their ids are larger than every stored one, so on equal
        # timestamps the new message is the newer.
        at = max(range(len(rows)), key=lambda i: (rows[i].timestamp, rows[i].pk))
        last = last_message_fields(rows[at], preview=prepared.previews[at])
        if session.last_message_timestamp and rows[at].timestamp < session.last_message_timestamp:
            last = None

    stats: dict[str, Any] = {
        "message_count": F("message_count") + (len(rows) - len(existing)),
        "total_tokens": F("total_tokens")
        + sum(m.total_tokens or 0 for m in rows)
        - sum(m.total_tokens or 0 for m in existing.values()),
        "updated_at": now,
    }
    if last is not None:
        stats.update(last)
    if title is not None:
        stats["title"] = title
    ChatSession.objects.filter(pk=session.pk).update(**stats)
    usage_record(user_id=session.user_id, saved=rows, replaced=existing.values())
    after_write(source=source, saved=len(rows), guest_key=session.session_key if session.user_id is None else None)
    return rows


def write_orm(write: SessionWrite) -> list[ChatMessage]:
    """Run `write` with the ORM, in one transaction: the contract of chat.services.write_sql."""
    with transaction.atomic():
        if write.session_key is not None:
            session, created = guest_session_lock(session_key=write.session_key), False
            if session is None:
                raise NotFound("Session not found")
        else:
            session, created = session_lock_or_create(
                session_id=write.session_id, user=write.user, title=write.new_title
            )
            if session.user_id != write.user.pk:
                raise Forbidden("This session belongs to someone else")
        locked = time.perf_counter()
        if write.retry_id is not None:
            stored = ChatMessage.objects.filter(session=session, message_id=write.retry_id).first()
            if stored is not None and write.retries(role=stored.role, author_id=stored.author_id):
                return [stored]
            if stored is not None:
                raise Conflict("This id belongs to another message of the session", details={"id": [write.retry_id]})
        rows = session_messages_write(
            session=session,
            prepared=write.prepared,
            source=write.source,
            title=write.title_to_set(current=session.title, message_count=session.message_count),
            new_session=created,
        )
        transaction.on_commit(lambda: metrics.observe_lock_hold(time.perf_counter() - locked))
        return rows


def session_write(write: SessionWrite, *, sql: bool | None = None) -> list[ChatMessage]:
    """Run a prepared write: one statement on PostgreSQL, the ORM elsewhere (`sql` forces either).

    Returns the stored messages in request order; a guest's retry returns its
    message as first stored. Raises NotFound (a guest key), Forbidden (another's
    session) or Conflict (a client id of another author's message), nothing written.
    """
    if sql is None:
        sql = connection.vendor == "postgresql"
    return write_sql(write) if sql else write_orm(write)


def messages_save(
    *,
    user,
    session_id: str,
    messages: list[dict[str, Any]],
    session_title: str | None = None,
    sql: bool | None = None,
) -> list[ChatMessage]:
    """Save a user's messages to their session, creating it if it is new.

    All or nothing. Another user's session (or a guest's) is refused before
    anything is written.
    """
    title = session_title.strip() if session_title and session_title.strip() else None
    write = SessionWrite(
        prepared=rows_prepare(messages=messages),
        source="api",
        session_id=session_id,
        user=user,
        new_title=title_for(session_title=session_title, messages=messages),
        title=title,
    )
    return session_write(write, sql=sql)


def session_delete(*, user, session_id: str) -> None:
    """Delete a user's session and its messages."""
    with transaction.atomic():
        session = session_lock(session_id=session_id)
        if session is None:
            raise NotFound("Session not found")
        if session.user_id != user.pk:
            raise Forbidden("This session belongs to someone else")
        usage_retire_sessions(user_id=session.user_id, session_ids=[session.pk])
        session.delete()
