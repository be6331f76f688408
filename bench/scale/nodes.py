"""App nodes (gunicorn) and the balancer (HAProxy) of the scale harness.

Each node is the production gunicorn (gunicorn.conf.py) in a process group of its
own, so that it can be killed whole (a machine going away) and its CPU read from
/proc. HAProxy balances round-robin over the live nodes, health-checks /healthz
every 500 ms, adds X-Forwarded-For (the nodes trust one proxy) and names the node
that answered in X-Served-By.
"""

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.scale.procs import HOST, Stoppable, Unavailable, free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
GUNICORN = Path(sys.executable).parent / "gunicorn"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def request(port: int, method: str, path: str, headers: dict | None = None, body: bytes | None = None, timeout=30):
    """(status, headers with lower-case names, body) of one request on a connection of its own.

    Lower case: HAProxy passes header names on in lower case (HTTP/2 style).
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group (a node: master and workers)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # the fields after the name: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


class AppNode(Stoppable):
    """One machine's app servers: gunicorn with the production configuration, and the live
    process (uvicorn, chatsite.asgi: long-polls and event streams), in one process group."""

    def __init__(self, name: str, env: dict[str, str], root: Path):
        self.name = name
        self.port = free_port()
        self.live_port = free_port()
        self.env = {**env, "GUNICORN_BIND": f"{HOST}:{self.port}", "PROMETHEUS_MULTIPROC_DIR": str(root / name)}
        self.log = root / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.live: subprocess.Popen | None = None

    def start(self) -> "AppNode":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "chatsite.wsgi:application"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            uvicorn = [sys.executable, "-m", "uvicorn", "chatsite.asgi:application", "--no-access-log"]
            self.live = subprocess.Popen(
                [*uvicorn, "--host", HOST, "--port", str(self.live_port)],
                cwd=ROOT,
                env={**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.env["PROMETHEUS_MULTIPROC_DIR"]) + "-live"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def ready(self) -> bool:
        for process in (self.process, self.live):
            if process is None or process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log}")
        try:
            return all(request(port, "GET", "/healthz", timeout=2)[0] == 200 for port in (self.port, self.live_port))
        except OSError:
            return False

    def groups(self) -> list[int]:
        """The node's process groups: gunicorn's (master and workers) and the live process's."""
        return [process.pid for process in (self.process, self.live) if process is not None]

    def cpu_seconds(self) -> float:
        return sum(group_cpu_seconds(pgid) for pgid in self.groups()) if self.alive else 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        for pgid in self.groups():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)

    def kill(self) -> None:
        """SIGKILL the whole node at once: master, workers and live process, mid-request (a machine lost)."""
        self.signal(signal.SIGKILL)
        for process in (self.process, self.live):
            process.wait(10)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        for process in (self.process, self.live):
            if process is None:
                continue
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                process.wait(10)


class EventStream:
    """A text/event-stream, read message event by message event (id and data)."""

    def __init__(self, port: int, path: str, timeout: float = 30):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        self.status = self.response.status

    def next_message(self, timeout: float = 10) -> dict:
        """The next `message` event's data (comments and other events skipped)."""
        deadline = time.monotonic() + timeout
        event: dict[str, str] = {}
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message within {timeout} s")
            self.conn.sock.settimeout(left)
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip(b"\r\n").decode()
            if not line:
                if event.get("event") == "message":
                    return json.loads(event["data"])
                event = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                event[field] = value[1:] if value.startswith(" ") else value

    def close(self) -> None:
        self.conn.close()


class Balancer(Stoppable):
    """HAProxy: `port` balances over every node; `ports[k]` over the first k nodes only (throughput runs)."""

    def __init__(self, nodes: list[AppNode], root: Path | None = None):
        self.binary = shutil.which("haproxy")
        if self.binary is None:
            raise Unavailable("needs HAProxy (Debian: apt-get install haproxy)")
        self.nodes = nodes
        self.root = Path(root or tempfile.mkdtemp(prefix="scale-haproxy-"))
        self.port = free_port()
        self.ports = {k: free_port() for k in range(1, len(nodes) + 1)}
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        servers = [f"    server {node.name} {HOST}:{node.port} check" for node in self.nodes]
        live_servers = [f"    server {node.name} {HOST}:{node.live_port} check" for node in self.nodes]
        lines = [
            "global",
            "    maxconn 4000",
            f"    stats socket {self.root}/haproxy.sock mode 600 level admin",
            "defaults",
            "    mode http",
            "    timeout connect 1s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    option forwardfor",
            # A request that could not reach a node (refused: the node is gone) goes to another.
            "    retries 2",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response",
            # A node that fails 3 checks in a row (every 500 ms; 2 s each at most, so a busy
            # node is not taken for a dead one) leaves the rotation.
            "    timeout check 2s",
            "    default-server inter 500ms fall 3 rise 2",
            "frontend all",
            f"    bind {HOST}:{self.port}",
            # The waiting requests (chat.live.app.handles) go to the live processes.
            "    acl waiting path_end /events",
            "    acl waiting urlp(wait) -m found",
            "    use_backend live if waiting",
            "    default_backend all",
            "backend all",
            "    balance roundrobin",
            "    http-response set-header X-Served-By %s",
            "    option httpchk GET /healthz",
            *servers,
            "backend live",
            "    balance leastconn",
            "    http-response set-header X-Served-By %s",
            "    option httpchk GET /healthz",
            *live_servers,
        ]
        for k, port in self.ports.items():
            lines += [
                f"frontend first{k}",
                f"    bind {HOST}:{port}",
                f"    default_backend first{k}",
                f"backend first{k}",
                "    balance roundrobin",
                "    http-response set-header X-Served-By %s",
                "    option httpchk GET /healthz",
                *servers[:k],
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> "Balancer":
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "haproxy.cfg"
        conf.write_text(self.config())
        subprocess.run([self.binary, "-c", "-q", "-f", str(conf)], check=True, timeout=30)
        with open(self.root / "haproxy.log", "ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "-db", "-f", str(conf)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.all_up, timeout=30, what="HAProxy seeing every node up", interval=0.1)
        return self

    def server_states(self, backend: str = "all") -> dict[str, str]:
        """{node name: UP/DOWN/...} as HAProxy's runtime API shows them."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.root / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        states = {}
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == backend and fields[1] not in {"FRONTEND", "BACKEND"}:
                states[fields[1]] = fields[17]
        return states

    def all_up(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"haproxy exited; see {self.root / 'haproxy.log'}")
        try:
            states = {**self.server_states("all"), **{f"{k}-live": v for k, v in self.server_states("live").items()}}
        except OSError:
            return False
        return len(states) == 2 * len(self.nodes) and all(state.startswith("UP") for state in states.values())

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.process.pid) if self.process and self.process.poll() is None else 0.0

    def stop(self) -> None:
        stop_process(self.process)
