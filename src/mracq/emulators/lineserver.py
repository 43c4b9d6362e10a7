"""A line-based TCP protocol server that can go down and come back, with a command log.

The MRFM emulators (attocube AMC JSON-RPC, PI GCS, SRS SR860) subclass :class:`LineServer`
and implement :meth:`LineServer.reply` (one request line in, reply bytes or None out).
Every request line is appended to the shared ``log`` (instrument name, text), so a test
can show that nothing reached an instrument.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time

from mracq.emulators.base import Faults, Restartable, stop_server

log = logging.getLogger(__name__)


class MRFMFaults(Faults):
    """Faults of an MRFM instrument: those of :class:`Faults` and ``nosettle`` (a positioner's
    next move stalls short of its target)."""

    def arm(self, kind: str, value: float = 0.0) -> None:
        if kind == "nosettle":
            with self._lock:
                self._pending[kind] = float(value)
            return
        super().arm(kind, value)


class LineServer(Restartable):
    """TCP server on ``host:port`` (0: a free port), one request per ``terminator`` line."""

    terminator = b"\n"
    greeting: bytes | None = None

    def __init__(self, host: str = "127.0.0.1", port: int = 0, command_log=None):
        super().__init__()
        self.faults = MRFMFaults()
        self.host, self.port = host, int(port)
        self.log = command_log if command_log is not None else []
        self._server = None
        self._clients: set = set()

    def reply(self, line: str) -> bytes | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def handle_line(self, line: str) -> bytes | None:
        """Log the request, apply the armed delay / garble, answer."""
        text = line.strip()
        if not text:
            return None
        self.log.append((self.name, text))
        out = self.reply(text)
        if out is None:
            return None
        delay = self.faults.take("delay")
        if delay:
            time.sleep(delay)
        if self.faults.take("garble") is not None:
            return b"\x8f#?!\xff garbled" + self.terminator
        return out

    def start(self) -> None:
        emu = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                conn = self.request
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                emu._clients.add(conn)
                buf = b""
                try:
                    if emu.greeting:
                        conn.sendall(emu.greeting)
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                        while b"\n" in buf:
                            raw, buf = buf.split(b"\n", 1)
                            out = emu.handle_line(raw.decode("utf-8", "replace"))
                            if out:
                                conn.sendall(out)
                except (OSError, ValueError):
                    pass
                finally:
                    emu._clients.discard(conn)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True,
                         name=f"{type(self).__name__}-{self.port}").start()

    def stop(self) -> None:
        self._server = stop_server(self._server, self._clients)

