"""POST /api/chat/messages: saving, upserting, titles, ownership, statistics."""

import json
from datetime import UTC, datetime

import pytest
from django.db import connection

from chat.models import ChatMessage, ChatSession, UsageDay
from chat.selectors import MESSAGE_FIELDS

URL = "/api/chat/messages"

SEED_SINGLE = {
    "sessionId": "abc123",
    "sessionTitle": "Optional title update",
    "message": {
        "id": "msg1",
        "content": "Hello, world!",
        "role": "user",
        "model": "gpt-3.5-turbo",
        "total_tokens": 42,
        "contentType": "text",
        "elapsed_time": 100,
        "completion_id": "gen-123",
        "timestamp": "2025-07-25T12:34:56Z",
        "error": False,
    },
}

SEED_ARRAY = {
    "sessionId": "abc123",
    "sessionTitle": "Optional title for new or existing sessions",
    "messages": [
        {"id": "msg_user", "content": "What is the weather?", "role": "user", "timestamp": "2025-08-02T12:00:00Z"},
        {
            "id": "msg_assistant",
            "content": "I don't have access to real-time weather data.",
            "role": "assistant",
            "model": "gpt-3.5-turbo",
            "total_tokens": 25,
            "elapsed_time": 1500,
            "timestamp": "2025-08-02T12:00:05Z",
        },
    ],
}

SEED_ERROR = {
    "sessionId": "abc123",
    "message": {
        "id": "msg_error",
        "content": "",
        "role": "assistant",
        "timestamp": "2025-08-02T12:00:00Z",
        "error_message": "Rate limit exceeded. Please try again.",
        "error_code": "too_many_requests",
        "retry_after": 60,
        "suggestions": ["Try again in a few minutes", "Switch to a different model"],
    },
}

# The GET shape: every key always present (the schema the fuzzer checks states it too).
ALL_KEYS = set(MESSAGE_FIELDS)


def session(session_id="abc123") -> ChatSession:
    return ChatSession.objects.get(pk=session_id)


def test_seed_single_message_is_saved_and_returned(as_alice, alice):
    response = as_alice.post_json(URL, SEED_SINGLE)

    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 1 and body["success"] is True
    [message] = body["messages"]
    assert message == {
        "id": "msg1",
        "role": "user",
        "content": "Hello, world!",
        "contentType": "text",
        "model": "gpt-3.5-turbo",
        "originalModel": None,
        "total_tokens": 42,
        "input_tokens": None,
        "output_tokens": None,
        "user_message_id": None,
        "elapsed_time": 100,
        "completion_id": "gen-123",
        "timestamp": "2025-07-25T12:34:56Z",
        "error": False,
        "error_message": None,
        "error_code": None,
        "retry_after": None,
        "suggestions": None,
    }
    created = session()
    assert created.user == alice
    assert created.title == "Optional title update"


def test_seed_array_is_saved_in_request_order(as_alice):
    response = as_alice.post_json(URL, SEED_ARRAY)

    assert response.status_code == 201
    body = response.json()
    assert body["count"] == 2
    assert [m["id"] for m in body["messages"]] == ["msg_user", "msg_assistant"]
    assert body["messages"][1]["model"] == "gpt-3.5-turbo"
    assert session().title == "Optional title for new or existing sessions"


def test_seed_error_message_is_an_error_with_its_metadata(as_alice):
    response = as_alice.post_json(URL, SEED_ERROR)

    assert response.status_code == 201
    [message] = response.json()["messages"]
    assert message["error"] is True
    assert message["content"] == ""
    assert message["error_code"] == "too_many_requests"
    assert message["retry_after"] == 60
    assert message["suggestions"] == ["Try again in a few minutes", "Switch to a different model"]
    assert session().message_count == 1


def test_every_key_is_present_when_only_role_is_sent(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "system"}})

    assert response.status_code == 201
    [message] = response.json()["messages"]
    assert set(message) == ALL_KEYS
    assert message["id"].startswith("msg_") and len(message["id"]) == 36
    assert message["content"] == "" and message["contentType"] == "text" and message["error"] is False


def test_missing_timestamp_is_the_receipt_time(as_alice):
    before = datetime.now(UTC)
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": "m", "role": "user", "content": "x"}})

    stored = ChatMessage.objects.get(message_id="m")
    assert before <= stored.timestamp <= datetime.now(UTC)


def test_timestamp_without_offset_means_utc_and_offsets_are_honoured(as_alice):
    response = as_alice.post_json(
        URL,
        {
            "sessionId": "s1",
            "messages": [
                {"id": "a", "role": "user", "timestamp": "2025-08-02T12:00:00"},
                {"id": "b", "role": "user", "timestamp": "2025-08-02T14:00:00.250+02:00"},
            ],
        },
    )

    assert [m["timestamp"] for m in response.json()["messages"]] == [
        "2025-08-02T12:00:00Z",
        "2025-08-02T12:00:00.250000Z",
    ]


# Titles


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("What is the weather?", "What is the weather?"),
        ("  lots   of\n\twhitespace  ", "lots of whitespace"),
        ("x" * 50, "x" * 50),
        ("x" * 51, "x" * 47 + "..."),
        ("word " * 20, ("word " * 10)[:47].rstrip() + "..."),
        ("   ", "New Chat"),
        ("", "New Chat"),
    ],
)
def test_new_session_is_titled_from_the_first_user_message(as_alice, content, title):
    payload = {
        "sessionId": "s1",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": content},
            {"role": "user", "content": "second question"},
        ],
    }
    assert as_alice.post_json(URL, payload).status_code == 201
    assert session("s1").title == title


def test_new_session_without_user_message_is_new_chat(as_alice):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "assistant", "content": "Hi!"}})
    assert session("s1").title == "New Chat"


def test_blank_session_title_falls_back_to_the_message(as_alice):
    as_alice.post_json(URL, {"sessionId": "s1", "sessionTitle": "  ", "message": {"role": "user", "content": "Hey"}})
    assert session("s1").title == "Hey"


def test_existing_session_keeps_its_title_unless_one_is_sent(as_alice):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "content": "First"}})
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "content": "Second"}})
    assert session("s1").title == "First"

    as_alice.post_json(URL, {"sessionId": "s1", "sessionTitle": "Renamed", "message": {"role": "user"}})
    assert session("s1").title == "Renamed"

    as_alice.post_json(URL, {"sessionId": "s1", "sessionTitle": "", "message": {"role": "user"}})
    assert session("s1").title == "Renamed"


# Upsert


def test_resaving_a_message_replaces_it_last_write_wins(as_alice):
    as_alice.post_json(URL, SEED_ERROR)
    fixed = {
        "sessionId": "abc123",
        "message": {"id": "msg_error", "role": "assistant", "content": "The answer", "total_tokens": 7},
    }
    response = as_alice.post_json(URL, fixed)

    assert response.status_code == 201
    [message] = response.json()["messages"]
    assert message["content"] == "The answer"
    assert message["error"] is False
    assert message["error_message"] is None and message["suggestions"] is None and message["retry_after"] is None
    # A missing timestamp keeps the stored one.
    assert message["timestamp"] == "2025-08-02T12:00:00Z"
    stats = session()
    assert stats.message_count == 1
    assert stats.total_tokens == 7
    assert ChatMessage.objects.count() == 1


def test_replaying_a_request_changes_nothing(as_alice):
    first = as_alice.post_json(URL, SEED_ARRAY).json()
    snapshot = list(ChatMessage.objects.order_by("id").values())
    stats = ChatSession.objects.values("message_count", "total_tokens", "title", "last_model").get()

    second = as_alice.post_json(URL, SEED_ARRAY).json()

    assert second["messages"] == first["messages"]
    replayed = list(ChatMessage.objects.order_by("id").values())
    for row in (*snapshot, *replayed):
        row.pop("created_at")
    assert replayed == snapshot
    assert ChatSession.objects.values("message_count", "total_tokens", "title", "last_model").get() == stats


def test_two_messages_with_one_id_are_refused(as_alice):
    payload = {"sessionId": "s1", "messages": [{"id": "x", "role": "user"}, {"id": "x", "role": "assistant"}]}
    response = as_alice.post_json(URL, payload)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "messages" in response.json()["error"]["details"]
    assert not ChatSession.objects.exists()


# Ownership


def test_posting_to_another_users_session_is_forbidden_and_writes_nothing(as_alice, as_charlie):
    as_alice.post_json(URL, SEED_SINGLE)
    before = list(ChatMessage.objects.values_list("content", flat=True))

    response = as_charlie.post_json(
        URL, {"sessionId": "abc123", "sessionTitle": "mine now", "message": {"id": "msg1", "role": "user"}}
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert list(ChatMessage.objects.values_list("content", flat=True)) == before
    assert session().title == "Optional title update"


def test_posting_to_a_guest_session_is_forbidden(as_alice):
    ChatSession.objects.create(id="guest_abc")
    response = as_alice.post_json(URL, {"sessionId": "guest_abc", "message": {"role": "user"}})
    assert response.status_code == 403
    assert not ChatMessage.objects.exists()


def test_posting_without_credentials_is_unauthenticated(anon):
    response = anon.post_json(URL, SEED_SINGLE)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    assert response["WWW-Authenticate"] == "Bearer"
    assert not ChatSession.objects.exists()


# Atomicity


def test_a_failing_array_saves_nothing(as_alice):
    payload = {
        "sessionId": "s1",
        "messages": [{"role": "user", "content": "ok"}, {"role": "robot", "content": "bad role"}],
    }
    response = as_alice.post_json(URL, payload)

    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"messages": {"1": {"role": ['"robot" is not a valid choice.']}}}
    assert not ChatSession.objects.exists()
    assert not ChatMessage.objects.exists()


@pytest.fixture
def failing_statistics():
    """The database refuses every update of a session: the statistics, a write's last step."""
    if connection.vendor == "postgresql":
        install = [
            "CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER test_disk_full BEFORE UPDATE ON chat_sessions FOR EACH ROW EXECUTE FUNCTION test_disk_full()",
        ]
        remove = ["DROP TRIGGER test_disk_full ON chat_sessions", "DROP FUNCTION test_disk_full()"]
    else:
        install = [
            "CREATE TRIGGER test_disk_full BEFORE UPDATE ON chat_sessions BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        ]
        remove = ["DROP TRIGGER test_disk_full"]
    with connection.cursor() as cursor:
        for statement in install:
            cursor.execute(statement)
    yield
    with connection.cursor() as cursor:
        for statement in remove:
            cursor.execute(statement)


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_mid_array_rolls_back_the_whole_request(as_alice, request):
    """The statistics update comes after the messages; when the database fails it, the
    upserted and inserted messages and a new session must be gone too."""
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": "old", "role": "user", "content": "kept"}})
    request.getfixturevalue("failing_statistics")

    response = as_alice.post_json(
        URL,
        {"sessionId": "s1", "messages": [{"id": "old", "role": "user", "content": "changed"}, {"role": "user"}]},
    )
    new_session = as_alice.post_json(URL, {"sessionId": "s2", "message": {"role": "user"}})

    assert response.status_code == 500
    assert response.json()["error"]["code"] == "INTERNAL_ERROR"
    assert "disk full" not in response.content.decode()
    assert new_session.status_code == 500
    assert list(ChatMessage.objects.values_list("message_id", "content")) == [("old", "kept")]
    assert list(ChatSession.objects.values_list("id", "message_count")) == [("s1", 1)]
    assert list(UsageDay.objects.values_list("messages", flat=True)) == [1]


# Statistics


def test_statistics_follow_every_write(as_alice):
    as_alice.post_json(URL, SEED_ARRAY)
    stats = session()
    assert stats.message_count == 2
    assert stats.total_tokens == 25
    assert stats.last_model == "gpt-3.5-turbo"
    assert stats.last_message_preview == "I don't have access to real-time weather data."
    assert stats.last_message_timestamp == datetime(2025, 8, 2, 12, 0, 5, tzinfo=UTC)

    as_alice.post_json(URL, SEED_ERROR)  # an older error message
    stats = session()
    assert stats.message_count == 3
    assert stats.total_tokens == 25
    assert stats.last_model == "gpt-3.5-turbo"  # the newest message is still the assistant's


def test_replacing_the_newest_message_with_an_older_one_recomputes_the_last_message(as_alice):
    as_alice.post_json(URL, SEED_ARRAY)
    as_alice.post_json(
        URL,
        {
            "sessionId": "abc123",
            "message": {
                "id": "msg_assistant",
                "role": "assistant",
                "model": "other-model",
                "content": "moved back",
                "timestamp": "2025-08-01T00:00:00Z",
            },
        },
    )
    stats = session()
    assert stats.message_count == 2
    assert stats.total_tokens == 0
    assert stats.last_model is None  # the user message is now the newest
    assert stats.last_message_preview == "What is the weather?"
    assert stats.last_message_timestamp == datetime(2025, 8, 2, 12, 0, tzinfo=UTC)


def test_equal_timestamps_are_ordered_by_arrival(as_alice):
    same = "2025-08-02T12:00:00Z"
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "content": "first", "timestamp": same}})
    as_alice.post_json(
        URL, {"sessionId": "s1", "message": {"role": "assistant", "content": "second", "timestamp": same}}
    )
    assert session("s1").last_message_preview == "second"
    listed = as_alice.get(URL, {"session_id": "s1"}).json()
    assert [m["content"] for m in listed] == ["first", "second"]


def test_preview_is_shortened_to_100_characters(as_alice):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "assistant", "content": "y" * 300}})
    assert session("s1").last_message_preview == "y" * 97 + "..."


def test_updated_at_moves_with_every_write(as_alice):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}})
    first = session("s1").updated_at
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user"}})
    assert session("s1").updated_at > first


def test_an_id_stored_in_another_session_is_a_new_message_here(as_alice):
    first = {"id": "same", "role": "assistant", "content": "in s1", "model": "m", "total_tokens": 5}
    as_alice.post_json(URL, {"sessionId": "s1", "message": first})
    again = {**first, "content": "in s2", "total_tokens": 3}
    assert as_alice.post_json(URL, {"sessionId": "s2", "message": again}).status_code == 201

    assert sorted(ChatMessage.objects.values_list("session_id", "content")) == [("s1", "in s1"), ("s2", "in s2")]
    assert (session("s1").message_count, session("s1").total_tokens) == (1, 5)
    assert (session("s2").message_count, session("s2").total_tokens) == (1, 3)
    [day] = UsageDay.objects.all()
    assert (day.messages, day.total_tokens) == (2, 8)


def test_a_hundred_messages_at_the_body_limit_are_saved_whole_then_replaced_whole(as_alice, settings):
    """The largest array the API takes: 100 messages in a body just under the limit,
    saved in order, then sent again (every one an upsert): nothing counted twice."""
    content = "x" * ((settings.MAX_REQUEST_BODY_BYTES - 20_000) // 100)
    messages = [
        {"id": f"m{i:03d}", "role": "user", "content": content, "total_tokens": i, "timestamp": "2025-08-02T12:00:00Z"}
        for i in range(100)
    ]
    body = {"sessionId": "big", "messages": messages}
    assert settings.MAX_REQUEST_BODY_BYTES - 20_000 < len(json.dumps(body)) < settings.MAX_REQUEST_BODY_BYTES

    assert as_alice.post_json(URL, body).status_code == 201
    stored = list(ChatMessage.objects.order_by("id").values_list("message_id", flat=True))
    assert stored == [m["id"] for m in messages]  # ids drawn in request order
    assert (session("big").message_count, session("big").total_tokens) == (100, sum(range(100)))
    assert session("big").last_message_preview == "x" * 97 + "..."

    replay = {**body, "messages": [{**m, "total_tokens": 1} for m in messages]}
    response = as_alice.post_json(URL, replay)
    assert response.status_code == 201 and response.json()["count"] == 100
    assert list(ChatMessage.objects.order_by("id").values_list("message_id", flat=True)) == stored
    assert (session("big").message_count, session("big").total_tokens) == (100, 100)
    [day] = UsageDay.objects.all()
    assert (day.messages, day.total_tokens) == (100, 100)


def test_unicode_is_stored_and_returned_byte_for_byte(as_alice):
    text = "  مرحبا بالعالم 👋🏽 — ﷽ \u200f leading and trailing spaces  "
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": "u", "role": "user", "content": text}})
    assert response.json()["messages"][0]["content"] == text
    assert as_alice.get(URL, {"session_id": "s1"}).json()[0]["content"] == text
    assert ChatMessage.objects.get(message_id="u").content == text


@pytest.mark.parametrize("dots", [".", ".."])
def test_ids_a_url_cannot_address_are_refused(as_alice, dots):
    session = as_alice.post_json(URL, {"sessionId": dots, "message": {"role": "user"}})
    assert session.status_code == 400 and "sessionId" in session.json()["error"]["details"]
    message = as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": dots, "role": "user"}})
    assert message.status_code == 400 and "message" in message.json()["error"]["details"]
    assert as_alice.get(URL, {"session_id": dots}).status_code == 400


def test_three_dots_and_dotted_ids_are_ids(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "...", "messages": [{"id": ".a", "role": "user"}]})
    assert response.status_code == 201


# Arabic-Indic digits, and fullwidth ones: Django's date parser reads both as numbers.
@pytest.mark.parametrize(
    "timestamp",
    [
        "\u0662\u0660\u0662\u0665-01-01T10:00:00Z",
        "2025-01-01T\u0661\u0660:00:00Z",
        "\uff12\uff10\uff12\uff15-01-01T10:00:00Z",
    ],
)
def test_a_timestamp_in_other_digits_than_ascii_is_a_400(as_alice, timestamp):
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "timestamp": timestamp}})
    assert response.status_code == 400
    assert "timestamp" in response.json()["error"]["details"]["message"]
