"""The benchmark's database: made afresh, migrated, then filled with COPY.

Rows are shuffled before they are copied, so one session's messages are spread
over the whole table (as they are after months of interleaved conversations),
not packed into a few pages.
"""

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent

BENCH_USER = "bench"
FILLER_USER = "bench-filler"
HISTORY_SESSION = "bench-history"
HISTORY_MESSAGES = 1000
GUEST_SESSION = "guest_bench"
GUEST_MESSAGES = 50
FILLER_PER_SESSION = 20

# The columns a message is read from, in chat.selectors.MESSAGE_FIELDS' order (the rows below are
# built in it), between the session and the receipt time. Spelled out: the harness runs without
# Django set up, so it cannot import the models; tests/test_bench_harness.py checks they agree.
COLUMNS = (
    "session_id",
    "message_id",
    "role",
    "content",
    "content_type",
    "model",
    "original_model",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "user_message_id",
    "elapsed_time",
    "completion_id",
    "message_timestamp",
    "error",
    "error_message",
    "error_code",
    "retry_after",
    "suggestions",
    "created_at",
)
NULL = r"\N"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
WORDS = (
    "the service answers every poll from one index scan and keeps statistics exact while many "
    "writers append to the same conversation at once so a client can trust what it reads back "
    "weather forecast python django postgres redis gunicorn latency throughput budget window"
).split()


@dataclass
class Seeded:
    """What the cases need to know about the seeded data."""

    token: str
    guest_key: str
    guest_ids: list[int]  # the guest session's message ids, ascending
    history_session: str
    total: int


def admin_url(database_url: str) -> str:
    return database_url.rsplit("/", 1)[0] + "/postgres"


def recreate_database(database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url(database_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def texts(rng: random.Random, count: int, low: int, high: int) -> list[str]:
    """`count` sentences of `low`-`high` characters, safe in COPY's text format."""
    out = []
    for _ in range(count):
        target = rng.randint(low, high)
        words: list[str] = []
        length = 0
        while length < target:
            word = rng.choice(WORDS)
            words.append(word)
            length += len(word) + 1
        out.append(" ".join(words)[:target].strip().capitalize() + ".")
    return out


def _ts(moment: datetime) -> str:
    return moment.isoformat()


class RowMaker:
    """COPY lines for messages; each session's messages get increasing client ids and timestamps."""

    def __init__(self, rng: random.Random, now: datetime):
        self.rng = rng
        self.now = _ts(now)
        self.seq: Counter[str] = Counter()
        self.user_texts = texts(rng, 200, 40, 200)
        self.assistant_texts = texts(rng, 200, 100, 600)
        self.short_texts = texts(rng, 200, 20, 120)

    def rich(self, session: str) -> str:
        """A message as a chat client saves it: pairs of user and assistant, every field in use."""
        n = self.seq[session]
        self.seq[session] += 1
        rng = self.rng
        moment = _ts(EPOCH + timedelta(seconds=n * 37, milliseconds=rng.choice((0, 0, 125, 500, 875))))
        message_id = f"m{n:06d}"
        if n % 2 == 0:
            fields = [session, message_id, "user", rng.choice(self.user_texts), "text"] + [NULL] * 8
        else:
            total = rng.randint(50, 2000)
            fields = [
                session,
                message_id,
                "assistant",
                rng.choice(self.assistant_texts),
                rng.choice(("text", "markdown")),
                "gpt-4o-mini",
                "gpt-4o-mini-2024-07-18",
                str(total),
                str(total // 3),
                str(total - total // 3),
                f"m{n - 1:06d}",
                str(rng.randint(200, 9000)),
                f"chatcmpl-{uuid.UUID(int=rng.getrandbits(128)).hex}",
            ]
        error = n % 2 == 1 and rng.random() < 0.02
        suggestions = '["Tell me more", "Give an example"]' if n % 2 == 1 and rng.random() < 0.1 else NULL
        fields += [
            moment,
            "t" if error else "f",
            "Upstream timeout" if error else NULL,
            "timeout" if error else NULL,
            "30" if error else NULL,
            suggestions,
            self.now,
        ]
        return "\t".join(fields) + "\n"

    def plain(self, session: str, role: str) -> str:
        """A short message without the optional fields (guest chat, filler)."""
        n = self.seq[session]
        self.seq[session] += 1
        moment = _ts(EPOCH + timedelta(seconds=n * 20))
        return (
            f"{session}\tm{n:06d}\t{role}\t{self.rng.choice(self.short_texts)}\ttext\t"
            f"{NULL}\t{NULL}\t{NULL}\t{NULL}\t{NULL}\t{NULL}\t{NULL}\t{NULL}\t{moment}\tf\t"
            f"{NULL}\t{NULL}\t{NULL}\t{NULL}\t{self.now}\n"
        )


def copy_lines(conn: psycopg.Connection, lines, batch: int = 5000) -> None:
    query = sql.SQL("COPY chat_messages ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    with conn.cursor() as cur, cur.copy(query) as copy:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= batch:
                copy.write("".join(buffer))
                buffer.clear()
        if buffer:
            copy.write("".join(buffer))


def create_sessions(conn: psycopg.Connection, rows: list[tuple], now: datetime) -> None:
    """rows: (id, user_id or None, session_key)."""
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY chat_sessions (id, user_id, session_key, guest_name, title, message_count, total_tokens,"
            " created_at, updated_at) FROM STDIN"
        ) as copy,
    ):
        for session_id, user_id, key in rows:
            copy.write_row((session_id, user_id, key, "", "Benchmark", 0, 0, now, now))


def filler_lines(maker: RowMaker, rng: random.Random, first_session: int, sessions: int, count: int):
    """`count` filler messages over `sessions` sessions from `first_session` on, in random order."""
    for _ in range(count):
        session = f"filler-{first_session + rng.randrange(sessions):07d}"
        yield maker.plain(session, "user" if maker.seq[session] % 2 == 0 else "assistant")


def refresh_statistics(conn: psycopg.Connection) -> None:
    """Session statistics from the messages, as the service would have kept them."""
    conn.execute(
        """
        UPDATE chat_sessions s SET message_count = m.n, total_tokens = m.tokens, last_message_timestamp = m.last
        FROM (SELECT session_id, count(*) AS n, coalesce(sum(total_tokens), 0) AS tokens,
                     max(message_timestamp) AS last
              FROM chat_messages GROUP BY session_id) m
        WHERE s.id = m.session_id
        """
    )


def vacuum_analyze(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("VACUUM (ANALYZE) chat_messages")
        conn.execute("VACUUM (ANALYZE) chat_sessions")


def user_id(conn: psycopg.Connection, username: str) -> int:
    return conn.execute("SELECT id FROM accounts_user WHERE username = %s", (username,)).fetchone()[0]


def seed(database_url: str, env: dict[str, str], total: int, rng_seed: int = 6) -> Seeded:
    """A fresh, migrated database with the guest session, the 1,000-message history and filler."""
    recreate_database(database_url)
    manage(env, "migrate", "--noinput")
    token = manage(env, "issue_token", BENCH_USER, "--create").strip().splitlines()[-1]
    manage(env, "issue_token", FILLER_USER, "--create")
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    guest_key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    filler_count = total - HISTORY_MESSAGES - GUEST_MESSAGES
    filler_sessions = -(-filler_count // FILLER_PER_SESSION)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        bench_id, filler_id = user_id(conn, BENCH_USER), user_id(conn, FILLER_USER)
        sessions = [(GUEST_SESSION, None, guest_key), (HISTORY_SESSION, bench_id, str(uuid.uuid4()))]
        sessions += [(f"filler-{i:07d}", filler_id, str(uuid.uuid4())) for i in range(filler_sessions)]
        create_sessions(conn, sessions, now)
        # Which session each row belongs to, shuffled; the content is made in that order.
        owners = [GUEST_SESSION] * GUEST_MESSAGES + [HISTORY_SESSION] * HISTORY_MESSAGES + [None] * filler_count
        rng.shuffle(owners)
        maker = RowMaker(rng, now)

        def lines():
            for owner in owners:
                if owner == HISTORY_SESSION:
                    yield maker.rich(owner)
                elif owner == GUEST_SESSION:
                    yield maker.plain(owner, "user" if maker.seq[owner] % 3 else "assistant")
                else:
                    session = f"filler-{rng.randrange(filler_sessions):07d}"
                    yield maker.plain(session, "user" if maker.seq[session] % 2 == 0 else "assistant")

        copy_lines(conn, lines())
        refresh_statistics(conn)
        conn.commit()
    vacuum_analyze(database_url)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        guest_ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM chat_messages WHERE session_id = %s ORDER BY id", (GUEST_SESSION,)
            ).fetchall()
        ]
    return Seeded(token=token, guest_key=guest_key, guest_ids=guest_ids, history_session=HISTORY_SESSION, total=total)


def message_count(database_url: str) -> int:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM chat_messages").fetchone()[0]


def top_up(database_url: str, total: int, rng_seed: int = 7) -> int:
    """Add filler (new sessions, rows in random order) until the table holds `total` messages."""
    missing = total - message_count(database_url)
    if missing <= 0:
        return 0
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        filler_id = user_id(conn, FILLER_USER)
        first = conn.execute("SELECT count(*) FROM chat_sessions WHERE id LIKE 'filler-%'").fetchone()[0]
        sessions = -(-missing // FILLER_PER_SESSION)
        create_sessions(conn, [(f"filler-{first + i:07d}", filler_id, str(uuid.uuid4())) for i in range(sessions)], now)
        copy_lines(conn, filler_lines(RowMaker(rng, now), rng, first, sessions, missing))
        refresh_statistics(conn)
        conn.commit()
    vacuum_analyze(database_url)
    return missing


if __name__ == "__main__":  # a manual check: python -m bench.seed postgres://.../chat_bench 10000
    url, count = sys.argv[1], int(sys.argv[2])
    environment = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    print(seed(url, environment, count))
