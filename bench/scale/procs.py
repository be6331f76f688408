"""Real distributed parts on this machine, for the scale harness and the tests.

Every part runs from Debian's binaries, binds to 127.0.0.1 on free ports, keeps its
files in a temporary directory and is stopped by `stop()` (each starter is also a
context manager), so a failed or interrupted run leaves nothing behind:

- RedisClusterProcs: a Redis Cluster of 3 primaries and 3 replicas (redis-server,
  redis-cli --cluster create);
- PostgresPair: a PostgreSQL primary and a streaming replica (initdb, pg_basebackup -R),
  run as the `postgres` OS user when we are root (initdb refuses root).
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class Unavailable(RuntimeError):
    """A binary this part needs is not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s")


def stop_process(process: subprocess.Popen | None, *, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process we started: `sig`, then after `timeout` seconds SIGKILL (to its whole process group
    when it leads one, start_new_session=True: a gunicorn's workers go with it)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait(10)


class Stoppable:
    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


# --------------------------------------------------------------------------- Redis Cluster


class RedisClusterProcs(Stoppable):
    """Six redis-server processes in cluster mode: 3 primaries, each with one replica.

    Each node gets two free ports (clients, and the cluster bus via cluster-port),
    so nothing assumes port + 10000 is free. A short node timeout (1 s) makes a
    failover take a couple of seconds instead of the default 15.
    """

    def __init__(self, *, nodes: int = 6, node_timeout_ms: int = 1000, root: Path | None = None):
        self.binary = shutil.which("redis-server")
        self.cli_binary = shutil.which("redis-cli")
        if not self.binary or not self.cli_binary:
            raise Unavailable("needs redis-server and redis-cli (Debian: apt-get install redis-server)")
        self.root = Path(root or tempfile.mkdtemp(prefix="scale-redis-"))
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen] = {}
        self._own_root = root is None
        for _ in range(nodes):
            self.ports.append(free_port())

    @property
    def url(self) -> str:
        """The REDIS_URL naming this cluster (chatsite.settings: redis+cluster://)."""
        return f"redis+cluster://{HOST}:{self.ports[0]}/0"

    def start(self) -> "RedisClusterProcs":
        try:
            for port in self.ports:
                self._start_node(port)
            for port in self.ports:
                wait_for(lambda port=port: self.cli_ok(port, "PING"), timeout=10, what=f"redis {port} answering")
            nodes = [f"{HOST}:{port}" for port in self.ports]
            subprocess.run(
                [self.cli_binary, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait_for(self.healthy, timeout=30, what="the Redis Cluster reporting state ok", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, port: int) -> None:
        directory = self.root / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        bus = free_port()
        self.processes[port] = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus),
                "--cluster-config-file",
                str(directory / "nodes.conf"),
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def cli(self, port: int, *args: str, timeout: float = 5) -> str:
        result = subprocess.run(
            [self.cli_binary, "-h", HOST, "-p", str(port), *args], capture_output=True, text=True, timeout=timeout
        )
        return result.stdout

    def cli_ok(self, port: int, *args: str) -> bool:
        try:
            return self.cli(port, *args).strip() == "PONG"
        except (subprocess.SubprocessError, OSError):
            return False

    def alive_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and knows 3 primaries holding all slots."""
        for port in self.alive_ports():
            try:
                info = self.cli(port, "CLUSTER", "INFO")
            except (subprocess.SubprocessError, OSError):
                return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
        return True

    def primaries(self) -> list[int]:
        """The ports of the live primaries, as a live node sees them."""
        port = self.alive_ports()[0]
        ports = []
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                ports.append(int(fields[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot now."""
        port = self.alive_ports()[0]
        slot = int(self.cli(port, "CLUSTER", "KEYSLOT", key).strip())
        for line in self.cli(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise LookupError(f"no live primary serves slot {slot}")

    def serves(self, key: str) -> int | None:
        """primary_of(key), or None while no live primary serves its slot (during a failover)."""
        try:
            return self.primary_of(key)
        except LookupError:
            return None

    def kill(self, port: int) -> None:
        """SIGKILL one node: a crash, as a failover test wants."""
        stop_process(self.processes[port], sig=signal.SIGKILL)

    def stop(self) -> None:
        for process in self.processes.values():
            stop_process(process, sig=signal.SIGKILL)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- PostgreSQL


def _as_postgres() -> dict:
    """Popen arguments that run a PostgreSQL binary as the postgres OS user when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as error:
        raise Unavailable("running as root needs a `postgres` OS user for initdb") from error
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresPair(Stoppable):
    """A PostgreSQL primary and a streaming replica of it, each in a temp dir on a free port.

    The primary trusts local TCP connections (loopback only) and allows replication;
    the replica is a pg_basebackup -R of it, a hot standby that streams the WAL.
    `stop_replica()` / `start_replica()` take the replica away and bring it back.
    """

    def __init__(self, *, root: Path | None = None, replica: bool = True, replica_conf: str = ""):
        for binary in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
            if not (PG_BIN / binary).exists():
                raise Unavailable(f"needs {PG_BIN / binary} (Debian: apt-get install postgresql-15)")
        self.root = Path(root or tempfile.mkdtemp(prefix="scale-pg-"))
        self._own_root = root is None
        self.with_replica = replica
        self.replica_conf = replica_conf  # extra postgresql.conf lines, e.g. recovery_min_apply_delay
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.primary_dir = self.root / "primary"
        self.replica_dir = self.root / "replica"
        self.started: list[Path] = []
        self.user_kwargs = _as_postgres()

    def url(self, database: str, *, replica: bool = False) -> str:
        port = self.replica_port if replica else self.primary_port
        return f"postgres://postgres@{HOST}:{port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **self.user_kwargs
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> "PostgresPair":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self.user_kwargs:
                os.chown(self.root, self.user_kwargs["user"], self.user_kwargs["group"])
            self._run(
                PG_BIN / "initdb", "-D", self.primary_dir, "-U", "postgres", "--auth=trust",
                "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8",
            )  # fmt: skip
            with open(self.primary_dir / "postgresql.conf", "a") as conf:
                conf.write(
                    f"\nlisten_addresses = '{HOST}'\nport = {self.primary_port}\n"
                    f"unix_socket_directories = '{self.root}'\n"
                    "wal_level = replica\nmax_wal_senders = 5\nfsync = off\nsynchronous_commit = off\n"
                    "full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 100\n"
                    "hot_standby = on\nhot_standby_feedback = on\n"
                )
            with open(self.primary_dir / "pg_hba.conf", "w") as hba:
                hba.write(
                    "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n"
                )
            self._pg_ctl(self.primary_dir, "start")
            if self.with_replica:
                self._run(
                    PG_BIN / "pg_basebackup", "-h", HOST, "-p", self.primary_port, "-U", "postgres",
                    "-D", self.replica_dir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync",
                )  # fmt: skip
                with open(self.replica_dir / "postgresql.conf", "a") as conf:
                    conf.write(f"\nport = {self.replica_port}\n{self.replica_conf}\n")
                self.start_replica()
        except BaseException:
            self.stop()
            raise
        return self

    def _pg_ctl(self, data_dir: Path, action: str, *extra: str) -> None:
        log = self.root / f"{data_dir.name}.log"
        self._run(PG_BIN / "pg_ctl", "-D", data_dir, "-l", log, "-w", "-t", "60", action, *extra)
        if action == "start" and data_dir not in self.started:
            self.started.append(data_dir)

    def start_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "start")

    def stop_replica(self) -> None:
        self._pg_ctl(self.replica_dir, "stop", "-m", "immediate")
        self.started.remove(self.replica_dir)

    def create_database(self, name: str) -> str:
        """A new empty database on the primary (the replica follows); its URL."""
        self._run(
            PG_BIN / "psql", "-h", HOST, "-p", self.primary_port, "-U", "postgres", "-c", f'CREATE DATABASE "{name}"'
        )
        return self.url(name)

    def stop(self) -> None:
        for data_dir in reversed(self.started):
            with contextlib.suppress(Exception):
                self._pg_ctl(data_dir, "stop", "-m", "immediate")
        self.started.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
