"""GET /api/chat/sessions and DELETE /api/chat/sessions/{id}."""

import base64
from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import ChatMessage, ChatSession

URL = "/api/chat/sessions"


def test_list_shows_own_sessions_most_recently_updated_first(as_alice, alice, charlie):
    now = timezone.now()
    ChatSession.objects.create(id="old", user=alice, updated_at=now - timedelta(days=2))
    ChatSession.objects.create(id="new", user=alice, updated_at=now)
    ChatSession.objects.create(id="tie-a", user=alice, updated_at=now - timedelta(days=1))
    ChatSession.objects.create(id="tie-b", user=alice, updated_at=now - timedelta(days=1))
    ChatSession.objects.create(id="theirs", user=charlie, updated_at=now)
    ChatSession.objects.create(id="guest", updated_at=now)

    response = as_alice.get(URL)

    assert response.status_code == 200
    assert [s["id"] for s in response.json()["results"]] == ["new", "tie-b", "tie-a", "old"]


def test_list_shows_the_statistics(as_alice):
    as_alice.post_json(
        "/api/chat/messages",
        {
            "sessionId": "s1",
            "messages": [
                {"role": "user", "content": "Hi there", "total_tokens": 3},
                {"role": "assistant", "content": "Hello!", "model": "m1", "total_tokens": 5},
            ],
        },
    )
    [item] = as_alice.get(URL).json()["results"]
    assert item["id"] == "s1"
    assert item["title"] == "Hi there"
    assert item["message_count"] == 2
    assert item["total_tokens"] == 8
    assert item["last_model"] == "m1"
    assert item["last_message_preview"] == "Hello!"
    assert set(item) == {
        "id",
        "title",
        "message_count",
        "total_tokens",
        "last_model",
        "last_message_preview",
        "last_message_timestamp",
        "created_at",
        "updated_at",
    }


def test_list_is_cursor_paginated_by_50(as_alice, alice):
    now = timezone.now()
    ChatSession.objects.bulk_create(
        ChatSession(id=f"s{i:03}", user=alice, updated_at=now - timedelta(minutes=i)) for i in range(120)
    )
    seen = []
    page = as_alice.get(URL).json()
    assert page["previous"] is None
    while True:
        assert len(page["results"]) <= 50
        seen += [s["id"] for s in page["results"]]
        if not page["next"]:
            break
        page = as_alice.get(page["next"]).json()
    assert seen == [f"s{i:03}" for i in range(120)]


def cursor(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "raw",
    [
        b"p=notadate",
        b"p=2026-01-01",  # a date, not a datetime
        b"p=2026-01-01 10:00:00",  # no offset: not a position DRF ever hands out
        b"p=2026-13-45 10:00:00+00:00",
        b"p=0001-01-01 00:00:00+14:00",  # before the year 1 in UTC
        b"p=9999-12-31 23:59:59-14:00",  # after the year 9999 in UTC
        b"p=\x00",
        b"o=-1",
        b"r=x",
        b"\xff\xfe",
    ],
)
def test_a_cursor_that_is_not_a_position_is_an_invalid_cursor_never_a_crash(as_alice, alice, raw):
    ChatSession.objects.create(id="s1", user=alice)
    response = as_alice.get(URL, {"cursor": cursor(raw)})
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert response.json()["message"] == "Invalid cursor"


def test_a_crafted_cursor_with_a_real_position_pages_from_it(as_alice, alice):
    now = timezone.now()
    ChatSession.objects.create(id="new", user=alice, updated_at=now)
    ChatSession.objects.create(id="old", user=alice, updated_at=now - timedelta(days=1))
    position = (now - timedelta(hours=1)).isoformat().encode()
    response = as_alice.get(URL, {"cursor": cursor(b"p=" + position.replace(b"+", b"%2B"))})
    assert response.status_code == 200
    assert [s["id"] for s in response.json()["results"]] == ["old"]


def test_list_needs_credentials(anon):
    assert anon.get(URL).status_code == 401


def test_delete_removes_the_session_and_its_messages(as_alice):
    as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "messages": [{"role": "user"}, {"role": "user"}]})
    as_alice.post_json("/api/chat/messages", {"sessionId": "s2", "message": {"role": "user"}})

    response = as_alice.delete(f"{URL}/s1")

    assert response.status_code == 204
    assert response.content == b""
    assert list(ChatSession.objects.values_list("id", flat=True)) == ["s2"]
    assert ChatMessage.objects.count() == 1


def test_delete_of_another_users_session_is_forbidden(as_alice, as_charlie):
    as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user"}})
    response = as_charlie.delete(f"{URL}/s1")
    assert response.status_code == 403
    assert ChatSession.objects.filter(pk="s1").exists()


def test_delete_of_unknown_or_malformed_id_is_not_found(as_alice):
    assert as_alice.delete(f"{URL}/nope").status_code == 404
    assert as_alice.delete(f"{URL}/bad%00id").status_code == 404
    assert as_alice.delete(f"{URL}/{'x' * 200}").status_code == 404


def test_delete_needs_credentials(anon):
    assert anon.delete(f"{URL}/s1").status_code == 401


@pytest.mark.parametrize(
    ("accept", "query", "status", "content_type"),
    [
        (None, {}, 200, "application/json"),
        ("*/*", {}, 200, "application/json"),
        ("application/json", {}, 200, "application/json"),
        ("text/html", {}, 200, "text/html; charset=utf-8"),
        ("*/*", {"format": "api"}, 200, "text/html; charset=utf-8"),
        (None, {"format": "json"}, 200, "application/json"),
        ("application/xml", {}, 406, "application/json"),
    ],
)
def test_the_answer_is_json_unless_the_caller_asks_for_the_browsable_api(as_alice, accept, query, status, content_type):
    """ApiView answers `*/*` (and no Accept at all) without DRF's negotiation: the same choice as DRF's."""
    extra = {"HTTP_ACCEPT": accept} if accept else {}
    response = as_alice.get(URL, query, **extra)
    assert response.status_code == status
    assert response["Content-Type"] == content_type
