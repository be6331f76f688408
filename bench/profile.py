"""Where a request's time goes: py-spy samples every gunicorn worker while wrk loads one case.

`make bench BENCH_ARGS=--profile` (after the measured runs, so the sampling never
touches a reported figure). Only the thread holding the GIL is sampled (--gil):
Python's CPU, which on two cores is what bounds throughput; a thread waiting
for PostgreSQL, Redis or the GIL uses none (the CPU that PostgreSQL, Redis and
wrk spend per request is in the results). Only
samples inside gunicorn's handle_request are broken down; the rest (accepting,
polling, worker start-up) is counted as `outside requests`. For each case the report gives the
share of samples per layer (by file) and the heaviest functions, self and
inclusive; the collapsed stacks are written to bench/results/profile-<case>.txt
for a flame graph (e.g. speedscope or flamegraph.pl).
"""

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")

# The layer a frame's file belongs to, first match wins.
LAYERS = (
    ("chat (our code)", ("/chat/", "/accounts/", "/bench/")),
    ("psycopg", ("/psycopg/", "/psycopg_binary/")),
    ("redis", ("/redis/", "/django_redis/")),
    ("rest_framework", ("/rest_framework/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("django", ("/django/",)),
    ("gunicorn", ("/gunicorn/",)),
    ("orjson", ("orjson",)),
    ("python stdlib", ("/lib/python3",)),
)
# A sample belongs to a request when its stack passes through gunicorn's handle_request
# (sync and gthread workers alike); anything else is a worker between requests.
REQUEST_FRAME = "handle_request ("  # ThreadWorker.handle_request, SyncWorker.handle_request


def layer(frame: str) -> str:
    match = FRAME_RE.match(frame)
    path = match["file"] if match else frame
    for name, markers in LAYERS:
        if any(marker in path for marker in markers):
            return name
    return "other"


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def is_idle(frames: list[str]) -> bool:
    return not any(REQUEST_FRAME in frame and "gunicorn" in frame for frame in frames)


def summarize(stacks: list[tuple[list[str], int]], top: int = 15) -> dict:
    busy = [(frames, n) for frames, n in stacks if not is_idle(frames)]
    total = sum(n for _, n in busy) or 1
    by_layer: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in busy:
        leaf = frames[-1]
        by_layer[layer(leaf)] += n
        self_time[leaf] += n
        for frame in set(frames):
            if layer(frame) in ("chat (our code)", "rest_framework", "django", "psycopg", "redis", "prometheus_client"):
                inclusive[frame] += n

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "outside_requests": sum(n for _, n in stacks) - sum(n for _, n in busy),
        "by_layer_pct": pct(by_layer),
        "self_pct": pct(self_time),
        "inclusive_pct": pct(inclusive),
    }


def profile_cases(server, wrk, cases: dict, tmp: Path, results_dir: Path, seconds: float = 8) -> dict:
    """Sample each case under load; the summaries (and collapsed stacks in results_dir)."""
    beside = Path(sys.executable).parent / "py-spy"
    py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if py_spy is None:
        return {name: {"error": "py-spy is not installed (pip install -r bench/requirements.txt)"} for name in cases}
    out = {}
    for case in cases.values():
        raw = tmp / f"profile-{case.name}.txt"
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(server.process.pid),
                "--subprocesses",
                "--full-filenames",
                "--gil",
                "--rate",
                "250",
                "--format",
                "raw",
                "--duration",
                str(int(seconds)),
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        wrk.run(case, seconds)
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate(timeout=10)
        if not raw.exists():
            out[case.name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        shutil.copy(raw, results_dir / raw.name)
        out[case.name] = summarize(parse(raw))
    return out


def print_summary(profiles: dict) -> None:
    for name, summary in profiles.items():
        print(
            f"\n== {name}: {summary.get('samples', 0)} CPU samples in requests, {summary.get('outside_requests', 0)} outside"
        )
        if "error" in summary:
            print("  ", summary["error"])
            continue
        print("  by layer: " + ", ".join(f"{k} {v}%" for k, v in summary["by_layer_pct"]))
        print("  inclusive:")
        for frame, share in summary["inclusive_pct"]:
            print(f"    {share:5.1f}%  {frame}")
        print("  self:")
        for frame, share in summary["self_pct"][:10]:
            print(f"    {share:5.1f}%  {frame}")


if __name__ == "__main__":  # python -m bench.profile bench/results/profile-poll-10.txt ...
    print_summary({Path(p).stem: summarize(parse(Path(p))) for p in sys.argv[1:]})
