"""Edits of a stored history: delete messages, rename a session.

Under the same rules as every write (chat.services.messages): the session's row
lock for the whole transaction, statistics moved by deltas in it, `updated_at`
taken once the lock is held. The admin deletes through `session_messages_delete`
too, so its deletes move the statistics like the API's.
"""

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from chat import wakeups
from chat.exceptions import Forbidden, NotFound
from chat.models import ChatMessage, ChatSession
from chat.services.messages import last_message_fields, session_lock
from chat.services.usage import USAGE_FIELDS, usage_deferred, usage_retire


def _session_of(*, user, session_id: str) -> ChatSession:
    """The user's session, locked until the transaction ends."""
    session = session_lock(session_id=session_id)
    if session is None:
        raise NotFound("Session not found")
    if session.user_id != user.pk:
        raise Forbidden("This session belongs to someone else")
    return session


def session_messages_delete(*, session: ChatSession, message_pks: Iterable[int]) -> int:
    """Delete those of `message_pks` that belong to `session` and move its statistics.

    The caller holds the session's row lock in the current transaction. The "last"
    fields are asked of the (session, timestamp, id) index (one row) only when a
    deleted message may have been the newest. Returns how many were deleted.
    """
    doomed = list(
        ChatMessage.objects.filter(session=session, pk__in=list(message_pks)).only("id", "timestamp", *USAGE_FIELDS)
    )
    if not doomed:
        return 0
    ChatMessage.objects.filter(pk__in=[m.pk for m in doomed]).delete()
    usage_retire(user_id=session.user_id, deleted=doomed)

    stats: dict[str, Any] = {
        "message_count": F("message_count") - len(doomed),
        "total_tokens": F("total_tokens") - sum(m.total_tokens or 0 for m in doomed),
        "updated_at": timezone.now(),
    }
    last = session.last_message_timestamp
    if last is None or any(m.timestamp >= last for m in doomed):
        newest = ChatMessage.objects.filter(session=session).order_by("-timestamp", "-id").first()
        stats.update(last_message_fields(newest))
    ChatSession.objects.filter(pk=session.pk).update(**stats)
    if session.user_id is None:
        # Its inbox row changed: the inbox streams send it (the guest's waiters re-read and find nothing new).
        wakeups.publish_on_commit(session_key=session.session_key)
    return len(doomed)


def message_delete(*, user, session_id: str, message_id: str) -> None:
    """Delete one message (by the client's id) of a user's session."""
    with transaction.atomic():
        session = _session_of(user=user, session_id=session_id)
        pk = ChatMessage.objects.filter(session=session, message_id=message_id).values_list("pk", flat=True).first()
        if pk is None:
            raise NotFound("Message not found")
        session_messages_delete(session=session, message_pks=[pk])


def messages_delete_by_staff(*, message_pks: Iterable[int]) -> int:
    """Delete messages of any sessions (the admin), each session's statistics moved.

    One transaction; the sessions are locked in id order, as recount_session_stats
    locks them, so two such deletes cannot deadlock.
    """
    by_session: dict[str, list[int]] = {}
    for pk, session_id in ChatMessage.objects.filter(pk__in=list(message_pks)).values_list("pk", "session_id"):
        by_session.setdefault(session_id, []).append(pk)
    deleted = 0
    # The ledger last, once every session is locked (chat.services.usage.usage_deferred).
    with transaction.atomic(), usage_deferred():
        for session_id in sorted(by_session):
            session = session_lock(session_id=session_id)
            if session is not None:  # deleted meanwhile, its messages with it
                deleted += session_messages_delete(session=session, message_pks=by_session[session_id])
    return deleted


def session_rename(*, user, session_id: str, title: str) -> ChatSession:
    """Give a user's session a new title (stripped; the caller checked it is not blank)."""
    with transaction.atomic():
        session = _session_of(user=user, session_id=session_id)
        session.title = title.strip()
        session.updated_at = timezone.now()
        session.save(update_fields=["title", "updated_at"])
    return session
