"""A network link between a node and its registry that caps each TCP connection's download rate,
as registries and CDNs cap each connection (containerd#8160 saw about 25 MB/s per layer): a TCP
proxy on 127.0.0.1 whose replies (registry → node) are paced per connection. Requests pass
unpaced. Threads, not asyncio: each direction of each connection is one blocking loop."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

CHUNK = 64 * 1024


class CappedLink:
    def __init__(self, upstream: str, bytes_per_second: float) -> None:
        self.upstream = upstream
        self.rate = bytes_per_second
        self.connections = 0
        """Connections accepted so far: how many the client opened in parallel shows here."""
        self._server = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.getsockname()[1]}"

    def start(self) -> CappedLink:
        threading.Thread(target=self._accept, daemon=True, name="link-accept").start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        with self._lock:
            for each in self._sockets:
                _close(each)

    def _accept(self) -> None:
        host, port = self.upstream.rsplit(":", 1)
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            server = socket.create_connection((host, int(port)))
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            threading.Thread(target=_pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=_pipe, args=(server, client, self.rate), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket, rate: float | None) -> None:
    """Copy until either side closes; at most `rate` bytes per second when given."""
    started = time.monotonic()
    sent = 0
    try:
        while data := source.recv(CHUNK):
            sink.sendall(data)
            if rate is not None:
                sent += len(data)
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(each: socket.socket) -> None:
    with contextlib.suppress(OSError):
        each.shutdown(socket.SHUT_RDWR)
    each.close()
