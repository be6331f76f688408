"""PostgreSQL NOTIFY against Redis PUBLISH as the wake-up channel: the cost each adds to a write, and the
wake-up latency (commit to a listener's receipt). README, "Real-time delivery".

    .venv/bin/python -m bench.wakeup_channels --database postgres://postgres@127.0.0.1:5432/chat_bench \
        --redis redis://127.0.0.1:6379/9 --writes 2000 --threads 4

A scratch table of its own (dropped at the end); a write is one small transaction
(INSERT a row), as a guest send's is in spirit. Figures: median and p99 in microseconds.
"""

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import redis

CHANNEL = "bench_wakeups"


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values):
    return f"p50 {statistics.median(values) * 1e6:7.0f} us   p99 {percentile(values, 0.99) * 1e6:7.0f} us"


def write(conn, mode, rds):
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("INSERT INTO bench_wakeup_writes (body) VALUES ('hello')")
        if mode == "notify":
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, "0f8fad5b-d9cb-469f-a165-70867728950e"))
    committed = time.perf_counter()
    if mode == "publish":
        rds.publish(CHANNEL, "0f8fad5b-d9cb-469f-a165-70867728950e")
    return time.perf_counter() - started, committed


def connect(url):
    conn = psycopg.connect(url, autocommit=True)
    # No fsync wait at commit: the disk's noise (a shared machine) would hide what the wake-up adds.
    conn.execute("SET synchronous_commit = off")
    return conn


def run_writes(url, mode, rds, writes):
    with connect(url) as conn:
        return [write(conn, mode, rds) for _ in range(writes)]


def interleaved(url, rds, writes, modes):
    """Each mode's write times, the modes taking turns write by write (drift in load hits all alike)."""
    times = {mode: [] for mode in modes}
    with connect(url) as conn:
        for _ in range(writes):
            for mode in modes:
                times[mode].append(write(conn, mode, rds)[0])
    return times


def latency(url, redis_url, mode, writes):
    """Commit (or publish) to receipt by a listener in another thread."""
    received = []
    ready = threading.Event()
    stop = threading.Event()

    def listen_pg():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            ready.set()
            for _ in conn.notifies():
                received.append(time.perf_counter())
                if stop.is_set():
                    return

    def listen_redis():
        pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(CHANNEL)
        ready.set()
        while not stop.is_set():
            if pubsub.get_message(timeout=0.5):
                received.append(time.perf_counter())

    thread = threading.Thread(target=listen_pg if mode == "notify" else listen_redis, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    rds = redis.Redis.from_url(redis_url)
    sent = []
    with connect(url) as conn:
        for _ in range(writes):
            _, committed = write(conn, mode, rds)
            sent.append(committed)
            time.sleep(0.002)
    time.sleep(0.5)
    stop.set()
    if mode == "notify":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, 'stop')", (CHANNEL,))
    thread.join(5)
    return [r - s for s, r in zip(sent, received, strict=False)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    rds = redis.Redis.from_url(args.redis)
    with psycopg.connect(args.database, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_wakeup_writes (id bigserial PRIMARY KEY, body text)")
    try:
        modes = ("none", "notify", "publish")
        interleaved(args.database, rds, 200, modes)  # warm up
        print(f"one writer, {args.writes} writes each, modes taking turns: time per write (transaction + wake-up)")
        for mode, times in interleaved(args.database, rds, args.writes, modes).items():
            print(f"  {mode:8} {summary(times)}")
        print(f"{args.threads} writers at once, {args.writes // 4} writes each, twice in turns: writes per second")
        rates = {mode: [] for mode in modes}
        for _ in range(2):
            for mode in modes:
                started = time.perf_counter()
                with ThreadPoolExecutor(args.threads) as pool:
                    list(
                        pool.map(
                            lambda _, mode=mode: run_writes(
                                args.database, mode, redis.Redis.from_url(args.redis), args.writes // 4
                            ),
                            range(args.threads),
                        )
                    )
                rates[mode].append(args.threads * (args.writes // 4) / (time.perf_counter() - started))
        for mode, values in rates.items():
            print(f"  {mode:8} {max(values):8.0f} writes/s (best of 2)")
        print("wake-up latency: commit returned -> listener received")
        for mode in ("notify", "publish"):
            print(f"  {mode:8} {summary(latency(args.database, args.redis, mode, 500))}")
    finally:
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS bench_wakeup_writes")


if __name__ == "__main__":
    main()
