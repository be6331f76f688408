"""The in-process floor of the 1,000-message read: raw psycopg execute + fetch + orjson.

The same rows and columns as GET /api/chat/messages, in the same order, with the
wire names as SQL aliases, so that the bytes equal the API's answer (the
benchmark checks they do): whatever the service spends beyond this is framework.
"""

import statistics
import time

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

FLOOR_SQL = """
SELECT message_id AS "id", role, content, content_type AS "contentType", model,
       original_model AS "originalModel", total_tokens, input_tokens, output_tokens,
       user_message_id, elapsed_time, completion_id, message_timestamp AS "timestamp", error,
       error_message, error_code, retry_after, suggestions
FROM chat_messages WHERE session_id = %s ORDER BY message_timestamp, id
"""
OPTIONS = orjson.OPT_UTC_Z


def render(conn: psycopg.Connection, session_id: str) -> bytes:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(FLOOR_SQL, (session_id,))
        return orjson.dumps(cur.fetchall(), option=OPTIONS)


def measure(database_url: str, session_id: str, iterations: int = 300, warmup: int = 30) -> dict:
    """Median (and spread) of execute + fetch + dumps over a persistent loopback connection."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        set_json_loads(orjson.loads, conn)
        for _ in range(warmup):
            render(conn, session_id)
        totals, fetches = [], []
        body = b""
        for _ in range(iterations):
            start = time.perf_counter()
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(FLOOR_SQL, (session_id,))
                rows = cur.fetchall()
            fetched = time.perf_counter()
            body = orjson.dumps(rows, option=OPTIONS)
            done = time.perf_counter()
            totals.append(done - start)
            fetches.append(fetched - start)
    totals.sort()
    return {
        "median_ms": statistics.median(totals) * 1000,
        "p10_ms": totals[len(totals) // 10] * 1000,
        "p90_ms": totals[len(totals) * 9 // 10] * 1000,
        "execute_fetch_median_ms": statistics.median(fetches) * 1000,
        "iterations": iterations,
        "rows": len(rows),
        "bytes": len(body),
        "body": body,
    }
