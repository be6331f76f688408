"""The real-time cases of `make bench` (issue 10): idle waiters, delivery latency, push against polling.

The live process runs as production runs it (docker-compose's `live` service:
`uvicorn chatsite.asgi:application`, one event-loop process, the bench's settings,
PostgreSQL and Redis), beside the benchmark's gunicorn, which takes the sends and
the polls. The clients are asyncio tasks in this process, one connection each, so
thousands of them cost one core at most and nothing while idle.

- idle-streams / idle-polls: N guest sessions each hold one event stream (or one
  long-poll, `wait=30`); with all of them open, the live process's RSS and its CPU
  over an idle window, against the same process with nothing open (the baseline,
  measured first in the same run); errors are any refused or broken connection.
- latency: M open streams; one guest send a second through gunicorn to a random
  one of them; the time from the send's 201 (its whole answer read) to the event
  arriving on that session's stream (an event that beats the 201 counts as 0).
- push-vs-poll: the same M guests receive the same messages (R a second) by
  streaming, then by polling gunicorn once a second each; the CPU of every server
  side (gunicorn, live, PostgreSQL backends, Redis) per delivered message.
"""

import asyncio
import math
import os
import random
import resource
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg

from bench import seed
from bench.scale.procs import stop_process

HOST = "127.0.0.1"
GUEST = "/api/v1/chat/guest"
# Every stream and long-poll of the bench comes from 127.0.0.1: the per-IP and per-key
# stream limits (30, 3) are raised like the rate limits, so that every one is counted, none refused.
LIVE_ENV = {"LIVE_STREAMS_PER_IP": "1000000", "LIVE_STREAMS_PER_KEY": "1000000"}
# Opening thousands at once is a thundering herd no client makes; this many at a time.
OPEN_CONCURRENCY = 100


def raise_file_limit() -> int:
    """The soft limit on open files raised to the hard one (each connection is one); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class LiveServer:
    """`uvicorn chatsite.asgi:application`, as docker-compose's `live` service, in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int):
        self.env = {**env, **LIVE_ENV}
        self.log_path = log_path
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "chatsite.asgi:application", "--host", HOST, "--port", str(self.port)]
        cmd += ["--no-access-log", "--timeout-graceful-shutdown", "5", "--backlog", "4096"]
        self.command = cmd
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                cmd,
                cwd=Path(__file__).resolve().parent.parent,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=raise_file_limit,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited ({self.process.returncode}); see {self.log_path}")
            try:
                status = asyncio.run(http_get_status(self.port, f"{GUEST}/{uuid.uuid4()}/events"))
                if status == 404:  # the live app answering (an unknown key)
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"uvicorn did not answer within 60 s; see {self.log_path}")

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process and self.process.poll() is None else []

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def stop(self) -> None:
        stop_process(self.process, timeout=30)


# --------------------------------------------------------------------------- an HTTP/1.1 client of a few lines


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while (chunk := await read_chunk(reader)) is not None:
            parts.append(chunk)
        await reader.readuntil(b"\r\n")  # the trailer's end
        return b"".join(parts)
    return await reader.readexactly(int(headers.get("content-length", "0")))


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    """One chunk of a chunked body; None at the last (empty) one."""
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    if size == 0:
        return None
    data = await reader.readexactly(size + 2)
    return data[:-2]


def request_bytes(method: str, path: str, *, body: bytes = b"", close: bool = False, headers=None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def http_get_status(port: int, path: str) -> int:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(request_bytes("GET", path, close=True))
        status, _ = await asyncio.wait_for(read_head(reader), 10)
        return status
    finally:
        writer.close()


class KeepAlive:
    """One persistent connection (a browser's), reopened when the server closes it."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            try:
                self.writer.write(request_bytes(method, path, body=body))
                status, headers = await asyncio.wait_for(read_head(self.reader), timeout)
                data = await asyncio.wait_for(read_body(self.reader, headers), timeout)
                if headers.get("connection", "").lower() == "close":
                    self.close()
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Stream:
    """An open event stream: the arrival time of each message id it received."""

    key: str
    writer: asyncio.StreamWriter | None = None
    arrivals: dict[int, float] = field(default_factory=dict)
    ended: bool = False
    task: asyncio.Task | None = None


async def open_stream(port: int, key: str) -> Stream:
    stream = Stream(key)
    reader, writer = await asyncio.open_connection(HOST, port)
    stream.writer = writer
    writer.write(request_bytes("GET", f"{GUEST}/{key}/events", headers={"Accept": "text/event-stream"}))
    status, headers = await asyncio.wait_for(read_head(reader), 60)
    if status != 200:
        writer.close()
        raise RuntimeError(f"stream answered {status}")
    stream.task = asyncio.create_task(_receive_events(stream, reader, headers))
    return stream


async def _receive_events(stream: Stream, reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    buffer = b""
    try:
        while True:
            data = await read_chunk(reader) if chunked else await reader.read(65536)
            if not data:
                break
            now = time.perf_counter()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if line.startswith(b"id: "):
                        stream.arrivals[int(line[4:])] = now
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        stream.ended = True


async def open_all(factory, keys: list[str]) -> tuple[list, int]:
    """factory(key) for every key, OPEN_CONCURRENCY at a time; (the opened, how many failed)."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)
    failures = 0

    async def one(key):
        nonlocal failures
        async with gate:
            try:
                return await factory(key)
            except (TimeoutError, OSError, RuntimeError, asyncio.IncompleteReadError):
                failures += 1
                return None

    opened = await asyncio.gather(*(one(key) for key in keys))
    return [item for item in opened if item is not None], failures


def close_streams(streams: list[Stream]) -> None:
    for stream in streams:
        if stream.task:
            stream.task.cancel()
        if stream.writer:
            stream.writer.close()


# --------------------------------------------------------------------------- sessions


def create_guest_sessions(database_url: str, count: int, prefix: str) -> list[str]:
    """`count` new guest sessions (no messages); their keys."""
    keys = [str(uuid.uuid4()) for _ in range(count)]
    now = datetime.now(UTC)
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        seed.create_sessions(conn, [(f"{prefix}-{i:05d}", None, key) for i, key in enumerate(keys)], now)
    return keys


class Sender:
    """Guest sends through gunicorn; each send's message id and the time its whole 201 was read."""

    def __init__(self, port: int):
        self.port = port
        self.sent: list[tuple[str, int, float]] = []  # key, message id, time of the whole 201
        self.failures = 0

    async def send(self, key: str) -> None:
        body = orjson.dumps({"content": "Is anyone there?"})
        connection = KeepAlive(self.port)
        try:
            status, data = await connection.call("POST", f"{GUEST}/{key}/messages", body)
        finally:
            connection.close()
        done = time.perf_counter()
        if status != 201:
            self.failures += 1
            return
        self.sent.append((key, orjson.loads(data)["data"]["id"], done))

    async def send_at_rate(self, keys: list[str], rate: float, seconds: float, rng: random.Random) -> None:
        """`rate` sends a second on schedule, each on its own connection (a slow answer delays no other send)."""
        start, pending = time.perf_counter(), []
        for i in range(round(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(self.send(rng.choice(keys))))
        for task in asyncio.as_completed(pending):
            try:
                await asyncio.wait_for(task, 60)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                self.failures += 1


# --------------------------------------------------------------------------- the cases


def idle_cpu_percent(server: LiveServer, seconds: float) -> float:
    before = server.cpu()
    time.sleep(seconds)
    return 100 * (server.cpu() - before) / seconds


async def idle_streams(server: LiveServer, keys: list[str], idle_seconds: float, baseline: float, log) -> dict:
    started = time.perf_counter()
    streams, failures = await open_all(lambda key: open_stream(server.port, key), keys)
    opened_in = time.perf_counter() - started
    log(f"  {len(streams):,} streams open in {opened_in:.1f} s ({failures} failed); idle {idle_seconds:g} s ...")
    await asyncio.sleep(2)  # let the openings' work settle
    cpu = await asyncio.to_thread(idle_cpu_percent, server, idle_seconds)
    rss = server.rss_mb()
    broken = sum(1 for stream in streams if stream.ended)
    close_streams(streams)
    return {
        "waiters": len(keys),
        "open": len(streams),
        "errors": failures + broken,
        "open_seconds": round(opened_in, 1),
        "idle_seconds": idle_seconds,
        "rss_mb": round(rss, 1),
        "cpu_percent": round(cpu, 2),
        "baseline_cpu_percent": round(baseline, 2),
    }


async def idle_polls(server: LiveServer, keys: list[str], idle_seconds: float, ramp: float, baseline: float, log):
    """N guests long-polling as a widget does: `wait=30`, and again as soon as each (empty) answer comes.

    A long-poll lasts at most 30 s, so N of them held means N re-polls every 30 s:
    that steady state is what is measured, over a window that starts after `ramp`
    seconds (every client's first poll registered).
    """
    answered = errors = in_window = 0
    measuring = False
    stop = asyncio.Event()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def guest(key: str):
        nonlocal answered, errors, in_window
        connection = KeepAlive(server.port)
        try:
            async with gate:  # connections opened as the other cases open theirs
                connection.reader, connection.writer = await asyncio.open_connection(HOST, server.port)
        except OSError:
            errors += 1
        while not stop.is_set():
            try:
                status, _ = await connection.call("GET", f"{GUEST}/{key}/messages?wait=30", timeout=60)
                answered += 1
                in_window += measuring
                if status != 200:
                    errors += 1
                    await asyncio.sleep(1)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                errors += 1
                await asyncio.sleep(1)
        connection.close()

    tasks = [asyncio.create_task(guest(key)) for key in keys]
    await asyncio.sleep(ramp)
    log(
        f"  {len(keys):,} guests long-polling, {answered:,} answers so far ({errors} errors); measuring {idle_seconds:g} s ..."
    )
    errors_before, measuring = errors, True
    cpu = await asyncio.to_thread(idle_cpu_percent, server, idle_seconds)
    measuring = False
    rss = server.rss_mb()
    window_errors = errors - errors_before
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "waiters": len(keys),
        "open": len(keys),
        "errors": window_errors,
        "open_seconds": ramp,
        "idle_seconds": idle_seconds,
        "rss_mb": round(rss, 1),
        "cpu_percent": round(cpu, 2),
        "baseline_cpu_percent": round(baseline, 2),
        "repolls_per_second": round(in_window / idle_seconds, 1),
    }


async def latency(server: LiveServer, api_port: int, keys: list[str], seconds: float, log) -> dict:
    streams, failures = await open_all(lambda key: open_stream(server.port, key), keys)
    by_key = {stream.key: stream for stream in streams}
    log(f"  {len(streams):,} streams open ({failures} failed); one send a second for {seconds:g} s ...")
    await asyncio.sleep(2)
    sender = Sender(api_port)
    await sender.send_at_rate(list(by_key), 1.0, seconds, random.Random(10))
    await asyncio.sleep(2)
    samples, missing = [], 0
    for key, message_id, done in sender.sent:
        arrived = by_key[key].arrivals.get(message_id)
        if arrived is None:
            missing += 1
        else:
            samples.append(max(0.0, arrived - done) * 1000)
    before_201 = sum(1 for key, message_id, done in sender.sent if by_key[key].arrivals.get(message_id, 1e18) < done)
    close_streams(streams)
    return {
        "streams": len(streams),
        "sends": len(sender.sent),
        "errors": failures + sender.failures + missing,
        "arrived_before_201": before_201,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples) if samples else None,
    }


async def push_vs_poll(server, api_port: int, keys: list[str], cpu_meter, cpu_spent, rate: float, seconds: float, log):
    """CPU of every server side per delivered message: M guests streaming, then the same M polling once a second."""
    rng = random.Random(11)
    out = {}

    # Push: one stream per guest.
    streams, failures = await open_all(lambda key: open_stream(server.port, key), keys)
    by_key = {stream.key: stream for stream in streams}
    await asyncio.sleep(2)
    log(f"  push: {len(streams):,} streams, {rate:g} sends a second for {seconds:g} s ...")
    sender = Sender(api_port)
    before = cpu_meter()
    await sender.send_at_rate(list(by_key), rate, seconds, rng)
    await asyncio.sleep(1)
    after = cpu_meter()
    delivered = sum(1 for key, message_id, _ in sender.sent if message_id in by_key[key].arrivals)
    close_streams(streams)
    out["push"] = _cpu_per_message(cpu_spent(before, after), delivered, len(sender.sent), failures + sender.failures)
    cursors = {key: max(by_key[key].arrivals, default=0) if key in by_key else 0 for key in keys}

    # Polling: each guest polls gunicorn once a second on its own keep-alive connection.
    await asyncio.sleep(2)
    log(f"  poll: {len(keys):,} guests polling once a second, {rate:g} sends a second for {seconds:g} s ...")
    seen: dict[str, set[int]] = {key: set() for key in keys}
    polls = errors = 0
    stop = asyncio.Event()

    async def poller(key: str, offset: float):
        nonlocal polls, errors
        connection = KeepAlive(api_port)
        await asyncio.sleep(offset)
        next_at = time.perf_counter()
        while not stop.is_set():
            try:
                status, data = await connection.call("GET", f"{GUEST}/{key}/messages?last_message_id={cursors[key]}")
                polls += 1
                if status == 200:
                    body = orjson.loads(data)
                    seen[key].update(message["id"] for message in body["data"])
                    cursors[key] = body["meta"]["last_message_id"]
                else:
                    errors += 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                errors += 1
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        connection.close()

    tasks = [asyncio.create_task(poller(key, rng.random())) for key in keys]
    await asyncio.sleep(3)  # every poller under way
    sender = Sender(api_port)
    polls_before, before = polls, cpu_meter()
    window_start = time.perf_counter()
    await sender.send_at_rate(keys, rate, seconds, rng)
    await asyncio.sleep(1)
    after, polls_in_window = cpu_meter(), polls - polls_before
    window = time.perf_counter() - window_start
    await asyncio.sleep(1.5)  # the last messages' polls
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(1 for key, message_id, _ in sender.sent if message_id in seen[key])
    out["poll"] = _cpu_per_message(cpu_spent(before, after), delivered, len(sender.sent), errors + sender.failures)
    out["poll"]["polls_per_second"] = round(polls_in_window / window, 1)
    out["rate"] = rate
    out["seconds"] = seconds
    out["guests"] = len(keys)
    push_total, poll_total = out["push"]["cpu_ms_per_message"]["total"], out["poll"]["cpu_ms_per_message"]["total"]
    out["push_over_poll"] = round(push_total / poll_total, 4) if poll_total else None
    return out


def _cpu_per_message(spent: dict[str, float], delivered: int, sent: int, errors: int) -> dict:
    per = {side: round(1000 * seconds / max(1, delivered), 2) for side, seconds in spent.items()}
    per["total"] = round(sum(1000 * seconds for seconds in spent.values()) / max(1, delivered), 2)
    return {"sent": sent, "delivered": delivered, "errors": errors + (sent - delivered), "cpu_ms_per_message": per}


def run(
    *, env: dict, tmp: Path, api_port: int, cases: list[str], cpu_snapshot, cpu_spent, database_url: str, args, log
) -> dict:
    """The live cases named in `cases`.

    `cpu_snapshot()` gives the CPU seconds so far of gunicorn, PostgreSQL and Redis
    process by process (bench.run.CpuMeter), `cpu_spent(before, after)` the seconds
    per side between two of them.
    """
    limit = raise_file_limit()
    results: dict = {"open_file_limit": limit}
    server = LiveServer(env, tmp / "live.log", free_port())
    server.start()
    results["command"] = " ".join(server.command[2:])
    idle_keys = create_guest_sessions(database_url, args.idle_waiters, "live-idle")
    active_keys = create_guest_sessions(database_url, args.active_waiters, "live-active")
    fresh_keys = create_guest_sessions(database_url, args.active_waiters, "live-push")

    def all_cpu() -> dict:
        snapshot = {side: pids for side, pids in cpu_snapshot().items() if side != "wrk"}
        return {**snapshot, "live": {"all": server.cpu()}}

    try:
        log(f"live: {results['command']} (open files: {limit:,}); baseline: idle with nothing open ...")
        time.sleep(2)
        baseline = idle_cpu_percent(server, args.idle_seconds)
        results["baseline"] = {"cpu_percent": round(baseline, 2), "rss_mb": round(server.rss_mb(), 1)}
        if "idle-streams" in cases:
            log(f"idle-streams: {len(idle_keys):,} event streams ...")
            results["idle-streams"] = asyncio.run(idle_streams(server, idle_keys, args.idle_seconds, baseline, log))
            log(f"  {results['idle-streams']}")
            time.sleep(3)  # the closed streams' ends logged and released
        if "idle-polls" in cases:
            log(f"idle-polls: {len(idle_keys):,} guests long-polling (wait=30, again at once) ...")
            results["idle-polls"] = asyncio.run(
                idle_polls(server, idle_keys, args.idle_seconds, args.poll_ramp_seconds, baseline, log)
            )
            log(f"  {results['idle-polls']}")
            time.sleep(3)
        if "latency" in cases:
            log(f"latency: {len(active_keys):,} streams ...")
            results["latency"] = asyncio.run(latency(server, api_port, active_keys, args.latency_seconds, log))
            log(f"  {results['latency']}")
            time.sleep(3)
        if "push-vs-poll" in cases:
            log(f"push-vs-poll: {len(fresh_keys):,} guests ...")
            results["push-vs-poll"] = asyncio.run(
                push_vs_poll(server, api_port, fresh_keys, all_cpu, cpu_spent, args.push_rate, args.push_seconds, log)
            )
            log(f"  push {results['push-vs-poll']['push']}")
            log(f"  poll {results['push-vs-poll']['poll']}")
    finally:
        server.stop()
    results["server_log_errors"] = sum(
        1 for line in (tmp / "live.log").read_text(errors="replace").splitlines() if '"level":"ERROR"' in line
    )
    return results


def targets(live: dict, add) -> None:
    for case in ("idle-streams", "idle-polls"):
        if case in live:
            add(f"{case}: live server RSS (MB)", live[case]["rss_mb"], 600, at_least=False, unit="MB")
            add(f"{case}: live server CPU idle (% of a core)", live[case]["cpu_percent"], 5, at_least=False)
            add(f"{case}: errors", live[case]["errors"], 0, at_least=False, unit="")
    if "latency" in live:
        add("latency: 201 to event p50 (ms)", live["latency"]["p50_ms"], 20, at_least=False, unit="ms")
        add("latency: 201 to event p99 (ms)", live["latency"]["p99_ms"], 100, at_least=False, unit="ms")
        add("latency: errors", live["latency"]["errors"], 0, at_least=False, unit="")
    if "push-vs-poll" in live:
        add("push ÷ poll, CPU per delivered message", live["push-vs-poll"]["push_over_poll"], 0.1, at_least=False)


def fmt(value, digits=2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(live: dict) -> str:
    lines = [
        "| idle waiters | open | errors | opened in s | live RSS MB | live CPU idle, % of a core | baseline (nothing open) | re-polls/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case in ("idle-streams", "idle-polls"):
        if case in live:
            r = live[case]
            lines.append(
                f"| {case} ({r['waiters']:,}) | {r['open']:,} | {r['errors']} | {r['open_seconds']} | {r['rss_mb']} "
                f"| {fmt(r['cpu_percent'])} (over {r['idle_seconds']} s) "
                f"| {fmt(r['baseline_cpu_percent'])} %, {live['baseline']['rss_mb']} MB | {r.get('repolls_per_second', '')} |"
            )
    if "latency" in live:
        r = live["latency"]
        lines += [
            "",
            "| delivery latency | streams | sends | errors | p50 ms | p99 ms | max ms | events before the 201 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| 201 to event | {r['streams']:,} | {r['sends']} | {r['errors']} | {fmt(r['p50_ms'])} "
            f"| {fmt(r['p99_ms'])} | {fmt(r['max_ms'])} | {r['arrived_before_201']} |",
        ]
    if "push-vs-poll" in live:
        r = live["push-vs-poll"]
        lines += [
            "",
            f"| CPU ms per delivered message ({r['guests']:,} guests, {r['rate']:g} sends/s, {r['seconds']:g} s) "
            "| delivered | errors | gunicorn | live | postgres | redis | total | x push |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        push_total = r["push"]["cpu_ms_per_message"]["total"]
        for mode in ("push", "poll"):
            m, per = r[mode], r[mode]["cpu_ms_per_message"]
            label = (
                "push (event streams)" if mode == "push" else f"polling once a second ({m['polls_per_second']} polls/s)"
            )
            lines.append(
                f"| {label} | {m['delivered']}/{m['sent']} | {m['errors']} | {fmt(per.get('gunicorn'))} "
                f"| {fmt(per.get('live'))} | {fmt(per.get('postgres'))} | {fmt(per.get('redis'))} "
                f"| {fmt(per['total'])} | {fmt(per['total'] / push_total if push_total else None, 1)} |"
            )
    return "\n".join(lines)
