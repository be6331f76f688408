"""The usage ledger under concurrent writers (PostgreSQL): it equals a recount of the messages."""

import pytest
from django.core.management import call_command

from chat.management.commands.recount_usage import drift
from chat.models import ChatMessage
from tests.support import ApiClient, run_together

URL = "/api/chat/messages"
USAGE = "/api/chat/usage"
RANGE = {"from": "2025-01-01", "to": "2025-01-31"}

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def message(message_id: str, i: int, r: int) -> dict:
    return {
        "id": message_id,
        "role": "assistant",
        "model": f"m{(i + r) % 3}",
        "input_tokens": i + 1,
        "output_tokens": r + 1,
        "total_tokens": i + r + 2,
        "error": (i + r) % 4 == 0,
        "timestamp": f"2025-01-{1 + (i * 7 + r) % 28:02d}T12:00:00Z",
    }


def test_usage_equals_a_recount_after_concurrent_saves_upserts_and_deletes(alice, settings):
    settings.RATE_LIMIT_ENABLED = False  # 180 writes in a few seconds is the point here
    writers, rounds = 6, 6

    def work(i: int) -> list[int]:
        client = ApiClient(alice.api_token)
        statuses = []
        for r in range(rounds):
            # New messages in a session of one's own and in one shared by all ...
            batch = [message(f"own-{i}-{r}", i, r), message(f"new-{i}-{r}", i, r)]
            statuses.append(client.post_json(URL, {"sessionId": f"own-{i}", "messages": batch[:1]}).status_code)
            statuses.append(client.post_json(URL, {"sessionId": "shared", "messages": batch[1:]}).status_code)
            # ... the same ids re-saved by everyone (other days, models, tokens: last write wins) ...
            upserts = [message(f"hot-{k}", i, r) for k in range(3)]
            statuses.append(client.post_json(URL, {"sessionId": "shared", "messages": upserts}).status_code)
            # ... and sessions saved, then deleted.
            temp = f"temp-{i}-{r}"
            statuses.append(client.post_json(URL, {"sessionId": temp, "message": message("x", i, r)}).status_code)
            statuses.append(client.delete(f"/api/chat/sessions/{temp}").status_code)
            # ... and single messages deleted.
            if r % 2:
                path = f"/api/chat/messages/own-{i}-{r}?session_id=own-{i}"
                statuses.append(client.delete(path).status_code)
        return statuses

    results = run_together(writers, work)

    even, odd = [201, 201, 201, 201, 204], [201, 201, 201, 201, 204, 204]
    assert all(s == [*even, *odd] * (rounds // 2) for s in results), results
    assert drift([alice.pk]) == []  # the live ledger equals the messages, row by row
    stored = ChatMessage.objects.filter(session__user=alice)
    deleted = [message("x", i, r) for i in range(writers) for r in range(rounds)]
    deleted += [message(f"own-{i}-{r}", i, r) for i in range(writers) for r in range(1, rounds, 2)]
    totals = ApiClient(alice.api_token).get(USAGE, RANGE).json()["totals"]
    assert totals == {
        "messages": stored.count() + len(deleted),
        "input_tokens": sum(m.input_tokens for m in stored) + sum(m["input_tokens"] for m in deleted),
        "output_tokens": sum(m.output_tokens for m in stored) + sum(m["output_tokens"] for m in deleted),
        "total_tokens": sum(m.total_tokens for m in stored) + sum(m["total_tokens"] for m in deleted),
        "errors": stored.filter(error=True).count() + sum(m["error"] for m in deleted),
    }
    assert stored.count() == writers * rounds * 2 - writers * rounds // 2 + 3


def test_recount_while_writers_write_changes_nothing(alice):
    """The recount reads messages and ledger in one snapshot: writers never look like drift."""
    writers = 4

    def work(i: int):
        if i == 0:
            out = []
            for _ in range(5):
                call_command("recount_usage", "--all", stdout=_Sink(out))
            return out
        client = ApiClient(alice.api_token)
        for r in range(10):
            client.post_json(URL, {"sessionId": f"s{i}", "message": message(f"m{r % 4}", i, r)})
        return None

    results = run_together(writers, work)

    assert all(line.endswith("0 ledger row(s) had drifted; 0 fixed.") for line in results[0]), results[0]
    assert drift([alice.pk]) == []


class _Sink:
    def __init__(self, lines: list):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines += [line for line in text.splitlines() if line.startswith("Checked")]

    def flush(self) -> None:
        pass
