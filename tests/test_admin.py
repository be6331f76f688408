"""The admin: staff only, statistics in the list, search and filters, cheap pages."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import ChatMessage, ChatSession

URL = "/api/chat/messages"


@pytest.fixture
def sessions(as_alice, as_bob):
    for i in range(5):
        as_alice.post_json(
            URL,
            {
                "sessionId": f"alice-{i}",
                "messages": [
                    {"role": "user", "content": f"alice question {i}"},
                    {"role": "assistant", "content": "an answer", "model": "gpt-x", "total_tokens": 7},
                ],
            },
        )
    as_bob.post_json(URL, {"sessionId": "bob-1", "message": {"role": "user", "content": "bob's question"}})
    ChatSession.objects.create(id="guest_1", guest_name="Visitor")


def test_admin_needs_staff(client, alice, sessions):
    assert client.get("/admin/chat/chatsession/").status_code == 302
    client.force_login(alice)
    assert client.get("/admin/chat/chatsession/").status_code == 302


def test_session_list_shows_statistics_without_n_plus_one(staff_browser, sessions):
    with CaptureQueriesContext(connection) as few:
        response = staff_browser.get("/admin/chat/chatsession/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice-3" in page and "bob-1" in page and "(guest)" in page
    assert "gpt-x" in page

    for i in range(20):
        ChatSession.objects.create(id=f"more-{i}", user_id=ChatSession.objects.get(pk="bob-1").user_id)
    with CaptureQueriesContext(connection) as many:
        staff_browser.get("/admin/chat/chatsession/")
    assert len(many) == len(few)


def test_session_search_by_owner_title_and_id(staff_browser, sessions):
    page = staff_browser.get("/admin/chat/chatsession/", {"q": "bob"}).content.decode()
    assert "bob-1" in page and "alice-1" not in page

    page = staff_browser.get("/admin/chat/chatsession/", {"q": "alice-2"}).content.decode()
    assert "alice-2" in page and "alice-1" not in page


def test_guest_filter(staff_browser, sessions):
    page = staff_browser.get("/admin/chat/chatsession/", {"kind": "guest"}).content.decode()
    assert "guest_1" in page and "alice-1" not in page


def test_session_page_shows_messages_read_only(staff_browser, sessions):
    response = staff_browser.get("/admin/chat/chatsession/alice-2/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice question 2" in page and "an answer" in page
    assert 'name="message_count"' not in page  # statistics are read-only


def test_message_list_and_search(staff_browser, sessions):
    response = staff_browser.get("/admin/chat/chatmessage/", {"q": "bob's question"})
    assert response.status_code == 200
    assert "bob-1" in response.content.decode()
    assert staff_browser.get(f"/admin/chat/chatmessage/{ChatMessage.objects.first().pk}/change/").status_code == 200


def test_counts_are_capped(staff_browser, sessions, monkeypatch):
    from chat import admin as chat_admin

    monkeypatch.setattr(chat_admin, "COUNT_CAP", 3)
    with CaptureQueriesContext(connection) as captured:
        response = staff_browser.get("/admin/chat/chatmessage/")
    assert response.status_code == 200
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts)


def test_user_admin_edits_the_tier(staff_browser, alice):
    page = staff_browser.get("/admin/accounts/user/").content.decode()
    assert "alice" in page and 'name="form-0-tier"' in page


def session_page(session_id: str, action: str = "change") -> str:
    from django.contrib.admin.utils import quote
    from django.urls import reverse

    return reverse(f"admin:chat_chatsession_{action}", args=[quote(session_id)])


def test_a_session_edited_in_the_admin_moves_updated_at_like_every_write(staff_browser, alice):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(days=30)
    ChatSession.objects.create(id="s1", user=alice, title="Old", updated_at=long_ago)

    response = staff_browser.post(session_page("s1"), {"user": alice.pk, "guest_name": "", "title": "New"})

    assert response.status_code == 302, response.content[:2000]
    session = ChatSession.objects.get(pk="s1")
    assert session.title == "New"
    assert session.updated_at > long_ago + timedelta(days=29)


def test_a_session_deleted_in_the_admin_goes_through_the_service(staff_browser, alice, monkeypatch):
    from chat import services

    ChatSession.objects.create(id="s1", user=alice)
    calls = []
    original = services.sessions_delete_by_staff
    monkeypatch.setattr(services, "sessions_delete_by_staff", lambda **kw: calls.append(kw) or original(**kw))

    response = staff_browser.post(session_page("s1", "delete"), {"post": "yes"})

    assert response.status_code == 302
    assert not ChatSession.objects.filter(pk="s1").exists()
    assert [list(call["session_ids"]) for call in calls] == [["s1"]]


def test_an_api_request_makes_no_message_storage_and_the_admin_still_shows_its_messages(
    staff_browser, as_alice, alice, monkeypatch
):
    from django.contrib.messages import storage

    made = []
    original = storage.default_storage
    monkeypatch.setattr(storage, "default_storage", lambda request: made.append(request.path) or original(request))

    assert as_alice.get(URL, {"session_id": "none"}).status_code == 404
    assert as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}}).status_code == 201
    assert made == []

    response = staff_browser.post(session_page("s1"), {"user": alice.pk, "guest_name": "", "title": "New"}, follow=True)

    assert response.status_code == 200
    assert "was changed successfully" in response.content.decode()  # stored on the POST, shown on the next page
    assert session_page("s1") in made
