"""The liveness lane's cost: worker CPU per ordinary request, gthread against ProbeLaneWorker.

    flock /tmp/bench.lock .venv/bin/python -m bench.probe_lane [--reps 6] [--seconds 10]

One worker with 4 threads on an empty SQLite file, each class in turn (interleaved),
wrk on the `bare` baseline (bench.urls: the middleware chain and a constant JSON); the
worker's CPU from /proc.
Prints one line per run and the ratios (bench/README.md, "The liveness lane's cost").
"""

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.live import cpu_seconds
from bench.run import Server, ServerConfig

PATH = "/bench/bare"
CLASSES = ("gthread", "chatsite.gunicorn_worker.ProbeLaneWorker")


def wrk(port: int, seconds: int) -> int:
    out = subprocess.run(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True
    ).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def cpu_per_request(worker_class: str, seconds: int, tmp: Path) -> float:
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"sqlite:///{tmp / 'unused.sqlite3'}",
        "SECRET_KEY": "bench-only-secret-key-not-for-production",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_ENABLED": "false",
    }
    server = Server(ServerConfig(workers=1, threads=4, worker_class=worker_class), env, tmp / "gunicorn.log")
    server.start()
    try:
        (worker,) = server.worker_pids()
        wrk(server.port, 3)  # warm-up
        before = cpu_seconds(worker)
        served = wrk(server.port, seconds)
        return (cpu_seconds(worker) - before) / served * 1e6
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="probe-lane-") as tmp:
        for _ in range(args.reps):
            plain, lane = (cpu_per_request(name, args.seconds, Path(tmp)) for name in CLASSES)
            ratios.append(lane / plain)
            print(f"gthread {plain:.1f} us, ProbeLaneWorker {lane:.1f} us of worker CPU a request: {ratios[-1]:.2f}")
    print(
        f"ratio min {min(ratios):.2f}, median {statistics.median(ratios):.2f}, max {max(ratios):.2f}", file=sys.stderr
    )


if __name__ == "__main__":
    main()
