"""Every write to sessions and messages.

The API, the admin and the management commands all write through here, so the
rules that make the data trustworthy live in one place:

- a write to a session holds that session's row lock for its whole transaction,
  which serialises writers (exact statistics, and message ids that commit in
  order, so a guest poller never skips one);
- the statistics move in the same transaction, by deltas, at a cost that does not
  grow with the length of the session.
"""

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat import metrics, replica, wakeups
from chat.exceptions import ApiError, Forbidden, NotFound
from chat.models import DEFAULT_TITLE, ChatMessage, ChatSession, Role
from chat.services.usage import USAGE_FIELDS, usage_record, usage_retire_sessions

TITLE_LENGTH = 50
PREVIEW_LENGTH = 100

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


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace runs; cut to `limit` characters ending in `...`."""
    collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    return collapsed[: limit - 3].rstrip() + "..."


def title_for(*, session_title: str | None, messages: Sequence[dict[str, Any]]) -> str:
    """The title of a new session: explicit, else the first user message, else the default."""
    if session_title and session_title.strip():
        return session_title.strip()
    first_user = next((m for m in messages if m["role"] == Role.USER), None)
    if first_user is not None:
        return shorten(first_user.get("content") or "", TITLE_LENGTH) or DEFAULT_TITLE
    return DEFAULT_TITLE


def last_message_fields(newest: ChatMessage | None) -> dict[str, Any]:
    """A session's "last" statistics from its newest message (None: it has none)."""
    return {
        "last_model": newest.model if newest else None,
        "last_message_preview": shorten(newest.content, PREVIEW_LENGTH) if newest else None,
        "last_message_timestamp": newest.timestamp if newest else None,
        "last_message_id": newest.pk if newest else None,
        "last_role": newest.role if newest else None,
    }


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def session_lock(*, session_id: str) -> ChatSession | None:
    """The session, its row locked until the transaction ends; None if unknown."""
    return ChatSession.objects.select_for_update().filter(pk=session_id).first()


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
    messages: Sequence[dict[str, Any]],
    source: str,
    title: str | None = None,
    author=None,
    new_session: bool = False,
) -> list[ChatMessage]:
    """Upsert `messages` into `session` and move its statistics.

    The caller holds the session's row lock in the current transaction. A message
    whose id exists in the session replaces it; a missing timestamp keeps the
    stored one (or is the receipt time for a new message). Two messages with one
    id in `messages` are refused (one statement cannot upsert a row twice).
    `new_session`: this transaction made the session, so nothing is stored in it yet.

    The time is read here, under the lock: read before waiting for it, a writer
    that waited would set an `updated_at` older than the one it waited for.
    """
    ids = [m["message_id"] for m in messages]
    if len(ids) != len(set(ids)):
        raise ApiError(details={"messages": ["Two messages share one `id`."]})
    now = timezone.now()
    # Asked whatever message_count says (a statistic, not the truth); skipped only
    # for a session this transaction made, which no one else can see yet.
    existing: dict[str, ChatMessage] = {}
    if not new_session:
        existing = {
            m.message_id: m
            for m in ChatMessage.objects.filter(session=session, message_id__in=ids).only(
                "id", "message_id", "timestamp", *USAGE_FIELDS
            )
        }

    rows = []
    for fields in messages:
        previous = existing.get(fields["message_id"])
        timestamp = fields.get("timestamp") or (previous.timestamp if previous else now)
        rows.append(
            ChatMessage(
                session=session,
                author=author,
                created_at=now,
                **{
                    **fields,
                    "timestamp": timestamp,
                    "error": bool(fields.get("error")) or fields.get("error_message") is not None,
                },
            )
        )
    ChatMessage.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["session", "message_id"],
        update_fields=UPSERT_FIELDS,
    )

    if existing:
        # A replaced message may have been the newest and moved back in time:
        # ask the (session, timestamp, id) index, one row.
        newest = ChatMessage.objects.filter(session=session).order_by("-timestamp", "-id").first()
    else:
        # Only inserts: their ids are larger than every stored one, so on equal
        # timestamps the new message is the newer.
        newest = max(rows, key=lambda m: (m.timestamp, m.pk))
        if session.last_message_timestamp and newest.timestamp < session.last_message_timestamp:
            newest = None

    stats: dict[str, Any] = {
        "message_count": F("message_count") + (len(rows) - len(existing)),
        "total_tokens": F("total_tokens")
        + sum(m.total_tokens or 0 for m in rows)
        - sum(m.total_tokens or 0 for m in existing.values()),
        "updated_at": now,
    }
    if newest is not None:
        stats.update(last_message_fields(newest))
    if title is not None:
        stats["title"] = title
    ChatSession.objects.filter(pk=session.pk).update(**stats)
    usage_record(user_id=session.user_id, saved=rows, replaced=existing.values())
    # Counted once the transaction commits: a rolled-back save saved nothing.
    transaction.on_commit(functools.partial(metrics.observe_messages_saved, source, len(rows)))
    if session.user_id is None:
        # Guest sessions have waiters (chat.live): wake them once this commits, after
        # marking the write for the read replica, so that what they read has it.
        replica.note_write_on_commit([replica.guest_caller(session.session_key)])
        wakeups.publish_on_commit(session_key=session.session_key)
    return rows


def messages_save(
    *,
    user,
    session_id: str,
    messages: Sequence[dict[str, Any]],
    session_title: str | None = None,
) -> list[ChatMessage]:
    """Save a user's messages to their session, creating it if it is new.

    All or nothing: one transaction. Another user's session (or a guest's) is
    refused before anything is written.
    """
    messages = [m if m.get("message_id") else {**m, "message_id": new_message_id()} for m in messages]
    with transaction.atomic():
        session, created = session_lock_or_create(
            session_id=session_id, user=user, title=title_for(session_title=session_title, messages=messages)
        )
        if session.user_id != user.pk:
            raise Forbidden("This session belongs to someone else")
        new_title = None
        if session_title and session_title.strip() and session_title.strip() != session.title:
            new_title = session_title.strip()
        return session_messages_write(
            session=session, messages=messages, title=new_title, source="api", new_session=created
        )


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
