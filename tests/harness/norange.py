"""A registry front that ignores HTTP Range, as some proxies and CDNs do: every request is
passed to the registry without its Range header, so a ranged GET gets the whole blob (200)."""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request

_DROPPED = {"range", "host", "connection", "transfer-encoding"}


class RangeIgnoringFront:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.ranged = 0
        """Requests that asked for a range (and got the whole blob)."""
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward("GET")

            def do_HEAD(self) -> None:
                self._forward("HEAD")

            def _forward(self, method: str) -> None:
                if "Range" in self.headers:
                    front.ranged += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROPPED}
                request = urllib.request.Request(
                    f"http://{front.upstream}{self.path}", headers=headers, method=method
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as reply:
                        status, reply_headers, body = reply.status, reply.headers, reply.read()
                except urllib.error.HTTPError as exc:
                    status, reply_headers, body = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for key, value in reply_headers.items():
                    if key.lower() not in _DROPPED | {"content-length"}:
                        self.send_header(key, value)
                length = reply_headers.get("Content-Length") if method == "HEAD" else None
                self.send_header("Content-Length", length or str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RangeIgnoringFront:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
