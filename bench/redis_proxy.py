"""A loopback TCP proxy in front of Redis that counts round trips, for the limiter's target.

A round trip starts each time a client sends after having been answered (or for
the first time on its connection): a pipeline or a script is one, however many
commands it carries. The first command name of each round trip is tallied too.
Used only in its own phase of the benchmark (a proxy adds latency), with the
service pointed at it through REDIS_URL.
"""

import asyncio
import threading
from collections import Counter

CHUNK = 65536


def command_name(data: bytes) -> str:
    """The first command of a RESP request: b"*2\\r\\n$7\\r\\nEVALSHA..." -> "EVALSHA"."""
    parts = data.split(b"\r\n", 3)
    if len(parts) >= 3 and data.startswith(b"*"):
        return parts[2].decode("ascii", "replace").upper()
    return "?"


class RoundTripProxy:
    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 6379):
        self.upstream = (upstream_host, upstream_port)
        self.lock = threading.Lock()
        self.round_trips = 0
        self.commands: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-proxy", daemon=True)

    def start(self) -> "RoundTripProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Redis proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def snapshot(self) -> tuple[int, Counter[str]]:
        with self.lock:
            return self.round_trips, Counter(self.commands)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        # Stopped: close the listener and every open connection before the loop goes.
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _handle(self, client_reader, client_writer) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        last = {"side": None}

        async def pump(reader, writer, side: str) -> None:
            try:
                while data := await reader.read(CHUNK):
                    if side == "client" and last["side"] != "client":
                        with self.lock:
                            self.round_trips += 1
                            self.commands[command_name(data)] += 1
                    last["side"] = side
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        await asyncio.gather(
            pump(client_reader, upstream_writer, "client"),
            pump(upstream_reader, client_writer, "server"),
        )
