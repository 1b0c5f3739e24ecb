"""uvicorn's httptools protocol with a request read deadline (slow clients, slowloris).

uvicorn times out idle keep-alive connections but not a request being read: a client that
opens a connection and sends half a header line, or announces a body and never sends it, holds
its connection (and, for a body, a waiting ASGI task) forever. ``read_timeout_protocol(s)``
returns the protocol class to pass as ``uvicorn.Config(http=...)``: from a connection's start
or a request's first byte, its headers AND body must be in within ``s`` seconds (one deadline,
so trickling a byte at a time does not extend it; the data plane, whose bodies are at most
6 MiB). With ``idle_body=True`` (the control plane, whose uploads may be large) the body only
has to keep coming: the deadline moves on while body bytes arrive. Past it: ``408`` with a JSON
``{code, message}`` body and ``connection: close`` when no response has started, else just
closed; the ASGI app sees ``http.disconnect``. While the server itself has paused reading (the
app is slow to consume the body) the clock is not the client's: the deadline moves on. One
timer per request (armed at the first byte, cancelled when the body is complete): no cost on
the request's own path.

Used by the data plane (serving.server) and the control plane (``loopml server``); the
setting is ``LOOPML_HTTP_READ_TIMEOUT_S``.
"""

from __future__ import annotations

from asyncio import TimerHandle

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["read_timeout_protocol"]


def _timeout_response(seconds: float) -> bytes:
    body = orjson.dumps({"code": "request_timeout",
                         "message": f"the request's headers and body did not arrive within "
                                    f"{seconds:g} s (LOOPML_HTTP_READ_TIMEOUT_S)"})
    return b"".join([b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                     b"content-length: ", str(len(body)).encode(), b"\r\n"
                     b"x-amzn-errortype: RequestTimeout\r\nconnection: close\r\n\r\n", body])


class _ReadTimeoutProtocol(HttpToolsProtocol):
    read_timeout_s: float = 30.0
    _response_408: bytes = b""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: TimerHandle | None = None

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte counts too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _read_timed_out(self) -> None:
        self._read_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._not_the_clients_fault():
            self._arm()
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            transport.write(self._response_408)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() → http.disconnect; its send() no-ops
            cycle.message_event.set()
        transport.close()


    def _not_the_clients_fault(self) -> bool:
        return self.flow is not None and self.flow.read_paused


class _IdleBodyProtocol(_ReadTimeoutProtocol):
    """The body's deadline moves on while body bytes keep arriving."""

    _body_progress = False

    def on_body(self, body: bytes) -> None:
        self._body_progress = True
        super().on_body(body)

    def _not_the_clients_fault(self) -> bool:
        progress, self._body_progress = self._body_progress, False
        return progress or super()._not_the_clients_fault()


def read_timeout_protocol(seconds: float, *, idle_body: bool = False) -> type[HttpToolsProtocol]:
    """The httptools protocol class with a ``seconds`` deadline per request read (per pause in
    the body with ``idle_body``)."""
    base = _IdleBodyProtocol if idle_body else _ReadTimeoutProtocol
    return type("ReadTimeoutProtocol", (base,),
                {"read_timeout_s": float(seconds), "_response_408": _timeout_response(seconds)})
