"""recount_session_stats: statistics recomputed from the messages, drift reported and fixed."""

from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat.models import ChatMessage, ChatSession

URL = "/api/chat/messages"


def run(*args) -> str:
    out = StringIO()
    call_command("recount_session_stats", *args, stdout=out)
    return out.getvalue()


def stats(session_id: str) -> dict:
    return ChatSession.objects.filter(pk=session_id).values(
        "message_count", "total_tokens", "last_model", "last_message_preview", "last_message_timestamp", "updated_at"
    )[0]


@pytest.fixture
def sessions(as_alice):
    """Two sessions saved through the API (so their statistics are right) and an empty one."""
    as_alice.post_json(
        URL,
        {
            "sessionId": "s1",
            "messages": [
                {"id": "a", "role": "user", "content": "hello", "timestamp": "2025-01-01T10:00:00Z", "total_tokens": 5},
                {
                    "id": "b",
                    "role": "assistant",
                    "content": "  a   long\n answer " + "x" * 120,
                    "model": "gpt-4o",
                    "timestamp": "2025-01-01T10:00:05Z",
                    "total_tokens": 20,
                },
            ],
        },
    )
    as_alice.post_json(URL, {"sessionId": "s2", "message": {"id": "c", "role": "user", "content": "hi"}})
    ChatSession.objects.create(id="empty", user_id=ChatSession.objects.get(pk="s1").user_id)
    return ["s1", "s2", "empty"]


def test_sessions_with_right_statistics_are_reported_clean_and_left_alone(sessions):
    before = {session_id: stats(session_id) for session_id in sessions}
    out = run("--all")
    assert out.strip() == "Checked 3 session(s): 0 had drifted statistics; 0 fixed."
    assert {session_id: stats(session_id) for session_id in sessions} == before


def test_drifted_statistics_are_reported_and_fixed_without_moving_updated_at(sessions):
    right = stats("s1")
    ChatSession.objects.filter(pk="s1").update(
        message_count=7, total_tokens=1, last_model=None, last_message_preview="stale", last_message_timestamp=None
    )
    ChatSession.objects.filter(pk="empty").update(message_count=2, total_tokens=3)

    out = run("s1", "empty", "s2")

    lines = out.splitlines()
    assert lines[0].startswith("empty: message_count 2 -> 0; total_tokens 3 -> 0")
    assert lines[1].startswith('s1: message_count 7 -> 2; total_tokens 1 -> 25; last_model null -> "gpt-4o";')
    assert 'last_message_preview "stale" -> "a long answer xxx' in lines[1]
    assert 'last_message_timestamp null -> "2025-01-01T10:00:05Z"' in lines[1]
    assert lines[2] == "Checked 3 session(s): 2 had drifted statistics; 2 fixed."
    assert stats("s1") == right
    assert stats("empty")["message_count"] == 0 and stats("empty")["total_tokens"] == 0


def test_the_preview_follows_the_write_rule_and_the_newest_message_is_by_timestamp_then_id(sessions):
    s1 = stats("s1")
    assert s1["last_message_preview"] == ("a long answer " + "x" * 120)[:97].rstrip() + "..."
    # A message inserted later with an older timestamp is not the newest.
    ChatMessage.objects.create(
        session_id="s1", message_id="old", role="user", content="older", timestamp=datetime(2024, 1, 1, tzinfo=UTC)
    )
    out = run("s1")
    assert "last_message_preview" not in out
    assert "s1: message_count 2 -> 3" in out
    assert stats("s1")["last_message_timestamp"] == datetime(2025, 1, 1, 10, 0, 5, tzinfo=UTC)


def test_dry_run_reports_and_changes_nothing(sessions):
    ChatSession.objects.filter(pk="s2").update(message_count=0)
    out = run("--all", "--dry-run")
    assert "s2: message_count 0 -> 1" in out
    assert out.splitlines()[-1] == "Checked 3 session(s): 1 had drifted statistics; nothing changed (dry run)."
    assert stats("s2")["message_count"] == 0


def test_all_goes_through_every_session_in_batches(sessions, django_assert_max_num_queries):
    ChatSession.objects.update(total_tokens=99)
    # 3 batches of 1: per batch one id query, one recount, one newest-message query, one update.
    with django_assert_max_num_queries(3 * 4 + 1 + 6):
        out = run("--all", "--batch-size", "1")
    assert out.splitlines()[-1] == "Checked 3 session(s): 3 had drifted statistics; 3 fixed."
    assert [stats(s)["total_tokens"] for s in ("s1", "s2", "empty")] == [25, 0, 0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give SESSION_IDs or --all"),
        (("s1", "--all"), "give SESSION_IDs or --all"),
        (("s1", "nope", "nada"), "unknown session(s): nope, nada"),
        (("--all", "--batch-size", "0"), "--batch-size must be at least 1"),
    ],
)
def test_bad_input_is_a_command_error_and_changes_nothing(sessions, args, message):
    ChatSession.objects.filter(pk="s1").update(message_count=9)
    with pytest.raises(CommandError) as error:
        run(*args)
    assert message in str(error.value)
    assert stats("s1")["message_count"] == 9


def test_the_command_fixes_through_the_service(db, monkeypatch):
    from chat import services

    ChatSession.objects.create(id="s1")
    calls = []
    original = services.session_stats_recount
    monkeypatch.setattr(services, "session_stats_recount", lambda **kw: calls.append(kw) or original(**kw))
    run("--all")
    assert calls == [{"session_ids": ["s1"], "fix": True}]
