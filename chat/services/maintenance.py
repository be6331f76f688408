"""Writes by staff and by the data-fix commands: the admin's session edits and deletes,
recount_session_stats' repairs, purge_guest_sessions' deletes.

Under the rules of every write (chat.services.messages): sessions are locked for the
whole transaction, several of them in id order (so two such writers cannot
deadlock), and `updated_at` is taken once the lock is held.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat.exceptions import NotFound
from chat.models import ChatMessage, ChatSession
from chat.services.messages import session_lock
from chat.services.writing import PREVIEW_LENGTH, shorten

# What staff may change on a session's admin page; the statistics are the services'.
STAFF_EDITABLE_FIELDS = ("user", "guest_name", "title")
STAT_FIELDS = (
    "message_count",
    "total_tokens",
    "last_model",
    "last_message_preview",
    "last_message_timestamp",
    "last_message_id",
    "last_role",
)


def session_edit_by_staff(*, session_id: str, changes: dict[str, Any]) -> ChatSession:
    """Set `changes` (of STAFF_EDITABLE_FIELDS) on a session; `updated_at` moves like every write's."""
    refused = set(changes) - set(STAFF_EDITABLE_FIELDS)
    if refused:
        raise ValueError(f"staff cannot set {', '.join(sorted(refused))}")
    with transaction.atomic():
        session = session_lock(session_id=session_id)
        if session is None:
            raise NotFound("Session not found")
        for field, value in changes.items():
            setattr(session, field, value)
        session.updated_at = timezone.now()
        session.save(update_fields=[*changes, "updated_at"])
    return session


def _locked_in_order(session_ids: Iterable[str]):
    return ChatSession.objects.select_for_update().filter(pk__in=list(session_ids)).order_by("pk")


def sessions_delete_by_staff(*, session_ids: Iterable[str]) -> int:
    """Delete sessions (and their messages), each locked first as every write locks it. The count deleted."""
    with transaction.atomic():
        locked = list(_locked_in_order(session_ids).values_list("pk", flat=True))
        ChatSession.objects.filter(pk__in=locked).delete()
    return len(locked)


def _counted(session_ids: Sequence[str], *, lock: bool) -> list[tuple[ChatSession, dict[str, Any]]]:
    """Each session of `session_ids` with its statistics as the messages say.

    One query for the sessions with their count, token sum and newest message
    id (subqueries on the (session, id) and (session, timestamp, id) indexes),
    one for those newest messages. With `lock`, the sessions' rows are locked
    (in id order) as every write locks them, so the figures cannot move until
    the caller's transaction ends.
    """
    messages = ChatMessage.objects.filter(session=OuterRef("pk")).order_by().values("session")
    sessions = ChatSession.objects.filter(pk__in=session_ids).order_by("pk").only("pk", *STAT_FIELDS)
    if lock:
        sessions = sessions.select_for_update()
    sessions = list(
        sessions.annotate(
            counted=Coalesce(Subquery(messages.annotate(n=Count("id")).values("n")), 0),
            tokens=Coalesce(Subquery(messages.annotate(t=Sum("total_tokens")).values("t")), 0),
            newest_id=Subquery(
                ChatMessage.objects.filter(session=OuterRef("pk")).order_by("-timestamp", "-id").values("id")[:1]
            ),
        )
    )
    newest = {
        m.pk: m
        for m in ChatMessage.objects.filter(pk__in=[s.newest_id for s in sessions if s.newest_id]).only(
            "model", "content", "timestamp", "role"
        )
    }
    result = []
    for session in sessions:
        message = newest.get(session.newest_id)
        result.append(
            (
                session,
                {
                    "message_count": session.counted,
                    "total_tokens": session.tokens,
                    "last_model": message.model if message else None,
                    "last_message_preview": shorten(message.content, PREVIEW_LENGTH) if message else None,
                    "last_message_timestamp": message.timestamp if message else None,
                    "last_message_id": message.pk if message else None,
                    "last_role": message.role if message else None,
                },
            )
        )
    return result


def session_stats_recount(*, session_ids: Sequence[str], fix: bool) -> list[tuple[str, dict[str, tuple[Any, Any]]]]:
    """Each session's drift, `{field: (stored, counted)}` (empty when none), fixed when `fix`.

    One transaction; with `fix` the sessions are locked (in id order) as every write
    locks them, so the figures cannot move between the count and the fix.
    `updated_at` is left as it is: a repair is not activity.
    """
    report = []
    with transaction.atomic():
        fixed = []
        for session, counted in _counted(session_ids, lock=fix):
            drift = {
                field: (getattr(session, field), value)
                for field, value in counted.items()
                if getattr(session, field) != value
            }
            report.append((session.pk, drift))
            if drift:
                for field, value in counted.items():
                    setattr(session, field, value)
                fixed.append(session)
        if fixed and fix:
            ChatSession.objects.bulk_update(fixed, STAT_FIELDS)
    return report


def guest_sessions_purge_batch(*, inactive_before: datetime, batch_size: int) -> tuple[list[str], int, int]:
    """Delete up to `batch_size` guest sessions inactive since before `inactive_before`, oldest first.

    Returns (their ids, sessions deleted, messages deleted). Locked while they go
    (skipping any a writer holds), so a guest writing at this moment either finishes
    first (and its session, active again, is skipped) or finds it gone (404).
    """
    with transaction.atomic():
        batch = list(
            ChatSession.objects.filter(user__isnull=True, updated_at__lt=inactive_before)
            .select_for_update(skip_locked=True)
            .order_by("updated_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not batch:
            return [], 0, 0
        _, deleted = ChatSession.objects.filter(pk__in=batch).delete()
    return batch, deleted.get("chat.ChatSession", 0), deleted.get("chat.ChatMessage", 0)
