"""Guest live chat writes. A guest session has no owner; its session_key is the
guest's only credential, so a key of an owned session is treated as unknown."""

import uuid

from django.db import transaction
from django.utils import timezone

from chat.exceptions import Conflict, Forbidden, NotFound
from chat.models import DEFAULT_TITLE, ChatMessage, ChatSession, Role
from chat.services.messages import new_message_id, session_messages_write, title_for

# The longest guest message or staff reply, in characters.
GUEST_MESSAGE_MAX_LENGTH = 2000


def guest_session_create(*, guest_name: str = "") -> ChatSession:
    """A new guest session; its id and key are made here."""
    now = timezone.now()
    return ChatSession.objects.create(
        id=f"guest_{uuid.uuid4().hex}", user=None, guest_name=guest_name, created_at=now, updated_at=now
    )


def _guest_session_lock(*, session_key: uuid.UUID) -> ChatSession:
    """The guest session of `session_key`, its row locked until the transaction ends.

    One statement: PostgreSQL re-checks the WHERE clause on the row it locks, so
    a session purged or given an owner meanwhile is not returned.
    """
    session = ChatSession.objects.select_for_update().filter(session_key=session_key, user__isnull=True).first()
    if session is None:
        raise NotFound("Session not found")
    return session


def guest_message_send(*, session_key: uuid.UUID, content: str, message_id: str | None = None) -> ChatMessage:
    """Store a guest's message. A retried `message_id` returns the message as first stored.

    A retry is the guest's own earlier send: the id of a message of another role
    (a staff reply) is a Conflict, never an answer with that message.
    The session's row lock is held from the look-up to the insert, so a retry racing
    its original finds it, and message ids commit in order (a poller misses none).
    """
    with transaction.atomic():
        session = _guest_session_lock(session_key=session_key)
        if message_id is not None:
            stored = ChatMessage.objects.filter(session=session, message_id=message_id).first()
            if stored is not None and stored.role == Role.USER:
                return stored
            if stored is not None:
                raise Conflict("This id belongs to another message of the session", details={"id": [message_id]})
        title = None
        if session.message_count == 0 and session.title == DEFAULT_TITLE:
            title = title_for(session_title=None, messages=[{"role": Role.USER, "content": content}])
        [message] = session_messages_write(
            session=session,
            messages=[{"message_id": message_id or new_message_id(), "role": Role.USER, "content": content}],
            title=title,
            source="guest",
        )
        return message


def guest_reply_send(*, session_key: uuid.UUID, staff_user, content: str, source: str = "staff") -> ChatMessage:
    """Store a staff member's reply to a guest (role assistant, author set).

    `source` says where it was written, for the metrics: "staff" (the API) or "admin".
    """
    if not (staff_user.is_active and staff_user.is_staff):
        raise Forbidden("Only staff can reply to guests")
    with transaction.atomic():
        session = _guest_session_lock(session_key=session_key)
        [message] = session_messages_write(
            session=session,
            messages=[{"message_id": new_message_id(), "role": Role.ASSISTANT, "content": content}],
            author=staff_user,
            source=source,
        )
        return message
