"""What a connection may cost the service before it is a request: uvicorn's HTTP/1.1 protocol with a
deadline for the request line and headers.

uvicorn waits for a request's headers for as long as the client likes, and each waiting socket
counts as an open connection: 66 sockets that never finish `GET /health HTTP/1.1` kept every
request, /health included, at 503 for minutes. Here a connection whose first request line and
headers have not all arrived within serve.header_timeout_s of its opening is answered 408 and
closed (later requests on a kept-alive connection are bounded by uvicorn's keep-alive timeout),
and open connections no longer stand for load: the app limits requests in flight instead
(serve.max_requests, app.py), and /health never waits behind them.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LATE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderDeadline(H11Protocol):
    """H11Protocol closing a connection whose first request's headers are late (`seconds`)."""

    seconds = 10.0  # set by with_header_deadline

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.seconds, self._headers_late)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self._header_timer is not None:
            self._header_timer.cancel()  # the request line and headers are in
            self._header_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.write(LATE)
            self.transport.close()


def with_header_deadline(seconds: float) -> type[H11Protocol]:
    """The protocol class uvicorn.run(http=...) takes, with serve.header_timeout_s."""

    class Configured(HeaderDeadline):
        pass

    Configured.seconds = float(seconds)
    return Configured


def uvicorn_options(serve) -> dict:
    """How `serve` runs uvicorn (serve: the config's serve section): late headers closed, the
    connection cap, the keep-alive timeout."""
    return {
        "http": with_header_deadline(serve.header_timeout_s),
        "limit_concurrency": serve.max_connections,  # open connections, idle ones too (requests: serve.max_requests)
        "timeout_keep_alive": serve.keep_alive_s,  # idle keep-alive connections are closed
    }
