"""export_session: a session and its messages, as the API shows them, to stdout."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat.models import ChatSession

URL = "/api/chat/messages"


def export(*args) -> str:
    out = StringIO()
    call_command("export_session", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def session(as_alice):
    response = as_alice.post_json(
        URL,
        {
            "sessionId": "conv_1",
            "sessionTitle": "Weather",
            "messages": [
                {"id": "m2", "role": "assistant", "content": "Sunny ☀️", "timestamp": "2025-01-01T10:00:05.250Z"},
                {"id": "m1", "role": "user", "content": "Weather?", "timestamp": "2025-01-01T10:00:00Z"},
                {
                    "id": "m3",
                    "role": "assistant",
                    "content": "",
                    "error_message": "upstream timeout",
                    "suggestions": ["retry"],
                    "total_tokens": 3,
                },
            ],
        },
    )
    assert response.status_code == 201
    return "conv_1"


def test_json_is_the_session_and_its_messages_in_the_api_shapes(session, as_alice, alice):
    exported = json.loads(export(session))
    assert exported["messages"] == as_alice.get(URL, {"session_id": session}).json()
    assert [m["id"] for m in exported["messages"]] == ["m1", "m2", "m3"]
    (listed,) = as_alice.get("/api/chat/sessions").json()["results"]
    assert exported["session"] == {**listed, "user": alice.username, "guest_name": ""}


def test_jsonl_is_the_session_then_one_message_per_line(session, as_alice):
    lines = export(session, "--format", "jsonl").splitlines()
    assert json.loads(lines[0])["id"] == session
    assert [json.loads(line) for line in lines[1:]] == as_alice.get(URL, {"session_id": session}).json()


def test_a_guest_session_is_exported_without_its_session_key(db):
    guest = ChatSession.objects.create(id="guest_abc", guest_name="Ann")
    text = export(guest.pk)
    exported = json.loads(text)
    assert exported == {"session": exported["session"], "messages": []}
    assert exported["session"]["user"] is None and exported["session"]["guest_name"] == "Ann"
    assert str(guest.session_key) not in text and guest.session_key.hex not in text


def test_an_unknown_session_is_a_command_error(db):
    with pytest.raises(CommandError, match="unknown session: nope"):
        export("nope")


def test_an_unknown_format_is_refused(session):
    with pytest.raises(CommandError):
        export(session, "--format", "xml")
