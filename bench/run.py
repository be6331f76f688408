"""`make bench`: the service under load against baselines measured in the same run (issue 6).

1. A fresh PostgreSQL database (chat_bench) is migrated and seeded with COPY:
   a guest session, a 1,000-message session, filler up to 10,000 messages.
2. gunicorn serves it with the production configuration (gunicorn.conf.py),
   production settings plus /bench/bare (bench.settings), PostgreSQL, Redis
   db 9, the JSON request log (to a file), metrics (multiprocess directory) and
   the rate limiter with limits too high to trigger (every request still counted).
3. wrk loads each case: a warm-up, then 3 repetitions of 10 s in rotated order,
   each followed by a single-connection run (its p50 is the service time).
4. The floor of the 1,000-message read is timed in-process (bench/floor.py).
5. Scale: the table is topped up to 1,000,000 messages and poll-10's
   single-connection p50 is measured again.
6. Worker RSS is read from /proc; the limiter's Redis round trips are counted
   through a proxy (bench/redis_proxy.py) in a separate short phase.
7. A table of every figure and its target is printed and bench/results/latest.json written.

Everything binds to 127.0.0.1; every wait has a timeout.
"""

import argparse
import http.client
import itertools
import json
import os
import platform
import resource
import runpy
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import redis

from bench import data_cases, floor, live, seed
from bench.redis_proxy import RoundTripProxy
from bench.scale.procs import stop_process

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
WRK_DIR = BENCH / "wrk"
HOST = "127.0.0.1"

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
# High enough never to trigger, so every request is still counted by the limiter.
RATE_LIMIT_ENV = {
    "RATE_LIMIT_USER_FREE": "100000000/hour",
    "RATE_LIMIT_USER_PRO": "100000000/hour",
    "RATE_LIMIT_USER_ENTERPRISE": "100000000/hour",
    "RATE_LIMIT_ANON": "100000000/hour",
    "RATE_LIMIT_GUEST_POLL": "100000000/minute",
    "RATE_LIMIT_GUEST_CREATE": "100000000/hour",
    "RATE_LIMIT_GUEST_SEND": "100000000/minute",
    "RATE_LIMIT_GUEST_IP": "100000000/minute",
}
POST_SESSIONS = 1000
# The write cases: the sessions each rotates over, their name prefix, messages a request.
POST_PAIR_PREFIX = "bench-post-"
ONE_SESSION_PREFIX = "bench-hot-"  # post-pair-one-session: every request to one session
BULK_PREFIX = "bench-bulk-"
BULK_MESSAGES = 100  # post-100: the most a request may carry
# What redis-py sends once when it opens a connection.
CONNECTION_SETUP = {"HELLO", "CLIENT", "SELECT", "AUTH"}

WRK_MISSING = """wrk is not installed. It is a Debian package:

    sudo apt-get install -y wrk

then run `make bench` again."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
    )
    return result.stdout.strip()


def redis_flush(url: str) -> None:
    """Empty our own db number (9 by default), never another."""
    redis.Redis.from_url(url, socket_timeout=5).flushdb()


def service_env(*, redis_url: str, metrics_dir: Path, experiments: str = "") -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RATE_LIMIT_", "DJANGO_"))}
    env.update(RATE_LIMIT_ENV)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": redis_url,
            "SECRET_KEY": "bench-" + secrets.token_hex(24),
            "ALLOWED_HOSTS": HOST,
            "DEBUG": "false",
            "RATE_LIMIT_ENABLED": "true",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "BENCH_EXPERIMENTS": experiments,
        }
    )
    return env


# --------------------------------------------------------------------------- the server


@dataclass
class ServerConfig:
    workers: int | None = None
    threads: int | None = None
    worker_class: str | None = None

    def command(self, port: int) -> list[str]:
        cmd = [str(Path(sys.executable).parent / "gunicorn")]
        conf = ROOT / "gunicorn.conf.py"
        if conf.exists():
            cmd += ["-c", str(conf)]
        else:
            # Until the production configuration lands: its documented equivalent.
            cmd += ["--worker-class", "sync", "--workers", "3", "--timeout", "30", "--graceful-timeout", "30"]
        if self.worker_class:
            cmd += ["--worker-class", self.worker_class]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return [*cmd, "--bind", f"{HOST}:{port}", "chatsite.wsgi:application"]

    def effective(self, env: dict[str, str]) -> dict:
        """The worker settings gunicorn will run with: the config file under `env`, then our overrides."""
        conf = ROOT / "gunicorn.conf.py"
        values = {"worker_class": "sync", "workers": 3, "threads": 1, "max_requests": 0}
        if conf.exists():
            saved = dict(os.environ)
            os.environ.update(env)
            try:
                loaded = runpy.run_path(str(conf))
            finally:
                os.environ.clear()
                os.environ.update(saved)
            values.update({key: loaded[key] for key in values if key in loaded})
        overrides = {"worker_class": self.worker_class, "workers": self.workers, "threads": self.threads}
        values.update({key: value for key, value in overrides.items() if value})
        values["gunicorn_env"] = {key: value for key, value in env.items() if key.startswith("GUNICORN_")}
        return values


class Server:
    """gunicorn in its own process group; stopped with SIGTERM (SIGKILL after 30 s)."""

    def __init__(self, config: ServerConfig, env: dict[str, str], log_path: Path):
        self.config = config
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self.command = self.config.command(self.port)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.process.returncode}); see {self.log_path}")
            try:
                if request(self.port, "GET", "/bench/bare")[0] == 200 and len(self.worker_pids()) >= 1:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within 60 s; see {self.log_path}")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def logged_durations(self, offset: int) -> tuple[list[float], list[float]]:
        """duration_ms and lock_ms (writes only) of the request-log lines written since `offset`."""
        durations, locks = [], []
        with open(self.log_path, "rb") as log_file:
            log_file.seek(offset)
            for line in log_file:
                if b'"duration_ms"' not in line:
                    continue
                try:
                    entry = orjson.loads(line)
                    durations.append(float(entry["duration_ms"]))
                    if entry.get("lock_ms") is not None:
                        locks.append(float(entry["lock_ms"]))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
        return durations, locks

    def worker_pids(self) -> list[int]:
        if self.process is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.process.pid:
                pids.append(int(entry.name))
        return sorted(pids)

    def worker_rss_mb(self) -> dict[int, float]:
        rss = {}
        for pid in self.worker_pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[pid] = round(int(line.split()[1]) / 1024, 1)
            except OSError:
                continue
        return rss

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the cases


@dataclass
class Case:
    name: str
    method: str
    path: str
    script: str  # a file in bench/wrk
    headers: dict[str, str] = field(default_factory=dict)
    limited: bool = True  # spends the rate limiter
    script_args: tuple[str, ...] = ()  # for the script, after the run's nonce
    messages: int = 0  # a write: the messages each request saves
    sessions: int = POST_SESSIONS  # a write: how many sessions it rotates over
    prefix: str = POST_PAIR_PREFIX  # a write: their name prefix
    prelude: str | None = None  # a file in bench/wrk put before the script (what scripts share)

    def body(self, index: int, nonce: str) -> bytes | None:
        """A write's body like the script's (the check and the round-trip count send it)."""
        if self.method != "POST":
            return None
        session = f"{self.prefix}{index % self.sessions:04d}"
        if self.messages == 2:
            return pair_body(session, nonce)
        return many_body(session, nonce, self.messages)


def pair_body(session: str, nonce: str) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps(
        {
            "sessionId": session,
            "messages": [
                {"id": f"{nonce}-u", "role": "user", "content": "How do I keep a poll fast?", "timestamp": stamp},
                {
                    "id": f"{nonce}-a",
                    "role": "assistant",
                    "content": "Use an index on (session, id).",
                    "model": "gpt-4o-mini",
                    "total_tokens": 412,
                    "user_message_id": f"{nonce}-u",
                    "timestamp": stamp,
                },
            ],
        }
    )


def many_body(session: str, nonce: str, count: int) -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    messages = [
        {"id": f"{nonce}-{i}", "role": "user", "content": "How do I keep a poll fast?", "timestamp": stamp}
        if i % 2 == 0
        else {
            "id": f"{nonce}-{i}",
            "role": "assistant",
            "content": "Use an index.",
            "model": "gpt-4o-mini",
            "total_tokens": 412,
            "timestamp": stamp,
        }
        for i in range(count)
    ]
    return orjson.dumps({"sessionId": session, "messages": messages})


def history_etag(port: int, seeded: seed.Seeded) -> str:
    """The current ETag of the 1,000-message history (no case writes to that session)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(
            "GET",
            f"/api/chat/messages?session_id={seeded.history_session}",
            headers={"Authorization": f"Bearer {seeded.token}"},
        )
        response = conn.getresponse()
        response.read()
        return response.getheader("ETag") or ""
    finally:
        conn.close()


def make_cases(seeded: seed.Seeded, etag: str = "") -> dict[str, Case]:
    auth = {"Authorization": f"Bearer {seeded.token}"}
    guest = f"/api/v1/chat/guest/{seeded.guest_key}/messages"
    history = f"/api/chat/messages?session_id={seeded.history_session}"
    return {
        "bare": Case("bare", "GET", "/bench/bare", "get.lua", limited=False),
        "poll-empty": Case("poll-empty", "GET", f"{guest}?last_message_id={seeded.guest_ids[-1]}", "get.lua"),
        "poll-10": Case("poll-10", "GET", f"{guest}?last_message_id={seeded.guest_ids[-11]}", "get.lua"),
        "history-1000": Case("history-1000", "GET", history, "get.lua", auth),
        "history-page-50": Case("history-page-50", "GET", f"{history}&limit=50", "get.lua", auth),
        "history-304": Case("history-304", "GET", history, "get.lua", {**auth, "If-None-Match": etag}),
        "post-pair": Case(
            "post-pair",
            "POST",
            "/api/chat/messages",
            "post_pair.lua",
            {**auth, "Content-Type": "application/json"},
            prelude="post_common.lua",
            script_args=(str(POST_SESSIONS), POST_PAIR_PREFIX),
            messages=2,
        ),
        # 16 connections appending pairs to one session: they queue on its row lock.
        "post-pair-one-session": Case(
            "post-pair-one-session",
            "POST",
            "/api/chat/messages",
            "post_pair.lua",
            {**auth, "Content-Type": "application/json"},
            prelude="post_common.lua",
            script_args=("1", ONE_SESSION_PREFIX),
            messages=2,
            sessions=1,
            prefix=ONE_SESSION_PREFIX,
        ),
        "post-100": Case(
            "post-100",
            "POST",
            "/api/chat/messages",
            "post_many.lua",
            {**auth, "Content-Type": "application/json"},
            prelude="post_common.lua",
            script_args=(str(POST_SESSIONS), BULK_PREFIX, str(BULK_MESSAGES)),
            messages=BULK_MESSAGES,
            prefix=BULK_PREFIX,
        ),
    }


def check_case(server: Server, case: Case, seeded: seed.Seeded) -> str | None:
    """None if the case answers as it must, else why not."""
    body = case.body(0, "check-" + secrets.token_hex(4))
    status, raw = request(server.port, case.method, case.path, body, case.headers)
    expected = 201 if case.method == "POST" else 304 if case.name == "history-304" else 200
    if status != expected:
        return f"{case.method} {case.path} answered {status}: {raw[:200]!r}"
    if case.name == "history-304":
        return f"a 304 with a body: {raw[:200]!r}" if raw else None
    data = orjson.loads(raw)
    if case.name == "history-page-50" and [m["id"] for m in data] != [f"m{n:06d}" for n in range(950, 1000)]:
        return f"the page returned {len(data)} messages"
    if case.name == "history-1000" and len(data) != seed.HISTORY_MESSAGES:
        return f"history returned {len(data)} messages"
    if case.name.startswith("poll"):
        want = 0 if case.name == "poll-empty" else 10
        if len(data["data"]) != want or data["meta"]["has_more"]:
            return f"{case.name} returned {len(data['data'])} messages, meta {data['meta']}"
    if case.method == "POST" and data.get("count") != case.messages:
        return f"post returned {str(data)[:200]}"
    return None


# --------------------------------------------------------------------------- wrk

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (and of its reaped children: a recycled worker's CPU)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


class CpuMeter:
    """CPU seconds spent so far by each side of a run: gunicorn, our PostgreSQL backends, Redis, wrk.

    PostgreSQL: the backends connected to the benchmark's database (a backend that
    exits mid-run takes its CPU with it). Redis: the whole server, which other
    users of it share. wrk: this process's reaped children (wrk is the only one).
    """

    def __init__(self, server: "Server"):
        self.server = server
        self.database = DATABASE_URL.rsplit("/", 1)[1]
        try:
            self.redis_pid = int(redis.Redis.from_url(REDIS_URL, socket_timeout=5).info("server")["process_id"])
        except (OSError, redis.RedisError, KeyError, ValueError):
            self.redis_pid = None  # a figure we can do without

    def postgres_pids(self) -> list[int]:
        with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,)
            ).fetchall()
        return [row[0] for row in rows]

    def snapshot(self) -> dict:
        master = self.server.process.pid if self.server.process else 0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "gunicorn": {"all": cpu_seconds(master, children=True)}
            | {pid: cpu_seconds(pid) for pid in self.server.worker_pids()},
            "postgres": {pid: cpu_seconds(pid) for pid in self.postgres_pids()},
            "redis": {"all": cpu_seconds(self.redis_pid) if self.redis_pid else 0.0},
            "wrk": {"all": children.ru_utime + children.ru_stime},
        }

    @staticmethod
    def spent(before: dict, after: dict) -> dict[str, float]:
        """CPU seconds per side between two snapshots, process by process (a new one from zero).

        A worker recycled in between is reaped by the master, whose children's time
        then holds all of that worker's CPU: what it had spent before is taken off.
        """
        spent = {
            side: sum(seconds - before[side].get(pid, 0.0) for pid, seconds in after[side].items()) for side in after
        }
        spent["gunicorn"] -= sum(seconds for pid, seconds in before["gunicorn"].items() if pid not in after["gunicorn"])
        return spent


class Wrk:
    def __init__(self, server: Server, tmp: Path, threads: int, connections: int):
        self.server = server
        self.tmp = tmp
        self.threads = threads
        self.connections = connections
        self.runs = 0
        self.nonce = secrets.token_hex(3)
        self.report = (WRK_DIR / "report.lua").read_text()
        self.cpu = CpuMeter(server)

    def script(self, case: Case) -> Path:
        path = self.tmp / f"{case.name}.lua"
        if not path.exists():
            parts = [case.prelude, case.script] if case.prelude else [case.script]
            path.write_text("\n".join([*((WRK_DIR / part).read_text() for part in parts), self.report]))
        return path

    def run(self, case: Case, duration: float, *, single: bool = False) -> dict:
        threads, connections = (1, 1) if single else (self.threads, self.connections)
        self.runs += 1
        cmd = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--timeout",
            "10s",
        ]
        cmd += ["-s", str(self.script(case))]
        for name, value in case.headers.items():
            if name != "Content-Type":
                cmd += ["-H", f"{name}: {value}"]
        cmd += [self.server.base + case.path, "--", f"{self.nonce}r{self.runs}", *case.script_args]
        log_start = self.server.log_size()
        one_session = case.method == "POST" and case.sessions == 1
        since = database_clock() if one_session else None
        cpu_before = self.cpu.snapshot()
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
        cpu_after = self.cpu.snapshot()
        lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH_JSON ")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
        figures = json.loads(lines[-1].removeprefix("BENCH_JSON "))
        figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
        figures["errors"] = sum(
            figures[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        figures["connections"], figures["threads"] = connections, threads
        figures["cpu_ms_per_request"] = {
            side: round(1000 * seconds / max(1, figures["requests"]), 3)
            for side, seconds in CpuMeter.spent(cpu_before, cpu_after).items()
        }
        # The app's own measure (the request log's duration_ms: middleware to view and back,
        # without gunicorn's parsing and writing), over the requests of this run.
        durations, locks = self.server.logged_durations(log_start)
        figures["server_p50_ms"] = statistics.median(durations) if durations else None
        # A write's hold of its session's row lock, as its request log line says (lock_ms:
        # from the grant to the end of the function, by the database's clock).
        figures["lock_p50_ms"] = statistics.median(locks) if locks else None
        figures["lock_p99_ms"] = percentile(locks, 99) if locks else None
        if one_session:
            figures.update(grant_gaps(f"{case.prefix}0000", since))
        return figures


def database_clock() -> datetime:
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def grant_gaps(session_id: str, since: datetime) -> dict:
    """The session's row lock as the database's own clock saw it, since `since`.

    Each write stamps its messages' created_at with the time it was granted the lock
    (chat_session_write). While writers queue for the session, the time from one
    grant to the next is one write's hold plus the hand-over to the next waiter; when
    the queue runs dry between writes (the machine's CPU, not the lock, pacing them),
    it is the time between writes, 1 / the session's writes a second. Either way
    neither the application's clock nor its threads take part. The hold alone, by the
    same clock, is the request log's lock_ms (chat.services.write_sql).
    """
    with psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=5) as conn:
        grants = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT created_at FROM chat_messages WHERE session_id = %s AND created_at >= %s "
                "ORDER BY created_at",
                (session_id, since),
            )
        ]
    gaps = [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(grants)]
    return {
        "grants": len(grants),
        "grant_gap_p50_ms": statistics.median(gaps) if gaps else None,
        "grant_gap_p99_ms": percentile(gaps, 99) if gaps else None,
    }


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def summarize(runs: list[dict]) -> dict:
    rps = [r["rps"] for r in runs]
    locks = [r["lock_p50_ms"] for r in runs if r.get("lock_p50_ms") is not None]
    locks_99 = [r["lock_p99_ms"] for r in runs if r.get("lock_p99_ms") is not None]
    gaps = [r["grant_gap_p50_ms"] for r in runs if r.get("grant_gap_p50_ms") is not None]
    gaps_99 = [r["grant_gap_p99_ms"] for r in runs if r.get("grant_gap_p99_ms") is not None]
    return {
        "grant_gap_p50_ms": statistics.median(gaps) if gaps else None,
        "grant_gap_p99_ms": statistics.median(gaps_99) if gaps_99 else None,
        "lock_p50_ms": statistics.median(locks) if locks else None,
        "lock_p99_ms": statistics.median(locks_99) if locks_99 else None,
        "cpu_ms_per_request": {
            name: round(statistics.median(r["cpu_ms_per_request"][name] for r in runs), 3)
            for name in runs[0]["cpu_ms_per_request"]
        },
        "rps_median": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


def summarize_single(runs: list[dict]) -> dict:
    server = [r["server_p50_ms"] for r in runs if r.get("server_p50_ms") is not None]
    return {
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "server_p50_ms": statistics.median(server) if server else None,
        "p50_min_ms": min(r["p50_us"] for r in runs) / 1000,
        "p50_max_ms": max(r["p50_us"] for r in runs) / 1000,
        "rps_median": statistics.median(r["rps"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "runs": runs,
    }


# --------------------------------------------------------------------------- round trips


def count_round_trips(
    cases: dict[str, Case], config: ServerConfig, tmp: Path, requests_per_case: int, experiments: str
) -> dict[str, dict]:
    """Redis round trips per request of each case, through the counting proxy."""
    proxy = RoundTripProxy().start()
    host_db = REDIS_URL.rsplit("/", 1)
    proxy_url = f"redis://{HOST}:{proxy.port}/{host_db[1]}"
    env = service_env(redis_url=proxy_url, metrics_dir=tmp / "metrics-rt", experiments=experiments)
    server = Server(config, env, tmp / "server-rt.log")
    (tmp / "metrics-rt").mkdir()
    out = {}
    try:
        server.start()
        for case in cases.values():
            # Warm every worker's Redis connection first: connecting is not a request's cost.
            for i in range(30 * max(1, len(server.worker_pids()))):
                send(server, case, i)
            before, before_commands = proxy.snapshot()
            for i in range(requests_per_case):
                send(server, case, 1000 + i)
            after, after_commands = proxy.snapshot()
            commands = after_commands - before_commands
            # A worker that connects for the first time inside the window says hello once.
            setup = sum(n for name, n in commands.items() if name in CONNECTION_SETUP)
            out[case.name] = {
                "requests": requests_per_case,
                "round_trips": after - before,
                "connection_setup_round_trips": setup,
                "per_request": (after - before - setup) / requests_per_case,
                "commands": dict(commands),
            }
    finally:
        server.stop()
        proxy.stop()
    return out


def send(server: Server, case: Case, index: int) -> None:
    body = case.body(index, f"rt{index}-{secrets.token_hex(4)}")
    status, raw = request(server.port, case.method, case.path, body, case.headers)
    if status >= 300 and not (status == 304 and case.name == "history-304"):
        raise RuntimeError(f"{case.name} answered {status}: {raw[:200]!r}")


# --------------------------------------------------------------------------- the report

# The write cases and the messages each request saves (CPU is also given per message).
CASE_MESSAGES = {"post-pair": 2, "post-pair-one-session": 2, "post-100": BULK_MESSAGES}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(results: dict) -> list[dict]:
    cases, rows = results["cases"], []

    def add(name, value, limit, *, at_least: bool, unit="x"):
        met = None if value is None else (value >= limit if at_least else value <= limit)
        rows.append({"target": name, "value": value, "limit": limit, "at_least": at_least, "unit": unit, "met": met})

    bare = cases.get("bare", {}).get("load", {}).get("rps_median")
    for name, limit in (("poll-10", 0.25), ("poll-empty", 0.30), ("post-pair", 0.10)):
        value = ratio(cases.get(name, {}).get("load", {}).get("rps_median"), bare)
        add(f"{name} req/s ÷ bare", value, limit, at_least=True)

    def cpu_of(name: str) -> float | None:
        return sum(cases.get(name, {}).get("load", {}).get("cpu_ms_per_request", {}).values()) or None

    add("post-pair ÷ bare by CPU", ratio(cpu_of("bare"), cpu_of("post-pair")), 0.12, at_least=True)
    one = cases.get("post-pair-one-session", {}).get("load", {})
    add("post-pair-one-session p50 (ms)", one.get("p50_ms"), 30, at_least=False, unit="ms")
    add(
        "post-pair-one-session lock held p50, database clock via the request log (ms)",
        one.get("lock_p50_ms"),
        2,
        at_least=False,
        unit="ms",
    )
    add(
        "post-pair-one-session grant to grant p50, database clock (ms)",
        one.get("grant_gap_p50_ms"),
        2,
        at_least=False,
        unit="ms",
    )
    history = cases.get("history-1000", {}).get("single", {})
    floor_ms = results["floor"]["median_ms"]
    add("history-1000 c1 p50 (wrk) ÷ floor", ratio(history.get("p50_ms"), floor_ms), 2.0, at_least=False)
    add("history-1000 c1 p50 (app log) ÷ floor", ratio(history.get("server_p50_ms"), floor_ms), 2.0, at_least=False)
    scale = results.get("scale", {})
    add("poll-10 c1 p50 at 1M ÷ at 10k", scale.get("ratio"), 1.2, at_least=False)
    data = results.get("data", {})
    search = data.get("search", {})
    add("search c1 p50 (ms)", search.get("small", {}).get("p50_ms"), 25, at_least=False, unit="ms")
    add("search c1 p50 at 1M (ms)", search.get("large", {}).get("p50_ms"), 25, at_least=False, unit="ms")
    add("search c1 p50 at 1M ÷ before", search.get("ratio"), 1.5, at_least=False)
    usage_cpu = sum(cases.get("usage-30d", {}).get("load", {}).get("cpu_ms_per_request", {}).values()) or None
    bare_cpu = sum(cases.get("bare", {}).get("load", {}).get("cpu_ms_per_request", {}).values()) or None
    add("usage-30d ÷ bare by CPU", ratio(bare_cpu, usage_cpu), 0.2, at_least=True)
    export = data.get("export", {})
    add("export worker RSS growth (MB)", export.get("rss_growth_mb"), 30, at_least=False, unit="MB")
    add("export throughput (MB/s)", export.get("mb_per_s"), 0, at_least=True, unit="MB/s")
    add("max worker RSS (MB)", results.get("rss", {}).get("max_mb"), 100, at_least=False, unit="MB")
    trips = results.get("redis_round_trips", {})
    limited = [v["per_request"] for k, v in trips.items() if k != "bare"]
    add("Redis round trips per limited request", max(limited) if limited else None, 1.0, at_least=False, unit="")
    live.targets(results.get("live", {}), add)
    return rows


def fmt(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict) -> str:
    cases = results["cases"]
    bare = cases.get("bare", {}).get("load", {})
    bare_single = cases.get("bare", {}).get("single", {})
    head = (
        "| case | req/s median (min-max) | x bare | p50 ms | p99 ms | c1 p50 ms | c1 p50 x bare | c1 app p50 ms |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for name in (
        "bare",
        "poll-empty",
        "poll-10",
        "history-1000",
        "history-page-50",
        "history-304",
        "post-pair",
        "post-pair-one-session",
        "post-100",
    ):
        if name not in cases:
            lines.append(f"| {name} | not run: {results.get('skipped', {}).get(name, 'n/a')} | | | | | | |")
            continue
        load, single = cases[name]["load"], cases[name]["single"]
        lines.append(
            f"| {name} | {load['rps_median']:.0f} ({load['rps_min']:.0f}-{load['rps_max']:.0f}) "
            f"| {fmt(ratio(load['rps_median'], bare.get('rps_median')))} "
            f"| {load['p50_ms']:.2f} | {load['p99_ms']:.2f} | {single['p50_ms']:.2f} "
            f"| {fmt(ratio(single['p50_ms'], bare_single.get('p50_ms')), 1)} | {fmt(single.get('server_p50_ms'))} |"
        )
    fl = results["floor"]
    lines.append(
        f"| floor (in-process, 1,000 rows) | | | | | {fl['median_ms']:.2f} | | |"
        if fl
        else "| floor | n/a | | | | | | |"
    )
    # On a machine others share, req/s moves with their load; CPU per request hardly does.
    # bare's total CPU / a case's is the req/s ratio the same two cores would give if nothing else ran.
    cpu = [
        "| CPU ms per request (loaded runs) | gunicorn | postgres | redis | wrk | total | x bare by CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    bare_cpu = sum(cases.get("bare", {}).get("load", {}).get("cpu_ms_per_request", {}).values()) or None
    for name, case in cases.items():
        per = case["load"].get("cpu_ms_per_request", {})
        total = sum(per.values())
        cpu.append(
            f"| {name} | {fmt(per.get('gunicorn'))} | {fmt(per.get('postgres'))} | {fmt(per.get('redis'))} "
            f"| {fmt(per.get('wrk'))} | {fmt(total)} | {fmt(ratio(bare_cpu, total))} |"
        )
    writes = [
        "| write case | messages a request | req/s x bare | p50 ms | p99 ms | lock held p50 ms (log) "
        "| lock held p99 ms (log) | grant to grant p50 ms (db) | CPU ms a message | a message x bare by CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, case in cases.items():
        messages = CASE_MESSAGES.get(name)
        if not messages:
            continue
        load = case["load"]
        total = sum(load.get("cpu_ms_per_request", {}).values())
        writes.append(
            f"| {name} | {messages} | {fmt(ratio(load['rps_median'], bare.get('rps_median')))} "
            f"| {load['p50_ms']:.2f} | {load['p99_ms']:.2f} | {fmt(load.get('lock_p50_ms'))} "
            f"| {fmt(load.get('lock_p99_ms'))} | {fmt(load.get('grant_gap_p50_ms'))} "
            f"| {fmt(total / messages, 3)} | {fmt(ratio(bare_cpu, total / messages))} |"
        )
    out = ["\n".join(lines), "", *cpu, "", *writes, ""]
    if results.get("live"):
        out += [live.table(results["live"]), ""]
    out += ["| target | figure | limit | met |", "| --- | --- | --- | --- |"]
    for row in results["targets"]:
        sign = "≥" if row["at_least"] else "≤"
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        out.append(f"| {row['target']} | {fmt(row['value'])} | {sign} {row['limit']} | {met} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per loaded repetition")
    parser.add_argument("--single-duration", type=float, default=5, help="seconds per single-connection run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per case")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--total", type=int, default=10_000, help="messages seeded")
    parser.add_argument("--scale-total", type=int, default=1_000_000, help="messages for the scale case (0: skip)")
    parser.add_argument("--workers", type=int, help="override gunicorn workers")
    parser.add_argument("--worker-threads", type=int, help="override gunicorn threads")
    parser.add_argument("--worker-class", help="override the gunicorn worker class")
    parser.add_argument(
        "--cases",
        default="bare,poll-empty,poll-10,history-1000,history-page-50,history-304,post-pair,"
        "post-pair-one-session,post-100",
    )
    parser.add_argument(
        "--live-cases",
        default="idle-streams,idle-polls,latency,push-vs-poll",
        help="the real-time cases (bench/live.py); empty: none",
    )
    parser.add_argument("--idle-waiters", type=int, default=5000, help="streams (and long-polls) held idle")
    parser.add_argument("--idle-seconds", type=float, default=30, help="the idle CPU window")
    parser.add_argument("--poll-ramp-seconds", type=float, default=45, help="long-pollers started before measuring")
    parser.add_argument("--active-waiters", type=int, default=1000, help="streams of the latency and push cases")
    parser.add_argument("--latency-seconds", type=float, default=100, help="one send a second for this long")
    parser.add_argument("--push-rate", type=float, default=10, help="sends a second in push-vs-poll")
    parser.add_argument("--push-seconds", type=float, default=20, help="each mode of push-vs-poll")
    parser.add_argument(
        "--data-cases", action=argparse.BooleanOptionalAction, default=True, help="search, usage-30d, export (issue 14)"
    )
    parser.add_argument("--round-trip-requests", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also sample each case with py-spy (slower)")
    parser.add_argument("--experiments", default="", help="proposed app changes to apply (bench/experiments.py)")
    parser.add_argument("--output", default=str(RESULTS / "latest.json"))
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    started = time.monotonic()
    config = ServerConfig(args.workers, args.worker_threads, args.worker_class)
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_before": loadavg(),
        "wrk": {
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "single_duration_s": args.single_duration,
            "reps": args.reps,
        },
        "cases": {},
        "skipped": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    (tmp / "metrics").mkdir()
    env = service_env(redis_url=REDIS_URL, metrics_dir=tmp / "metrics", experiments=args.experiments)
    results["experiments"] = [name for name in args.experiments.split(",") if name]
    server = Server(config, env, tmp / "server.log")
    try:
        log(f"seeding {args.total:,} messages into {DATABASE_URL.rsplit('/', 1)[1]} ...")
        t = time.monotonic()
        seeded = seed.seed(DATABASE_URL, env, args.total)
        results["seed"] = {"messages": args.total, "seconds": round(time.monotonic() - t, 1)}
        redis_flush(REDIS_URL)
        server.start()
        results["server"] = {
            "command": " ".join(server.command[1:]),
            "worker_processes": len(server.worker_pids()),
            **config.effective(env),
        }
        log(f"gunicorn: {results['server']['command']} {results['server']}")

        all_cases = make_cases(seeded, history_etag(server.port, seeded))
        cases: dict[str, Case] = {}
        for name in args.cases.split(","):
            if name in data_cases.CASES:
                continue  # run (and profiled) with the data cases, after the user's data is seeded
            problem = check_case(server, all_cases[name], seeded)
            if problem:
                log(f"skipping {name}: {problem}")
                problem = problem.split(": b'")[0]
                results["skipped"][name] = problem
            else:
                cases[name] = all_cases[name]

        log("floor: raw psycopg + orjson of the 1,000 rows, in-process ...")
        fl = floor.measure(DATABASE_URL, seeded.history_session)
        api_status, api_body = request(
            server.port, "GET", all_cases["history-1000"].path, None, all_cases["history-1000"].headers
        )
        fl["same_bytes_as_api"] = api_status == 200 and api_body == fl.pop("body")
        results["floor"] = fl
        log(f"floor {fl['median_ms']:.2f} ms, {fl['bytes']:,} bytes, same bytes as the API: {fl['same_bytes_as_api']}")

        wrk = Wrk(server, tmp, args.threads, args.connections)
        reads = [c for c in cases.values() if c.method == "GET"]
        writes = [c for c in cases.values() if c.method != "GET"]
        log("warm-up (reads) ...")
        for case in reads:
            wrk.run(case, args.warmup)
            wrk.run(case, 1, single=True)

        # poll-10 at exactly the seeded size, before post-pair adds rows.
        flat = {}
        if "poll-10" in cases:
            log(f"poll-10 single connection at {args.total:,} messages ...")
            flat["small"] = summarize_single(
                [wrk.run(cases["poll-10"], args.single_duration, single=True) for _ in range(args.reps)]
            )
            flat["small"]["messages"] = seed.message_count(DATABASE_URL)
        for case in writes:
            wrk.run(case, args.warmup)
            wrk.run(case, 1, single=True)

        names = list(cases)
        loaded: dict[str, list] = {n: [] for n in names}
        single: dict[str, list] = {n: [] for n in names}
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            log(f"repetition {rep + 1}/{args.reps}: {' '.join(order)}")
            for name in order:
                loaded[name].append(wrk.run(cases[name], args.duration))
                single[name].append(wrk.run(cases[name], args.single_duration, single=True))
                r = loaded[name][-1]
                log(
                    f"  {name:13} {r['rps']:8.0f} req/s  p50 {r['p50_us'] / 1000:7.2f} ms  p99 {r['p99_us'] / 1000:7.2f} ms"
                    f"  c1 p50 {single[name][-1]['p50_us'] / 1000:6.2f} ms  errors {r['errors'] + single[name][-1]['errors']}"
                )
        for name in names:
            results["cases"][name] = {"load": summarize(loaded[name]), "single": summarize_single(single[name])}
        rss = server.worker_rss_mb()
        results["rss"] = {"after_load_mb": rss}

        data: dict = {}
        if args.data_cases:
            log(f"data cases: {data_cases.DATA_MESSAGES:,} messages of {data_cases.DATA_USER} ...")
            data_token = data_cases.seed_data_user(DATABASE_URL, env)
            data_auth = {"Authorization": f"Bearer {data_token}"}
            search = Case("search", "GET", data_cases.search_path(), "get.lua", data_auth)
            usage = Case("usage-30d", "GET", data_cases.usage_path(), "get.lua", data_auth)
            for case in (search, usage):
                problem = check_case(server, case, seeded)
                if problem:
                    raise RuntimeError(problem)
                wrk.run(case, args.warmup)
            hits = orjson.loads(request(server.port, "GET", search.path, None, data_auth)[1])["results"]
            data["search"] = {"query": data_cases.SEARCH_QUERY, "page": len(hits)}
            data["search"]["small"] = summarize_single(
                [wrk.run(search, args.single_duration, single=True) for _ in range(args.reps)]
            )
            data["search"]["small"]["messages"] = seed.message_count(DATABASE_URL)
            usage_load = [wrk.run(usage, args.duration) for _ in range(args.reps)]
            usage_single = [wrk.run(usage, args.single_duration, single=True) for _ in range(args.reps)]
            results["cases"]["usage-30d"] = {"load": summarize(usage_load), "single": summarize_single(usage_single)}
            data["export"] = data_cases.measure_export(server, data_token, args.reps)
            log(
                f"  search c1 p50 {data['search']['small']['p50_ms']:.2f} ms, usage-30d "
                f"{results['cases']['usage-30d']['load']['rps_median']:.0f} req/s, export "
                f"{data['export']['mb_per_s']:.1f} MB/s (+{data['export']['rss_growth_mb']} MB RSS)"
            )
        results["data"] = data

        if args.profile:
            from bench import profile

            profiled = dict(cases)
            if args.data_cases:  # the data cases named in --cases are profiled too
                profiled.update({c.name: c for c in (search, usage) if c.name in args.cases.split(",")})
            results["profile"] = profile.profile_cases(server, wrk, profiled, tmp, RESULTS)
            profile.print_summary(results["profile"])

        if args.scale_total and "poll-10" in cases:
            log(f"scale: topping up to {args.scale_total:,} messages (COPY, then VACUUM ANALYZE) ...")
            t = time.monotonic()
            added = seed.top_up(DATABASE_URL, args.scale_total)
            log(f"  added {added:,} in {time.monotonic() - t:.0f} s")
            wrk.run(cases["poll-10"], 2, single=True)
            flat["large"] = summarize_single(
                [wrk.run(cases["poll-10"], args.single_duration, single=True) for _ in range(args.reps)]
            )
            flat["large"]["messages"] = seed.message_count(DATABASE_URL)
            flat["ratio"] = flat["large"]["p50_ms"] / flat["small"]["p50_ms"]
            flat["top_up_seconds"] = round(time.monotonic() - t, 1)
            log(
                f"  poll-10 c1 p50 {flat['small']['p50_ms']:.2f} ms at {flat['small']['messages']:,} -> "
                f"{flat['large']['p50_ms']:.2f} ms at {flat['large']['messages']:,} ({flat['ratio']:.2f}x)"
            )
            if "search" in data:
                data_cases.analyze(DATABASE_URL)
                wrk.run(search, 2, single=True)
                data["search"]["large"] = summarize_single(
                    [wrk.run(search, args.single_duration, single=True) for _ in range(args.reps)]
                )
                data["search"]["large"]["messages"] = seed.message_count(DATABASE_URL)
                data["search"]["ratio"] = data["search"]["large"]["p50_ms"] / data["search"]["small"]["p50_ms"]
                log(
                    f"  search c1 p50 {data['search']['small']['p50_ms']:.2f} ms at "
                    f"{data['search']['small']['messages']:,} -> {data['search']['large']['p50_ms']:.2f} ms at "
                    f"{data['search']['large']['messages']:,} ({data['search']['ratio']:.2f}x)"
                )
            results["rss"]["after_scale_mb"] = server.worker_rss_mb()
        results["scale"] = flat

        live_cases = [name for name in args.live_cases.split(",") if name]
        if live_cases:
            meter = CpuMeter(server)
            results["live"] = live.run(
                env=env,
                tmp=tmp,
                api_port=server.port,
                cases=live_cases,
                cpu_snapshot=meter.snapshot,
                cpu_spent=CpuMeter.spent,
                database_url=DATABASE_URL,
                args=args,
                log=log,
            )
        all_rss = list(results["rss"]["after_load_mb"].values()) + list(
            results["rss"].get("after_scale_mb", {}).values()
        )
        results["rss"]["max_mb"] = max(all_rss) if all_rss else None
        server.stop()
        results["server_log_errors"] = count_error_lines(tmp / "server.log")

        log("counting Redis round trips per request through a proxy ...")
        results["redis_round_trips"] = count_round_trips(cases, config, tmp, args.round_trip_requests, args.experiments)
        for name, v in results["redis_round_trips"].items():
            log(f"  {name:13} {v['per_request']:.2f} round trips/request {v['commands']}")
    finally:
        server.stop()
        results["load_after"] = loadavg()
        results["seconds"] = round(time.monotonic() - started)
    results["targets"] = targets(results)
    text = table(results)
    results["table"] = text
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2, default=str) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(text)
    print()
    print(
        f"{results['server']['command']} · wrk -t{args.threads} -c{args.connections}, {args.reps}x{args.duration:g} s, "
        f"c1 {args.reps}x{args.single_duration:g} s · load {results['load_before']} -> {results['load_after']} · "
        f"{results['seconds']} s · written to {args.output}"
    )
    return 0


def count_error_lines(path: Path) -> int:
    try:
        return sum(
            1
            for line in path.read_text(errors="replace").splitlines()
            if '"level": "ERROR"' in line or '"level":"ERROR"' in line
        )
    except OSError:
        return -1


if __name__ == "__main__":
    sys.exit(main())
