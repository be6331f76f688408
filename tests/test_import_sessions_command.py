"""import_sessions FILE --user USERNAME: an export file into a user's history, all or nothing."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from chat.models import ChatMessage, ChatSession

LINES = [
    b'{"type": "session", "id": "s1", "title": "Moved", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z"}',
    b'{"type": "message", "session_id": "s1", "id": "m1", "role": "user", "content": "hello", "timestamp": "2025-01-01T00:00:00Z"}',
    b'{"type": "message", "session_id": "s1", "id": "m2", "role": "assistant", "content": "hi", "model": "m", "total_tokens": 5}',
]


class Tty(StringIO):
    def isatty(self) -> bool:
        return True


def run(path, username: str, out=None) -> str:
    out = out or StringIO()
    call_command("import_sessions", str(path), "--user", username, stdout=out)
    return out.getvalue()


def test_imports_a_file_for_the_user(tmp_path, alice):
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(LINES) + b"\n")

    out = run(path, "alice")

    assert out.strip() == "Imported 1 session(s) and 2 message(s) for alice."
    session = ChatSession.objects.get(pk="s1")
    assert (session.user, session.title, session.message_count, session.total_tokens) == (alice, "Moved", 2, 5)
    assert run(path, "alice").strip() == out.strip()  # twice: the same
    assert ChatMessage.objects.count() == 2


def test_shows_a_progress_bar_on_a_terminal_only(tmp_path, alice):
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(LINES))
    assert "import" not in run(path, "alice").split("Imported")[0]
    tty = Tty()
    run(path, "alice", out=tty)
    assert "import: 100%" in tty.getvalue()


def test_a_bad_line_imports_nothing(tmp_path, alice):
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join([*LINES[:2], b'{"type": "message"}', LINES[2]]))
    with pytest.raises(CommandError, match="nothing imported: Line 3"):
        run(path, "alice")
    assert not ChatSession.objects.exists()


def test_another_users_session_imports_nothing(tmp_path, alice, charlie):
    ChatSession.objects.create(id="s1", user=charlie)
    path = tmp_path / "export.ndjson"
    path.write_bytes(b"\n".join(LINES))
    with pytest.raises(CommandError, match="belongs to someone else"):
        run(path, "alice")
    assert not ChatMessage.objects.exists()


def test_bad_arguments(tmp_path, alice):
    with pytest.raises(CommandError, match="unknown user"):
        run(tmp_path / "x", "nobody")
    with pytest.raises(CommandError, match="cannot read"):
        run(tmp_path / "missing.ndjson", "alice")
