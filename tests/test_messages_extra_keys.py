"""Extra keys: a message's keys that the GET shape does not name survive a save and a reload."""

import json

import pytest
from django.core.management import call_command
from django.db import connection

from chat.models import ChatMessage
from chat.selectors import MESSAGE_FIELDS

URL = "/api/chat/messages"


def save(client, session_id, *messages):
    return client.post_json(URL, {"sessionId": session_id, "messages": list(messages)})


def test_extra_keys_come_back_after_the_known_ones_in_the_order_sent(as_alice):
    extra = {"zeta": 1, "reasoning": {"steps": ["a", "b"], "ok": True}, "alpha": None, "files": [1.5, "x"]}
    response = save(as_alice, "s1", {"id": "m1", "role": "assistant", "content": "hi", **extra})
    assert response.status_code == 201, response.content

    posted = response.json()["messages"][0]
    read = as_alice.get(URL, {"session_id": "s1"}).json()[0]
    for message in (posted, read):
        keys = list(message)
        assert keys[: len(MESSAGE_FIELDS)] == list(MESSAGE_FIELDS)
        assert keys[len(MESSAGE_FIELDS) :] == list(extra)
        assert {k: message[k] for k in extra} == extra
    assert posted == read


def test_a_message_without_extra_keys_stores_none(as_alice):
    save(as_alice, "s1", {"id": "m1", "role": "user"})
    assert ChatMessage.objects.get().extra is None
    assert len(as_alice.get(URL, {"session_id": "s1"}).json()[0]) == 18


def test_an_upsert_replaces_the_extra_keys_with_the_new_ones(as_alice):
    save(as_alice, "s1", {"id": "m1", "role": "user", "a": 1, "b": 2})
    save(as_alice, "s1", {"id": "m1", "role": "user", "c": 3})
    assert as_alice.get(URL, {"session_id": "s1"}).json()[0]["c"] == 3
    assert "a" not in as_alice.get(URL, {"session_id": "s1"}).json()[0]
    save(as_alice, "s1", {"id": "m1", "role": "user"})
    assert len(as_alice.get(URL, {"session_id": "s1"}).json()[0]) == 18


def test_extra_keys_over_16_kib_are_a_400_naming_the_message_and_nothing_is_saved(as_alice):
    ok = {"id": "fine", "role": "user", "blob": "x" * 16_000}
    too_big = {"id": "big-one", "role": "user", "blob": "x" * 16_384}
    response = save(as_alice, "s1", ok, too_big)

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert "big-one" in json.dumps(details) and '"1"' in json.dumps(details)
    assert not ChatMessage.objects.exists()
    assert save(as_alice, "s1", ok).status_code == 201


def test_the_bound_is_on_the_serialized_size_of_all_extra_keys_together(as_alice):
    # 16,384 bytes exactly fits: {"a":"...","b":"..."} counted as compact JSON.
    fixed = len(b'{"a":"","b":""}')
    half = (16 * 1024 - fixed) // 2
    fits = {"id": "m1", "role": "user", "a": "x" * half, "b": "y" * (16 * 1024 - fixed - half)}
    assert save(as_alice, "s1", fits).status_code == 201
    assert save(as_alice, "s1", {**fits, "b": fits["b"] + "y"}).status_code == 400


def test_extra_keys_nested_too_deep_to_write_are_a_400_not_a_500(as_alice):
    deep: list = []
    for _ in range(400):
        deep = [deep]
    response = save(as_alice, "s1", {"id": "m1", "role": "user", "deep": deep})
    assert response.status_code == 400
    assert "m1" in json.dumps(response.json()["error"]["details"])


def test_a_single_message_body_keeps_its_extra_keys_too(as_alice):
    response = as_alice.post_json(URL, {"sessionId": "s1", "message": {"role": "user", "x-client": "v2"}})
    assert response.status_code == 201
    assert response.json()["messages"][0]["x-client"] == "v2"


def test_stored_extra_keys_never_replace_a_known_key(as_alice):
    save(as_alice, "s1", {"id": "m1", "role": "user", "content": "real", "note": "kept"})
    # As if a stored row carried a known key among its extras (an import, an older bug).
    ChatMessage.objects.update(extra={"content": "forged", "role": "system", "note": "kept"})

    message = as_alice.get(URL, {"session_id": "s1"}).json()[0]
    assert (message["content"], message["role"], message["note"]) == ("real", "user", "kept")
    assert list(message)[-1] == "note"


def test_extra_keys_with_unicode_and_nul_escapes_round_trip(as_alice):
    extra = {"ключ": "значение 🎉", "nul": "a\u0000b", "": "empty key"}
    assert save(as_alice, "s1", {"id": "m1", "role": "user", **extra}).status_code == 201
    message = as_alice.get(URL, {"session_id": "s1"}).json()[0]
    assert {k: message[k] for k in extra} == extra


def test_export_session_writes_the_extra_keys(as_alice, capsys):
    save(as_alice, "s1", {"id": "m1", "role": "user", "note": "kept"})
    call_command("export_session", "s1")
    assert json.loads(capsys.readouterr().out)["messages"][0]["note"] == "kept"


@pytest.mark.postgres
def test_the_column_is_json_so_the_database_keeps_the_key_order(as_alice):
    save(as_alice, "s1", {"id": "m1", "role": "user", "z": 1, "a": 2})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_typeof(extra)::text, extra::text FROM chat_messages")
        assert cursor.fetchone() == ("json", '{"z":1,"a":2}')
