"""Reads that may lag on a real streaming replica (chat.replica), through a real server.

The test starts its own PostgreSQL primary and a replica of it (initdb,
pg_basebackup -R; bench/scale/procs.py) that applies every commit 1.5 s late
(recovery_min_apply_delay), so "the replica has not got it yet" is certain, not a
race. gunicorn serves with DATABASE_URL on that primary and DATABASE_REPLICA_URL on
the replica.
"""

import json
import os
import secrets
import time

import psycopg
import pytest

from bench.scale.procs import PostgresPair, Unavailable
from chat import replica
from tests.support import call, manage, metric, poll_until, server_env, skip_or_fail, start_app

pytestmark = [pytest.mark.server, pytest.mark.redis, pytest.mark.postgres]

APPLY_DELAY = 1.5  # seconds the replica waits before applying a commit
METRICS_TOKEN = secrets.token_hex(16)
GUEST_SESSIONS = "/api/v1/chat/guest/sessions"


@pytest.fixture(scope="module")
def pair():
    try:
        procs = PostgresPair(replica_conf=f"recovery_min_apply_delay = '{int(APPLY_DELAY * 1000)}ms'").start()
    except Unavailable as error:
        skip_or_fail(str(error))
    yield procs
    procs.stop()


@pytest.fixture(scope="module")
def app(pair, tmp_path_factory):
    """gunicorn on the pair; yields (port, a user's token)."""
    tmp = tmp_path_factory.mktemp("replica")
    env = {
        "DATABASE_URL": pair.create_database("chat"),
        "DATABASE_REPLICA_URL": pair.url("chat", replica=True),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CACHE_KEY_PREFIX": "replica-test-" + secrets.token_hex(4),
        "METRICS_TOKEN": METRICS_TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "REPLICA_MAX_LAG_SECONDS": "10",  # the 1.5 s delay keeps the replica usable
    }
    manage("migrate", "--noinput", env=server_env(**env))
    token = manage("issue_token", "alice", "--create", env=server_env(**env)).strip().splitlines()[-1]
    with start_app(tmp, env=env, workers=2) as port:
        yield port, token


def on_replica(pair: PostgresPair, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(pair.url("chat", replica=True), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def post_json(port: int, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    status, _, raw = call(port, "POST", path, headers, json.dumps(body).encode())
    return status, json.loads(raw)


def get_json(port: int, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, _, raw = call(port, "GET", path, headers)
    return status, json.loads(raw)


def test_a_guest_reads_its_own_writes_at_once_while_the_replica_is_behind(app, pair):
    port, _ = app
    reads_before = metric(port, "chat_replica_reads_total", METRICS_TOKEN)
    own_before = metric(port, "chat_replica_fallbacks_total", METRICS_TOKEN, reason="recent_write")

    status, created = post_json(port, GUEST_SESSIONS, {})
    assert status == 201
    key = created["data"]["session_key"]
    status, polled = get_json(port, f"/api/v1/chat/guest/{key}/messages")
    assert status == 200, polled  # the new session, though the replica does not have it yet
    assert on_replica(pair, "SELECT 1 FROM chat_sessions WHERE session_key = %s", (key,)) == []

    sent = []
    for n in range(3):
        status, body = post_json(port, f"/api/v1/chat/guest/{key}/messages", {"content": f"hello {n}"})
        assert status == 201
        sent.append(body["data"]["id"])
        status, polled = get_json(port, f"/api/v1/chat/guest/{key}/messages?last_message_id=0")
        assert [m["id"] for m in polled["data"]] == sent  # every write of mine, at once
    assert on_replica(pair, "SELECT id FROM chat_messages WHERE id = %s", (sent[-1],)) == []
    assert metric(port, "chat_replica_fallbacks_total", METRICS_TOKEN, reason="recent_write") >= own_before + 4

    # Once the replica has replayed the guest's last write, its polls are served there.
    poll_until(
        lambda: on_replica(pair, "SELECT id FROM chat_messages WHERE id = %s", (sent[-1],)), timeout=15, what="replay"
    )
    status, polled = get_json(port, f"/api/v1/chat/guest/{key}/messages?last_message_id=0")
    assert [m["id"] for m in polled["data"]] == sent
    assert metric(port, "chat_replica_reads_total", METRICS_TOKEN) >= reads_before + 1


def test_the_session_list_shows_a_new_session_at_once(app, pair):
    port, token = app
    auth = {"Authorization": f"Bearer {token}"}
    session_id = "replica-" + secrets.token_hex(4)
    status, _ = post_json(
        port, "/api/chat/messages", {"sessionId": session_id, "message": {"role": "user", "content": "Hi"}}, auth
    )
    assert status == 201
    status, listed = get_json(port, "/api/chat/sessions", auth)
    assert status == 200
    assert session_id in [s["id"] for s in listed["results"]]
    assert on_replica(pair, "SELECT 1 FROM chat_sessions WHERE id = %s", (session_id,)) == []


def test_search_usage_and_export_show_the_callers_own_write_at_once_then_read_the_replica(app, pair):
    port, token = app
    auth = {"Authorization": f"Bearer {token}"}
    word = "zq" + secrets.token_hex(6)  # in no other message
    model = "replica-model-" + secrets.token_hex(4)
    message_id = "m-" + secrets.token_hex(4)
    message = {
        "id": message_id,
        "role": "assistant",
        "content": f"the {word} answer",
        "model": model,
        "total_tokens": 7,
    }
    status, _ = post_json(port, "/api/chat/messages", {"sessionId": "replica-data", "message": message}, auth)
    assert status == 201

    def read_all() -> dict[str, object]:
        status, found = get_json(port, f"/api/chat/search?q={word}", auth)
        assert status == 200, found
        status, usage = get_json(port, "/api/chat/usage", auth)
        assert status == 200, usage
        status, _, exported = call(port, "GET", "/api/chat/export", auth)
        assert status == 200
        return {
            "search": [r["message"]["id"] for r in found["results"]],
            "usage": [(d["model"], d["messages"], d["total_tokens"]) for d in usage["days"] if d["model"] == model],
            "export": [
                line["id"]
                for line in map(json.loads, exported.splitlines())
                if line["type"] == "message" and line["session_id"] == "replica-data"
            ],
        }

    expected = {"search": [message_id], "usage": [(model, 1, 7)], "export": [message_id]}
    assert read_all() == expected  # the caller's own write, though the replica does not have it yet
    assert on_replica(pair, "SELECT 1 FROM chat_messages WHERE message_id = %s", (message_id,)) == []

    # Once the replica has replayed the write, the three reads are served there.
    poll_until(
        lambda: on_replica(pair, "SELECT 1 FROM chat_messages WHERE message_id = %s", (message_id,)),
        timeout=15,
        what="replay",
    )
    reads_before = metric(port, "chat_replica_reads_total", METRICS_TOKEN)
    assert read_all() == expected
    assert metric(port, "chat_replica_reads_total", METRICS_TOKEN) >= reads_before + 3


def test_a_stopped_replica_sends_reads_to_the_primary_and_is_used_again_when_back(app, pair):
    port, _ = app
    status, created = post_json(port, GUEST_SESSIONS, {})
    key = created["data"]["session_key"]
    status, _ = post_json(port, f"/api/v1/chat/guest/{key}/messages", {"content": "before the outage"})
    assert status == 201
    down_before = metric(port, "chat_replica_fallbacks_total", METRICS_TOKEN, reason="down")

    pair.stop_replica()
    try:
        started = time.monotonic()
        for _ in range(6):  # both workers, more than once
            status, polled = get_json(port, f"/api/v1/chat/guest/{key}/messages")
            assert status == 200
            assert [m["content"] for m in polled["data"]] == ["before the outage"]
        assert time.monotonic() - started < 10  # a dead replica costs a connect timeout, not a hang
        assert metric(port, "chat_replica_fallbacks_total", METRICS_TOKEN, reason="down") > down_before
    finally:
        pair.start_replica()

    def served_by_replica() -> bool:
        before = metric(port, "chat_replica_reads_total", METRICS_TOKEN)
        get_json(port, f"/api/v1/chat/guest/{key}/messages")
        return metric(port, "chat_replica_reads_total", METRICS_TOKEN) > before

    poll_until(served_by_replica, timeout=30, what="reads going to the replica again", interval=0.5)


def test_without_a_replica_every_read_is_on_the_primary_and_nothing_is_recorded(settings):
    assert "replica" not in settings.DATABASES
    assert replica.read_alias(caller="u:1") == "default"
    assert replica.lsn_to_int("16/B374D848") == (0x16 << 32) + 0xB374D848
