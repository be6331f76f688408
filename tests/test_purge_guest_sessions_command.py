"""purge_guest_sessions: inactive guest sessions go, with their messages; nothing else does."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from chat import services
from chat.exceptions import NotFound
from chat.models import ChatMessage, ChatSession
from tests.support import ApiClient

pytestmark = pytest.mark.django_db


def guest_session(*, idle_days: float, messages: int = 0) -> ChatSession:
    session = services.guest_session_create(guest_name="")
    for i in range(messages):
        services.guest_message_send(session_key=session.session_key, content=f"m{i}")
    ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now() - timedelta(days=idle_days))
    return session


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_guest_sessions", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def population(as_alice):
    """Two stale guests, one active guest, one stale session with an owner."""
    stale = [guest_session(idle_days=40, messages=3), guest_session(idle_days=31)]
    active = guest_session(idle_days=1, messages=2)
    as_alice.post_json("/api/chat/messages", {"sessionId": "owned", "message": {"role": "user", "content": "x"}})
    ChatSession.objects.filter(pk="owned").update(updated_at=timezone.now() - timedelta(days=400))
    return stale, active


def test_deletes_inactive_guest_sessions_and_their_messages_only(population):
    stale, active = population

    output = purge("--inactive-days", "30")

    assert output.startswith("Deleted 2 guest sessions (3 messages) inactive since ")
    assert set(ChatSession.objects.values_list("pk", flat=True)) == {active.pk, "owned"}
    assert not ChatMessage.objects.filter(session_id__in=[s.pk for s in stale]).exists()
    assert ChatMessage.objects.filter(session=active).count() == 2


def test_a_dry_run_counts_and_deletes_nothing(population):
    output = purge("--inactive-days", "30", "--dry-run")
    assert output.startswith("Would delete 2 guest sessions (3 messages) inactive since ")
    assert ChatSession.objects.count() == 4 and ChatMessage.objects.count() == 6


def test_verbose_output_names_each_session(population):
    stale, _ = population
    dry = purge("--inactive-days", "30", "--dry-run", "--verbosity", "2")
    assert all(f"would delete {s.pk}" in dry for s in stale)
    real = purge("--inactive-days", "30", "--verbosity", "2")
    assert all(f"deleted {s.pk}" in real for s in stale)


def test_deletes_in_batches_until_none_is_left(db):
    sessions = [guest_session(idle_days=10, messages=1) for _ in range(7)]
    output = purge("--inactive-days", "5", "--batch-size", "3")
    assert output.startswith("Deleted 7 guest sessions (7 messages)")
    assert not ChatSession.objects.filter(pk__in=[s.pk for s in sessions]).exists()


def test_a_write_keeps_a_guest_session_alive(db):
    session = guest_session(idle_days=10)
    ApiClient().post_json(f"/api/v1/chat/guest/{session.session_key}/messages", {"content": "still here"})
    assert purge("--inactive-days", "5").startswith("Deleted 0 guest sessions (0 messages)")
    assert ChatSession.objects.filter(pk=session.pk).exists()


def test_a_purged_key_is_a_404(db):
    session = guest_session(idle_days=10, messages=1)
    purge("--inactive-days", "5")
    response = ApiClient().get(f"/api/v1/chat/guest/{session.session_key}/messages")
    assert response.status_code == 404
    with pytest.raises(NotFound):
        services.guest_message_send(session_key=session.session_key, content="late")


@pytest.mark.parametrize(
    "args, error",
    [
        (["--inactive-days", "0"], "at least 1"),
        (["--inactive-days", "-3"], "at least 1"),
        (["--inactive-days", "100000000"], "before the year 1"),
        (["--inactive-days", "5", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_input_is_a_command_error(db, args, error):
    with pytest.raises(CommandError, match=error):
        purge(*args)


def test_inactive_days_is_required_and_an_integer(db):
    with pytest.raises(CommandError):
        purge()
    with pytest.raises(CommandError):
        purge("--inactive-days", "soon")


def test_the_command_deletes_through_the_service(db, monkeypatch):
    from chat import services

    calls = []
    original = services.guest_sessions_purge_batch
    monkeypatch.setattr(services, "guest_sessions_purge_batch", lambda **kw: calls.append(kw) or original(**kw))
    call_command("purge_guest_sessions", "--inactive-days", "30", stdout=StringIO())
    assert len(calls) == 1 and calls[0]["batch_size"] == 1000
