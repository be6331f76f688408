"""recount_usage: the live ledger checked against the messages, drift reported and fixed."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat.models import ChatMessage, UsageDay

URL = "/api/chat/messages"
USAGE = "/api/chat/usage"
RANGE = {"from": "2025-01-01", "to": "2025-01-31"}


def run(*args) -> str:
    out = StringIO()
    call_command("recount_usage", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def saved(as_alice):
    as_alice.post_json(
        URL,
        {
            "sessionId": "s1",
            "messages": [
                {"id": "q", "role": "user", "content": "hi", "timestamp": "2025-01-02T10:00:00Z"},
                {
                    "id": "a",
                    "role": "assistant",
                    "model": "gpt-4o",
                    "total_tokens": 30,
                    "input_tokens": 10,
                    "output_tokens": 20,
                    "timestamp": "2025-01-02T10:00:01Z",
                },
            ],
        },
    )


def test_a_ledger_kept_by_the_services_has_no_drift(saved, alice):
    assert run("--all").splitlines() == ["Checked 1 user(s): 0 ledger row(s) had drifted; 0 fixed."]
    assert run(alice.username).endswith("0 ledger row(s) had drifted; 0 fixed.\n")


def test_missing_usage_is_reported_and_added(saved, as_alice, alice):
    UsageDay.objects.filter(model="gpt-4o").update(total_tokens=5, messages=0)

    out = run("--all")

    assert "alice 2025-01-02 gpt-4o: messages 0 -> 1; total_tokens 5 -> 30" in out
    assert "1 ledger row(s) had drifted; 1 fixed." in out
    assert as_alice.get(USAGE, RANGE).json()["totals"]["total_tokens"] == 30
    assert run("--all").endswith("0 ledger row(s) had drifted; 0 fixed.\n")


def test_messages_deleted_behind_the_services_back_stay_counted(saved, as_alice):
    before = as_alice.get(USAGE, RANGE).json()
    ChatMessage.objects.filter(message_id="a").delete()  # as a raw delete would: the ledger did not move

    out = run("--all")

    assert "alice 2025-01-02 gpt-4o: messages 1 -> 0; input_tokens 10 -> 0" in out
    assert as_alice.get(USAGE, RANGE).json() == before  # usage never goes down
    assert UsageDay.objects.get(model="gpt-4o", live=True).messages == 0
    assert UsageDay.objects.get(model="gpt-4o", live=False).total_tokens == 30


def test_dry_run_changes_nothing(saved):
    UsageDay.objects.filter(model="gpt-4o").update(total_tokens=5)
    out = run("--all", "--dry-run")
    assert "total_tokens 5 -> 30" in out
    assert "nothing changed (dry run)" in out
    assert UsageDay.objects.get(model="gpt-4o").total_tokens == 5


def test_a_lost_ledger_is_rebuilt(saved, as_alice):
    before = as_alice.get(USAGE, RANGE).json()
    UsageDay.objects.all().delete()
    assert "2 ledger row(s) had drifted; 2 fixed." in run("--all", "--batch-size", "1")
    assert as_alice.get(USAGE, RANGE).json() == before


def test_bad_arguments(db):
    with pytest.raises(CommandError, match="USERNAMEs or --all"):
        run()
    with pytest.raises(CommandError, match="unknown user"):
        run("nobody")
    with pytest.raises(CommandError, match="batch-size"):
        run("--all", "--batch-size", "0")
