"""Guest live chat writes. A guest session has no owner; its session_key is the
guest's only credential, so a key of an owned session is treated as unknown.

The guest send and the staff reply are writes like the API's: prepared without
the lock, then run by chat.services.messages.session_write (one statement on
PostgreSQL), which finds the guest session by its key under the lock."""

import uuid

from django.utils import timezone

from chat.exceptions import Forbidden
from chat.models import ChatMessage, ChatSession, Role
from chat.services.messages import session_write
from chat.services.writing import SessionWrite, new_message_id, rows_prepare, title_for

# The longest guest message or staff reply, in characters.
GUEST_MESSAGE_MAX_LENGTH = 2000


def guest_session_create(*, guest_name: str = "") -> ChatSession:
    """A new guest session; its id and key are made here."""
    now = timezone.now()
    return ChatSession.objects.create(
        id=f"guest_{uuid.uuid4().hex}", user=None, guest_name=guest_name, created_at=now, updated_at=now
    )


def guest_message_send(
    *, session_key: uuid.UUID, content: str, message_id: str | None = None, sql: bool | None = None
) -> ChatMessage:
    """Store a guest's message. A retried `message_id` returns the message as first stored.

    A retry is the guest's own earlier send: the id of a message of another role
    (a staff reply) is a Conflict, never an answer with that message. The look-up
    runs under the session's row lock, so a retry racing its original finds it.
    The first message of an untitled session titles it.
    """
    messages = [{"message_id": message_id or new_message_id(), "role": Role.USER, "content": content}]
    write = SessionWrite(
        prepared=rows_prepare(messages=messages),
        source="guest",
        session_key=session_key,
        first_title=title_for(session_title=None, messages=messages),
        retry_id=message_id,
    )
    [message] = session_write(write, sql=sql)
    return message


def guest_reply_send(
    *,
    session_key: uuid.UUID,
    staff_user,
    content: str,
    message_id: str | None = None,
    source: str = "staff",
    sql: bool | None = None,
) -> ChatMessage:
    """Store a staff member's reply to a guest (role assistant, author set).

    A retried `message_id` returns the reply as first stored, as a guest's retry does;
    it must be this staff member's own reply: the id of the guest's message or of
    another staff member's reply is a Conflict. The look-up runs under the session's
    row lock, so a retry racing its original finds it.
    `source` says where it was written, for the metrics: "staff" (the API) or "admin".
    """
    if not (staff_user.is_active and staff_user.is_staff):
        raise Forbidden("Only staff can reply to guests")
    messages = [{"message_id": message_id or new_message_id(), "role": Role.ASSISTANT, "content": content}]
    write = SessionWrite(
        prepared=rows_prepare(messages=messages, author=staff_user),
        source=source,
        session_key=session_key,
        author=staff_user,
        retry_id=message_id,
    )
    [message] = session_write(write, sql=sql)
    return message
