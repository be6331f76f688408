"""The benchmark harness stays runnable; its baseline never reaches production's URLs.

No timing here: `make bench` measures. These checks are fast and need neither wrk,
PostgreSQL nor Redis.
"""

import asyncio
import importlib
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import Resolver404, resolve

from bench import live, profile, redis_proxy, seed
from bench.scale import procs
from chat.models import ChatMessage
from chat.selectors import MESSAGE_FIELDS
from tests.support import poll_until

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    "module",
    [
        "bench.run",
        "bench.seed",
        "bench.floor",
        "bench.profile",
        "bench.urls",
        "bench.experiments",
        "bench.scale.run",
        "bench.scale.nodes",
        "bench.scale.procs",
        "bench.live",
        "bench.probe_lane",
    ],
)
def test_bench_modules_import(module):
    importlib.import_module(module)


def test_bench_settings_are_production_settings_with_the_bench_urls():
    bench_settings = importlib.import_module("bench.settings")
    production = importlib.import_module("chatsite.settings")

    assert bench_settings.ROOT_URLCONF == "bench.urls"
    assert bench_settings.MIDDLEWARE == production.MIDDLEWARE
    assert bench_settings.RATE_LIMITS == production.RATE_LIMITS


@override_settings(ROOT_URLCONF="bench.urls")
def test_the_bare_baseline_answers_a_small_constant_json():
    response = Client().get("/bench/bare")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"success": True, "message": "ok", "data": None}
    assert "X-Request-ID" in response  # through production's middleware


@override_settings(ROOT_URLCONF="bench.urls")
def test_the_bench_urls_keep_every_production_route():
    assert resolve("/api/chat/messages").url_name == "chat-messages"


def test_production_urls_have_no_bench_route():
    with pytest.raises(Resolver404):
        resolve("/bench/bare", urlconf="chatsite.urls")
    assert Client().get("/bench/bare").status_code == 404


def test_every_wrk_script_exists_and_reports_one_parseable_line():
    report = (BENCH / "wrk" / "report.lua").read_text()
    assert "BENCH_JSON" in report
    for script in ("get.lua", "post_common.lua", "post_pair.lua", "post_many.lua"):
        assert (BENCH / "wrk" / script).exists()


def test_the_redis_proxy_counts_a_pipeline_as_one_round_trip():
    upstream = socket.create_server(("127.0.0.1", 0))
    port = upstream.getsockname()[1]

    def answer():
        conn, _ = upstream.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(b"+OK\r\n" * data.count(b"*"))

    threading.Thread(target=answer, daemon=True).start()
    proxy = redis_proxy.RoundTripProxy("127.0.0.1", port).start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert client.recv(100) == b"+OK\r\n"
            client.sendall(b"*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n")  # a pipeline: one send
            received = b""
            while len(received) < 10:
                received += client.recv(100)
        round_trips, commands = proxy.snapshot()
    finally:
        proxy.stop()
        upstream.close()

    assert round_trips == 2
    assert commands == {"PING": 1, "MULTI": 1}


def test_the_profile_summary_sorts_samples_into_layers():
    stacks = [
        (["handle_request (/venv/gunicorn/workers/sync.py:1)", "get (/app/chat/api/messages.py:9)"], 3),
        (["handle_request (/venv/gunicorn/workers/gthread.py:1)", "execute (/venv/psycopg/cursor.py:5)"], 1),
        (["run (/venv/gunicorn/arbiter.py:1)", "wait_for_readable (/venv/gunicorn/workers/sync.py:2)"], 50),
    ]

    summary = profile.summarize(stacks)

    assert summary["samples"] == 4
    assert summary["outside_requests"] == 50
    assert dict(summary["by_layer_pct"]) == {"chat (our code)": 75.0, "psycopg": 25.0}


def test_no_experiment_is_applied_unless_named():
    from bench import experiments

    assert experiments.apply("") == []
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.apply("no-such-change")


def test_the_live_client_reads_a_chunked_event_stream_split_anywhere():
    """bench.live's stream reader: chunk framing, events split across chunks, each id's arrival recorded."""
    events = b"id: 7\nevent: message\ndata: {}\n\n: keep-alive\n\nid: 9\nevent: message\ndata: {}\n\n"
    pieces = [events[:10], events[10:41], events[41:]]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"

    async def read() -> live.Stream:
        reader = asyncio.StreamReader()
        reader.feed_data(wire)
        reader.feed_eof()
        stream = live.Stream("key")
        await live._receive_events(stream, reader, {"transfer-encoding": "chunked"})
        return stream

    stream = asyncio.run(read())
    assert sorted(stream.arrivals) == [7, 9]
    assert stream.ended


def test_the_live_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert live.percentile(values, 50) == 50.0
    assert live.percentile(values, 99) == 99.0
    assert live.percentile([3.0], 99) == 3.0
    assert live.percentile([], 50) is None


def test_a_server_that_ignores_sigterm_is_killed_with_its_process_group():
    """bench's servers (gunicorn and its workers, uvicorn) run in a group of their own; stop_process kills it all."""
    script = "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(child.pid, flush=True); time.sleep(60)"
    )
    leader = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True, text=True)
    child = int(leader.stdout.readline())
    procs.stop_process(leader, timeout=0.5)
    assert leader.returncode == -signal.SIGKILL

    def gone() -> bool:
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state == "Z"  # killed, not yet reaped by its new parent

    poll_until(gone, timeout=10, what="the child gone with its group")
    leader.stdout.close()


def test_the_seed_copies_the_columns_a_message_is_read_from_in_their_order():
    columns = [ChatMessage._meta.get_field(field).column for field in MESSAGE_FIELDS.values()]
    assert seed.COLUMNS == ("session_id", *columns, "created_at")
