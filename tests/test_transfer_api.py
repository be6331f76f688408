"""Export, import and erase of a user's data: NDJSON out, the same back in, everything gone."""

import io

import orjson
import pytest
from django.core.management import call_command
from django.http import StreamingHttpResponse

from chat.models import ChatMessage, ChatSession, UsageDay

EXPORT = "/api/chat/export"
IMPORT = "/api/chat/import"
SESSIONS = "/api/chat/sessions"
MESSAGES = "/api/chat/messages"
USAGE = "/api/chat/usage"
NDJSON = "application/x-ndjson"


def save(client, session_id: str, messages: list[dict], **extra) -> None:
    response = client.post_json(MESSAGES, {"sessionId": session_id, "messages": messages, **extra})
    assert response.status_code == 201, response.content


@pytest.fixture
def history(as_alice, as_charlie):
    """Three sessions of alice (one empty) with every kind of field, and one of charlie."""
    save(
        as_alice,
        "first",
        [
            {"id": "q1", "role": "user", "content": "Bonjour, ça va ?", "timestamp": "2025-01-01T10:00:00Z"},
            {
                "id": "a1",
                "role": "assistant",
                "content": "**Oui**",
                "contentType": "markdown",
                "model": "gpt-4o",
                "originalModel": "gpt-4o-2024",
                "total_tokens": 30,
                "input_tokens": 10,
                "output_tokens": 20,
                "user_message_id": "q1",
                "elapsed_time": 1500,
                "completion_id": "cmpl-1",
                "timestamp": "2025-01-01T10:00:01.250Z",
                "suggestions": ["Et toi ?"],
                "reasoning": {"steps": 2},
            },
            {"id": "e1", "role": "assistant", "error_message": "timeout", "error_code": "t", "retry_after": 30},
        ],
        sessionTitle="Français",
    )
    save(
        as_alice,
        "second",
        [
            {"id": "x", "role": "system", "content": "same instant", "timestamp": "2025-01-02T00:00:00Z"},
            {"id": "w", "role": "user", "content": "same instant", "timestamp": "2025-01-02T00:00:00Z"},
        ],
    )
    ChatSession.objects.create(id="empty", user=ChatSession.objects.get(pk="first").user, title="Nothing yet")
    save(as_charlie, "theirs", [{"id": "c", "role": "user", "content": "charlie's"}])


def export(client) -> bytes:
    response = client.get(EXPORT)
    assert response.status_code == 200
    assert response["Content-Type"] == NDJSON
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def answers(client) -> dict[str, bytes]:
    """Every GET answer of the user's history, as bytes."""
    out = {"sessions": client.get(SESSIONS).content}
    for session in client.get(SESSIONS).json()["results"]:
        out[session["id"]] = client.get(MESSAGES, {"session_id": session["id"]}).content
    return out


def database() -> dict:
    return {
        "sessions": list(ChatSession.objects.order_by("pk").values()),
        "messages": list(ChatMessage.objects.order_by("pk").values()),
        "usage": list(UsageDay.objects.order_by("pk").values()),
    }


def import_(client, body: bytes):
    return client.generic("POST", IMPORT, body, content_type=NDJSON)


def test_export_lists_each_session_oldest_first_then_its_messages(history, as_alice):
    lines = [orjson.loads(line) for line in export(as_alice).splitlines()]

    assert [(line["type"], line.get("id")) for line in lines] == [
        ("session", "first"),
        ("message", "q1"),
        ("message", "a1"),
        ("message", "e1"),
        ("session", "second"),
        ("message", "x"),
        ("message", "w"),
        ("session", "empty"),
    ]
    assert set(lines[0]) == {"type", "id", "title", "created_at", "updated_at"}
    assert lines[0]["title"] == "Français"
    get = as_alice.get(MESSAGES, {"session_id": "first"}).json()
    assert [{k: v for k, v in line.items() if k not in ("type", "session_id")} for line in lines[1:4]] == get
    assert all(line["session_id"] == "first" for line in lines[1:4])
    assert lines[2]["reasoning"] == {"steps": 2}  # extra keys too


def test_export_erase_import_gives_back_the_same_answers_byte_for_byte(history, as_alice):
    before = answers(as_alice)
    dump = export(as_alice)

    assert as_alice.delete(SESSIONS + "?confirm=all").status_code == 204
    assert answers(as_alice) == {"sessions": as_alice.get(SESSIONS).content}
    assert as_alice.get(SESSIONS).json()["results"] == []

    response = import_(as_alice, dump)

    assert response.status_code == 200, response.content
    assert response.json() == {"sessions": 3, "messages": 5}
    assert answers(as_alice) == before
    assert export(as_alice) == dump


def test_importing_twice_changes_nothing(history, as_alice):
    dump = export(as_alice)
    assert import_(as_alice, dump).status_code == 200
    after_once = database()
    assert import_(as_alice, dump).status_code == 200
    assert database() == after_once


def test_importing_an_export_over_itself_changes_nothing(history, as_alice):
    before = database()
    assert import_(as_alice, export(as_alice)).status_code == 200
    assert database() == before


def test_a_bad_line_in_the_middle_writes_nothing(history, as_alice):
    lines = export(as_alice).splitlines()
    as_alice.delete(SESSIONS + "?confirm=all")
    before = database()
    bad = orjson.loads(lines[5])
    bad["total_tokens"] = -1
    body = b"\n".join([*lines[:5], orjson.dumps(bad), *lines[6:]])

    response = import_(as_alice, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["line"] == 6
    assert "total_tokens" in error["details"]["errors"]
    assert response.json()["message"].startswith("Line 6:")
    assert database() == before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "folder"}', "type must be"),
        (b'{"type": "message", "session_id": "nowhere", "id": "m", "role": "user"}', "no session line"),
        (b'{"type": "message", "session_id": "s", "role": "user"}', "needs its id"),
        (
            b'{"type": "session", "id": "bad id!", "title": "", "created_at": "2025-01-01T00:00:00Z", "updated_at": "x"}',
            "invalid session",
        ),
        (
            b'{"type": "message", "session_id": "s", "id": "m", "role": "user", "content": "a\\u0000b"}',
            "invalid message",
        ),
        (b'{"type": "message", "session_id": "s", "id": "dup", "role": "user"}', "appears twice"),
        (
            b'{"type": "session", "id": "s", "title": "", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}',
            "appears twice",
        ),
    ],
)
def test_every_kind_of_bad_line_is_named(as_alice, line, why):
    head = (
        b'{"type": "session", "id": "s", "title": "t", "created_at": "2025-01-01T00:00:00Z", '
        b'"updated_at": "2025-01-01T00:00:00Z"}\n{"type": "message", "session_id": "s", "id": "dup", "role": "user"}\n'
    )
    response = import_(as_alice, head + line + b"\n")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["details"]["line"] == 3
    assert why in response.json()["message"]
    assert not ChatSession.objects.exists()


def test_importing_another_users_session_is_forbidden_and_writes_nothing(history, as_alice, as_charlie):
    dump = export(as_charlie)
    before = database()
    own = b'{"type": "session", "id": "mine", "title": "", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}\n'

    response = import_(as_alice, own + dump)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"
    assert database() == before


def test_import_keeps_statistics_and_usage_right(as_alice):
    body = b"\n".join(
        [
            b'{"type": "session", "id": "s", "title": "Imported", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-03T00:00:00Z"}',
            b'{"type": "message", "session_id": "s", "id": "b", "role": "assistant", "model": "m", "total_tokens": 7, "input_tokens": 3, "output_tokens": 4, "timestamp": "2025-01-02T00:00:00Z"}',
            b'{"type": "message", "session_id": "s", "id": "a", "role": "user", "content": "older", "timestamp": "2025-01-01T00:00:00Z"}',
        ]
    )
    assert import_(as_alice, body).status_code == 200
    [session] = as_alice.get(SESSIONS).json()["results"]
    assert session["message_count"] == 2
    assert session["total_tokens"] == 7
    assert session["last_model"] == "m"
    assert session["title"] == "Imported"
    assert session["updated_at"] == "2025-01-03T00:00:00Z"
    usage = as_alice.get(USAGE, {"from": "2025-01-01", "to": "2025-01-31"}).json()
    assert usage["totals"] == {"messages": 2, "input_tokens": 3, "output_tokens": 4, "total_tokens": 7, "errors": 0}


def test_erase_deletes_every_session_of_the_caller_only_and_keeps_usage(history, as_alice, as_charlie):
    usage = as_alice.get(USAGE, {"from": "2025-01-01", "to": "2025-01-31"}).json()

    assert as_alice.delete(SESSIONS + "?confirm=all").status_code == 204

    assert not ChatSession.objects.filter(user__username="alice").exists()
    assert not ChatMessage.objects.filter(session__user__username="alice").exists()
    assert as_alice.get(USAGE, {"from": "2025-01-01", "to": "2025-01-31"}).json() == usage
    assert [s["id"] for s in as_charlie.get(SESSIONS).json()["results"]] == ["theirs"]
    assert as_alice.get("/api/chat/search", {"q": "instant"}).json()["results"] == []


@pytest.mark.parametrize("query", ["", "?confirm=yes", "?confirm=ALL", "?confirm="])
def test_erase_needs_confirm_all(history, as_alice, query):
    response = as_alice.delete(SESSIONS + query)
    assert response.status_code == 400
    assert ChatSession.objects.filter(user__username="alice").count() == 3


def test_import_takes_more_than_the_default_body_limit(as_alice, settings):
    settings.MAX_REQUEST_BODY_BYTES_BY_PATH = {IMPORT: 3 * 1024 * 1024}
    head = b'{"type": "session", "id": "s", "title": "", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}\n'
    messages = b"".join(
        orjson.dumps({"type": "message", "session_id": "s", "id": f"m{i}", "role": "user", "content": "x" * 1000})
        + b"\n"
        for i in range(2000)
    )
    assert len(head + messages) > 2 * 1024 * 1024
    response = import_(as_alice, head + messages)
    assert response.status_code == 200, response.content[:300]
    assert response.json() == {"sessions": 1, "messages": 2000}

    assert import_(as_alice, head + messages + messages[: 1024 * 1024]).status_code == 413
    big = {"sessionId": "s2", "message": {"role": "user", "content": "x" * (1024 * 1024)}}
    assert as_alice.post_json(MESSAGES, big).status_code == 413  # other paths keep 1 MiB


def session_line(session_id: str) -> bytes:
    return orjson.dumps(
        {
            "type": "session",
            "id": session_id,
            "title": "",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": "2025-01-01T00:00:00Z",
        }
    )


def message_line(session_id: str, message_id: str) -> bytes:
    return orjson.dumps({"type": "message", "session_id": session_id, "id": message_id, "role": "user"})


def test_an_import_takes_at_most_its_sessions_and_messages_and_the_one_past_is_named(as_alice, settings):
    settings.IMPORT_MAX_SESSIONS = 2
    settings.IMPORT_MAX_MESSAGES = 3
    at_limit = [session_line("s1"), message_line("s1", "a"), message_line("s1", "b"), session_line("s2")]
    at_limit.append(message_line("s2", "c"))
    assert import_(as_alice, b"\n".join(at_limit)).json() == {"sessions": 2, "messages": 3}
    as_alice.delete(SESSIONS + "?confirm=all")

    for extra, what in [(session_line("s3"), "2 sessions"), (message_line("s2", "d"), "3 messages")]:
        response = import_(as_alice, b"\n".join([*at_limit, extra]))
        assert response.status_code == 400, response.content
        assert response.json()["error"]["details"]["line"] == 6
        assert response.json()["message"] == f"Line 6: an import takes at most {what}: import the rest in another"
        assert not ChatSession.objects.exists()  # nothing of the lines before it either


def test_the_import_command_has_no_line_limits(as_alice, alice, settings, tmp_path):
    settings.IMPORT_MAX_SESSIONS = settings.IMPORT_MAX_MESSAGES = 1
    path = tmp_path / "chats.ndjson"
    path.write_bytes(
        b"\n".join([session_line("s1"), message_line("s1", "a"), message_line("s1", "b"), session_line("s2")])
    )
    call_command("import_sessions", str(path), "--user", alice.username, stdout=io.StringIO())
    assert ChatSession.objects.filter(user=alice).count() == 2
    assert ChatMessage.objects.filter(session__user=alice).count() == 2


def test_import_is_ndjson_only(as_alice):
    response = as_alice.post_json(IMPORT, {"type": "session"})
    assert response.status_code == 415


def test_export_and_import_need_credentials(anon):
    assert anon.get(EXPORT).status_code == 401
    assert import_(anon, b"").status_code == 401
    assert anon.delete(SESSIONS + "?confirm=all").status_code == 401
