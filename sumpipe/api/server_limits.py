"""What one client may cost `sumpipe serve` before a request reaches the app: time to send its
request head and body, the head's size and header count, and how many connections are served.

uvicorn bounds only the idle time between keep-alive requests (`timeout_keep_alive`) and, with
h11, the head's size; with httptools (which it picks when installed: ~15% less CPU per request)
nothing bounds the head, and nothing at all bounds how long a client takes to send it. So 200
clients sending a header byte every few seconds held 200 sockets forever, and one 64 MiB header
line stalled every other request while httptools appended to it. GuardedHttpToolsProtocol is
uvicorn's own httptools protocol with those bounds added; `uvicorn_options()` is the rest.

Behind API Gateway (the deployed Lambda) none of this applies: API Gateway reads the request, caps
its head (10 KB) and body (10 MB; the app's own 1 MiB limit is lower), times it out (30 s), and
hands the function a whole event.
"""

from __future__ import annotations

import asyncio
import functools
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# The request line and headers must be in within this of the connection (or of the previous
# response, on a kept-alive connection), and a body within this of its headers: generous for any
# real client (a 1 MiB body at 50 KB/s), short enough that idle sockets don't pile up.
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0
# Browsers send 1-8 KB of headers; API Gateway refuses over 10 KB.
MAX_HEAD_BYTES = 32 * 1024
MAX_HEADERS = 100
KEEP_ALIVE_S = 5
# File descriptors kept for the app itself (SQLite, sockets to AWS, logs) under the process's
# open-files limit; the rest are for connections (connection_cap).
APP_FILE_DESCRIPTORS = 64


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is already decided."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for the request head and body, and caps on the
    head's size and header count (431). A client past a deadline gets a 408 and is disconnected."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_since = self.loop.time()
        self._head_bytes = self._head_parsed_bytes = self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        super().connection_made(transport)
        self._arm(HEAD_TIMEOUT_S, "the request head took too long")
        if len(self.connections) > connection_cap():
            self._evict_slowest()

    def _evict_slowest(self) -> None:
        """At the cap, the connection longest in its request head makes room (a real client sends
        its head at once; one still sending it after the others is the slowest, or an attack).
        Without this, the open-files limit is reached and every new connection is dropped."""
        waiting = [
            c
            for c in self.connections
            if isinstance(c, GuardedHttpToolsProtocol) and c._in_head and c is not self
        ]
        if waiting:
            min(waiting, key=lambda c: c._head_since)._send_and_close(
                408, "too slow while the server is full"
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # asyncio hands over at most 256 KiB at a time, so httptools never holds much more
            # than the cap of an unfinished head before it is refused.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._send_and_close(431, f"the request head is over {MAX_HEAD_BYTES} bytes")

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers any parser error with a 400; a callback's refusal has its own status.
        status, message = self._refusal or (400, msg)
        self._send_and_close(status, message)

    # parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_parsed_bytes, self._header_count = True, 0, 0, 0
        self._head_since = self.loop.time()
        if self._deadline is None:
            self._arm(HEAD_TIMEOUT_S, "the request head took too long")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value), 1)
        super().on_header(name, value)

    def _count_head(self, size: int, headers: int) -> None:
        # A head that arrives in one piece is only seen here, parsed: its parts are counted.
        self._head_parsed_bytes += size
        self._header_count += headers
        if self._header_count > MAX_HEADERS:
            self._refusal = (431, f"more than {MAX_HEADERS} request headers")
            raise _Refused
        if self._head_parsed_bytes > MAX_HEAD_BYTES:
            self._refusal = (431, f"the request head is over {MAX_HEAD_BYTES} bytes")
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(BODY_TIMEOUT_S, "the request body took too long")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # deadlines
    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow, why)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, why: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app has answered; only the connection is left to end
        else:
            self._send_and_close(408, why)

    def _send_and_close(self, status: int, message: str) -> None:
        """A plain-text answer written straight to the socket, then the connection closed (the
        app never sees the request)."""
        self._disarm()
        body = message.encode("ascii")
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"x-content-type-options: nosniff\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        self.transport.close()


@functools.cache
def connection_cap() -> int:
    """How many connections to keep open at once: the open-files limit, less the app's own share."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, soft - APP_FILE_DESCRIPTORS)


def uvicorn_options() -> dict[str, Any]:
    """The keyword arguments `sumpipe serve` gives uvicorn.run for these limits."""
    return {
        "http": f"{__name__}:GuardedHttpToolsProtocol",
        "timeout_keep_alive": KEEP_ALIVE_S,
        # Past this many connections or running requests, uvicorn answers 503 at once; below the
        # open-files limit, with room for the connection that evicts a slow one.
        "limit_concurrency": connection_cap() + 8,
    }
