"""The rules of the services, without HTTP: what holds whoever writes (API, admin, commands)."""

import pytest
from django.utils import timezone

from chat import services
from chat.exceptions import ApiError, Conflict
from chat.models import ChatMessage, ChatSession, Role

pytestmark = pytest.mark.django_db


def message(message_id: str, **fields) -> dict:
    return {"message_id": message_id, "role": Role.USER, "content": "hi", **fields}


def test_two_messages_with_one_id_are_refused_and_nothing_is_written(alice):
    with pytest.raises(ApiError) as refused:
        services.messages_save(user=alice, session_id="s1", messages=[message("a"), message("a")])
    assert refused.value.status == 400
    assert refused.value.details == {"messages": ["Two messages share one `id`."]}
    assert not ChatSession.objects.exists() and not ChatMessage.objects.exists()


def test_an_existing_id_is_found_whatever_message_count_says(alice):
    services.messages_save(user=alice, session_id="s1", messages=[message("a", total_tokens=5)])
    ChatSession.objects.filter(pk="s1").update(message_count=0)  # a drifted counter

    services.messages_save(user=alice, session_id="s1", messages=[message("a", total_tokens=5)])

    session = ChatSession.objects.get(pk="s1")
    assert ChatMessage.objects.filter(session=session).count() == 1
    assert session.total_tokens == 5  # replaced, not counted twice
    assert session.message_count == 0  # moved by the delta of a replacement: none


def test_updated_at_is_read_when_the_write_happens(alice):
    before = timezone.now()
    services.messages_save(user=alice, session_id="s1", messages=[message("a")])
    session = ChatSession.objects.get(pk="s1")
    assert session.updated_at >= before and session.updated_at >= session.created_at


def test_a_guest_retry_returns_the_guests_own_message(db):
    session = services.guest_session_create()
    first = services.guest_message_send(session_key=session.session_key, content="one", message_id="w-1")
    again = services.guest_message_send(session_key=session.session_key, content="one", message_id="w-1")
    assert again.pk == first.pk
    assert ChatMessage.objects.filter(session=session).count() == 1


def test_a_guest_send_with_a_staff_replys_id_is_a_conflict(staff):
    session = services.guest_session_create()
    reply = services.guest_reply_send(session_key=session.session_key, staff_user=staff, content="staff")
    with pytest.raises(Conflict):
        services.guest_message_send(session_key=session.session_key, content="guest", message_id=reply.message_id)
    assert list(ChatMessage.objects.filter(session=session).values_list("role", flat=True)) == [Role.ASSISTANT]
