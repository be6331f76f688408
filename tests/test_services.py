"""The rules of the services, without HTTP: what holds whoever writes (API, admin, commands)."""

import pytest
from django.utils import timezone

from chat import services
from chat.exceptions import ApiError, Conflict
from chat.models import ChatMessage, ChatSession, Role
from tests.support import make_user

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


def test_a_staff_retry_returns_that_staff_members_own_reply(staff):
    session = services.guest_session_create()
    first = services.guest_reply_send(session_key=session.session_key, staff_user=staff, content="a", message_id="r-1")
    again = services.guest_reply_send(session_key=session.session_key, staff_user=staff, content="b", message_id="r-1")
    assert again.pk == first.pk
    assert list(ChatMessage.objects.filter(session=session).values_list("content", flat=True)) == ["a"]


def test_a_staff_reply_with_a_guests_or_a_colleagues_id_is_a_conflict(staff):
    colleague = make_user("kim", is_staff=True)
    session = services.guest_session_create()
    services.guest_message_send(session_key=session.session_key, content="guest", message_id="w-1")
    services.guest_reply_send(session_key=session.session_key, staff_user=colleague, content="kim", message_id="r-1")
    for taken in ("w-1", "r-1"):
        with pytest.raises(Conflict):
            services.guest_reply_send(session_key=session.session_key, staff_user=staff, content="x", message_id=taken)
    assert ChatMessage.objects.filter(session=session).count() == 2


def test_a_staff_edit_moves_updated_at_and_never_touches_the_statistics(alice):
    from datetime import timedelta

    long_ago = timezone.now() - timedelta(days=3)
    ChatSession.objects.create(id="s1", user=alice, title="Old", updated_at=long_ago)

    session = services.session_edit_by_staff(session_id="s1", changes={"title": "New"})

    assert (session.title, ChatSession.objects.get(pk="s1").title) == ("New", "New")
    assert session.updated_at > long_ago
    with pytest.raises(ValueError):
        services.session_edit_by_staff(session_id="s1", changes={"message_count": 7})


def test_staff_deletes_take_the_sessions_and_their_messages(alice):
    services.messages_save(user=alice, session_id="s1", messages=[message("a")])
    services.messages_save(user=alice, session_id="s2", messages=[message("b")])
    assert services.sessions_delete_by_staff(session_ids=["s1", "nope"]) == 1
    assert list(ChatSession.objects.values_list("pk", flat=True)) == ["s2"]
    assert list(ChatMessage.objects.values_list("message_id", flat=True)) == ["b"]


def test_a_recount_reports_the_drift_and_fixes_it_only_when_asked(alice):
    services.messages_save(user=alice, session_id="s1", messages=[message("a", total_tokens=4)])
    ChatSession.objects.filter(pk="s1").update(message_count=9, total_tokens=0)

    [(session_id, drift)] = services.session_stats_recount(session_ids=["s1"], fix=False)
    assert session_id == "s1"
    assert (drift["message_count"], drift["total_tokens"]) == ((9, 1), (0, 4))
    assert ChatSession.objects.get(pk="s1").message_count == 9

    services.session_stats_recount(session_ids=["s1"], fix=True)
    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.total_tokens) == (1, 4)
    assert services.session_stats_recount(session_ids=["s1"], fix=True) == [("s1", {})]


def test_a_purge_batch_takes_only_inactive_guest_sessions(alice):
    from datetime import timedelta

    now = timezone.now()
    old_guest = services.guest_session_create()
    new_guest = services.guest_session_create()
    ChatSession.objects.filter(pk=old_guest.pk).update(updated_at=now - timedelta(days=40))
    ChatSession.objects.create(id="owned", user=alice, updated_at=now - timedelta(days=40))

    ids, sessions, messages = services.guest_sessions_purge_batch(
        inactive_before=now - timedelta(days=30), batch_size=10
    )

    assert (ids, sessions, messages) == ([old_guest.pk], 1, 0)
    assert set(ChatSession.objects.values_list("pk", flat=True)) == {new_guest.pk, "owned"}
