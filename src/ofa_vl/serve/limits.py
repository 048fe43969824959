"""Connection limits of ``ofa serve``: a deadline on receiving each request, and uvicorn's settings.

uvicorn bounds idle keep-alive connections (``timeout_keep_alive``), open connections
(``limit_concurrency``, 503 beyond) and shutdown (``timeout_graceful_shutdown``), but nothing bounds
the time a client takes to send a request: its keep-alive timer is reset by every byte, and ASGI
middleware only runs once the headers are parsed. :class:`DeadlineH11Protocol` adds that bound
(nginx's ``client_header_timeout`` + ``client_body_timeout``, as one deadline): a client that has
not sent its whole request, headers and body, ``read_timeout`` seconds after it started (or after
its previous response) gets ``408 Request Timeout`` and is disconnected.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

_TIMEOUT_BODY = b"the request was not received in time\n"
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\n" + (
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
    % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)
TIMED_OUT = "ofa_vl.read_timed_out"  # set in the request's ASGI scope when the deadline cut it
_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.SWITCHED_PROTOCOL)  # the client sent its whole request


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving every request (headers and body)."""

    read_timeout: float = 30.0  # set by :func:`deadline_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        started = self.cycle is not None and self.cycle.response_started
        if self.cycle is not None and not self.cycle.response_complete:
            self.scope[TIMED_OUT] = True  # type: ignore[literal-required]  # the app answered 408
            self.cycle.disconnected = True  # the app's receive() gets http.disconnect
            self.cycle.message_event.set()
        if not started:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in _RECEIVED:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state not in _RECEIVED:
            self._arm()  # the next request on this keep-alive connection has its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def deadline_protocol(read_timeout: float) -> type[DeadlineH11Protocol]:
    """:class:`DeadlineH11Protocol` with its deadline set to ``read_timeout`` seconds."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"read_timeout": read_timeout})


def uvicorn_config(
    app: FastAPI,
    *,
    read_timeout_s: float,
    max_connections: int,
    shutdown_timeout_s: float,
    log_level: str = "info",
    **kwargs: Any,
) -> uvicorn.Config:
    """uvicorn's settings for the service: the request deadline, a cap on open connections (503
    beyond it), and a bound on the wait for requests in flight at shutdown."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=deadline_protocol(read_timeout_s),
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=max(1, round(shutdown_timeout_s)),
        log_level=log_level,
        **kwargs,
    )
