"""Outages: an unreachable database is a 503 envelope, and a transaction killed
mid-request leaves nothing half-written."""

import psycopg
import pytest
from django.db import connection

from chat.models import ChatMessage, ChatSession
from chat.services import messages as message_services

URL = "/api/chat/messages"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unreachable_database():
    """Point the connection at nothing, then put it back."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = "1"  # nothing listens on port 1: refused at once
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.mark.postgres  # the embedded SQLite database cannot be unreachable
def test_an_unreachable_database_is_a_503_envelope(alice, staff, request):
    from django.test import Client

    from tests.support import ApiClient

    admin = Client()
    admin.force_login(staff)  # a session the admin must look up in the database
    request.getfixturevalue("unreachable_database")
    for response in (
        ApiClient(alice.api_token).get(URL, {"session_id": "s1"}),
        ApiClient(alice.api_token).post_json(URL, {"sessionId": "s1", "message": {"role": "user"}}),
        admin.get("/admin/chat/chatsession/"),
    ):
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == {"code": "SERVICE_UNAVAILABLE", "details": None}
        assert response["Retry-After"]
        assert "Traceback" not in response.content.decode() and "port" not in body["message"].lower()


@pytest.mark.postgres
def test_a_connection_killed_mid_transaction_leaves_no_partial_array(as_alice, monkeypatch):
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": "kept", "role": "user", "content": "before"}})
    original_write = message_services.session_messages_write

    def write_then_lose_the_connection(**kwargs):
        rows = original_write(**kwargs)  # the array is inserted, in the open transaction...
        pid = connection.connection.info.backend_pid
        params = connection.get_connection_params()
        with psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])  # ...then the server drops it
        return rows

    monkeypatch.setattr(message_services, "session_messages_write", write_then_lose_the_connection)
    array = [{"id": f"m{i}", "role": "user", "content": str(i)} for i in range(5)]
    response = as_alice.post_json(URL, {"sessionId": "s1", "messages": [{"id": "kept", "role": "user"}, *array]})
    monkeypatch.undo()

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert list(ChatMessage.objects.values_list("message_id", "content")) == [("kept", "before")]
    assert ChatSession.objects.get(pk="s1").message_count == 1
    # The next request gets a fresh connection and succeeds.
    assert as_alice.post_json(URL, {"sessionId": "s1", "messages": array}).status_code == 201
    assert ChatSession.objects.get(pk="s1").message_count == 6
