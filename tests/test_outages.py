"""Outages: an unreachable database is a 503 envelope, and a transaction killed
mid-request leaves nothing half-written."""

import psycopg
import pytest
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from chat import services
from chat.models import ChatMessage, ChatSession, UsageDay
from tests.support import ApiClient, poll_until, run_together

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


@pytest.fixture
def paused_after_insert():
    """Every insert of messages pauses (pg_sleep) once its rows are in, before its transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_pause() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_pause AFTER INSERT ON chat_messages FOR EACH STATEMENT EXECUTE FUNCTION test_pause()"
        )

    def remove() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_pause ON chat_messages")
            cursor.execute("DROP FUNCTION IF EXISTS test_pause()")

    yield remove
    remove()


def kill_the_paused_writer() -> int:
    """Terminate the backend that sits in the pause with the rows inserted; its pid."""

    def paused() -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
            )
            row = cursor.fetchone()
        return row[0] if row else None

    pid = poll_until(paused, timeout=30, what="a writer paused after its insert")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    return pid


@pytest.mark.postgres
def test_a_connection_killed_mid_write_leaves_no_partial_array(as_alice, alice, request):
    """The server drops the writer's connection after the messages are in and before
    the write committed: a 503, nothing of it stored, and the next request works."""
    as_alice.post_json(URL, {"sessionId": "s1", "message": {"id": "kept", "role": "user", "content": "before"}})
    unpause = request.getfixturevalue("paused_after_insert")
    array = [{"id": f"m{i}", "role": "user", "content": str(i)} for i in range(5)]

    def work(i: int):
        if i == 1:
            return kill_the_paused_writer()
        body = {"sessionId": "s1", "messages": [{"id": "kept", "role": "user"}, *array]}
        return ApiClient(alice.api_token).post_json(URL, body)

    response, _ = run_together(2, work)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert list(ChatMessage.objects.values_list("message_id", "content")) == [("kept", "before")]
    session = ChatSession.objects.get(pk="s1")
    assert (session.message_count, session.last_message_preview) == (1, "before")
    assert list(UsageDay.objects.values_list("messages", flat=True)) == [1]
    unpause()
    assert as_alice.post_json(URL, {"sessionId": "s1", "messages": array}).status_code == 201
    assert ChatSession.objects.get(pk="s1").message_count == 6


@pytest.mark.postgres
@pytest.mark.parametrize("sql", [True, False], ids=["one-statement", "orm"])
def test_a_service_write_killed_mid_write_stores_nothing_and_the_next_one_works(alice, request, sql):
    services.messages_save(user=alice, session_id="s1", messages=[{"message_id": "kept", "role": "user"}])
    unpause = request.getfixturevalue("paused_after_insert")
    array = [{"message_id": f"m{i}", "role": "user", "content": str(i)} for i in range(5)]

    def work(i: int):
        if i == 1:
            return kill_the_paused_writer()
        services.messages_save(user=alice, session_id="s1", messages=array, sql=sql)
        return "written"

    raised, _ = run_together(2, work)

    assert isinstance(raised, (OperationalError, InterfaceError)), raised
    assert list(ChatMessage.objects.values_list("message_id", flat=True)) == ["kept"]
    assert ChatSession.objects.get(pk="s1").message_count == 1
    unpause()
    services.messages_save(user=alice, session_id="s1", messages=array, sql=sql)
    assert ChatSession.objects.get(pk="s1").message_count == 6


def admin_connection():
    """A connection of its own to the test database, outside Django's."""
    params = connection.get_connection_params()
    return psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"}, autocommit=True)


def last_query_of(admin, pid: int) -> str:
    return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


@pytest.mark.postgres
def test_a_kept_connection_the_server_dropped_is_replaced_before_the_next_request(as_alice):
    """chat.postgresql: the server's goodbye makes the health check look closer, and reconnect."""
    assert as_alice.get(URL, {"session_id": "s1"}).status_code == 404
    pid = connection.connection.info.backend_pid
    with admin_connection() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        poll_until(
            lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone(),
            timeout=10,
            what="the backend's exit",
        )
    close_old_connections()  # what Django runs when a request starts: the next query is health-checked
    assert as_alice.get(URL, {"session_id": "s1"}).status_code == 404
    assert connection.connection.info.backend_pid != pid


@pytest.mark.postgres
def test_a_sound_kept_connection_is_health_checked_without_a_query(as_alice):
    assert as_alice.get(URL, {"session_id": "s1"}).status_code == 404
    pid = connection.connection.info.backend_pid
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'the last query'")
    with admin_connection() as admin:
        close_old_connections()
        connection.close_if_health_check_failed()  # what the next request's first query runs first
        assert connection.health_check_done
        assert connection.connection.info.backend_pid == pid
        assert last_query_of(admin, pid) == "SELECT 'the last query'"  # no SELECT 1 was sent
        # A connection left inside a transaction is asked the old way.
        connection.connection.execute("BEGIN")
        assert connection.is_usable()
        assert last_query_of(admin, pid) == "SELECT 1"
        connection.connection.execute("ROLLBACK")
