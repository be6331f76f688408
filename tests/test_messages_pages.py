"""GET /api/chat/messages with `limit` and `before`: pages of a long history, newest first,
each oldest-first inside, linked by `Link: rel="prev"`; and the long whole-array read, in batches."""

import base64
import re
import threading
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from django.db import connection

from chat.models import ChatMessage, ChatSession
from chat.selectors import history
from tests.support import ApiClient, poll_until

URL = "/api/chat/messages"
LINK_RE = re.compile(r'^<(?P<url>[^>]+)>; rel="prev"$')
START = datetime(2025, 1, 1, tzinfo=UTC)


def seed(session: ChatSession, count: int, *, start: int = 0, same_second: bool = False) -> None:
    """`count` messages, as the service would store them (statistics made right below)."""
    ChatMessage.objects.bulk_create(
        ChatMessage(
            session=session,
            message_id=f"m{i:05d}",
            role="user" if i % 2 == 0 else "assistant",
            content=f"message {i} " + "x" * (i % 7),
            timestamp=START + timedelta(seconds=0 if same_second else i),
            total_tokens=i % 5 or None,
            extra={"n": i} if i % 3 == 0 else None,
        )
        for i in range(start, start + count)
    )
    ChatSession.objects.filter(pk=session.pk).update(message_count=ChatMessage.objects.filter(session=session).count())


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    """A walk is hundreds of requests; the limits have tests of their own."""
    settings.RATE_LIMIT_ENABLED = False


@pytest.fixture
def long_session(alice) -> ChatSession:
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, 1000)
    return session


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of at most 7 messages or ~300 bytes of text, so that short histories take the long path."""
    monkeypatch.setattr(history, "BATCH_ROWS", 7)
    monkeypatch.setattr(history, "BATCH_BYTES", 300)


def content(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def page(client, **params):
    response = client.get(URL, {"session_id": "long", **params})
    assert response.status_code == 200, response.content
    link = response.headers.get("Link")
    before = None
    if link:
        match = LINK_RE.match(link)
        assert match, link
        query = parse_qs(urlsplit(match["url"]).query)
        assert query["session_id"] == ["long"] and query["limit"] == [str(params["limit"])]
        assert urlsplit(match["url"]).path == URL and match["url"].startswith("http")
        [before] = query["before"]
    return orjson.loads(content(response)), before


def walk(client, limit: int, between=None) -> list[str]:
    """Every page from the newest back to the start; the ids, oldest first."""
    pages = []
    messages, before = page(client, limit=limit)
    pages.append(messages)
    while before:
        if between:
            between()
        messages, before = page(client, limit=limit, before=before)
        assert 0 < len(messages) <= limit
        pages.append(messages)
    return [m["id"] for p in reversed(pages) for m in p]


def test_a_page_is_the_newest_messages_oldest_first_with_a_link_to_older_ones(as_alice, long_session):
    messages, before = page(as_alice, limit=3)
    assert [m["id"] for m in messages] == ["m00997", "m00998", "m00999"]
    assert before is not None

    older, _ = page(as_alice, limit=3, before=before)
    assert [m["id"] for m in older] == ["m00994", "m00995", "m00996"]
    assert older[2]["n"] == 996 and "n" not in older[0]  # extra keys in pages too


def test_a_page_has_the_whole_arrays_shape(as_alice, long_session):
    whole = as_alice.get(URL, {"session_id": "long"})
    assert whole.status_code == 200
    messages, _ = page(as_alice, limit=10)
    assert messages == orjson.loads(content(whole))[-10:]


@pytest.mark.parametrize("limit", [7, 50, 333, 1000])
def test_walking_back_returns_every_message_once_in_order(as_alice, long_session, limit):
    assert walk(as_alice, limit) == [f"m{i:05d}" for i in range(1000)]


def test_walking_back_in_small_batches_returns_every_message_once_in_order(as_alice, long_session, small_batches):
    assert walk(as_alice, 60) == [f"m{i:05d}" for i in range(1000)]


def test_walking_back_while_messages_are_added_skips_and_repeats_nothing(as_alice, long_session):
    added = iter(range(10_000))

    def add() -> None:
        n = next(added)
        response = as_alice.post_json(
            URL, {"sessionId": "long", "messages": [{"id": f"new{n}", "role": "user", "content": "later"}]}
        )
        assert response.status_code == 201

    assert walk(as_alice, 50, between=add) == [f"m{i:05d}" for i in range(1000)]
    assert ChatSession.objects.get(pk="long").message_count > 1000


def test_messages_of_one_timestamp_page_by_id(as_alice, alice):
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, 25, same_second=True)
    assert walk(as_alice, 4) == [f"m{i:05d}" for i in range(25)]


def test_the_last_page_has_no_link_and_a_short_history_is_one_page(as_alice, alice):
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, 5)
    messages, before = page(as_alice, limit=5)
    assert len(messages) == 5 and before is None
    messages, before = page(as_alice, limit=1000)
    assert len(messages) == 5 and before is None


def test_an_empty_session_is_an_empty_page(as_alice, alice):
    ChatSession.objects.create(id="long", user=alice)
    assert page(as_alice, limit=10) == ([], None)


def valid_cursor() -> str:
    return history.cursor_encode((START, 5))


@pytest.mark.parametrize(
    "before",
    [
        "",
        "abc",
        "!!!",
        "é",
        base64.urlsafe_b64encode(b"notacursor").decode(),
        base64.urlsafe_b64encode(b"1.2.3").decode(),
        base64.urlsafe_b64encode(b"99999999999999999.5").decode(),  # past year 9999
        base64.urlsafe_b64encode(b"-99999999999999999.5").decode(),
        base64.urlsafe_b64encode(b"5.0").decode(),
        base64.urlsafe_b64encode(b"5.99999999999999999999").decode(),
        base64.urlsafe_b64encode(b"5.-3").decode(),
        base64.urlsafe_b64encode(b" 5.3").decode(),
        "MTcwMDAwMDAwMDAwMDAwMC41==",  # padding we never write
        "A" * 65,
        "\u0000",
    ],
)
def test_a_malformed_cursor_is_a_400(as_alice, long_session, before):
    response = as_alice.get(URL, {"session_id": "long", "limit": 5, "before": before})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "before" in response.json()["error"]["details"]


def test_a_cursor_needs_a_limit(as_alice, long_session):
    response = as_alice.get(URL, {"session_id": "long", "before": valid_cursor()})
    assert response.status_code == 400
    assert "before" in response.json()["error"]["details"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "5.0", " 5", "1e3", "", "٣", "99999999999999999999"])
def test_a_limit_outside_1_to_1000_or_not_digits_is_a_400(as_alice, long_session, limit):
    response = as_alice.get(URL, {"session_id": "long", "limit": limit})
    assert response.status_code == 400
    assert "limit" in response.json()["error"]["details"]


def test_a_page_of_another_users_session_is_403_and_of_an_unknown_one_404(as_charlie, as_alice, long_session):
    assert as_charlie.get(URL, {"session_id": "long", "limit": 5}).status_code == 403
    assert as_alice.get(URL, {"session_id": "nope", "limit": 5}).status_code == 404
    assert as_alice.get(URL, {"session_id": "nope", "limit": 5, "before": valid_cursor()}).status_code == 404


def test_the_long_path_gives_the_same_bytes_as_the_short_one(as_alice, long_session, monkeypatch):
    short = as_alice.get(URL, {"session_id": "long"})
    short_page = as_alice.get(
        URL, {"session_id": "long", "limit": 100, "before": history.cursor_encode((START + timedelta(seconds=500), 1))}
    )
    monkeypatch.setattr(history, "BATCH_ROWS", 7)
    monkeypatch.setattr(history, "BATCH_BYTES", 300)
    long = as_alice.get(URL, {"session_id": "long"})
    long_page = as_alice.get(
        URL, {"session_id": "long", "limit": 100, "before": history.cursor_encode((START + timedelta(seconds=500), 1))}
    )

    if connection.vendor == "postgresql":  # elsewhere a page is read whole and a history always streamed
        assert long.streaming and long_page.streaming and not short.streaming
    assert content(long) == content(short)
    page_bytes = content(long_page)
    assert page_bytes == content(short_page)
    assert long_page.headers["Link"] == short_page.headers["Link"]
    assert [m["id"] for m in orjson.loads(page_bytes)] == [f"m{i:05d}" for i in range(400, 500)]


@pytest.mark.parametrize("count", [0, 1, 6, 7, 8, 14, 15])
def test_batch_edges_lose_and_repeat_nothing(as_alice, alice, small_batches, count):
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, count)
    ids = [f"m{i:05d}" for i in range(count)]
    assert [m["id"] for m in orjson.loads(content(as_alice.get(URL, {"session_id": "long"})))] == ids
    assert walk(as_alice, 3) == ids


def test_a_message_longer_than_a_batch_is_a_batch_of_its_own(as_alice, alice, small_batches):
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, 10)
    ChatMessage.objects.filter(message_id="m00004").update(content="y" * 5000, error_message="e" * 400)
    whole = orjson.loads(content(as_alice.get(URL, {"session_id": "long"})))
    assert [m["id"] for m in whole] == [f"m{i:05d}" for i in range(10)]
    assert whole[4]["content"] == "y" * 5000
    assert walk(as_alice, 4) == [f"m{i:05d}" for i in range(10)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_walking_back_while_another_thread_writes_skips_and_repeats_nothing(alice):
    session = ChatSession.objects.create(id="long", user=alice)
    seed(session, 1000)
    walker, stop, written = ApiClient(alice.api_token), threading.Event(), []

    def write() -> None:
        client = ApiClient(alice.api_token)
        try:
            while not stop.is_set():
                n = len(written)
                message = {"id": f"new{n}", "role": "user", "content": "meanwhile"}
                written.append(client.post_json(URL, {"sessionId": "long", "message": message}).status_code)
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        poll_until(lambda: len(written) >= 2, timeout=30, what="the writer's first saves")
        walked = walk(walker, 37)
    finally:
        stop.set()
        writer.join(timeout=30)

    last = walked.index("m00999") + 1
    assert walked[:last] == [f"m{i:05d}" for i in range(1000)]
    newer = walked[last:]  # what the first page caught of the writer's messages, once each
    assert all(message_id.startswith("new") for message_id in newer) and len(newer) == len(set(newer))
    assert set(written) == {201} and len(written) >= 2
