"""The two engines of a write give the same result: PostgreSQL's one statement
(chat.services.write_sql, what every request runs there) and the ORM (what SQLite
runs). The same scenario goes through each on PostgreSQL, in sessions of its own,
and what they leave is compared: the messages, the sessions' statistics, the usage
ledger and what each call returned or refused.

Times and ids cannot be equal across two runs, so they are compared by what they
mean: a time taken by a write is named by that write's number, an integer id by
its rank among the run's messages, a generated client id by its shape.
"""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from chat import services
from chat.exceptions import ApiError
from chat.models import ChatMessage, ChatSession, Role, UsageDay
from chat.selectors import message_to_wire
from tests.support import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

GENERATED_ID = re.compile(r"msg_[0-9a-f]{32}")
# Whitespace Python's str.split() knows, some of it outside ASCII: previews collapse all of it.
ODD_SPACES = "\t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


class Run:
    """One engine's run of a scenario, in sessions named with its own prefix."""

    def __init__(self, *, sql: bool, user, other, staff, colleague):
        self.sql, self.user, self.other, self.staff, self.colleague = sql, user, other, staff, colleague
        self.prefix = "sql-" if sql else "orm-"
        self.times: list[datetime] = []  # the time of each write, in order
        self.returned: list = []
        self.guests: dict[str, ChatSession] = {}

    def sid(self, name: str) -> str:
        return self.prefix + name

    def call(self, write, *, writes: bool = True) -> None:
        try:
            rows = write()
        except ApiError as refused:
            self.returned.append(("refused", type(refused).__name__, refused.status, str(refused), refused.details))
            return
        if writes:
            assert len({row.created_at for row in rows}) == 1
            self.times.append(rows[0].created_at)
        self.returned.append(("stored", [(row.pk, row.session_id, message_to_wire(row)) for row in rows]))

    def save(self, name: str, messages: list[dict], title: str | None = None) -> None:
        self.call(
            lambda: services.messages_save(
                user=self.user, session_id=self.sid(name), messages=messages, session_title=title, sql=self.sql
            )
        )

    def guest(self, name: str) -> ChatSession:
        if name not in self.guests:
            self.guests[name] = services.guest_session_create(guest_name=name)
        return self.guests[name]

    def guest_send(self, name: str, content: str, message_id: str | None = None, *, writes: bool = True) -> None:
        key = self.guest(name).session_key
        self.call(
            lambda: [
                services.guest_message_send(session_key=key, content=content, message_id=message_id, sql=self.sql)
            ],
            writes=writes,
        )

    def reply(self, name: str, content: str, message_id: str | None = None, *, staff=None, writes: bool = True):
        key = self.guest(name).session_key
        self.call(
            lambda: [
                services.guest_reply_send(
                    session_key=key,
                    staff_user=staff or self.staff,
                    content=content,
                    message_id=message_id,
                    sql=self.sql,
                )
            ],
            writes=writes,
        )
        return self.returned[-1][1][0][2]["id"] if writes else None

    # What the run left, in terms that do not depend on the run.

    def session_names(self) -> dict[str, str]:
        names = {session.pk: name for name, session in self.guests.items()}
        for pk in ChatSession.objects.filter(pk__startswith=self.prefix).values_list("pk", flat=True):
            names[pk] = pk.removeprefix(self.prefix)
        return names

    def normalizer(self):
        names = self.session_names()
        pks = sorted(ChatMessage.objects.filter(session_id__in=names).values_list("pk", flat=True))
        ranks = {pk: rank for rank, pk in enumerate(pks)}

        def norm(value):
            if isinstance(value, datetime):
                return f"write {self.times.index(value)}" if value in self.times else value
            if isinstance(value, str):
                if value in names:
                    return names[value]
                return "msg_<generated>" if GENERATED_ID.fullmatch(value) else value
            if isinstance(value, dict):
                return {k: norm(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [norm(v) for v in value]
            return value

        return norm, ranks, names

    def state(self) -> dict:
        norm, ranks, names = self.normalizer()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT m.id, m.session_id, m.message_id, m.role, m.content, m.content_type, m.model, "
                "m.original_model, m.total_tokens, m.input_tokens, m.output_tokens, m.user_message_id, "
                "m.elapsed_time, m.completion_id, m.message_timestamp, m.error, m.error_message, m.error_code, "
                "m.retry_after, m.suggestions::text, m.extra::text, u.username, m.created_at "
                "FROM chat_messages m LEFT JOIN accounts_user u ON u.id = m.author_id "
                "WHERE m.session_id = ANY(%s) ORDER BY m.id",
                [list(names)],
            )
            messages = [(ranks[row[0]], *norm(row[1:])) for row in cursor.fetchall()]
        sessions = [
            (
                names[s.pk],
                s.user_id == self.user.pk,
                s.title,
                s.message_count,
                s.total_tokens,
                s.last_model,
                s.last_message_preview,
                norm(s.last_message_timestamp),
                ranks.get(s.last_message_id),
                s.last_role,
                norm(s.updated_at),
            )
            for s in ChatSession.objects.filter(pk__in=names).order_by("pk")
            if names[s.pk] != "theirs"
        ]
        ledger = sorted(
            UsageDay.objects.filter(user=self.user).values_list(
                "day", "model", "live", "messages", "input_tokens", "output_tokens", "total_tokens", "errors"
            )
        )
        returned = [
            (
                kind,
                *(
                    [[ranks.get(pk, "gone"), *norm([session, wire])] for pk, session, wire in rest[0]]
                    if kind == "stored"
                    else norm(rest)
                ),
            )
            for kind, *rest in self.returned
        ]
        return {"messages": messages, "sessions": sessions, "ledger": ledger, "returned": returned}


def pair(n: int, **assistant) -> list[dict]:
    return [
        {"message_id": f"u{n}", "role": Role.USER, "content": f"question {n}"},
        {"message_id": f"a{n}", "role": Role.ASSISTANT, "content": f"answer {n}", "model": "m1", **assistant},
    ]


def scenario(run: Run) -> None:
    long_odd = f"{ODD_SPACES}stored{ODD_SPACES}newest " + "word " * 40
    # A new session, titled by its first user message (odd whitespace, cut at 50).
    run.save(
        "s1",
        [
            {
                "message_id": "u1",
                "role": Role.USER,
                "content": f"  What{ODD_SPACES}is the weather like in a town with a rather long name?  ",
            },
            {
                "message_id": "a1",
                "role": Role.ASSISTANT,
                "content": "Sunny.\n\nProbably.",
                "content_type": "markdown",
                "model": "gpt-4o",
                "original_model": "gpt-4o-2024-08-06",
                "total_tokens": 30,
                "input_tokens": 10,
                "output_tokens": 20,
                "user_message_id": "u1",
                "elapsed_time": 1500,
                "completion_id": "c1",
                "timestamp": at("2025-07-25T23:59:59Z"),
                "suggestions": ["more", "less"],
                "extra": {"z": 1, "a": {"nested": [1, 2]}, "nul": "a\u0000b", "ключ": "🎉"},
            },
        ],
    )
    # Older than the newest: the "last" fields stay; then newer than all: they move.
    run.save("s1", pair(2, timestamp=at("2025-07-26T00:00:01Z"), total_tokens=5))
    run.save(
        "s1", [{"message_id": "late", "role": Role.USER, "content": long_odd, "timestamp": at("2031-01-01T00:00:00Z")}]
    )
    # Two messages at one instant: the later id is the newer.
    same = at("2032-02-02T02:02:02Z")
    run.save("s1", [{**m, "timestamp": same} for m in pair(3, total_tokens=7)])
    # Upserts: the newest moves back in time (the newest is now a stored message, previewed by the
    # engine), a missing timestamp keeps the stored one, new tokens and model move the ledger.
    run.save(
        "s1",
        [
            {
                "message_id": "a3",
                "role": Role.ASSISTANT,
                "content": "moved back",
                "model": "m2",
                "total_tokens": 1,
                "timestamp": at("2025-01-01T00:00:00Z"),
            },
            {"message_id": "u3", "role": Role.USER, "content": "also back", "timestamp": at("2025-01-01T00:00:00Z")},
            {"message_id": "u1", "role": Role.USER, "content": "re-saved without a timestamp"},
        ],
        title="  Renamed  ",
    )
    # A blank title keeps the session's; an error message makes an error.
    run.save(
        "s1",
        [
            {
                "message_id": "e1",
                "role": Role.ASSISTANT,
                "content": "",
                "error_message": "boom",
                "error_code": "rate",
                "retry_after": 3,
                "model": "m1",
            }
        ],
        title="   ",
    )
    # The same client id in another session of the same user is another message.
    run.save("s2", [{"message_id": "u1", "role": Role.SYSTEM, "content": "", "total_tokens": 2}], title="Second")
    # Generated ids; a session with no user message is "New Chat".
    run.save("s3", [{"role": Role.ASSISTANT, "content": "hi"}, {"role": Role.SYSTEM, "content": " "}])
    # Refused, nothing written: one id twice; another user's session.
    run.save("s1", [pair(9)[0], pair(9)[0]])
    ChatSession.objects.create(id=run.sid("theirs"), user=run.other)
    run.save("theirs", pair(10))
    # A hundred at once, half of them re-saved, over three days and models, some without a timestamp.
    base = at("2025-03-01T22:00:00Z")
    hundred = [
        {
            "message_id": f"b{i}",
            "role": Role.USER if i % 2 else Role.ASSISTANT,
            "content": f"bulk {i} " * (i % 7),
            "model": [None, "m1", "m3"][i % 3],
            "total_tokens": i,
            "input_tokens": i // 2,
            "output_tokens": i - i // 2,
            "error": i % 11 == 0,
            **({} if i % 5 == 0 else {"timestamp": base + timedelta(hours=i % 30)}),
        }
        for i in range(100)
    ]
    run.save("s4", hundred[:50])
    run.save("s4", [{**m, "total_tokens": m["total_tokens"] + 1} for m in hundred[25:]][::-1])
    # Guests: the first message titles the session, a retry answers its first send and writes
    # nothing, a staff reply, a guest id of the reply's is a conflict, unknown keys are not found.
    run.guest_send("g1", f"  hello{ODD_SPACES}there  ")
    run.guest_send("g1", "with an id", message_id="w-1")
    run.guest_send("g1", "the retry's other text", message_id="w-1", writes=False)
    reply_id = run.reply("g1", "A staff answer")
    run.guest_send("g1", "clash", message_id=reply_id, writes=False)
    # A staff reply with a client id: its retry answers it and writes nothing; a colleague's
    # retry of it, and a staff reply with the guest's id, are conflicts.
    run.reply("g1", "With an id", message_id="r-1")
    run.reply("g1", "the retry's other text", message_id="r-1", writes=False)
    run.reply("g1", "a colleague's", message_id="r-1", staff=run.colleague, writes=False)
    run.reply("g1", "clash", message_id="w-1", writes=False)
    run.guest_send("g1", "a second message")
    owned = ChatSession.objects.get(pk=run.sid("s1"))
    run.call(
        lambda: [services.guest_message_send(session_key=owned.session_key, content="x", sql=run.sql)], writes=False
    )
    run.call(
        lambda: [
            services.guest_reply_send(session_key=owned.session_key, staff_user=run.staff, content="x", sql=run.sql)
        ],
        writes=False,
    )


def test_the_one_statement_and_the_orm_leave_the_same_data(alice, bob, charlie, staff):
    colleague = make_user("kim", is_staff=True)
    runs = {
        sql: Run(sql=sql, user=user, other=charlie, staff=staff, colleague=colleague)
        for sql, user in ((True, alice), (False, bob))
    }
    for run in runs.values():
        scenario(run)

    sql, orm = runs[True].state(), runs[False].state()

    assert sql["returned"] == orm["returned"]
    assert sql["messages"] == orm["messages"]
    assert sql["sessions"] == orm["sessions"]
    assert sql["ledger"] == orm["ledger"]
    # The scenario reached what it was written for.
    assert len(sql["messages"]) == 8 + 1 + 2 + 100 + 5
    s1 = next(s for s in sql["sessions"] if s[0] == "s1")
    assert s1[2] == "Renamed" and s1[6].startswith("stored newest word") and s1[6].endswith("...")
    assert [r[1] for r in sql["returned"] if r[0] == "refused"] == [
        "ApiError",
        "Forbidden",
        "Conflict",
        "Conflict",
        "Conflict",
        "NotFound",
        "NotFound",
    ]


def test_the_database_runs_the_function_as_its_file_says():
    """chat/sql/session_write.sql is the one text of the write: a change to it needs a
    migration that runs it again (as 0009 does), else this fails."""
    text = (Path(__file__).resolve().parent.parent / "chat" / "sql" / "session_write.sql").read_text()
    with connection.cursor() as cursor:
        for name in ("chat_session_write", "chat_shorten"):
            cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", [name])
            [(body,)] = cursor.fetchall()
            assert f"$${body}$$" in text, f"{name} differs from chat/sql/session_write.sql: add a migration"
