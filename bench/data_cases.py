"""Bench cases of a user's data (issue 14): search, usage-30d, export.

A user (`bench-data`) gets 20,000 messages in 400 sessions over the last 60 days,
COPYed like the rest of the seed; the filler of the other users uses the same
common words, so the search index's entries for the query's words grow with the
table while the user's own stay the same. The ledger is filled from the messages
as the migration does.

- search: one connection, a two-word query, p50 — after the main cases and again
  after the scale top-up to 1,000,000 messages (the ratio must stay within 1.5x);
- usage-30d: GET /api/chat/usage (the last 30 days) under load, its CPU per request
  against bare's (>= 0.2);
- export: the user's whole export (20,000 messages) read by one client: MB/s and
  the growth of the serving worker's RSS (<= 30 MB).
"""

import http.client
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from bench import seed

# The cases of this module: always run with --data-cases; named in --cases, also profiled (--profile).
CASES = ("search", "usage-30d")
DATA_USER = "bench-data"
DATA_MESSAGES = 20_000
DATA_SESSIONS = 400
SEARCH_QUERY = "latency budget"
# Words of the user's messages besides the seed's common ones: accents and other scripts included.
EXTRA_WORDS = (
    "café résumé naïve crème brûlée déjà façade über straße año niño señor açaí smörgåsbord "
    "привет спасибо αθήνα καλημέρα 東京 weekend invoice refund shipping tracking password reset "
    "kubernetes docker terraform ansible pipeline deploy rollback migration schema index vacuum "
    "recipe garlic onion tomato basil oregano pasta risotto dough oven travel flight hotel museum"
).split()


def _texts(rng: random.Random, count: int) -> list[str]:
    """Sentences where each common seed word is rare-ish (a two-word query matches ~1% of them)."""
    vocabulary = EXTRA_WORDS * 6 + list(seed.WORDS)
    out = []
    for _ in range(count):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(6, 60))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def seed_data_user(database_url: str, env: dict[str, str], rng_seed: int = 14) -> str:
    """The data user, their messages and their ledger; returns their API token."""
    token = seed.manage(env, "issue_token", DATA_USER, "--create").strip().splitlines()[-1]
    rng = random.Random(rng_seed)
    now = datetime.now(UTC)
    texts = _texts(rng, 2000)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        user_id = seed.user_id(conn, DATA_USER)
        sessions = [f"data-{i:04d}" for i in range(DATA_SESSIONS)]
        seed.create_sessions(conn, [(s, user_id, str(uuid.uuid4())) for s in sessions], now)

        def lines():
            for i in range(DATA_MESSAGES):
                session = sessions[i % DATA_SESSIONS]
                n = i // DATA_SESSIONS
                moment = now - timedelta(days=60) + timedelta(seconds=i * (60 * 86400 // DATA_MESSAGES))
                fields = [session, f"m{n:06d}", "user" if n % 2 == 0 else "assistant", rng.choice(texts), "text"]
                if n % 2:
                    total = rng.randint(50, 2000)
                    model = rng.choice(("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet"))
                    fields += [model, model, str(total), str(total // 3), str(total - total // 3)]
                else:
                    fields += [seed.NULL] * 5
                fields += [seed.NULL] * 3 + [moment.isoformat(), "f"] + [seed.NULL] * 4 + [now.isoformat()]
                yield "\t".join(fields) + "\n"

        seed.copy_lines(conn, lines())
        seed.refresh_statistics(conn)
        conn.execute(
            """
            INSERT INTO chat_usage_days (user_id, day, model, live, messages, input_tokens, output_tokens,
                                         total_tokens, errors)
            SELECT s.user_id, (m.message_timestamp AT TIME ZONE 'UTC')::date, COALESCE(m.model, ''), TRUE, COUNT(*),
                   COALESCE(SUM(m.input_tokens), 0), COALESCE(SUM(m.output_tokens), 0),
                   COALESCE(SUM(m.total_tokens), 0), SUM(CASE WHEN m.error THEN 1 ELSE 0 END)
            FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id
            WHERE s.user_id = %s GROUP BY 1, 2, 3
            """,
            (user_id,),
        )
        conn.commit()
    seed.vacuum_analyze(database_url)
    analyze(database_url)
    return token


def analyze(database_url: str) -> None:
    """The search index and the ledger, vacuumed and analyzed after a bulk load (as the seed does its tables)."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("VACUUM (ANALYZE) chat_message_search")
        conn.execute("VACUUM (ANALYZE) chat_usage_days")


def search_path() -> str:
    return "/api/chat/search?q=" + SEARCH_QUERY.replace(" ", "%20")


def usage_path() -> str:
    return "/api/chat/usage"


def measure_export(server, token: str, reps: int) -> dict:
    """The user's export, read `reps` times by one client: MB/s and the workers' RSS growth."""
    before = server.worker_rss_mb()
    runs = []
    for _ in range(reps):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        started = time.perf_counter()
        conn.request("GET", "/api/chat/export", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        size = lines = 0
        while chunk := response.read(256 * 1024):
            size += len(chunk)
            lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        conn.close()
        if response.status != 200:
            raise RuntimeError(f"export answered {response.status}")
        runs.append({"bytes": size, "lines": lines, "seconds": round(seconds, 3), "mb_per_s": size / 1e6 / seconds})
    after = server.worker_rss_mb()
    growth = [after[pid] - before[pid] for pid in after if pid in before]
    return {
        "runs": runs,
        "mb_per_s": statistics.median(r["mb_per_s"] for r in runs),
        "bytes": runs[0]["bytes"],
        "lines": runs[0]["lines"],
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_growth_mb": max(growth) if growth else None,
    }
