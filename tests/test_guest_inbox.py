"""The staff inbox, GET /api/v1/chat/guest/inbox, through the real URL; and its selector."""

import base64
import importlib
import io
import uuid
from datetime import timedelta

import orjson
import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import selectors, services
from chat.json import dumps
from chat.models import ChatSession
from tests.support import ApiClient, assert_envelope

URL = "/api/v1/chat/guest/inbox"
ROW_KEYS = {
    "session_key",
    "id",
    "guest_name",
    "created_at",
    "updated_at",
    "message_count",
    "last_message_id",
    "last_message_preview",
    "last_role",
    "awaiting_reply",
}

pytestmark = pytest.mark.django_db


def guest_session(name: str = "") -> ChatSession:
    return services.guest_session_create(guest_name=name)


def guest_says(session: ChatSession, content: str = "hello"):
    return services.guest_message_send(session_key=session.session_key, content=content)


def staff_says(session: ChatSession, staff, content: str = "hi, how can I help?"):
    return services.guest_reply_send(session_key=session.session_key, staff_user=staff, content=content)


def inbox(client, **params):
    return assert_envelope(client.get(URL, params), 200, message="Inbox retrieved")


def ids(body) -> list[str]:
    return [row["id"] for row in body["data"]]


def test_staff_see_guest_sessions_latest_activity_first(as_staff, staff, alice, as_alice):
    waiting = guest_session("Ann")
    question = guest_says(waiting, "Is the shop open on Sunday?")
    answered = guest_session()
    guest_says(answered, "Do you ship to Norway?")
    reply = staff_says(answered, staff, "Yes, in three days.")
    silent = guest_session("Bo")
    as_alice.post_json("/api/chat/messages", {"sessionId": "owned", "message": {"role": "user", "content": "x"}})

    body = inbox(as_staff)

    assert body["meta"] == {"next": None, "previous": None}
    # "silent" was created after the others' last messages: latest activity first.
    assert ids(body) == [silent.id, answered.id, waiting.id]
    rows = {row["id"]: row for row in body["data"]}
    assert all(set(row) == ROW_KEYS for row in body["data"])
    assert rows[waiting.id] == {
        "session_key": str(waiting.session_key),
        "id": waiting.id,
        "guest_name": "Ann",
        "created_at": rows[waiting.id]["created_at"],
        "updated_at": question.created_at.isoformat().replace("+00:00", "Z"),
        "message_count": 1,
        "last_message_id": question.id,
        "last_message_preview": "Is the shop open on Sunday?",
        "last_role": "user",
        "awaiting_reply": True,
    }
    assert rows[answered.id]["last_message_id"] == reply.id
    assert rows[answered.id]["last_role"] == "assistant"
    assert rows[answered.id]["awaiting_reply"] is False
    assert rows[answered.id]["message_count"] == 2
    assert rows[silent.id]["last_message_id"] is None
    assert rows[silent.id]["last_role"] is None
    assert rows[silent.id]["awaiting_reply"] is False


def test_awaiting_reply_lists_only_sessions_whose_newest_message_is_the_guests(as_staff, staff):
    waiting = guest_session()
    guest_says(waiting)
    answered = guest_session()
    guest_says(answered)
    staff_says(answered, staff)
    came_back = guest_session()
    guest_says(came_back)
    staff_says(came_back, staff)
    guest_says(came_back, "one more thing")
    guest_session()  # nothing said yet: nobody is waiting

    assert ids(inbox(as_staff, awaiting_reply="true")) == [came_back.id, waiting.id]
    assert ids(inbox(as_staff, awaiting_reply="false")) == ids(inbox(as_staff))
    assert len(ids(inbox(as_staff))) == 4

    staff_says(came_back, staff)
    assert ids(inbox(as_staff, awaiting_reply="true")) == [waiting.id]


def test_a_guest_message_moves_its_session_to_the_top(as_staff):
    first, second = guest_session(), guest_session()
    guest_says(second)
    assert ids(inbox(as_staff)) == [second.id, first.id]
    guest_says(first)
    assert ids(inbox(as_staff)) == [first.id, second.id]


def test_without_credentials_it_is_a_401(anon):
    assert assert_envelope(anon.get(URL), 401, "UNAUTHENTICATED")["error"]["details"] is None
    assert_envelope(ApiClient("not-a-token").get(URL), 401, "UNAUTHENTICATED")


def test_a_user_who_is_not_staff_gets_a_403(as_alice):
    assert assert_envelope(as_alice.get(URL), 403, "FORBIDDEN")["error"]["details"] is None


def test_staff_logged_in_to_the_admin_can_read_it(staff_browser):
    guest_says(guest_session())
    response = staff_browser.get(URL, HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1
    assert Client().get(URL, HTTP_ACCEPT="application/json").status_code == 401


def test_it_spends_the_staff_members_tier_budget(as_staff, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "user:free": "2/hour"}
    first = as_staff.get(URL)
    assert first["X-RateLimit-Limit"] == "2"
    assert first["X-RateLimit-Remaining"] == "1"
    assert first["X-RateLimit-Reset"].endswith("Z")
    as_staff.get(URL)
    refused = as_staff.get(URL)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert refused["Retry-After"] == str(refused.json()["error"]["details"]["retry_after"])


def many_sessions(count: int) -> list[str]:
    """`count` guest sessions, newest first as the inbox sorts them; a third share one updated_at (ties by id)."""
    sessions = [guest_session() for _ in range(count)]
    tied = timezone.now() - timedelta(minutes=5)
    ChatSession.objects.filter(pk__in=[s.pk for s in sessions[::3]]).update(updated_at=tied)
    return list(
        ChatSession.objects.filter(user__isnull=True).order_by("-updated_at", "-id").values_list("pk", flat=True)
    )


def test_pages_of_fifty_follow_next_and_previous_through_ties(as_staff):
    expected = many_sessions(120)

    first = inbox(as_staff)
    assert ids(first) == expected[:50]
    assert first["meta"]["previous"] is None
    assert first["meta"]["next"].startswith("http://testserver/api/v1/chat/guest/inbox?cursor=")
    second = inbox(as_staff, cursor=first["meta"]["next"].split("cursor=")[1])
    assert ids(second) == expected[50:100]
    last = as_staff.get(second["meta"]["next"]).json()
    assert ids(last) == expected[100:]
    assert last["meta"]["next"] is None

    back = as_staff.get(last["meta"]["previous"]).json()
    assert ids(back) == expected[50:100]
    assert as_staff.get(back["meta"]["next"]).json()["data"] == last["data"]
    front = as_staff.get(back["meta"]["previous"]).json()
    assert ids(front) == expected[:50]
    assert front["meta"]["previous"] is None
    assert front["meta"]["next"] is not None


def test_the_cursor_keeps_the_awaiting_reply_filter(as_staff):
    sessions = [guest_session() for _ in range(60)]
    for session in sessions[:55]:
        guest_says(session)
    first = inbox(as_staff, awaiting_reply="true")
    assert "awaiting_reply=true" in first["meta"]["next"]
    rest = as_staff.get(first["meta"]["next"]).json()
    assert len(first["data"]) == 50 and len(rest["data"]) == 5
    assert {row["id"] for row in first["data"] + rest["data"]} == {s.id for s in sessions[:55]}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "!!!",
        "%00",
        b64(b"not json"),
        b64(b"{}"),
        b64(b'"abc"'),
        b64(b'["a", "2026-01-01T00:00:00+00:00"]'),
        b64(b'["x", "2026-01-01T00:00:00+00:00", "s1"]'),
        b64(b'["a", "2026-01-01T00:00:00", "s1"]'),
        b64(b'["a", "yesterday", "s1"]'),
        b64(b'["a", 5, "s1"]'),
        b64(b'["a", "2026-01-01T00:00:00+00:00", 7]'),
        b64(b'["a", "2026-01-01T00:00:00+00:00", "bad id\\n"]'),
        b64(b'["a", "2026-01-01T00:00:00+00:00", "' + b"s" * 500 + b'"]'),
        "A" * 10_000,
    ],
)
def test_a_malformed_cursor_is_a_400_naming_it(as_staff, cursor):
    body = assert_envelope(as_staff.get(URL, {"cursor": cursor}), 400, "VALIDATION_ERROR")
    assert list(body["error"]["details"]) == ["cursor"]


@pytest.mark.parametrize("query", ["awaiting_reply=maybe", "awaiting_reply=", "awaiting_reply=1&awaiting_reply=0"])
def test_a_bad_awaiting_reply_is_a_400(as_staff, query):
    body = assert_envelope(as_staff.get(f"{URL}?{query}"), 400, "VALIDATION_ERROR")
    assert list(body["error"]["details"]) == ["awaiting_reply"]


def test_a_page_is_one_query_after_authentication(as_staff, django_assert_num_queries):
    many_sessions(60)
    as_staff.get(URL)  # warm up: nothing cached but the connection
    with django_assert_num_queries(2):  # the token, the page
        assert len(inbox(as_staff)["data"]) == 50


@pytest.mark.postgres
@pytest.mark.parametrize("awaiting_reply", [False, True])
def test_a_page_reads_its_partial_index_on_postgresql(as_staff, awaiting_reply):
    for session in [guest_session() for _ in range(60)]:
        guest_says(session)
    with CaptureQueriesContext(connection) as captured:
        page = inbox(as_staff, awaiting_reply=str(awaiting_reply).lower())
        as_staff.get(page["meta"]["next"])  # after a position
        as_staff.get(as_staff.get(page["meta"]["next"]).json()["meta"]["previous"])  # before one
    pages = [q["sql"] for q in captured.captured_queries if "chat_sessions" in q["sql"]]
    assert len(pages) == 4
    index = "chat_session_guest_awaiting" if awaiting_reply else "chat_session_guest_inbox"
    with connection.cursor() as cursor:
        # A few rows: tell the planner to avoid what it would pick on a tiny table, so the
        # plan shows whether the index can deliver the page in order (no Sort node).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        for sql in pages:
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert f"using {index}" in plan, plan
            assert "Sort" not in plan, plan


def test_inbox_session_is_the_row_of_the_page_by_id_or_key(as_staff, staff, alice, django_assert_num_queries):
    session = guest_session("Cy")
    guest_says(session, "  Where   is my\n order?  ")
    row = inbox(as_staff)["data"][0]

    with django_assert_num_queries(1):
        by_id = selectors.inbox_session(session_id=session.id)
    by_key = selectors.inbox_session(session_key=session.session_key)
    assert by_id == by_key
    assert set(by_id) == ROW_KEYS
    assert by_id["last_message_preview"] == "Where is my order?"
    # Encoded as every response is (chat.json), it is the page's row byte for byte.
    assert orjson.loads(dumps(by_id)) == row

    owned = ChatSession.objects.create(id="owned", user=alice)
    assert selectors.inbox_session(session_id=owned.id) is None
    assert selectors.inbox_session(session_key=owned.session_key) is None
    assert selectors.inbox_session(session_id="unknown") is None
    assert selectors.inbox_session(session_key=uuid.uuid4()) is None


def test_the_newest_message_is_by_timestamp_like_the_other_statistics(alice):
    """An upsert that moves the newest message back in time hands "last" to the one now newest."""
    url = "/api/chat/messages"
    client = ApiClient(alice.api_token)
    client.post_json(
        url,
        {
            "sessionId": "s",
            "messages": [
                {"id": "q", "role": "user", "content": "question", "timestamp": "2026-01-01T10:00:00Z"},
                {"id": "a", "role": "assistant", "content": "answer", "timestamp": "2026-01-01T10:01:00Z"},
            ],
        },
    )
    session = ChatSession.objects.get(pk="s")
    answer = session.messages.get(message_id="a")
    assert (session.last_message_id, session.last_role) == (answer.id, "assistant")

    client.post_json(
        url,
        {
            "sessionId": "s",
            "message": {"id": "a", "role": "assistant", "content": "x", "timestamp": "2026-01-01T09:00:00Z"},
        },
    )
    session.refresh_from_db()
    question = session.messages.get(message_id="q")
    assert (session.last_message_id, session.last_role) == (question.id, "user")

    # An older message inserted later is not the newest.
    client.post_json(
        url,
        {
            "sessionId": "s",
            "message": {"id": "old", "role": "system", "content": "x", "timestamp": "2025-01-01T00:00:00Z"},
        },
    )
    session.refresh_from_db()
    assert (session.last_message_id, session.last_role) == (question.id, "user")


def test_the_migration_backfills_existing_sessions(staff):
    answered = guest_session()
    guest_says(answered)
    reply = staff_says(answered, staff)
    waiting = guest_session()
    question = guest_says(waiting)
    empty = guest_session()
    ChatSession.objects.update(last_message_id=None, last_role=None)

    migration = importlib.import_module("chat.migrations.0003_guest_inbox")
    migration.backfill_last_message(apps, type("SchemaEditor", (), {"connection": connection})())

    rows = dict(ChatSession.objects.values_list("pk", "last_message_id"))
    roles = dict(ChatSession.objects.values_list("pk", "last_role"))
    assert rows == {answered.pk: reply.id, waiting.pk: question.id, empty.pk: None}
    assert roles == {answered.pk: "assistant", waiting.pk: "user", empty.pk: None}


def test_recount_session_stats_repairs_the_newest_message_fields(staff):
    session = guest_session()
    message = guest_says(session)
    ChatSession.objects.filter(pk=session.pk).update(last_message_id=None, last_role="assistant")
    call_command("recount_session_stats", session.pk, stdout=io.StringIO())
    session.refresh_from_db()
    assert (session.last_message_id, session.last_role) == (message.id, "user")


def test_the_schema_documents_the_inbox(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = schema["paths"]["/api/v1/chat/guest/inbox"]["get"]
    assert {p["name"] for p in operation["parameters"] if p["in"] == "query"} == {"awaiting_reply", "cursor"}
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "429"}
    row = schema["components"]["schemas"]["GuestInboxSession"]
    assert set(row["properties"]) == ROW_KEYS
    assert set(schema["components"]["schemas"]["GuestInboxMeta"]["properties"]) == {"next", "previous"}
