"""DELETE /api/chat/messages/{messageId}?session_id=ID, and the admin's message deletes:
the statistics always equal a recount."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from chat.models import ChatMessage, ChatSession
from tests.support import ApiClient

URL = "/api/chat/messages"


def save(client, session_id, *messages):
    response = client.post_json(URL, {"sessionId": session_id, "messages": list(messages)})
    assert response.status_code == 201, response.content


def delete(client, session_id, message_id):
    return client.delete(f"{URL}/{message_id}?session_id={session_id}")


def assert_statistics_exact(*session_ids: str) -> None:
    """recount_session_stats (its own logic, --dry-run) finds nothing to fix."""
    out = StringIO()
    call_command("recount_session_stats", *session_ids, "--dry-run", stdout=out)
    assert f"Checked {len(session_ids)} session(s): 0 had drifted" in out.getvalue(), out.getvalue()


@pytest.fixture
def conversation(as_alice):
    save(
        as_alice,
        "s1",
        {"id": "u1", "role": "user", "content": "first", "timestamp": "2025-01-01T00:00:01Z"},
        {
            "id": "a1",
            "role": "assistant",
            "content": "one",
            "model": "m1",
            "total_tokens": 10,
            "timestamp": "2025-01-01T00:00:02Z",
        },
        {"id": "u2", "role": "user", "content": "second", "timestamp": "2025-01-01T00:00:03Z"},
        {
            "id": "a2",
            "role": "assistant",
            "content": "two  \n answer",
            "model": "m2",
            "total_tokens": 20,
            "timestamp": "2025-01-01T00:00:04Z",
        },
    )


def test_deleting_the_newest_message_moves_the_last_fields_to_the_one_before(as_alice, conversation):
    assert delete(as_alice, "s1", "a2").status_code == 204

    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.total_tokens) == (3, 10)
    assert (session.last_model, session.last_message_preview) == (None, "second")
    assert [m["id"] for m in as_alice.get(URL, {"session_id": "s1"}).json()] == ["u1", "a1", "u2"]
    assert_statistics_exact("s1")


def test_deleting_an_older_message_keeps_the_last_fields(as_alice, conversation):
    assert delete(as_alice, "s1", "a1").status_code == 204
    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.total_tokens, session.last_model) == (3, 20, "m2")
    assert session.last_message_preview == "two answer"
    assert_statistics_exact("s1")


def test_deleting_every_message_empties_the_statistics(as_alice, conversation):
    for message_id in ("u2", "a1", "a2", "u1"):
        assert delete(as_alice, "s1", message_id).status_code == 204
    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.total_tokens, session.last_model) == (0, 0, None)
    assert (session.last_message_preview, session.last_message_timestamp) == (None, None)
    assert_statistics_exact("s1")


def test_the_newest_by_timestamp_then_id_wins_on_a_tie(as_alice):
    save(
        as_alice,
        "s1",
        {"id": "x", "role": "user", "content": "x", "timestamp": "2025-01-01T00:00:05Z"},
        {"id": "y", "role": "user", "content": "y", "timestamp": "2025-01-01T00:00:05Z"},
        {"id": "z", "role": "user", "content": "z", "timestamp": "2025-01-01T00:00:05Z"},
    )
    assert delete(as_alice, "s1", "z").status_code == 204
    assert ChatSession.objects.get(pk="s1").last_message_preview == "y"
    assert_statistics_exact("s1")


def test_delete_moves_updated_at(as_alice, conversation):
    before = ChatSession.objects.get(pk="s1").updated_at
    delete(as_alice, "s1", "u1")
    assert ChatSession.objects.get(pk="s1").updated_at > before


def test_unknown_message_or_session_is_404_and_another_users_is_403(as_alice, as_charlie, conversation):
    assert delete(as_alice, "s1", "nope").status_code == 404
    assert delete(as_alice, "nope", "u1").status_code == 404
    assert delete(as_alice, "s1", "..%00").status_code == 404
    response = delete(as_charlie, "s1", "u1")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert ChatMessage.objects.count() == 4
    assert_statistics_exact("s1")


def test_a_guest_session_is_another_users(as_alice):
    session = ChatSession.objects.create(id="guest_1")
    ChatMessage.objects.create(session=session, message_id="g1", role="user")
    assert delete(as_alice, "guest_1", "g1").status_code == 403


def test_session_id_is_required_and_checked(as_alice, conversation):
    assert as_alice.delete(f"{URL}/u1").status_code == 400
    assert as_alice.delete(f"{URL}/u1?session_id=").status_code == 400
    assert as_alice.delete(f"{URL}/u1?session_id=bad%20id").status_code == 400
    assert ChatMessage.objects.count() == 4


def test_delete_needs_credentials(anon, conversation):
    assert delete(anon, "s1", "u1").status_code == 401
    assert ChatMessage.objects.count() == 4


def test_a_deleted_id_can_be_saved_again(as_alice, conversation):
    delete(as_alice, "s1", "a2")
    save(as_alice, "s1", {"id": "a2", "role": "assistant", "content": "again", "total_tokens": 1})
    assert ChatSession.objects.get(pk="s1").message_count == 4
    assert_statistics_exact("s1")


# The admin: the message's own delete page and the "delete selected" action.


def test_admin_delete_of_one_message_moves_the_statistics(staff_browser, conversation):
    pk = ChatMessage.objects.get(message_id="a2").pk
    response = staff_browser.post(f"/admin/chat/chatmessage/{pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ChatMessage.objects.filter(pk=pk).exists()
    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.total_tokens, session.last_message_preview) == (3, 10, "second")
    assert_statistics_exact("s1")


def test_admin_bulk_delete_across_sessions_moves_every_sessions_statistics(staff_browser, as_alice, conversation):
    save(as_alice, "s2", {"id": "b1", "role": "user", "content": "b1"}, {"id": "b2", "role": "user", "total_tokens": 4})
    pks = list(ChatMessage.objects.filter(message_id__in=["a2", "u1", "b2"]).values_list("pk", flat=True))
    response = staff_browser.post(
        "/admin/chat/chatmessage/", {"action": "delete_selected", "_selected_action": pks, "post": "yes"}
    )
    assert response.status_code == 302
    assert ChatMessage.objects.count() == 3
    assert ChatSession.objects.get(pk="s2").message_count == 1
    assert ChatSession.objects.get(pk="s2").last_message_preview == "b1"
    assert_statistics_exact("s1", "s2")


# Concurrency (PostgreSQL): deletes and saves racing on one session stay exact.


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_deletes_and_saves_keep_exact_statistics(alice):
    client = ApiClient(alice.api_token)
    save(
        client, "s1", *({"id": f"old{i}", "role": "user", "content": f"old {i}", "total_tokens": i} for i in range(40))
    )
    threads_count, barrier = 8, threading.Barrier(8)
    failures: list = []
    shared_deletes: list[int] = []

    def work(i: int) -> None:
        client = ApiClient(alice.api_token)
        try:
            barrier.wait(timeout=10)
            for r in range(5):
                if i % 2:  # four deleters, five messages of their own each, and all race for old39
                    if delete(client, "s1", f"old{(i // 2) * 10 + r}").status_code != 204:
                        failures.append((i, r))
                    shared_deletes.append(delete(client, "s1", "old39").status_code)
                else:  # four writers
                    message = {"id": f"new{i}-{r}", "role": "assistant", "content": f"new {i}", "total_tokens": 3}
                    if client.post_json(URL, {"sessionId": "s1", "message": message}).status_code != 201:
                        failures.append((i, r))
        except Exception as exc:  # surfaced below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert sorted(shared_deletes) == [204] + [404] * 19
    session = ChatSession.objects.get(pk="s1")
    assert session.message_count == ChatMessage.objects.filter(session_id="s1").count() == 40 - 21 + 20
    assert_statistics_exact("s1")
