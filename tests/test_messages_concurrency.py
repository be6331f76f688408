"""Concurrent writers on PostgreSQL: exact counters, one row per id, no 500s, no orphans."""

import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from chat import services
from chat.management.commands.recount_usage import drift
from chat.models import ChatMessage, ChatSession
from tests.support import ApiClient, poll_until, run_together

URL = "/api/chat/messages"

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_many_writers_to_one_session_keep_exact_counters(alice):
    ApiClient(alice.api_token).post_json(URL, {"sessionId": "s1", "message": {"role": "system", "total_tokens": 1}})
    writers, rounds = 8, 5

    def work(i: int) -> list[int]:
        client = ApiClient(alice.api_token)
        statuses = []
        for r in range(rounds):
            pair = [
                {"id": f"u{i}-{r}", "role": "user", "content": "q", "total_tokens": 2},
                {"id": f"a{i}-{r}", "role": "assistant", "content": "a", "total_tokens": 3, "model": "m"},
            ]
            statuses.append(client.post_json(URL, {"sessionId": "s1", "messages": pair}).status_code)
        return statuses

    results = run_together(writers, work)

    assert all(statuses == [201] * rounds for statuses in results), results
    session = ChatSession.objects.get(pk="s1")
    assert session.message_count == 1 + writers * rounds * 2 == ChatMessage.objects.count()
    assert session.total_tokens == 1 + writers * rounds * 5


def test_both_engines_writing_one_session_at_once_keep_it_exact(alice):
    """The one-statement write and the ORM's take the same row lock: mixed, racing,
    re-saving each other's ids, they leave statistics and usage equal to a recount."""
    services.messages_save(user=alice, session_id="s1", messages=[{"message_id": "seed", "role": "system"}])
    writers, rounds = 6, 6

    def work(i: int) -> None:
        for r in range(rounds):
            batch = [
                {"message_id": f"new-{i}-{r}", "role": "user", "content": "q", "total_tokens": 2},
                # Re-saved by everyone: other tokens, models and times each time.
                {
                    "message_id": f"hot-{r % 3}",
                    "role": "assistant",
                    "content": f"{i}/{r}",
                    "total_tokens": i + r,
                    "model": f"m{i % 2}",
                    "timestamp": datetime(2025, 1, 1 + r, i, tzinfo=UTC),
                },
            ]
            services.messages_save(user=alice, session_id="s1", messages=batch, sql=(i + r) % 2 == 0)

    results = run_together(writers, work)

    assert results == [None] * writers, results
    stored = ChatMessage.objects.filter(session_id="s1")
    session = ChatSession.objects.get(pk="s1")
    assert session.message_count == stored.count() == 1 + writers * rounds + 3
    assert session.total_tokens == sum(m.total_tokens or 0 for m in stored)
    newest = stored.order_by("-timestamp", "-id").first()
    assert (session.last_message_id, session.last_model) == (newest.pk, newest.model)
    assert drift([alice.pk]) == []  # the live ledger equals the messages, row by row


def test_the_same_id_upserted_in_parallel_is_one_row(alice):
    ApiClient(alice.api_token).post_json(URL, {"sessionId": "s1", "message": {"role": "system"}})

    def work(i: int) -> int:
        message = {"id": "same", "role": "assistant", "content": f"version {i}", "total_tokens": i}
        return ApiClient(alice.api_token).post_json(URL, {"sessionId": "s1", "message": message}).status_code

    results = run_together(8, work)

    assert results == [201] * 8
    [row] = ChatMessage.objects.filter(message_id="same")
    session = ChatSession.objects.get(pk="s1")
    assert session.message_count == 2
    assert session.total_tokens == row.total_tokens  # the last write's tokens, counted once


def test_racing_first_posts_to_a_new_session_make_one_session(alice):
    def work(i: int) -> int:
        message = {"id": f"m{i}", "role": "user", "content": f"first from {i}"}
        return ApiClient(alice.api_token).post_json(URL, {"sessionId": "brand-new", "message": message}).status_code

    results = run_together(6, work)

    assert results == [201] * 6
    session = ChatSession.objects.get(pk="brand-new")
    assert session.message_count == 6 == ChatMessage.objects.filter(session=session).count()
    assert session.title.startswith("first from ")


def test_racing_first_posts_by_two_users_give_one_owner_and_one_403(alice, charlie):
    tokens = [alice.api_token, charlie.api_token]

    def work(i: int) -> int:
        return ApiClient(tokens[i]).post_json(URL, {"sessionId": "contested", "message": {"role": "user"}}).status_code

    results = run_together(2, work)

    assert sorted(results) == [201, 403]
    session = ChatSession.objects.get(pk="contested")
    assert session.message_count == 1 == ChatMessage.objects.count()


def test_deleting_a_session_while_messages_are_posted_leaves_no_orphans(alice):
    client = ApiClient(alice.api_token)
    client.post_json(URL, {"sessionId": "doomed", "message": {"role": "user"}})

    def work(i: int) -> list[int]:
        client = ApiClient(alice.api_token)
        if i == 0:
            return [client.delete("/api/chat/sessions/doomed").status_code for _ in range(3)]
        return [
            client.post_json(URL, {"sessionId": "doomed", "message": {"role": "user", "content": str(n)}}).status_code
            for n in range(5)
        ]

    results = run_together(4, work)

    assert all(isinstance(r, list) for r in results), results
    assert set(results[0]) <= {204, 404}
    assert Counter(s for r in results[1:] for s in r) == Counter({201: 15})
    orphans = ChatMessage.objects.exclude(session__in=ChatSession.objects.all()).count()
    assert orphans == 0
    for session in ChatSession.objects.all():
        assert session.message_count == ChatMessage.objects.filter(session=session).count()


def test_updated_at_never_moves_backwards_when_a_writer_waited_for_the_lock(alice):
    """A writer waiting for the session's lock reads the time once it holds it, not before."""
    services.messages_save(user=alice, session_id="s1", messages=[{"message_id": "first", "role": "user"}])
    locked, release = threading.Event(), threading.Event()
    errors: list = []

    def holder() -> None:  # holds the lock while the other writer queues, then writes
        try:
            with transaction.atomic():
                services.session_lock(session_id="s1")
                locked.set()
                release.wait(timeout=10)
                services.messages_save(user=alice, session_id="s1", messages=[{"message_id": "h", "role": "user"}])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def waiter() -> None:
        try:
            locked.wait(timeout=10)
            services.messages_save(user=alice, session_id="s1", messages=[{"message_id": "w", "role": "user"}])
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for thread in threads:
        thread.start()

    def waiter_is_blocked() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] == 1

    poll_until(waiter_is_blocked, timeout=10, what="the second writer waiting for the session's lock")
    release.set()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    session = ChatSession.objects.get(pk="s1")
    written = dict(ChatMessage.objects.filter(session=session).values_list("message_id", "created_at"))
    assert written["w"] > written["h"]  # the waiter wrote last, at a later time
    assert session.updated_at == written["w"]


def test_the_next_writer_of_a_session_does_not_wait_for_the_disk_flush_of_the_one_before(alice):
    """A request's write commits without waiting for its WAL flush, which releases the
    session's lock at once, and then waits for the flush before it answers
    (chat.services.write_sql). Every flush is made to take 100 ms (commit_delay, a
    group-commit setting, at its maximum): both answers wait for their flush, and the
    second writer is granted the lock without waiting for the first one's."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW fsync")
        if cursor.fetchone()[0] != "on":
            pytest.fail("commit_delay applies only with fsync on; the test database has it off")
    ApiClient(alice.api_token).post_json(URL, {"sessionId": "busy", "message": {"role": "system"}})
    flush_delay = 0.1

    def work(i: int) -> float:
        with connection.cursor() as cursor:  # this thread's connection, which its requests use
            cursor.execute("SET commit_delay = 100000")
            cursor.execute("SET commit_siblings = 0")
        message = {"id": f"m{i}", "role": "user", "content": str(i)}
        started = time.monotonic()
        response = ApiClient(alice.api_token).post_json(URL, {"sessionId": "busy", "message": message})
        assert response.status_code == 201, response.content
        return time.monotonic() - started

    took = run_together(2, work)

    assert all(isinstance(seconds, float) for seconds in took), took
    assert all(seconds >= flush_delay for seconds in took), took  # each answer waited for its flush
    first, second = sorted(ChatMessage.objects.filter(message_id__in=["m0", "m1"]).values_list("created_at", flat=True))
    granted_apart = (second - first).total_seconds()  # created_at: the time the write was granted the lock
    assert granted_apart < flush_delay / 2, f"the second writer waited {granted_apart * 1000:.0f} ms for the lock"
