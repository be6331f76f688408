"""GET /api/chat/usage: the ledger per UTC day and model, moved by every write."""

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.json import dumps
from chat.models import UsageDay
from chat.selectors import user_usage, user_usage_json

URL = "/api/chat/usage"
MESSAGES = "/api/chat/messages"
RANGE = {"from": "2025-01-01", "to": "2025-01-31"}


def save(client, session_id: str, *messages: dict):
    response = client.post_json(MESSAGES, {"sessionId": session_id, "messages": list(messages)})
    assert response.status_code == 201, response.content
    return response


def reply(message_id: str, day: str, *, model="gpt-4o", tokens=(10, 20), error=False, **extra) -> dict:
    return {
        "id": message_id,
        "role": "assistant",
        "content": "answer",
        "model": model,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "total_tokens": sum(tokens),
        "timestamp": f"{day}T12:00:00Z",
        "error": error,
        **extra,
    }


def question(message_id: str, day: str) -> dict:
    return {"id": message_id, "role": "user", "content": "question", "timestamp": f"{day}T11:59:00Z"}


def figures(messages=0, input_tokens=0, output_tokens=0, total_tokens=0, errors=0) -> dict:
    return {
        "messages": messages,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total_tokens,
        "errors": errors,
    }


def test_usage_per_day_and_model_with_totals(as_alice):
    save(as_alice, "s1", question("q1", "2025-01-02"), reply("a1", "2025-01-02"))
    save(as_alice, "s2", reply("a2", "2025-01-02", tokens=(1, 2)), reply("a3", "2025-01-03", model="m2", error=True))

    response = as_alice.get(URL, RANGE)

    assert response.status_code == 200
    assert response.json() == {
        "from": "2025-01-01",
        "to": "2025-01-31",
        "totals": figures(4, 21, 42, 63, 1),
        "days": [
            {"date": "2025-01-02", "model": None, **figures(1)},
            {"date": "2025-01-02", "model": "gpt-4o", **figures(2, 11, 22, 33)},
            {"date": "2025-01-03", "model": "m2", **figures(1, 10, 20, 30, 1)},
        ],
    }


def test_a_day_is_the_utc_day_of_the_message_timestamp(as_alice):
    save(as_alice, "s1", {**reply("a1", "2025-01-02"), "timestamp": "2025-01-02T23:30:00-02:00"})
    [day] = as_alice.get(URL, RANGE).json()["days"]
    assert day["date"] == "2025-01-03"


def test_an_upsert_replaces_the_old_figures_with_the_new(as_alice):
    save(as_alice, "s1", reply("a1", "2025-01-02", error=True, tokens=(0, 0)))
    save(as_alice, "s1", reply("a1", "2025-01-05", model="m2", tokens=(5, 6)))
    save(as_alice, "s1", reply("a1", "2025-01-05", model="m2", tokens=(5, 6)))  # the same request twice

    body = as_alice.get(URL, RANGE).json()

    assert body["days"] == [{"date": "2025-01-05", "model": "m2", **figures(1, 5, 6, 11)}]
    assert body["totals"] == figures(1, 5, 6, 11)


def test_an_upsert_without_a_timestamp_stays_on_its_day(as_alice):
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    message = reply("a1", "x", tokens=(1, 1))
    del message["timestamp"]
    save(as_alice, "s1", message)
    assert as_alice.get(URL, RANGE).json()["days"] == [{"date": "2025-01-02", "model": "gpt-4o", **figures(1, 1, 1, 2)}]


def test_deleting_a_session_does_not_lower_usage(as_alice):
    save(as_alice, "s1", question("q1", "2025-01-02"), reply("a1", "2025-01-02"))
    before = as_alice.get(URL, RANGE).json()

    assert as_alice.delete("/api/chat/sessions/s1").status_code == 204

    assert as_alice.get(URL, RANGE).json() == before
    assert UsageDay.objects.filter(live=True, messages__gt=0).count() == 0  # moved to the deleted rows


def test_deleting_a_message_does_not_lower_usage(as_alice):
    save(as_alice, "s1", question("q1", "2025-01-02"), reply("a1", "2025-01-02"))
    before = as_alice.get(URL, RANGE).json()

    assert as_alice.delete("/api/chat/messages/a1?session_id=s1").status_code == 204

    assert as_alice.get(URL, RANGE).json() == before
    assert UsageDay.objects.get(live=True, model="gpt-4o").messages == 0
    assert UsageDay.objects.get(live=False, model="gpt-4o").total_tokens == 30


def test_a_message_saved_again_after_its_session_was_deleted_counts_again(as_alice):
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    as_alice.delete("/api/chat/sessions/s1")
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    assert as_alice.get(URL, RANGE).json()["totals"] == figures(2, 20, 40, 60)


def test_only_the_callers_usage(as_alice, as_charlie, anon):
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    save(as_charlie, "s2", reply("a2", "2025-01-02", tokens=(100, 100)))
    guest_key = anon.post_json("/api/v1/chat/guest/sessions").json()["data"]["session_key"]
    anon.post_json(f"/api/v1/chat/guest/{guest_key}/messages", {"content": "hello"})

    assert as_alice.get(URL, RANGE).json()["totals"] == figures(1, 10, 20, 30)
    assert as_charlie.get(URL, RANGE).json()["totals"] == figures(1, 100, 100, 200)
    assert not UsageDay.objects.filter(user=None).exists()


def test_the_range_is_inclusive(as_alice):
    save(as_alice, "s1", reply("a1", "2025-01-01"), reply("a2", "2025-01-31"), reply("a3", "2025-02-01"))
    assert [d["date"] for d in as_alice.get(URL, RANGE).json()["days"]] == ["2025-01-01", "2025-01-31"]
    assert [d["date"] for d in as_alice.get(URL, {"from": "2025-01-31", "to": "2025-01-31"}).json()["days"]] == [
        "2025-01-31"
    ]


def test_the_default_is_the_last_30_days(as_alice):
    today = datetime.now(UTC).date()
    old = (today - timedelta(days=30)).isoformat()
    recent = (today - timedelta(days=29)).isoformat()
    save(as_alice, "s1", reply("a1", old), reply("a2", recent), reply("a3", today.isoformat()))

    body = as_alice.get(URL).json()

    assert (body["from"], body["to"]) == (recent, today.isoformat())
    assert [d["date"] for d in body["days"]] == [recent, today.isoformat()]


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2025-1-01"},
        {"from": "2025-02-30"},
        {"to": "yesterday"},
        {"from": "2025-01-01T00:00:00"},
        {"from": "2025-02-01", "to": "2025-01-01"},
        {"from": "2024-01-01", "to": "2025-01-01"},
        {"from": "\uff12\uff10\uff12\uff15-01-01"},  # fullwidth digits,
    ],
)
def test_bad_dates_are_400(as_alice, query):
    response = as_alice.get(URL, query)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


def test_366_days_is_allowed(as_alice):
    assert as_alice.get(URL, {"from": "2024-01-01", "to": "2024-12-31"}).status_code == 200


def test_staff_may_read_another_users_usage(as_alice, alice, as_staff):
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    body = as_staff.get(URL, {**RANGE, "user": alice.username}).json()
    assert body["totals"] == figures(1, 10, 20, 30)
    assert as_staff.get(URL, {**RANGE, "user": "nobody"}).status_code == 404


def test_others_may_not_read_another_users_usage(as_alice, alice, as_charlie):
    save(as_alice, "s1", reply("a1", "2025-01-02"))
    response = as_charlie.get(URL, {**RANGE, "user": alice.username})
    assert response.status_code == 403
    assert as_alice.get(URL, {**RANGE, "user": alice.username}).status_code == 200


def test_usage_needs_credentials(anon):
    assert anon.get(URL).status_code == 401


def test_reading_usage_is_one_query_whatever_the_number_of_messages(as_alice):
    for day in range(1, 4):
        save(as_alice, f"s{day}", *(reply(f"a{i}", f"2025-01-0{day}") for i in range(50)))
    with CaptureQueriesContext(connection) as captured:
        assert as_alice.get(URL, RANGE).json()["totals"]["messages"] == 150
    ledger = [q for q in captured.captured_queries if "chat_usage_days" in q["sql"]]
    assert len(ledger) == 1
    assert "chat_messages" not in " ".join(q["sql"] for q in captured.captured_queries)


@pytest.mark.postgres
def test_the_json_postgresql_writes_is_the_json_of_the_rows_byte_for_byte(as_alice, alice):
    # The answer is written by the database on PostgreSQL (chat.selectors.usage):
    # compared with orjson's encoding of the same rows, models that need escaping included.
    models = [None, "gpt-4o", 'say "hi" \\ back', "café ☕ 模型", "tab\there\nand\x01\x1f", "Zeta", "alpha"]
    save(as_alice, "s1", *(reply(f"a{i}", f"2025-01-0{1 + i % 3}", model=m) for i, m in enumerate(models)))
    save(as_alice, "s1", reply("a6", "2025-01-09", model="moved"))  # leaves "alpha" a day of zeros
    start, end = date(2025, 1, 1), date(2025, 1, 31)

    body = as_alice.get(URL, RANGE).content

    assert body == dumps(user_usage(user_id=alice.pk, start=start, end=end))
    assert body == user_usage_json(user_id=alice.pk, start=start, end=end)
    assert len(json.loads(body)["days"]) == len(models)  # "alpha"'s day of zeros is left out
    empty = as_alice.get(URL, {"from": "2024-01-01", "to": "2024-01-31"}).content
    assert empty == dumps(user_usage(user_id=alice.pk, start=date(2024, 1, 1), end=date(2024, 1, 31)))
    assert json.loads(empty) == {"from": "2024-01-01", "to": "2024-01-31", "totals": figures(), "days": []}
