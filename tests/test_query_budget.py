"""The query budget of the messages endpoints: GET ≤ 2, POST ≤ 7, whatever the size.

POST: authentication, the session (lock, or create and lock), the messages, the
session's statistics, the usage ledger (one upsert) and, on upserts, the replaced rows.

Transactional tests, so that no test-wrapping savepoints are counted: these are
the statements a production request sends. The budget counts SQL statements;
transaction control (BEGIN, COMMIT, which Django logs as queries too) is
reported but not counted: it is one atomic block, whatever the request.
"""

from contextlib import contextmanager

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

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
def test_post_to_a_new_session_is_at_most_seven_queries(as_alice, assert_max_statements, size):
    messages = [{"role": "user", "content": str(i)} for i in range(size)]
    with assert_max_statements(7):
        assert as_alice.post_json(URL, {"sessionId": "new", "messages": messages}).status_code == 201


@pytest.mark.parametrize("size", SIZES)
def test_post_to_an_existing_session_is_at_most_seven_queries(as_alice, assert_max_statements, size):
    as_alice.post_json(URL, {"sessionId": "s1", "messages": [m for i in range(60) for m in pair(i)]})
    messages = [{"role": "user", "content": str(i)} for i in range(size)]
    with assert_max_statements(7):
        assert as_alice.post_json(URL, {"sessionId": "s1", "messages": messages}).status_code == 201


@pytest.mark.postgres
def test_upserting_a_hundred_messages_is_at_most_seven_queries(as_alice, assert_max_statements):
    batch = [m for i in range(50) for m in pair(i)]
    as_alice.post_json(URL, {"sessionId": "s1", "messages": batch})
    with assert_max_statements(7):
        assert as_alice.post_json(URL, {"sessionId": "s1", "sessionTitle": "t", "messages": batch}).status_code == 201
