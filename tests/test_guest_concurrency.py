"""A poller never misses a guest message, however many requests write at once (PostgreSQL).

PostgreSQL hands out ids when a row is inserted, not when it commits: without the
session row lock, a writer holding id 7 could commit after one holding id 8, and a
poller that saw 8 would never ask for 7 again.
"""

import threading
import time

import pytest
from django.db import connection

from chat.models import ChatMessage, ChatSession
from tests.support import ApiClient, run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WRITERS = 6
MESSAGES_PER_WRITER = 25


def test_a_poller_sees_every_message_once_and_in_order_while_writers_race(settings):
    settings.RATE_LIMIT_ENABLED = False  # 150 sends in a second is the point here
    key = ApiClient().generic("POST", "/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    url = f"/api/v1/chat/guest/{key}/messages"
    writers_done = threading.Event()
    start = threading.Barrier(WRITERS + 1)
    failures: list = []
    seen: list[int] = []

    def write(i: int) -> None:
        client = ApiClient()
        try:
            start.wait(timeout=10)
            for n in range(MESSAGES_PER_WRITER):
                response = client.post_json(url, {"content": f"writer {i} message {n}"})
                if response.status_code != 201:
                    failures.append(response.content)
        except Exception as exc:
            failures.append(exc)
        finally:
            connection.close()

    def poll() -> None:
        client = ApiClient()
        cursor = 0
        deadline = time.monotonic() + 30
        try:
            start.wait(timeout=10)
            while time.monotonic() < deadline:
                finished = writers_done.is_set()  # read before polling: the poll after it drains
                body = client.get(url, {"last_message_id": cursor}).json()
                seen.extend(m["id"] for m in body["data"])
                cursor = body["meta"]["last_message_id"]
                if finished and not body["meta"]["has_more"]:
                    return
        except Exception as exc:
            failures.append(exc)
        finally:
            connection.close()

    poller = threading.Thread(target=poll)
    writers = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    poller.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=30)
    writers_done.set()
    poller.join(timeout=30)

    assert not failures, failures[:3]
    stored = list(ChatMessage.objects.filter(session__session_key=key).order_by("id").values_list("id", flat=True))
    assert len(stored) == WRITERS * MESSAGES_PER_WRITER
    assert seen == stored  # every id, each once, in increasing order
    assert ChatSession.objects.get(session_key=key).message_count == len(stored)


def test_racing_retries_of_one_send_store_one_message(settings):
    settings.RATE_LIMIT_ENABLED = False
    key = ApiClient().generic("POST", "/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    url = f"/api/v1/chat/guest/{key}/messages"

    def retry(i: int) -> tuple:
        response = ApiClient().post_json(url, {"content": f"attempt {i}", "id": "once"})
        return response.status_code, response.json()["data"]

    answers = run_together(8, retry, join_timeout=30)

    assert {status for status, _ in answers} == {201}, answers
    [stored] = ChatMessage.objects.filter(session__session_key=key)
    assert all(data == answers[0][1] for _, data in answers)  # every retry sees the first stored
    assert answers[0][1]["id"] == stored.pk and answers[0][1]["content"] == stored.content
    assert ChatSession.objects.get(session_key=key).message_count == 1
