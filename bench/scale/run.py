"""`make scale`: the service on distributed parts, and what it shows (issue 15; README "More than one machine").

Starts, all on 127.0.0.1, on free ports, in temp dirs, from Debian's and PyPI's packages:
a PostgreSQL primary and a streaming replica (initdb, pg_basebackup -R), a Redis
Cluster of 3 primaries and 3 replicas, three app nodes (each gunicorn with the
production configuration and a live process, uvicorn; DATABASE_REPLICA_URL on the
replica, REDIS_URL on the cluster) and HAProxy in front (streams and long-polls to
the live processes). Then prints:

1. limits: 150 concurrent free-user requests through the balancer -> exactly 100
   admitted; 90 polls of one guest session -> exactly 60; 15 guest sessions from one
   IP -> exactly 10;
2. a guest poller and an event stream through the balancer (reading via the
   replica) while six staff members reply from nodes 2 and 3: every id once, in order;
3. a message written on node 1 wakes an event stream held on node 3;
4. throughput of the same load through 1, 2 and 3 nodes (wrk), with CPU per
   request per node;
5. a Redis primary killed under load: served throughout (fail-open), the cluster
   fails over and the limits go on counting;
6. an app node killed under load: HAProxy routes around it; any 5xx was in flight.

Exits non-zero if a check fails. Everything it started is stopped at the end, on
failure and on Ctrl-C. `--short` (CI) runs each phase briefly.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import psycopg

from bench.scale.nodes import ROOT, AppNode, Balancer, EventStream, request
from bench.scale.procs import PostgresPair, RedisClusterProcs, Unavailable, wait_for

RESULTS = ROOT / "bench" / "results"
METRICS_TOKEN = secrets.token_hex(16)
PREFIX = "scale"
UNLIMITED = "100000000/hour"

USERS_SCRIPT = """
import json
from accounts.models import User
from accounts.services import token_for
out = {}
for name, tier, staff in %s:
    user = User.objects.create_user(username=name, password=None, tier=tier, is_staff=staff)
    out[name] = {"token": token_for(user=user).key, "pk": user.pk}
print(json.dumps(out))
"""


def lsn_to_int(text: str) -> int:
    """A PostgreSQL LSN ('16/B374D848') as a byte position (as chat.replica reads it, without Django)."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class Failed(AssertionError):
    pass


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


def check(condition: bool, what: str, checks: list) -> None:
    checks.append((what, bool(condition)))
    print(f"    {'ok  ' if condition else 'FAIL'} {what}", flush=True)


def jrequest(port, method, path, token=None, body=None, headers=None, timeout=30):
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    raw = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        raw = json.dumps(body).encode()
    status, response_headers, data = request(port, method, path, headers, raw, timeout=timeout)
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return status, response_headers, parsed


class Cluster:
    """Everything the harness starts, and the accounts it made."""

    def __init__(self, stack: ExitStack, tmp: Path):
        self.tmp = tmp
        log("PostgreSQL primary + streaming replica (initdb, pg_basebackup -R); Redis Cluster: 3 primaries, 3 replicas")
        pg, redis = PostgresPair(root=tmp / "pg"), RedisClusterProcs(root=tmp / "redis")
        stack.enter_context(pg)  # stopped at the end even if the other one fails to start
        stack.enter_context(redis)
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(pg.start), pool.submit(redis.start)]:
                started.result()
        self.pg, self.redis = pg, redis
        database_url = self.pg.create_database("chat")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RATE_LIMIT_", "DJANGO_", "GUNICORN_"))},
            "DATABASE_URL": database_url,
            "DATABASE_REPLICA_URL": self.pg.url("chat", replica=True),
            "REDIS_URL": self.redis.url,
            "CACHE_KEY_PREFIX": PREFIX,
            "SECRET_KEY": "scale-" + secrets.token_hex(24),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "METRICS_TOKEN": METRICS_TOKEN,
            "TRUSTED_PROXY_COUNT": "1",  # HAProxy appends the client's address
            # The load phases use enterprise users without a practical limit; every
            # other limit is the documented one (phase 1 shows them).
            "RATE_LIMIT_USER_ENTERPRISE": UNLIMITED,
            "GUNICORN_WORKERS": "2",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        log("migrate, accounts")
        self.manage("migrate", "--noinput")
        users = [("free", "free", False), ("load", "enterprise", False)]
        users += [(f"staff{i}", "enterprise", True) for i in range(6)]
        self.users = json.loads(self.manage("shell", "-c", USERS_SCRIPT % repr(users)).strip().splitlines()[-1])
        log("three app nodes (gunicorn and a live process each) and HAProxy")
        # Each part joins the stack before it starts: one that fails half-started is still stopped.
        self.nodes = [stack.enter_context(AppNode(f"node{i}", self.env, tmp)) for i in (1, 2, 3)]
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            wait_for(node.ready, timeout=90, what=f"{node.name} answering", interval=0.2)
        self.balancer = stack.enter_context(Balancer(self.nodes, root=tmp / "haproxy"))
        self.balancer.start()

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed: {result.stderr[-2000:]}")
        return result.stdout

    def wal_position(self) -> int:
        """The primary's WAL write position, in bytes."""
        with psycopg.connect(self.pg.url("chat"), autocommit=True) as conn:
            return lsn_to_int(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])

    def redis_commands(self) -> int:
        """Commands the cluster's primaries have processed (a script counts once: one round trip)."""
        total = 0
        for port in self.redis.primaries():
            stats = self.redis.cli(port, "INFO", "stats")
            total += int(re.search(r"total_commands_processed:(\d+)", stats)[1])
        return total

    def token(self, name: str) -> str:
        return self.users[name]["token"]

    def metric(self, name: str, **labels: str) -> float:
        """A counter summed over every live node (each node's /metrics merges its workers)."""
        total = 0.0
        for node in self.nodes:
            if not node.alive:
                continue
            status, _, body = request(node.port, "GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"})
            if status != 200:
                continue
            for line in body.decode().splitlines():
                series, _, value = line.rpartition(" ")
                series_name, _, label_text = series.partition("{")
                if series_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                    total += float(value)
        return total

    def new_guest(self, ip: str) -> str:
        """A guest session made on node 1 directly, as if from `ip` (its own creation budget)."""
        status, _, body = jrequest(
            self.nodes[0].port, "POST", "/api/v1/chat/guest/sessions", body={}, headers={"X-Forwarded-For": ip}
        )
        if status != 201:
            raise Failed(f"guest session creation answered {status}: {body}")
        return body["data"]["session_key"]


# --------------------------------------------------------------------------- 1. limits


def burst(port: int, count: int, method: str, path: str, token=None, body=None) -> list[tuple[int, dict]]:
    def one(_):
        status, headers, _ = jrequest(port, method, path, token=token, body=body)
        return status, headers

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(one, range(count)))


def window_margin(period: int, margin: float = 5.0) -> None:
    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.05)


def phase_limits(c: Cluster, checks: list, results: dict) -> None:
    log("1. limits counted across three nodes (through HAProxy, round-robin)")
    port = c.balancer.port
    key = c.new_guest("10.0.0.1")
    # Each burst within one fixed window (an hour's edge is a minute's edge too).
    window_margin(60, margin=15)
    free = burst(port, 150, "GET", "/api/chat/sessions", token=c.token("free"))
    window_margin(60, margin=15)
    polls = burst(port, 90, "GET", f"/api/v1/chat/guest/{key}/messages")
    window_margin(60, margin=15)
    creates = burst(port, 15, "POST", "/api/v1/chat/guest/sessions", body={})
    served_by = Counter(h.get("x-served-by") for _, h in free)
    results["limits"] = {
        "free_user_150": dict(Counter(s for s, _ in free)),
        "guest_poll_90": dict(Counter(s for s, _ in polls)),
        "guest_create_15": dict(Counter(s for s, _ in creates)),
        "free_user_served_by": dict(served_by),
    }
    print(f"    150 free-user requests: {dict(Counter(s for s, _ in free))}, by node {dict(served_by)}")
    print(f"    90 polls of one guest session: {dict(Counter(s for s, _ in polls))}")
    print(f"    15 guest sessions from one IP: {dict(Counter(s for s, _ in creates))}")
    check(Counter(s for s, _ in free) == {200: 100, 429: 50}, "free tier: exactly 100 of 150 admitted", checks)
    remaining = sorted(int(h["x-ratelimit-remaining"]) for s, h in free if s == 200)
    check(remaining == list(range(100)), "each admitted request saw its own count (99 .. 0, none twice)", checks)
    check({"node1", "node2", "node3"} <= set(served_by), "the burst was spread over all three nodes", checks)
    check(Counter(s for s, _ in polls) == {200: 60, 429: 30}, "guest polls: exactly 60 of 90 admitted", checks)
    check(Counter(s for s, _ in creates) == {201: 10, 429: 5}, "guest sessions: exactly 10 of 15 from one IP", checks)


# --------------------------------------------------------------------------- 2. poller and writers


def phase_poll(c: Cluster, checks: list, results: dict, seconds: float) -> None:
    log(f"2. a guest poller and a stream through HAProxy, six staff writers on nodes 2 and 3, {seconds:.0f} s")
    key = c.new_guest("10.0.0.2")
    written: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors = Counter()

    def writer(i: int) -> None:
        node = c.nodes[1 + i % 2]
        n = 0
        while not stop.is_set():
            status, _, body = jrequest(
                node.port,
                "POST",
                f"/api/v1/chat/guest/{key}/replies",
                token=c.token(f"staff{i}"),
                body={"content": f"w{i}-{n}"},
            )
            if status == 201:
                with lock:
                    written.append(body["data"]["id"])
            else:
                errors[status] += 1
            n += 1
            time.sleep(0.02)

    reads_before = c.metric("chat_replica_reads_total")
    fallbacks_before = c.metric("chat_replica_fallbacks_total")
    wal_before = c.wal_position()
    seen: list[int] = []
    polls = 0
    cursor = 0

    def poll() -> bool:
        nonlocal cursor, polls
        status, _, body = jrequest(
            c.balancer.port, "GET", f"/api/v1/chat/guest/{key}/messages?last_message_id={cursor}"
        )
        polls += 1
        if status != 200:
            errors[f"poll {status}"] += 1
            return False
        seen.extend(m["id"] for m in body["data"])
        cursor = body["meta"]["last_message_id"]
        return body["meta"]["has_more"]

    streamed: list[int] = []
    stream = EventStream(c.balancer.port, f"/api/v1/chat/guest/{key}/events")

    writers_done = threading.Event()

    def read_stream() -> None:
        while not (writers_done.is_set() and len(streamed) >= len(written)):
            try:
                streamed.append(stream.next_message(timeout=15)["id"])
            except (TimeoutError, EOFError, OSError):
                return

    reader = threading.Thread(target=read_stream)
    reader.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            while poll():
                pass
            time.sleep(0.5)  # 2 polls a second stays within the 60-a-minute guest limit for short runs
    finally:
        stop.set()
        for thread in writers:
            thread.join()
        writers_done.set()
    wait_for(
        lambda: (poll() or True) and (not written or cursor >= max(written)),
        timeout=30,
        what="the poller catching up",
        interval=1.0,
    )
    reader.join(30)
    stream.close()
    during = c.metric("chat_replica_reads_total") - reads_before
    # Writers stopped: once the replica has replayed the session's last write, polls are served there.
    wait_for(
        lambda: (poll() or True) and c.metric("chat_replica_reads_total") - reads_before > during,
        timeout=20, what="a poll served by the replica", interval=1.0,
    )  # fmt: skip
    wal_per_write = (c.wal_position() - wal_before) / max(1, len(written))
    reads = c.metric("chat_replica_reads_total") - reads_before
    fallbacks = c.metric("chat_replica_fallbacks_total") - fallbacks_before
    results["poll"] = {
        "written": len(written), "seen": len(seen), "streamed": len(streamed), "polls": polls, "errors": dict(errors),
        "replica_reads": reads, "primary_fallbacks": fallbacks, "wal_bytes_per_write": round(wal_per_write),
    }  # fmt: skip
    print(f"    written {len(written)} by 6 writers, polled {len(seen)} in {polls} polls; errors {dict(errors)}")
    print(
        f"    polls on the replica: {reads:.0f} ({during:.0f} while the writers wrote), on the primary: {fallbacks:.0f}"
        " (a session written in the last milliseconds is read where the write is: chat.replica)"
    )
    print(
        f"    WAL written per message write (a staff reply: one message, the session's statistics): {wal_per_write:.0f} bytes"
    )
    check(len(written) > 0 and not errors, "every write and poll answered 2xx", checks)
    check(seen == sorted(written), "the poller saw every id once, in order", checks)
    print(f"    an event stream through HAProxy (a live process) got {len(streamed)}")
    check(streamed == sorted(written), "the stream got every id once, in order", checks)
    check(reads > 0, "the poller read via the replica once it had the session's writes", checks)


# --------------------------------------------------------------------------- 3. wake-ups


def phase_wakeup(c: Cluster, checks: list, results: dict) -> None:
    log("3. a message written on node 1 wakes an event stream held on node 3")
    key = c.new_guest("10.0.0.3")
    stream = EventStream(c.nodes[2].live_port, f"/api/v1/chat/guest/{key}/events")
    if stream.status != 200:
        stream.close()
        check(False, f"node 3's event stream opened (it answered {stream.status})", checks)
        return
    delays, matched = [], True
    try:
        for i in range(5):
            started = time.monotonic()
            status, _, body = jrequest(
                c.nodes[0].port, "POST", f"/api/v1/chat/guest/{key}/messages",
                body={"content": f"wake {i}"}, headers={"X-Forwarded-For": "10.0.0.3"},
            )  # fmt: skip
            if status != 201:
                raise Failed(f"the send on node 1 answered {status}: {body}")
            event = stream.next_message(timeout=10)
            delays.append(1000 * (time.monotonic() - started))
            matched = matched and event["id"] == body["data"]["id"]
    finally:
        stream.close()
    delays.sort()
    results["wakeup"] = {"messages": len(delays), "ms_from_send_to_event": [round(d, 1) for d in delays]}
    print(
        f"    5 messages sent on node 1 reached the stream on node 3 in {delays[0]:.0f}-{delays[-1]:.0f} ms from the send"
    )
    check(matched, "node 3's stream got each message, in order", checks)
    check(delays[-1] < 2000, "each within 2 s (a wake-up, not the database re-check)", checks)


# --------------------------------------------------------------------------- 4. throughput


def wrk(port: int, path: str, token: str, seconds: float, connections: int = 16) -> dict:
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{max(1, int(seconds))}s", "-H", f"Authorization: Bearer {token}",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    total = int(re.search(r"(\d+) requests in", out)[1])
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "non_2xx": int(bad[1]) if bad else 0}


def phase_throughput(c: Cluster, checks: list, results: dict, seconds: float) -> None:
    log(f"4. throughput: the same load (wrk, 16 connections, session list) through 1, 2, 3 nodes, {seconds:.0f} s each")
    if shutil.which("wrk") is None:
        print("    skipped: wrk is not installed (apt-get install wrk)")
        results["throughput"] = "wrk missing"
        return
    path = "/api/chat/sessions"
    wrk(c.balancer.ports[3], path, c.token("load"), 1)  # warm every node's connections
    rows = []
    for k in (1, 2, 3):
        cpu_before = [node.cpu_seconds() for node in c.nodes]
        proxy_before = c.balancer.cpu_seconds()
        redis_before = c.redis_commands()
        run = wrk(c.balancer.ports[k], path, c.token("load"), seconds)
        redis_per_request = (c.redis_commands() - redis_before) / run["requests"]
        cpu = [node.cpu_seconds() - before for node, before in zip(c.nodes, cpu_before, strict=True)]
        per_node_requests = run["requests"] / k
        row = {
            "nodes": k, **run,
            "cpu_ms_per_request_per_node": [round(1000 * cpu[i] / per_node_requests, 2) for i in range(k)],
            "cpu_ms_per_request_all_nodes": round(1000 * sum(cpu) / run["requests"], 2),
            "haproxy_cpu_ms_per_request": round(1000 * (c.balancer.cpu_seconds() - proxy_before) / run["requests"], 3),
            "redis_commands_per_request": round(redis_per_request, 2),
            "loadavg": os.getloadavg()[0],
        }  # fmt: skip
        rows.append(row)
        print(
            f"    {k} node(s): {run['rps']:.0f} req/s, non-2xx {run['non_2xx']}; CPU ms per request by node "
            f"{row['cpu_ms_per_request_per_node']} (all nodes {row['cpu_ms_per_request_all_nodes']}), "
            f"HAProxy {row['haproxy_cpu_ms_per_request']}; Redis commands per request (a script's own included) {redis_per_request:.2f}"
        )
        check(run["non_2xx"] == 0, f"{k} node(s): no error under load", checks)
    print(f"    (this machine has {os.cpu_count()} cores shared by every part: more nodes add overhead, not speed)")
    results["throughput"] = rows


# --------------------------------------------------------------------------- load for the kill phases


class Load:
    """Threads sending the session list through HAProxy; every answer's time, status and limit header."""

    def __init__(self, port: int, token: str, threads: int = 6):
        self.port, self.token, self.threads = port, token, threads
        self.answers: list[tuple[float, float, int, str | None]] = []  # start, end, status, remaining
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.workers = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                status, headers, _ = jrequest(self.port, "GET", "/api/chat/sessions", token=self.token, timeout=10)
                remaining = headers.get("x-ratelimit-remaining")
            except OSError:
                status, remaining = 0, None
            with self.lock:
                self.answers.append((start, time.monotonic(), status, remaining))

    def __enter__(self):
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for worker in self.workers:
            worker.join()


def phase_redis_failover(c: Cluster, checks: list, results: dict, seconds: float) -> None:
    log("5. a Redis primary killed under load")
    pk = c.users["load"]["pk"]
    primary = c.redis.primary_of(f"{{{pk}}}")  # the slot of the load user's counters
    failures_before = c.metric("chat_rate_limiter_failures_total")
    with Load(c.balancer.port, c.token("load")) as load:
        time.sleep(seconds / 2)
        killed_at = time.monotonic()
        c.redis.kill(primary)
        wait_for(
            lambda: c.redis.serves(f"{{{pk}}}") not in {None, primary},
            timeout=30,
            what="a replica promoted",
            interval=0.1,
        )
        promoted_at = time.monotonic()
        time.sleep(seconds / 2 + 1)
    answers = load.answers
    before = [a for a in answers if a[1] < killed_at]
    during = [a for a in answers if a[0] >= killed_at and a[1] < promoted_at]
    after = [a for a in answers if a[0] >= promoted_at]
    unlimited = [a for a in answers if a[0] >= killed_at and a[3] is None]
    statuses = Counter(a[2] for a in answers)
    last_counted_before = min(int(a[3]) for a in before if a[3] is not None)
    counted_after = [int(a[3]) for a in after if a[3] is not None]
    failures = c.metric("chat_rate_limiter_failures_total") - failures_before
    resumed = [a[0] for a in answers if a[0] >= killed_at and a[3] is not None]
    results["redis_failover"] = {
        "requests": len(answers), "statuses": dict(statuses), "failover_seconds": round(promoted_at - killed_at, 2),
        "served_unlimited": len(unlimited), "limiter_failures_counted": failures,
        "remaining_before_kill": last_counted_before, "remaining_after": min(counted_after) if counted_after else None,
        "counting_resumed_after_s": round(min(resumed) - killed_at, 2) if resumed else None,
    }  # fmt: skip
    print(
        f"    {len(answers)} requests: {dict(statuses)}; the cluster promoted a replica in {promoted_at - killed_at:.1f} s; "
        f"{len(unlimited)} served without counting (fail-open, {failures:.0f} limiter failures counted), "
        f"{len(during)} during the failover"
    )
    print(f"    remaining before the kill {last_counted_before}, after {results['redis_failover']['remaining_after']}")
    check(set(statuses) == {200}, "every request served (fail-open while the slot had no primary)", checks)
    check(
        bool(counted_after) and max(counted_after) < last_counted_before,
        "the limit went on counting after the failover",
        checks,
    )


def phase_node_kill(c: Cluster, checks: list, results: dict, seconds: float) -> None:
    log("6. an app node killed under load")
    victim = c.nodes[1]
    with Load(c.balancer.port, c.token("load"), threads=8) as load:
        time.sleep(seconds / 2)
        killed_at = time.monotonic()
        victim.kill()
        wait_for(
            lambda: c.balancer.server_states().get(victim.name, "").startswith("DOWN"),
            timeout=15,
            what="HAProxy marking the node down",
            interval=0.05,
        )
        down_at = time.monotonic()
        time.sleep(seconds / 2)
    answers = load.answers
    errors = [a for a in answers if a[2] >= 500 or a[2] == 0]
    in_flight = [a for a in answers if a[0] < killed_at <= a[1]]
    errors_not_in_flight = [a for a in errors if not (a[0] < killed_at <= a[1])]
    after = [a for a in answers if a[0] >= down_at]
    results["node_kill"] = {
        "requests": len(answers), "statuses": dict(Counter(a[2] for a in answers)), "in_flight_at_kill": len(in_flight),
        "errors": len(errors), "errors_not_in_flight": len(errors_not_in_flight),
        "marked_down_after_s": round(down_at - killed_at, 2), "requests_after_down": len(after),
    }  # fmt: skip
    print(
        f"    {len(answers)} requests: {dict(Counter(a[2] for a in answers))}; in flight at the kill: {len(in_flight)} "
        f"(on all nodes); 5xx or dropped: {len(errors)}; HAProxy marked it down after {down_at - killed_at:.2f} s"
    )
    check(not errors_not_in_flight, "no 5xx except requests in flight at the kill", checks)
    check(len(after) > 0 and all(a[2] == 200 for a in after), "after that, every request served by the others", checks)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="brief phases (CI): about a minute in all")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs) after the run")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.short else 10.0
    for binary in ("redis-server", "haproxy"):
        if shutil.which(binary) is None:
            print(
                f"{binary} is not installed: apt-get install -y {'redis-server' if binary == 'redis-server' else binary}"
            )
            return 2

    # SIGTERM (CI's stop) ends the run as Ctrl-C does: through the ExitStack, which stops every part.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = Path(tempfile.mkdtemp(prefix="scale-"))
    tmp.chmod(0o755)  # PostgreSQL runs as the postgres user inside it
    checks: list[tuple[str, bool]] = []
    results: dict = {"short": args.short, "cores": os.cpu_count()}
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            cluster = Cluster(stack, tmp)
            results["setup_seconds"] = round(time.monotonic() - started, 1)
            phase_limits(cluster, checks, results)
            phase_poll(cluster, checks, results, 4.0 if args.short else 20.0)
            phase_wakeup(cluster, checks, results)
            phase_throughput(cluster, checks, results, seconds)
            phase_redis_failover(cluster, checks, results, seconds)
            phase_node_kill(cluster, checks, results, seconds)
            log("stopping every part")
    except (Unavailable, Failed) as error:
        print(f"scale: {error}")
        return 2
    except KeyboardInterrupt:
        print("scale: interrupted; every part was stopped")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["checks"] = checks
    if not args.short:  # the figures of the README
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    failed = [what for what, ok in checks if not ok]
    log(f"{len(checks) - len(failed)} of {len(checks)} checks passed in {results['seconds']} s")
    print(f"scale: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
