"""ETag and If-None-Match on GET /api/chat/messages: a 304 that reads no message."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

URL = "/api/chat/messages"


@pytest.fixture
def session(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "s1", "messages": [{"id": "u1", "role": "user", "content": "hi"}]})
    assert response.status_code == 201


def read(client, etag=None, **params):
    headers = {"HTTP_IF_NONE_MATCH": etag} if etag else {}
    return client.get(URL, {"session_id": "s1", **params}, **headers)


def test_every_history_answer_has_an_etag_and_no_store(as_alice, session):
    for params in ({}, {"limit": 5}):
        response = read(as_alice, **params)
        assert response.status_code == 200
        assert response["ETag"].startswith('"') and response["ETag"].endswith('"')
        assert response["Cache-Control"] == "no-store"
    assert read(as_alice)["ETag"] == read(as_alice)["ETag"]
    assert read(as_alice)["ETag"] != read(as_alice, limit=5)["ETag"]


def test_the_current_etag_gets_a_304_with_no_body_that_reads_no_message(as_alice, session):
    etag = read(as_alice)["ETag"]
    with CaptureQueriesContext(connection) as queries:
        response = read(as_alice, etag)

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert response["Cache-Control"] == "no-store"
    assert "X-RateLimit-Remaining" in response
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) <= 2, statements  # the token, the session row
    assert not any("chat_messages" in sql for sql in statements), statements


def test_a_page_revalidates_too(as_alice, session):
    etag = read(as_alice, limit=1)["ETag"]
    assert read(as_alice, etag, limit=1).status_code == 304
    assert read(as_alice, etag).status_code == 200  # another answer, another tag


def test_weak_lists_and_star_match_as_rfc_9110_says(as_alice, session):
    etag = read(as_alice)["ETag"]
    assert read(as_alice, f'"other", W/{etag}').status_code == 304
    assert read(as_alice, "*").status_code == 304
    assert read(as_alice, '"other"').status_code == 200
    assert read(as_alice, "garbage without quotes").status_code == 200


@pytest.mark.parametrize(
    "write",
    [
        lambda c: c.post_json(URL, {"sessionId": "s1", "message": {"role": "assistant", "content": "new"}}),
        lambda c: c.post_json(URL, {"sessionId": "s1", "message": {"id": "u1", "role": "user", "content": "edited"}}),
        lambda c: c.post_json(URL, {"sessionId": "s1", "message": {"id": "u1", "role": "user", "content": "hi"}}),
        lambda c: c.delete(f"{URL}/u1?session_id=s1"),
        lambda c: c.patch("/api/chat/sessions/s1", {"title": "x"}, content_type="application/json"),
    ],
    ids=["insert", "upsert", "same-upsert", "delete", "rename"],
)
def test_every_write_changes_the_etag(as_alice, session, write):
    etag = read(as_alice)["ETag"]
    assert write(as_alice).status_code in (200, 201, 204)
    response = read(as_alice, etag)
    assert response.status_code == 200
    assert response["ETag"] != etag


def test_another_users_session_is_403_even_with_its_etag(as_alice, as_charlie, session):
    etag = read(as_alice)["ETag"]
    assert read(as_charlie, etag).status_code == 403
    assert read(as_charlie, "*").status_code == 403
    assert as_alice.get(URL, {"session_id": "nope"}, HTTP_IF_NONE_MATCH="*").status_code == 404
