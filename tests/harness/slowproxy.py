"""A TCP proxy on loopback that delays every chunk the upstream sends: a far-away registry."""

from __future__ import annotations

import asyncio

from tests.harness.loopthread import LoopThread


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while chunk := await reader.read(16384):
            if delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class SlowProxy:
    """Runs in a thread of its own, so synchronous tests and other event loops can use it."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.port = 0
        self._thread: LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            await asyncio.gather(_pipe(reader, up_writer, 0), _pipe(up_reader, writer, self.delay))
        except (ConnectionError, asyncio.CancelledError):
            writer.close()
        finally:
            self._connections.discard(task)

    async def _start(self) -> None:
        # A backlog for hundreds of simultaneous connects (asyncio's default 100 drops SYNs: +1s).
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)

    def start(self) -> SlowProxy:
        self._thread = LoopThread()
        self._thread.run(self._start())
        return self

    def stop(self) -> None:
        assert self._thread is not None
        self._thread.run(self._stop())
        self._thread.close()
