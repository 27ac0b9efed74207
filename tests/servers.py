"""Real uvicorn servers on loopback ports for the service tests (each in a thread of the test process)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI

from crop.api.http_protocol import HeadLimitedHttpToolsProtocol


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(app: FastAPI, ready: bool = True, timeout: float = 120.0) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL once it is live (and, with `ready`,
    once /health/ready answers 200). The server stops when the block ends."""
    port = free_port()
    # the protocol `crop serve` runs (httptools with the head limit)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="on", http=HeadLimitedHttpToolsProtocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    path = "/health/ready" if ready else "/health/live"
    try:
        while True:
            try:
                if httpx.get(url + path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"server on {url} did not become {'ready' if ready else 'live'}")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
