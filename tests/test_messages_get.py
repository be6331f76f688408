"""GET /api/chat/messages: a session's history, for its owner only."""

import pytest

from chat.models import ChatSession

URL = "/api/chat/messages"


def post(client, session_id, *messages, **extra):
    response = client.post_json(URL, {"sessionId": session_id, "messages": list(messages), **extra})
    assert response.status_code == 201, response.content
    return response.json()["messages"]


def test_history_is_ordered_by_timestamp_then_arrival(as_alice):
    post(
        as_alice,
        "s1",
        {"id": "late", "role": "assistant", "timestamp": "2025-01-01T00:00:10Z"},
        {"id": "early", "role": "user", "timestamp": "2025-01-01T00:00:01Z"},
        {"id": "tie", "role": "user", "timestamp": "2025-01-01T00:00:10Z"},
    )
    response = as_alice.get(URL, {"session_id": "s1"})

    assert response.status_code == 200
    assert [m["id"] for m in response.json()] == ["early", "late", "tie"]


def test_history_returns_what_post_returned(as_alice):
    saved = post(
        as_alice,
        "s1",
        {
            "id": "m1",
            "role": "assistant",
            "content": "**bold**",
            "contentType": "markdown",
            "model": "gpt-4o",
            "originalModel": "openai/gpt-4o",
            "total_tokens": 30,
            "input_tokens": 10,
            "output_tokens": 20,
            "user_message_id": "u1",
            "elapsed_time": 1234,
            "completion_id": "gen-1",
            "timestamp": "2025-07-25T12:34:56.789Z",
            "error": False,
            "suggestions": [],
        },
    )
    assert as_alice.get(URL, {"session_id": "s1"}).json() == saved
    assert saved[0]["suggestions"] == []
    assert saved[0]["timestamp"] == "2025-07-25T12:34:56.789000Z"


def test_empty_session_is_an_empty_array(as_alice, alice):
    ChatSession.objects.create(id="empty", user=alice)
    response = as_alice.get(URL, {"session_id": "empty"})
    assert response.status_code == 200
    assert response.json() == []


def test_unknown_session_is_not_found(as_alice):
    response = as_alice.get(URL, {"session_id": "nope"})
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "NOT_FOUND", "details": None}


def test_another_users_session_is_forbidden(as_alice, as_charlie):
    post(as_alice, "s1", {"role": "user", "content": "private"})
    response = as_charlie.get(URL, {"session_id": "s1"})
    assert response.status_code == 403
    assert "private" not in response.content.decode()


def test_a_guest_session_is_forbidden(as_alice):
    ChatSession.objects.create(id="guest_1")
    assert as_alice.get(URL, {"session_id": "guest_1"}).status_code == 403


@pytest.mark.parametrize("query", [{}, {"session_id": ""}, {"session_id": "a b"}, {"session_id": "x\x00y"}])
def test_missing_or_malformed_session_id_is_a_validation_error(as_alice, query):
    response = as_alice.get(URL, query)
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert "session_id" in body["error"]["details"]


def test_reading_needs_credentials(anon):
    assert anon.get(URL, {"session_id": "s1"}).status_code == 401


def test_bearer_and_token_keywords_both_work(alice):
    from tests.support import ApiClient

    for keyword in ("Bearer", "Token", "bearer"):
        client = ApiClient(HTTP_AUTHORIZATION=f"{keyword} {alice.api_token}")
        assert client.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}}).status_code == 201


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Bearer wrongtoken", "Bearer t\x00k", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 41],
)
def test_bad_credentials_are_unauthenticated(db, header):
    from tests.support import ApiClient

    response = ApiClient(HTTP_AUTHORIZATION=header).get(URL, {"session_id": "s1"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
