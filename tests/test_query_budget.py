"""The query budget of the write and read endpoints, whatever the size.

GET messages: 2 (the token, then the session joined to its messages).

Writes on PostgreSQL: one statement, outside any transaction (chat.services.write_sql:
the lock, the messages, the statistics and the ledger in one round trip, committed on
its own without waiting for the disk), then one that waits for the WAL's flush once
the lock is released, plus the token for an authenticated caller: POST messages 3, a
staff reply 3, a guest send 2. On SQLite (the ORM): POST ≤ 7 (the token, the session: lock, or
create and lock; on upserts the replaced rows; the messages; the statistics; the
ledger; on upserts the newest message), in one transaction.

Transactional tests, so that no test-wrapping savepoints are counted: these are
the statements a production request sends. The budget counts SQL statements;
transaction control (BEGIN, COMMIT, which Django logs as queries too) is
reported but not counted: it is one atomic block, whatever the request.
"""

from contextlib import contextmanager

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.services.write_sql import FLUSH_SQL

URL = "/api/chat/messages"

pytestmark = pytest.mark.django_db(transaction=True)

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@pytest.fixture
def assert_max_statements():
    @contextmanager
    def check(budget: int):
        with CaptureQueriesContext(connection) as captured:
            yield
        statements = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
        control = len(captured.captured_queries) - len(statements)
        assert control <= 2, "one transaction at most"
        assert len(statements) <= budget, "\n".join(s[:120] for s in statements)

    return check


def write_budget(postgresql: int, orm: int = 7) -> int:
    return postgresql if connection.vendor == "postgresql" else orm


@pytest.fixture
def assert_one_statement_write():
    """PostgreSQL: the write is one statement with no transaction around it (its lock is
    held for that statement alone), after `before` statements (the token), and the
    flush after it."""

    @contextmanager
    def check(*, before: int):
        with CaptureQueriesContext(connection) as captured:
            yield
        sql = [q["sql"] for q in captured.captured_queries]
        if connection.vendor == "postgresql":
            assert len(sql) == before + 2, "\n".join(s[:120] for s in sql)
            assert "chat_session_write(" in sql[-2] and sql[-1] == FLUSH_SQL, "\n".join(s[:120] for s in sql)

    return check


def anon_post(client, url: str, body: dict | None = None):
    """A POST without the client's credentials (the guest endpoints need none)."""
    return client.post(url, data=body or {}, content_type="application/json", HTTP_AUTHORIZATION="")


def pair(i: int) -> list[dict]:
    return [
        {"id": f"u{i}", "role": "user", "content": f"question {i}", "total_tokens": 3},
        {"id": f"a{i}", "role": "assistant", "content": f"answer {i}", "model": "m", "total_tokens": 5},
    ]


def test_get_messages_is_two_queries_for_a_long_session(as_alice, assert_max_statements):
    as_alice.post_json(URL, {"sessionId": "s1", "messages": [m for i in range(50) for m in pair(i)]})

    with assert_max_statements(2):
        response = as_alice.get(URL, {"session_id": "s1"})
    assert len(response.json()) == 100


# Django splits an SQLite insert at 999 parameters (a hundred messages are three
# statements there), so the hundred-message budget is asserted on PostgreSQL.
SIZES = [1, 2, pytest.param(100, marks=pytest.mark.postgres)]


@pytest.mark.parametrize("size", SIZES)
def test_post_to_a_new_session_is_three_statements(as_alice, assert_max_statements, assert_one_statement_write, size):
    messages = [{"role": "user", "content": str(i)} for i in range(size)]
    with assert_max_statements(write_budget(3)), assert_one_statement_write(before=1):
        assert as_alice.post_json(URL, {"sessionId": "new", "messages": messages}).status_code == 201


@pytest.mark.parametrize("size", SIZES)
def test_post_to_an_existing_session_is_three_statements(
    as_alice, assert_max_statements, assert_one_statement_write, size
):
    as_alice.post_json(URL, {"sessionId": "s1", "messages": [m for i in range(60) for m in pair(i)]})
    messages = [{"role": "user", "content": str(i)} for i in range(size)]
    with assert_max_statements(write_budget(3)), assert_one_statement_write(before=1):
        assert as_alice.post_json(URL, {"sessionId": "s1", "messages": messages}).status_code == 201


@pytest.mark.postgres
def test_upserting_a_hundred_messages_is_three_statements(as_alice, assert_max_statements, assert_one_statement_write):
    batch = [m for i in range(50) for m in pair(i)]
    as_alice.post_json(URL, {"sessionId": "s1", "messages": batch})
    with assert_max_statements(3), assert_one_statement_write(before=1):
        assert as_alice.post_json(URL, {"sessionId": "s1", "sessionTitle": "t", "messages": batch}).status_code == 201


def test_a_guest_send_is_two_statements_and_a_staff_reply_three(
    as_staff, assert_max_statements, assert_one_statement_write
):
    key = anon_post(as_staff, "/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    with assert_max_statements(write_budget(2, orm=6)), assert_one_statement_write(before=0):
        response = anon_post(as_staff, f"/api/v1/chat/guest/{key}/messages", {"content": "hello", "id": "g-1"})
    assert response.status_code == 201
    with assert_max_statements(write_budget(3, orm=6)), assert_one_statement_write(before=1):
        assert as_staff.post_json(f"/api/v1/chat/guest/{key}/replies", {"content": "hi"}).status_code == 201
