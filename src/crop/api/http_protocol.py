"""The services' HTTP/1.1 protocol: uvicorn's httptools protocol (llhttp, a C parser) with a limit on the request
head, which httptools does not have and h11, uvicorn's other parser, does (`h11_max_incomplete_event_size`).

h11 parses in Python: on a one-sentence request of the student's mode it was a third of the event loop's time per
request. This keeps the C parser and the limit: a head (request line and headers) over `max_header_bytes` gets
431 and the connection is closed, whether it arrives complete in one read or keeps coming without an end.

How the bytes of an unfinished head are counted: a read that starts while no request is in progress, or inside an
unfinished head, and ends with the head still unfinished, is all head; its bytes count. A read in which the head
begins after the end of a previous request (pipelining) is not counted, as its split is not known: the head may
then exceed the limit by at most one read before the next read is counted whole. A finished head is measured
exactly (its request line and headers) before the request reaches the app.

The limit comes from uvicorn's `h11_max_incomplete_event_size` setting, so `uvicorn.run(..., http=
HeadLimitedHttpToolsProtocol, h11_max_incomplete_event_size=N)` sets it for this protocol as for h11.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

DEFAULT_MAX_HEAD_BYTES = 16 * 1024

_IDLE, _HEAD, _BODY = 0, 1, 2  # where a connection's current request is


class HeadTooLarge(Exception):
    pass


class HeadLimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_head_bytes = int(getattr(config, "h11_max_incomplete_event_size", None) or DEFAULT_MAX_HEAD_BYTES)
        self._where = _IDLE
        self._unfinished = 0  # bytes of the current head counted while it is unfinished
        self._measured = 0  # its request line and headers, as the parser completes them
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        at_start = self._where
        super().data_received(data)
        if self._refused or self._where != _HEAD or at_start == _BODY or self.transport.is_closing():
            return
        self._unfinished += len(data)
        if self._unfinished > self.max_head_bytes:
            self._refuse()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._where = _HEAD
        self._unfinished = 0
        self._measured = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._measured += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._measured += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._where = _BODY
        if self._measured > self.max_head_bytes:
            self._refused = True
            raise HeadTooLarge  # the parser stops; uvicorn answers through send_400_response
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._where = _IDLE

    def send_400_response(self, msg: str) -> None:
        if self._refused:
            self._send_431()
            return
        super().send_400_response(msg)

    def _refuse(self) -> None:
        self._refused = True
        self._send_431()

    def _send_431(self) -> None:
        body = f"request head larger than {self.max_head_bytes} bytes".encode("ascii")
        log.warning("request head too large", extra={"client": self.client, "max_head_bytes": self.max_head_bytes})
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; "
                             b"charset=utf-8\r\ncontent-length: " + str(len(body)).encode("ascii")
                             + b"\r\nconnection: close\r\n\r\n" + body)
        self.transport.close()
