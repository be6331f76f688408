"""PATCH /api/chat/sessions/{id} {"title"}: rename a session; the answer is the session-list row."""

import pytest

from chat.models import ChatSession

URL = "/api/chat/sessions"


@pytest.fixture
def session(as_alice):
    response = as_alice.post_json(
        "/api/chat/messages",
        {"sessionId": "s1", "message": {"role": "assistant", "content": "hi", "model": "m", "total_tokens": 4}},
    )
    assert response.status_code == 201
    return ChatSession.objects.get(pk="s1")


def rename(client, session_id, body):
    return client.patch(f"{URL}/{session_id}", body, content_type="application/json")


def test_rename_answers_the_session_as_the_list_shows_it(as_alice, session):
    response = rename(as_alice, "s1", {"title": "  Trip to Rome  "})

    assert response.status_code == 200
    body = response.json()
    [listed] = as_alice.get(URL).json()["results"]
    assert body == listed
    assert body["title"] == "Trip to Rome"
    assert (body["message_count"], body["total_tokens"], body["last_model"]) == (1, 4, "m")
    assert ChatSession.objects.get(pk="s1").updated_at > session.updated_at


def test_a_later_save_without_title_keeps_the_new_title(as_alice, session):
    rename(as_alice, "s1", {"title": "Renamed"})
    as_alice.post_json("/api/chat/messages", {"sessionId": "s1", "message": {"role": "user", "content": "more"}})
    assert ChatSession.objects.get(pk="s1").title == "Renamed"


@pytest.mark.parametrize(
    "body",
    [{}, {"title": ""}, {"title": "   "}, {"title": "x" * 256}, {"title": 5}, {"title": None}, {"title": "a\u0000b"}],
)
def test_a_bad_title_is_a_400_and_changes_nothing(as_alice, session, body):
    response = rename(as_alice, "s1", body)
    assert response.status_code == 400
    assert "title" in response.json()["error"]["details"]
    assert ChatSession.objects.get(pk="s1").title == session.title


def test_a_255_character_title_fits(as_alice, session):
    assert rename(as_alice, "s1", {"title": "é" * 255}).json()["title"] == "é" * 255


def test_unknown_is_404_another_users_is_403_and_a_guests_is_403(as_alice, as_charlie, session):
    ChatSession.objects.create(id="guest_1")
    assert rename(as_alice, "nope", {"title": "x"}).status_code == 404
    assert rename(as_alice, "bad%20id", {"title": "x"}).status_code == 404
    assert rename(as_charlie, "s1", {"title": "x"}).status_code == 403
    assert rename(as_alice, "guest_1", {"title": "x"}).status_code == 403
    assert ChatSession.objects.get(pk="s1").title == session.title


def test_rename_needs_json_and_credentials(anon, as_alice, session):
    assert anon.patch(f"{URL}/s1", {"title": "x"}, content_type="application/json").status_code == 401
    assert as_alice.patch(f"{URL}/s1", "title=x", content_type="application/x-www-form-urlencoded").status_code == 415
