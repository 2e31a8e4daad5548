"""Hostile webhook receivers on real local sockets, for the unit and the integration tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def header_drip(give_up: float = 10.0, every: float = 0.2) -> Iterator[tuple[int, list[int]]]:
    """A raw TCP receiver that reads the request, then sends its status line and one header byte per
    `every` seconds. After `give_up` seconds it ends the headers and answers 200, so that a client
    without a total deadline is seen delivering late rather than hanging the test. Yields the port and
    the list of bytes dripped so far."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    sent: list[int] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    began = time.monotonic()
                    while not stop.is_set() and time.monotonic() - began < give_up:
                        conn.sendall(b"a")
                        sent.append(1)
                        time.sleep(every)
                    conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], sent
    finally:
        stop.set()
        thread.join()
        listener.close()
