"""A worker's memory does not grow with the session: four parallel reads of a ~100 MB
history under gunicorn (one worker, four threads) raise its peak RSS by at most 30 MB."""

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from django.db import connection

from chat.models import ChatSession
from tests.support import call, shared_database_url, start_gunicorn

URL = "/api/chat/messages"
MESSAGES, MIB = 100, 1024 * 1024

pytestmark = [pytest.mark.postgres, pytest.mark.server, pytest.mark.django_db(transaction=True)]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def worker_pid(master: int) -> int:
    [pid] = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and (p / "stat").exists()
        and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master
    ]
    return pid


def test_four_parallel_reads_of_a_100_mb_history_keep_a_worker_within_30_mb(alice, tmp_path):
    session = ChatSession.objects.create(id="big", user=alice)
    with connection.cursor() as cursor:  # 100 messages of 1 MiB, written by PostgreSQL itself
        cursor.execute(
            """
            INSERT INTO chat_messages (session_id, message_id, role, content, content_type, message_timestamp,
                                       error, created_at)
            SELECT %s, 'm' || i, 'assistant', repeat(md5(i::text), %s), 'text',
                   now() - make_interval(secs => 1000 - i), false, now()
            FROM generate_series(1, %s) AS i
            """,
            [session.pk, MIB // 32, MESSAGES],
        )
    ChatSession.objects.filter(pk="big").update(message_count=MESSAGES)
    env = {
        **os.environ,
        "DATABASE_URL": shared_database_url(connection.settings_dict),
        "SECRET_KEY": "test-only-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
    }
    headers = {"Authorization": f"Bearer {alice.api_token}"}
    args = ["chatsite.wsgi", "-w", "1", "--threads", "4", "--worker-class", "gthread", "--timeout", "60"]
    with start_gunicorn(args, env=env, log=tmp_path / "gunicorn.log") as server:
        pid = worker_pid(server.process.pid)

        def read(_) -> str:
            status, _headers, body = call(server.port, "GET", f"{URL}?session_id=big", headers=headers, timeout=60)
            assert status == 200, body[:200]
            return hashlib.sha256(body).hexdigest()

        # The first request also pays for imports, connections and caches.
        status, _headers, body = call(server.port, "GET", f"{URL}?session_id=big", headers=headers, timeout=60)
        assert status == 200, body[:200]
        messages = orjson.loads(body)
        assert len(messages) == MESSAGES and len(messages[-1]["content"]) == MIB
        size, digest = len(body), hashlib.sha256(body).hexdigest()
        del messages, body
        before = memory_mb(pid)
        with ThreadPoolExecutor(4) as pool:
            digests = list(pool.map(read, range(4)))
        after = memory_mb(pid)

    assert digests == [digest] * 4
    growth = after["VmHWM"] - before["VmRSS"]
    print(
        f"worker RSS {before['VmRSS']:.1f} MB; peak while serving 4 reads of {size / MIB:.0f} MB at once: "
        f"{after['VmHWM']:.1f} MB (+{growth:.1f} MB)"
    )
    assert growth <= 30, (before, after)
